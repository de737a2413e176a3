using Multikernel.Net.Wire;
using Multikernel.Netd.Wire;

namespace Multikernel.Tests.Net;

/// <summary>Builds and reads raw frames for tests that act as a hostile or hand-driven peer.</summary>
internal static class Packets
{
    public static byte[] Tcp(MacAddress fromMac, MacAddress toMac, Ipv4Address from, Ipv4Address to, ushort sport, ushort dport,
        uint seq, uint ack, TcpFlags flags, ushort window = 65535, TcpOptions options = default, byte[]? payload = null)
    {
        payload ??= [];
        byte[] frame = new byte[EthernetFrame.HeaderLength + Ipv4Packet.MinHeaderLength + TcpSegment.MaxHeaderLength + payload.Length];
        Span<byte> tcp = frame.AsSpan(EthernetFrame.HeaderLength + Ipv4Packet.MinHeaderLength);
        int h = TcpSegment.WriteHeader(tcp, sport, dport, new SeqNumber(seq), new SeqNumber(ack), flags, window, in options);
        payload.CopyTo(tcp[h..]);
        TcpSegment.WriteChecksum(tcp[..(h + payload.Length)], from, to);
        Ipv4Packet.WriteHeader(frame.AsSpan(EthernetFrame.HeaderLength), from, to, IpProtocol.Tcp, h + payload.Length, 1, 64);
        EthernetFrame.WriteHeader(frame, toMac, fromMac, EtherType.Ipv4);
        return frame[..(EthernetFrame.HeaderLength + Ipv4Packet.MinHeaderLength + h + payload.Length)];
    }

    /// <summary>A parsed TCP segment a stack sent (copied out of the frame).</summary>
    internal sealed record Seg(Ipv4Address Source, Ipv4Address Destination, ushort SourcePort, ushort DestinationPort, uint Seq, uint Ack, TcpFlags Flags, ushort Window, TcpOptions Options, byte[] Payload)
    {
        public bool Has(TcpFlags f) => (Flags & f) != 0;
    }

    public static Seg? ParseTcp(byte[] frame)
    {
        if (EthernetFrame.TryParse(frame, out EthernetFrame eth) != WireError.None || eth.EtherType != EtherType.Ipv4
            || Ipv4Packet.TryParse(eth.Payload, out Ipv4Packet ip) != WireError.None || ip.Protocol != IpProtocol.Tcp
            || TcpSegment.TryParse(ip.Payload, out TcpSegment tcp, out TcpOptions options) != WireError.None)
        {
            return null;
        }

        Assert.True(tcp.IsChecksumValid(ip.Source, ip.Destination), "a stack sent a TCP segment with a bad checksum");
        return new Seg(ip.Source, ip.Destination, tcp.SourcePort, tcp.DestinationPort, tcp.SequenceNumber.Value, tcp.AcknowledgmentNumber.Value, tcp.Flags, tcp.Window, options, tcp.Payload.ToArray());
    }

    public static IEnumerable<Seg> TcpSent(SimPort port, int from = 0)
    {
        for (int i = from; i < port.Sent.Count; i++)
        {
            if (ParseTcp(port.Sent[i]) is { } s)
            {
                yield return s;
            }
        }
    }

    public static byte[] Pattern(int length, int seed)
    {
        byte[] data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }
}
