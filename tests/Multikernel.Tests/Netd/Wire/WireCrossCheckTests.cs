using System.Net;
using System.Net.NetworkInformation;
using FsCheck;
using FsCheck.Fluent;
using Multikernel.Net.Wire;
using Multikernel.Netd.Wire;
using Pdn = PacketDotNet;

namespace Multikernel.Tests.Netd.Wire;

/// <summary>Our wire views and builders checked against an independent parser (PacketDotNet 1.4.8), and against hostile bytes.</summary>
public sealed class WireCrossCheckTests
{
    private static readonly Ipv4Address A = new(10, 0, 0, 1);
    private static readonly Ipv4Address B = new(10, 0, 0, 2);
    private static readonly MacAddress MacA = MacAddress.Parse("02:00:00:00:00:01");
    private static readonly MacAddress MacB = MacAddress.Parse("02:00:00:00:00:02");

    private static byte[] OurTcpFrame(TcpOptions options, byte[] payload, TcpFlags flags = TcpFlags.Syn | TcpFlags.Ack) =>
        Tests.Net.Packets.Tcp(MacA, MacB, A, B, 40000, 80, 0xFFFF_FFF0u, 12345, flags, 4321, options, payload);

    [Fact]
    public void OurTcpSegment_ParsesInPacketDotNet_WithValidChecksums_AndTheSameOptions()
    {
        var options = new TcpOptions { MaxSegmentSize = 1460, WindowScale = 7, SackPermitted = true, HasTimestamps = true, TimestampValue = 0xDEADBEEF, TimestampEcho = 42 };
        byte[] frame = OurTcpFrame(options, "hello"u8.ToArray());
        var eth = (Pdn.EthernetPacket)Pdn.Packet.ParsePacket(Pdn.LinkLayers.Ethernet, frame);
        Pdn.IPv4Packet ip = eth.Extract<Pdn.IPv4Packet>();
        Pdn.TcpPacket tcp = eth.Extract<Pdn.TcpPacket>();
        Assert.Equal(PhysicalAddress.Parse("02-00-00-00-00-02"), eth.DestinationHardwareAddress);
        Assert.True(ip.ValidIPChecksum);
        Assert.True(tcp.ValidTcpChecksum);
        Assert.Equal(IPAddress.Parse("10.0.0.1"), ip.SourceAddress);
        Assert.Equal((ushort)40000, tcp.SourcePort);
        Assert.Equal(0xFFFF_FFF0u, tcp.SequenceNumber);
        Assert.Equal(12345u, tcp.AcknowledgmentNumber);
        Assert.True(tcp.Synchronize && tcp.Acknowledgment && !tcp.Reset);
        Assert.Equal((ushort)4321, tcp.WindowSize);
        Assert.Equal("hello"u8.ToArray(), tcp.PayloadData);
        Assert.Equal((ushort)1460, tcp.OptionsCollection.OfType<Pdn.Tcp.MaximumSegmentSizeOption>().Single().Value);
        Assert.Equal((byte)7, tcp.OptionsCollection.OfType<Pdn.Tcp.WindowScaleFactorOption>().Single().ScaleFactor);
        Pdn.Tcp.TimeStampOption ts = tcp.OptionsCollection.OfType<Pdn.Tcp.TimeStampOption>().Single();
        Assert.Equal(0xDEADBEEFu, ts.Value);
        Assert.Equal(42u, ts.EchoReply);
        Assert.Single(tcp.OptionsCollection.OfType<Pdn.Tcp.SelectiveAcknowledgmentPermittedOption>());
        Assert.Equal(0, tcp.OptionsSegment.Length % 4);
    }

