using Multikernel.Net;
using Multikernel.Net.Udp;
using Multikernel.Netd.Wire;

namespace Multikernel.Tests.Net;

/// <summary>ARP, IPv4 (fragments), ICMP echo and UDP of one stack, and hostile bytes fed to <see cref="NetworkStack.Receive(ReadOnlySpan{byte})"/>.</summary>
public sealed class InterfaceTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);

    private static byte[] Ip(SimPort from, MacAddress toMac, Ipv4Address to, IpProtocol protocol, byte[] payload, ushort id = 1, int fragmentOffset = 0, bool more = false)
    {
        byte[] frame = new byte[EthernetFrame.HeaderLength + 20 + payload.Length];
        EthernetFrame.WriteHeader(frame, toMac, from.Mac, EtherType.Ipv4);
        Ipv4Packet.WriteHeader(frame.AsSpan(EthernetFrame.HeaderLength), new Ipv4Address(10, 0, 0, 9), to, protocol, payload.Length, id, 64, fragmentOffset: fragmentOffset, moreFragments: more);
        payload.CopyTo(frame.AsSpan(EthernetFrame.HeaderLength + 20));
        return frame;
    }

    private static byte[] EchoRequest(int dataLength)
    {
        byte[] icmp = new byte[8 + dataLength];
        new Random(dataLength).NextBytes(icmp.AsSpan(8));
        IcmpPacket.WriteEcho(icmp, IcmpType.EchoRequest, 99, 1, dataLength);
        return icmp;
    }

    [Fact]
    public void Start_SendsAGratuitousArp_AndRequestsAreAnswered()
    {
        using var net = new SimNetwork(40);
        SimPort a = net.AddHost(1);
        Assert.Equal(WireError.None, ArpPacket.TryParse(a.Sent[0].AsSpan(14), out ArpPacket g));
        Assert.Equal(a.Ip, g.SenderIp);
        Assert.Equal(a.Ip, g.TargetIp);
        SimPort b = net.AddHost(2);
        net.Spawn(async () => await a.S.ConnectAsync(new Ipv4Endpoint(b.Ip, 1)).AsTask().ContinueWith(_ => { }));
        net.RunFor(TimeSpan.FromMilliseconds(50));
        Assert.Equal(1, a.S.Counters.ArpRequestsSent - 1); // one resolution (after the announcement)
        Assert.Equal(1, b.S.Counters.ArpRepliesSent);
        Assert.Equal(1, a.S.Arp.Count);
    }

    [Fact]
    public void Arp_UnresolvedAddress_RetriesThenDropsItsBoundedQueue()
    {
        using var net = new SimNetwork(41);
        SimPort a = net.AddHost(1, o => o.ArpMaxPendingFrames = 2);
        UdpSocket s = a.S.BindUdp(1000);
        var nobody = new Ipv4Endpoint(new Ipv4Address(10, 0, 0, 77), 9);
        Assert.True(s.TrySend(nobody, [1]));
        Assert.True(s.TrySend(nobody, [2]));
        Assert.False(s.TrySend(nobody, [3])); // the per-address queue is full
        Assert.Equal(1, a.S.Counters.Drops(DropReason.ArpPendingFull));
        net.RunFor(TimeSpan.FromSeconds(5));
        Assert.Equal(1 + 3, a.S.Counters.ArpRequestsSent); // announcement + three attempts
        Assert.Equal(2, a.S.Counters.Drops(DropReason.ArpUnresolved));
        Assert.Equal(0, a.S.Arp.PendingCount);
        Assert.Equal(a.S.Options.ReceiveBuffers, a.S.FreeReceiveBuffers); // every parked frame went back to the pool
    }

    [Fact]
    public void Arp_EntriesExpire_AndTheCacheIsBounded()
    {
        using var net = new SimNetwork(42);
        SimPort a = net.AddHost(1, o => { o.ArpCacheSize = 4; o.ArpEntryLifetime = TimeSpan.FromSeconds(10); });
        SimPort raw = net.AddRawPort(0x0200_0000_00EE);
        for (int i = 0; i < 10; i++)
        {
            byte[] frame = new byte[42];
            EthernetFrame.WriteHeader(frame, MacAddress.Broadcast, raw.Mac, EtherType.Arp);
            ArpPacket.Write(frame.AsSpan(14), ArpOperation.Request, raw.Mac, new Ipv4Address(10, 0, 0, (byte)(100 + i)), MacAddress.Zero, a.Ip);
            net.Inject(a, frame);
        }

        net.RunFor(TimeSpan.FromMilliseconds(10));
        Assert.Equal(4, a.S.Arp.Count);
        Assert.Equal(10, a.S.Counters.ArpRepliesSent);
        Assert.True(a.S.Arp.TryLookup(new Ipv4Address(10, 0, 0, 109), out _));
        // Expired: still used while a request confirms it (once per request interval), for as
        // long as the request attempts take; unanswered, the entry goes.
        net.Time.Advance(TimeSpan.FromSeconds(11));
        long requests = a.S.Counters.ArpRequestsSent;
        Assert.True(a.S.Arp.TryLookup(new Ipv4Address(10, 0, 0, 109), out MacAddress stale));
        Assert.Equal(raw.Mac, stale);
        Assert.True(a.S.Arp.TryLookup(new Ipv4Address(10, 0, 0, 109), out _));
        Assert.Equal(requests + 1, a.S.Counters.ArpRequestsSent);
        net.Time.Advance(a.S.Options.ArpRequestInterval * a.S.Options.ArpRequestAttempts);
        Assert.False(a.S.Arp.TryLookup(new Ipv4Address(10, 0, 0, 109), out _));
    }

    [Fact]
    public void Arp_AnExpiredEntry_KeepsCarryingTraffic_WhileARequestConfirmsIt()
    {
        using var net = new SimNetwork(44);
        SimPort a = net.AddHost(1, o => o.ArpEntryLifetime = TimeSpan.FromSeconds(10));
        SimPort b = net.AddHost(2, o => o.ArpEntryLifetime = TimeSpan.FromSeconds(10));
        var pairs = new List<(Multikernel.Net.Tcp.TcpConnection Client, Multikernel.Net.Tcp.TcpConnection Server)>();
        for (int i = 0; i < 8; i++)
        {
            pairs.Add(TcpHandshakeTests.Connect(net, a, b, (ushort)(7000 + i)));
        }

        net.RunFor(TimeSpan.FromSeconds(10.5)); // a's entry for b has expired
        // Eight connections send at once: more frames than the four an unresolved address may queue.
        long requests = a.S.Counters.ArpRequestsSent;
        foreach ((Multikernel.Net.Tcp.TcpConnection client, _) in pairs)
        {
            client.NoDelay = true;
            net.Spawn(async () => await client.WriteAsync(new byte[100]));
        }

        net.RunUntil(() => pairs.All(p => p.Server.UnreadBytes == 100), TimeSpan.FromMilliseconds(100), "the data over the expired entry, without a retransmission");
        Assert.Equal(0, a.S.Counters.Drops(DropReason.ArpPendingFull));
        Assert.Equal(0, a.S.Counters.TcpRetransmits);
        Assert.Equal(requests + 1, a.S.Counters.ArpRequestsSent); // one request confirms it
        net.RunFor(TimeSpan.FromMilliseconds(50));
        Assert.True(a.S.Arp.TryLookup(b.Ip, out MacAddress mac) && mac == b.Mac);
    }

    [Fact]
    public void IcmpEcho_IsAnswered_IncludingA3000BytePingThatNeedsReassemblyAndFragmentation()
    {
        using var net = new SimNetwork(43);
        SimPort a = net.AddHost(1);
        SimPort raw = net.AddRawPort(0x0200_0000_0009);
        // Teach a where 10.0.0.9 is.
        byte[] arp = new byte[42];
        EthernetFrame.WriteHeader(arp, a.Mac, raw.Mac, EtherType.Arp);
        ArpPacket.Write(arp.AsSpan(14), ArpOperation.Request, raw.Mac, new Ipv4Address(10, 0, 0, 9), MacAddress.Zero, a.Ip);
        net.Inject(a, arp);

        net.Inject(a, Ip(raw, a.Mac, a.Ip, IpProtocol.Icmp, EchoRequest(56)));
        byte[] big = EchoRequest(3000);
        net.Inject(a, Ip(raw, a.Mac, a.Ip, IpProtocol.Icmp, big[..1480], id: 7, more: true));
        net.Inject(a, Ip(raw, a.Mac, a.Ip, IpProtocol.Icmp, big[1480..2960], id: 7, fragmentOffset: 1480, more: true));
        net.Inject(a, Ip(raw, a.Mac, a.Ip, IpProtocol.Icmp, big[2960..], id: 7, fragmentOffset: 2960));
        net.RunFor(TimeSpan.FromMilliseconds(10));
        Assert.Equal(2, a.S.Counters.IcmpEchoReplies);
        Assert.Equal(1, a.S.Counters.DatagramsReassembled);
        Assert.Equal(3, a.S.Counters.FragmentsSent);
        // Reassemble the reply's fragments by hand and compare the echoed data.
        byte[] reply = new byte[big.Length];
        foreach (byte[] f in raw.Received.Skip(2))
        {
            Assert.Equal(WireError.None, Ipv4Packet.TryParse(f.AsSpan(14), out Ipv4Packet p));
            p.Payload.CopyTo(reply.AsSpan(p.FragmentOffset));
        }

        Assert.Equal(WireError.None, IcmpPacket.TryParse(reply, out IcmpPacket r));
        Assert.Equal(IcmpType.EchoReply, r.Type);
        Assert.Equal(big.AsSpan(8).ToArray(), r.Data.ToArray());
    }

    [Fact]
    public void Reassembly_IsBoundedInCount_TimesOut_AndRejectsOverlaps()
    {
        using var net = new SimNetwork(44);
        SimPort a = net.AddHost(1, o => { o.MaxReassemblies = 2; o.ReassemblyTimeout = TimeSpan.FromSeconds(5); });
        SimPort raw = net.AddRawPort(0x0200_0000_0009);
        for (ushort id = 1; id <= 3; id++)
        {
            net.Inject(a, Ip(raw, a.Mac, a.Ip, IpProtocol.Udp, new byte[64], id: id, more: true));
        }

        net.RunFor(TimeSpan.FromMilliseconds(1));
        Assert.Equal(1, a.S.Counters.Drops(DropReason.ReassemblyFull));
        // Overlap: bytes 32.. of datagram 1 again.
        net.Inject(a, Ip(raw, a.Mac, a.Ip, IpProtocol.Udp, new byte[64], id: 1, fragmentOffset: 32, more: true));
        net.RunFor(TimeSpan.FromMilliseconds(1));
        Assert.Equal(1, a.S.Counters.Drops(DropReason.FragmentsOverlap));
        net.RunFor(TimeSpan.FromSeconds(7));
        Assert.Equal(1, a.S.Counters.Drops(DropReason.ReassemblyTimeout));
        // A fragment that would end beyond 65535 bytes.
        net.Inject(a, Ip(raw, a.Mac, a.Ip, IpProtocol.Udp, new byte[64], id: 9, fragmentOffset: 65520, more: false));
        net.RunFor(TimeSpan.FromMilliseconds(1));
        Assert.True(a.S.Counters.Drops(DropReason.BadIpv4) >= 1);
    }

    [Fact]
    public void Udp_EchoesAndBoundsItsQueue()
    {
        using var net = new SimNetwork(45);
        SimPort a = net.AddHost(1, o => o.UdpReceiveQueue = 4);
        SimPort b = net.AddHost(2);
        UdpSocket server = a.S.BindUdp(7);
        UdpSocket client = b.S.BindUdp(0);
        for (int i = 0; i < 6; i++)
        {
            Assert.True(client.TrySend(new Ipv4Endpoint(a.Ip, 7), [(byte)i, 1, 2]));
            net.RunFor(TimeSpan.FromMilliseconds(5)); // the first waits for ARP; the rest go at once
        }

        net.RunFor(TimeSpan.FromMilliseconds(20));
        Assert.Equal(4, server.Queued);
        Assert.Equal(2, a.S.Counters.Drops(DropReason.UdpQueueFull));
        Task<UdpReceiveResult> r = net.Spawn(async () => await server.ReceiveAsync(new byte[2]));
        UdpReceiveResult first = net.Await(r, Limit);
        Assert.Equal(2, first.Length);
        Assert.True(first.Truncated);
        Assert.Equal(new Ipv4Endpoint(b.Ip, client.LocalPort), first.Remote);

        // A datagram larger than the MTU goes out in fragments and comes back whole.
        byte[] big = Packets.Pattern(4000, 1);
        Task<byte[]> bigRead = net.Spawn(async () =>
        {
            byte[] buffer = new byte[8000];
            UdpReceiveResult res = await client.ReceiveAsync(buffer);
            return buffer[..res.Length];
        });
        Assert.True(server.TrySend(new Ipv4Endpoint(b.Ip, client.LocalPort), big));
        Assert.Equal(big, net.Await(bigRead, Limit));
    }

    [Fact]
    public void HostileRandomFrames_NeverThrow_AndLeakNoBuffer()
    {
        using var net = new SimNetwork(46);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        (Multikernel.Net.Tcp.TcpConnection client, _) = TcpHandshakeTests.Connect(net, a, b);
        var random = new Random(46);
        byte[] template = Packets.TcpSent(b).Last() is { } last
            ? Packets.Tcp(b.Mac, a.Mac, b.Ip, a.Ip, last.SourcePort, last.DestinationPort, last.Seq, last.Ack, Multikernel.Net.Wire.TcpFlags.Ack, 100, default, new byte[40])
            : throw new InvalidOperationException();
        for (int i = 0; i < 20_000; i++)
        {
            byte[] frame;
            switch (i % 3)
            {
                case 0:
                    frame = new byte[random.Next(0, 1600)];
                    random.NextBytes(frame);
                    break;
                case 1:
                    // A valid frame with random bytes written over the IP and TCP headers.
                    frame = (byte[])template.Clone();
                    for (int k = 0; k < 1 + random.Next(6); k++)
                    {
                        frame[14 + random.Next(frame.Length - 14)] = (byte)random.Next(256);
                    }

                    break;
                default:
                    frame = (byte[])template.Clone();
                    frame = frame[..random.Next(frame.Length)];
                    break;
            }

            a.S.Receive(frame);
            b.S.Receive(frame);
        }

        net.RunFor(TimeSpan.FromSeconds(1));
        Assert.True(a.S.Counters.TotalDrops > 10_000);
        _ = client;
        a.S.Dispose();
        b.S.Dispose();
        Assert.Equal(a.S.Options.ReceiveBuffers, a.S.FreeReceiveBuffers);
    }

    [Fact]
    public void Options_AreValidatedUpFront()
    {
        using var net = new SimNetwork(47);
        Assert.Throws<ArgumentException>(() => net.AddHost(0));
        Assert.Throws<ArgumentException>(() => net.AddHost(255));
        Assert.Throws<ArgumentException>(() => net.AddHost(3, o => o.ReceiveBufferSize = 10));
        Assert.Throws<ArgumentException>(() => net.AddHost(4, o => o.Gateway = new Ipv4Address(192, 168, 0, 1)));
    }
}