    [Fact]
    public void PacketDotNetSegment_ParsesInOurs()
    {
        var tcp = new Pdn.TcpPacket(1234, 80) { SequenceNumber = 77, AcknowledgmentNumber = 88, Acknowledgment = true, Push = true, WindowSize = 999, PayloadData = [1, 2, 3, 4, 5] };
        var ip = new Pdn.IPv4Packet(IPAddress.Parse("10.0.0.2"), IPAddress.Parse("10.0.0.1")) { PayloadPacket = tcp, TimeToLive = 33 };
        var eth = new Pdn.EthernetPacket(PhysicalAddress.Parse("02-00-00-00-00-02"), PhysicalAddress.Parse("02-00-00-00-00-01"), Pdn.EthernetType.IPv4) { PayloadPacket = ip };
        tcp.UpdateTcpChecksum();
        ip.UpdateIPChecksum();
        byte[] frame = eth.Bytes;

        Assert.Equal(WireError.None, EthernetFrame.TryParse(frame, out EthernetFrame e));
        Assert.Equal(EtherType.Ipv4, e.EtherType);
        Assert.Equal(MacB, e.Source);
        Assert.Equal(WireError.None, Ipv4Packet.TryParse(e.Payload, out Ipv4Packet p));
        Assert.Equal(B, p.Source);
        Assert.Equal((byte)33, p.TimeToLive);
        Assert.Equal(IpProtocol.Tcp, p.Protocol);
        Assert.Equal(WireError.None, TcpSegment.TryParse(p.Payload, out TcpSegment s, out _));
        Assert.True(s.IsChecksumValid(B, A));
        Assert.Equal(77u, s.SequenceNumber.Value);
        Assert.Equal(TcpFlags.Ack | TcpFlags.Psh, s.Flags);
        Assert.Equal(new byte[] { 1, 2, 3, 4, 5 }, s.Payload.ToArray());
    }

    [Fact]
    public void Udp_AndIcmp_BuiltByUs_AreValidInPacketDotNet()
    {
        byte[] udp = new byte[8 + 3];
        "abc"u8.CopyTo(udp.AsSpan(8));
        UdpDatagram.Write(udp, A, B, 5353, 53, 3);
        byte[] frame = Frame(IpProtocol.Udp, udp);
        var eth = (Pdn.EthernetPacket)Pdn.Packet.ParsePacket(Pdn.LinkLayers.Ethernet, frame);
        Pdn.UdpPacket u = eth.Extract<Pdn.UdpPacket>();
        Assert.True(u.ValidUdpChecksum);
        Assert.Equal((ushort)53, u.DestinationPort);
        Assert.Equal("abc"u8.ToArray(), u.PayloadData);

        byte[] icmp = new byte[8 + 4];
        IcmpPacket.WriteEcho(icmp, IcmpType.EchoRequest, 0x1234, 7, 4);
        var ie = (Pdn.EthernetPacket)Pdn.Packet.ParsePacket(Pdn.LinkLayers.Ethernet, Frame(IpProtocol.Icmp, icmp));
        Pdn.IcmpV4Packet i = ie.Extract<Pdn.IcmpV4Packet>();
        Assert.Equal(Pdn.IcmpV4TypeCode.EchoRequest, i.TypeCode);
        Assert.Equal((ushort)7, i.Sequence);
        Assert.Equal((ushort)0x1234, i.Id);
        Assert.True(InternetChecksum.IsValid(icmp));
    }

    [Fact]
    public void Arp_BuiltByUs_ParsesInPacketDotNet()
    {
        byte[] frame = new byte[EthernetFrame.HeaderLength + ArpPacket.Length];
        EthernetFrame.WriteHeader(frame, MacAddress.Broadcast, MacA, EtherType.Arp);
        ArpPacket.Write(frame.AsSpan(EthernetFrame.HeaderLength), ArpOperation.Request, MacA, A, MacAddress.Zero, B);
        var eth = (Pdn.EthernetPacket)Pdn.Packet.ParsePacket(Pdn.LinkLayers.Ethernet, frame);
        Pdn.ArpPacket arp = eth.Extract<Pdn.ArpPacket>();
        Assert.Equal(Pdn.ArpOperation.Request, arp.Operation);
        Assert.Equal(IPAddress.Parse("10.0.0.2"), arp.TargetProtocolAddress);
        Assert.Equal(PhysicalAddress.Parse("02-00-00-00-00-01"), arp.SenderHardwareAddress);
        Assert.Equal(WireError.None, ArpPacket.TryParse(frame.AsSpan(EthernetFrame.HeaderLength), out ArpPacket ours));
        Assert.Equal(B, ours.TargetIp);
    }

    [Fact]
    public void Ipv4_Fragments_HeaderFieldsMatchPacketDotNet()
    {
        byte[] frame = new byte[EthernetFrame.HeaderLength + 20 + 16];
        EthernetFrame.WriteHeader(frame, MacB, MacA, EtherType.Ipv4);
        Ipv4Packet.WriteHeader(frame.AsSpan(EthernetFrame.HeaderLength), A, B, IpProtocol.Udp, 16, 0xBEEF, 9, fragmentOffset: 1480, moreFragments: true);
        var ip = ((Pdn.EthernetPacket)Pdn.Packet.ParsePacket(Pdn.LinkLayers.Ethernet, frame)).Extract<Pdn.IPv4Packet>();
        Assert.True(ip.ValidIPChecksum);
        Assert.Equal(1480 / 8, ip.FragmentOffset);
        Assert.Equal(0xBEEF, ip.Id);
        Assert.Equal(WireError.None, Ipv4Packet.TryParse(frame.AsSpan(EthernetFrame.HeaderLength), out Ipv4Packet ours));
        Assert.True(ours.IsFragment && ours.MoreFragments);
        Assert.Equal(1480, ours.FragmentOffset);
    }

    private static byte[] Frame(IpProtocol protocol, byte[] payload)
    {
        byte[] frame = new byte[EthernetFrame.HeaderLength + 20 + payload.Length];
        EthernetFrame.WriteHeader(frame, MacB, MacA, EtherType.Ipv4);
        Ipv4Packet.WriteHeader(frame.AsSpan(EthernetFrame.HeaderLength), A, B, protocol, payload.Length, 1, 64);
        payload.CopyTo(frame.AsSpan(EthernetFrame.HeaderLength + 20));
        return frame;
    }

    [Theory]
    [InlineData(new byte[] { 0x45 }, WireError.Truncated)]
    [InlineData(new byte[] { 0x65, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2 }, WireError.Unsupported)]
    [InlineData(new byte[] { 0x44, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2 }, WireError.BadHeaderLength)]
    [InlineData(new byte[] { 0x46, 0, 0, 24, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2 }, WireError.Truncated)]
    [InlineData(new byte[] { 0x45, 0, 0, 19, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2 }, WireError.BadLength)]
    [InlineData(new byte[] { 0x45, 0, 0, 99, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2 }, WireError.Truncated)]
    [InlineData(new byte[] { 0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2 }, WireError.BadChecksum)]
    public void Ipv4_MalformedHeaders_AreRefusedWithAReason(byte[] bytes, WireError expected) =>
        Assert.Equal(expected, Ipv4Packet.TryParse(bytes, out _));

    [Theory]
    [InlineData(new byte[] { 2, 4, 5 }, WireError.BadOptions)]          // MSS runs past the header
    [InlineData(new byte[] { 2, 3, 5, 0 }, WireError.BadOptions)]       // MSS with the wrong length
    [InlineData(new byte[] { 99, 0, 0, 0 }, WireError.BadOptions)]      // zero length
    [InlineData(new byte[] { 99, 1, 0, 0 }, WireError.BadOptions)]      // length below 2
    [InlineData(new byte[] { 8, 10, 0, 0 }, WireError.BadOptions)]      // timestamps truncated
    [InlineData(new byte[] { 5, 3, 0, 0 }, WireError.BadOptions)]       // SACK not a multiple of 8
    [InlineData(new byte[] { 1, 1, 99, 2 }, WireError.None)]            // unknown kind skipped
    [InlineData(new byte[] { 0, 2, 4, 5 }, WireError.None)]             // end of options: the rest is padding
    public void TcpOptions_MalformedOnesAreRefused(byte[] bytes, WireError expected) =>
        Assert.Equal(expected, TcpOptions.Parse(bytes, out _));

    [Fact]
    public void TcpOptions_WindowScaleAbove14_IsClampedTo14()
    {
        Assert.Equal(WireError.None, TcpOptions.Parse(new byte[] { 3, 3, 200, 0 }, out TcpOptions o));
        Assert.Equal((byte)14, o.WindowScale);
    }

    [Fact]
    public void TcpOptions_RoundTrip_WithSackBlocks()
    {
        var o = new TcpOptions { HasTimestamps = true, TimestampValue = 1, TimestampEcho = 2 };
        o.AddSack(new SackBlock(new SeqNumber(100), new SeqNumber(200)));
        o.AddSack(new SackBlock(new SeqNumber(uint.MaxValue - 5), new SeqNumber(10)));
        o.AddSack(new SackBlock(new SeqNumber(300), new SeqNumber(400)));
        byte[] bytes = new byte[40];
        int n = o.Write(bytes);
        Assert.Equal(o.WrittenLength, n);
        Assert.Equal(WireError.None, TcpOptions.Parse(bytes.AsSpan(0, n), out TcpOptions back));
        Assert.Equal(3, back.SackCount);
        Assert.Equal(o.Sack(1), back.Sack(1));
        Assert.Equal(2u, back.TimestampEcho);
    }

    [Fact]
    public void Checksum_OfRfc1071Example()
    {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (complement 220d).
        Assert.Equal((ushort)0x220D, InternetChecksum.Compute(new byte[] { 0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7 }));
        Assert.Equal((ushort)0xFEFF, InternetChecksum.Compute(new byte[] { 0x01 })); // odd length pads with zero
    }

    [Fact]
    public void Parsers_NeverThrow_OnRandomBytes()
    {
        Prop.ForAll<byte[]>(bytes =>
        {
            bytes ??= [];
            _ = EthernetFrame.TryParse(bytes, out _);
            _ = ArpPacket.TryParse(bytes, out _);
            if (Ipv4Packet.TryParse(bytes, out Ipv4Packet ip) == WireError.None)
            {
                _ = ip.Payload.Length + ip.Options.Length + ip.FragmentOffset;
            }

            _ = IcmpPacket.TryParse(bytes, out _);
            if (UdpDatagram.TryParse(bytes, out UdpDatagram u) == WireError.None)
            {
                _ = u.Payload.Length + (u.IsChecksumValid(A, B) ? 1 : 0);
            }

            if (TcpSegment.TryParse(bytes, out TcpSegment t, out TcpOptions o) == WireError.None)
            {
                _ = t.Payload.Length + t.OptionBytes.Length + o.SackCount + t.SequenceLength;
            }
        }).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void SeqNumber_ArithmeticIsTotalAndConsistent()
    {
        Prop.ForAll<uint, int>((a, n) =>
        {
            var s = new SeqNumber(a);
            SeqNumber t = s + n;
            bool ok = t - s == n && t - n == s;
            if (n > 0)
            {
                ok &= t > s && s < t && !(t <= s);
            }
            else if (n < 0 && n != int.MinValue)
            {
                ok &= t < s;
            }

            ok &= s.InWindow(s, 1) && !s.InWindow(s, 0);
            return ok;
        }).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void SeqNumber_WrapsAroundZero()
    {
        var high = new SeqNumber(uint.MaxValue - 10);
        SeqNumber low = high + 20;
        Assert.Equal(9u, low.Value);
        Assert.True(low > high);
        Assert.Equal(20, low - high);
        Assert.True(new SeqNumber(5).InWindow(high, 100));
        Assert.False(new SeqNumber(200).InWindow(high, 100));
    }

    [Fact]
    public void Addresses_ParseAndFormat()
    {
        Assert.Equal("10.0.0.1", Ipv4Address.Parse("10.0.0.1").ToString());
        Assert.False(Ipv4Address.TryParse("10.0.0", out _));
        Assert.False(Ipv4Address.TryParse("10.0.0.256", out _));
        Assert.False(Ipv4Address.TryParse("10.0.0.1.", out _));
        Assert.Equal("02:00:00:00:00:01", MacA.ToString());
        Assert.Throws<FormatException>(() => MacAddress.Parse("02:00:00:00:00"));
        Assert.True(MacAddress.Broadcast.IsMulticast);
    }
}
