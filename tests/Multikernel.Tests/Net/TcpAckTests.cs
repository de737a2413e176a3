using Multikernel.Net;
using Multikernel.Net.Apps;
using Multikernel.Net.Tcp;
using Multikernel.Net.Udp;

namespace Multikernel.Tests.Net;

/// <summary>
/// How often the receiver acknowledges: once per receive burst (netd's batch) for in-order data,
/// at once for what fast retransmit counts, and pure window updates only when the peer is
/// starved. Each ACK over TAP is a write system call in which the peer's TCP input runs, so on a
/// plain TAP link the ACK rate was half the CPU of a bulk receive.
/// </summary>
public sealed class TcpAckTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromMinutes(2);

    // Moves `bytes` from client to server (the server reads them all) so the congestion window
    // has grown past the bursts the tests send; returns when every byte is acknowledged.
    private static void WarmUp(SimNetwork net, TcpConnection client, TcpConnection server, int bytes)
    {
        Task<int> read = ReadExactly(net, server, bytes);
        net.Await(net.Spawn(async () => await client.WriteAsync(new byte[bytes])), Limit);
        Assert.Equal(bytes, net.Await(read, Limit));
        net.RunUntil(() => client.BufferedToSend == 0, Limit, "the warm-up to be acknowledged");
        net.RunFor(TimeSpan.FromMilliseconds(200)); // and every delayed ACK sent
    }

    private static Task<int> ReadExactly(SimNetwork net, TcpConnection connection, int bytes) => net.Spawn(async () =>
    {
        byte[] buffer = new byte[64 * 1024];
        int total = 0;
        while (total < bytes)
        {
            int n = await connection.ReadAsync(buffer.AsMemory(0, Math.Min(buffer.Length, bytes - total)));
            Assert.True(n > 0, "the connection ended early");
            total += n;
        }

        return total;
    });

    // Sends `segments` full segments in one write (they leave at one moment, so with one link
    // latency they arrive at one moment: one burst) and returns the pure ACKs the receiver sent
    // for them once everything settled.
    // (Before is the acknowledgment number the receiver sent last before them.)
    private static (uint Before, List<Packets.Seg> Acks) SendAtOnce(SimNetwork net, SimPort receiverPort, TcpConnection client, int segments)
    {
        int mark = receiverPort.Sent.Count;
        uint before = Packets.TcpSent(receiverPort).Last().Ack;
        net.Await(net.Spawn(async () => await client.WriteAsync(new byte[segments * client.SendMss])), Limit);
        net.RunUntil(() => client.BufferedToSend == 0, Limit, "the segments to be acknowledged");
        return (before, [.. Packets.TcpSent(receiverPort, mark).Where(s => s.Payload.Length == 0 && s.Has(Multikernel.Net.Wire.TcpFlags.Ack))]);
    }

    // Drops the next frame from `port` that carries TCP data, once; everything else passes.
    private static void LoseNextDataSegmentFrom(SimNetwork net, SimPort port)
    {
        bool dropped = false;
        net.Tap = (from, frame) =>
        {
            if (!dropped && from == port && Packets.ParseTcp(frame) is { Payload.Length: > 0 })
            {
                dropped = true;
                return false;
            }

            return true;
        };
    }

    private static (SimNetwork Net, SimPort A, SimPort B, TcpConnection Client, TcpConnection Server) Pair(int seed, bool bursts, Action<NetworkStackOptions>? receiver = null)
    {
        var net = new SimNetwork(seed) { Bursts = bursts };
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2, receiver);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        client.NoDelay = true;
        return (net, a, b, client, server);
    }

    [Fact]
    public void InOrderSegments_ArrivingAsOneBurst_AreAcknowledgedOnce_AtItsEnd()
    {
        (SimNetwork net, _, SimPort b, TcpConnection client, TcpConnection server) = Pair(70, bursts: true);
        using (net)
        {
            WarmUp(net, client, server, 400_000);
            (uint before, List<Packets.Seg> acks) = SendAtOnce(net, b, client, 8);
            Packets.Seg ack = Assert.Single(acks);
            Assert.Equal(before + (uint)(8 * client.SendMss), ack.Ack); // it covers all eight
            Assert.Equal(8 * client.SendMss, server.UnreadBytes);
        }
    }

    [Fact]
    public void WithoutBursts_EverySecondSegment_IsAcknowledged()
    {
        (SimNetwork net, _, SimPort b, TcpConnection client, TcpConnection server) = Pair(71, bursts: false);
        using (net)
        {
            WarmUp(net, client, server, 400_000);
            Assert.Equal(4, SendAtOnce(net, b, client, 8).Acks.Count);
        }
    }

    [Fact]
    public void ABurstLongerThanMaxSegmentsPerAck_IsAcknowledgedEveryThatManySegments()
    {
        (SimNetwork net, _, SimPort b, TcpConnection client, TcpConnection server) = Pair(72, bursts: true, o => o.MaxSegmentsPerAck = 4);
        using (net)
        {
            WarmUp(net, client, server, 400_000);
            (uint before, List<Packets.Seg> acks) = SendAtOnce(net, b, client, 10);
            // At 4 and 8 inside the burst, and the last two when it ends.
            uint mss = (uint)client.SendMss;
            Assert.Equal(new[] { before + (4 * mss), before + (8 * mss), before + (10 * mss) }, acks.Select(s => s.Ack));
        }
    }

    [Fact]
    public void InABurst_SegmentsBehindAHole_AreEachDuplicateAcknowledgedAtOnce()
    {
        (SimNetwork net, SimPort a, SimPort b, TcpConnection client, TcpConnection server) = Pair(73, bursts: true);
        using (net)
        {
            WarmUp(net, client, server, 400_000);
            LoseNextDataSegmentFrom(net, a); // the first of the next burst
            long fastBefore = a.S.Counters.TcpFastRetransmits;
            (uint hole, List<Packets.Seg> acks) = SendAtOnce(net, b, client, 8);
            // Seven duplicate ACKs, all for the hole (fast retransmit needs three), then the ACK
            // of everything once the retransmission fills it.
            Assert.Equal(7, acks.Count(s => s.Ack == hole));
            Assert.Equal(hole + (uint)(8 * client.SendMss), acks[^1].Ack);
            Assert.True(a.S.Counters.TcpFastRetransmits > fastBefore, "the duplicate ACKs drove a fast retransmit");
        }
    }

    [Fact]
    public void OneSegmentLost_FromAFullWindow_CostsOneRetransmission_TheRestIsHeldOutOfOrder()
    {
        (SimNetwork net, SimPort a, SimPort b, TcpConnection client, TcpConnection server) = Pair(78, bursts: true);
        using (net)
        {
            WarmUp(net, client, server, 1_000_000);
            LoseNextDataSegmentFrom(net, a);
            long retransmitsBefore = a.S.Counters.TcpRetransmits;
            Assert.True(client.CongestionWindow >= 150 * client.SendMss, $"cwnd {client.CongestionWindow}");
            // 150 segments: most of the default 256 KiB window, all behind the hole.
            SendAtOnce(net, b, client, 150);
            Assert.Equal(0, b.S.Counters.Drops(DropReason.TcpOutOfOrderFull));
            Assert.Equal(1, a.S.Counters.TcpRetransmits - retransmitsBefore);
            Assert.Equal(150 * client.SendMss, server.UnreadBytes);
        }
    }

    [Fact]
    public void AWindowUpdate_IsSentOnlyWhenThePeersWindowFellToHalf()
    {
        int mss = 1460;
        (SimNetwork net, _, SimPort b, TcpConnection client, TcpConnection server) = Pair(74, bursts: false, o => o.ReceiveBufferSize = 16 * mss);
        using (net)
        {
            // A quarter of the buffer unread: the peer still sees three quarters of it, so the
            // read announces nothing (the next data ACK will carry the larger window).
            net.Await(net.Spawn(async () => await client.WriteAsync(new byte[4 * mss])), Limit);
            net.RunUntil(() => server.UnreadBytes == 4 * mss, Limit, "the data");
            net.RunFor(TimeSpan.FromMilliseconds(200));
            int mark = b.Sent.Count;
            Assert.Equal(4 * mss, net.Await(ReadExactly(net, server, 4 * mss), Limit));
            net.RunFor(TimeSpan.FromMilliseconds(200));
            Assert.Empty(Packets.TcpSent(b, mark));

            // Three quarters unread: the peer sees a quarter, the read frees all: an update.
            net.Await(net.Spawn(async () => await client.WriteAsync(new byte[12 * mss])), Limit);
            net.RunUntil(() => server.UnreadBytes == 12 * mss, Limit, "the data");
            net.RunFor(TimeSpan.FromMilliseconds(200));
            mark = b.Sent.Count;
            Assert.Equal(12 * mss, net.Await(ReadExactly(net, server, 12 * mss), Limit));
            net.RunFor(TimeSpan.FromMilliseconds(200));
            Packets.Seg update = Assert.Single(Packets.TcpSent(b, mark));
            Assert.Empty(update.Payload);
            Assert.True(update.Window << server.ReceiveWindowShift >= 15 * mss, $"the update announces the freed buffer (window {update.Window << server.ReceiveWindowShift})");
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(65)]
    public void MaxSegmentsPerAck_OutOfRange_IsRefused(int value)
    {
        var options = new NetworkStackOptions { Address = new Multikernel.Netd.Wire.Ipv4Address(10, 0, 0, 1), MaxSegmentsPerAck = value };
        ArgumentOutOfRangeException e = Assert.Throws<ArgumentOutOfRangeException>(options.Validate);
        Assert.Contains("MaxSegmentsPerAck", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(75, 0.0)]
    [InlineData(76, 0.03)]
    public void Bulk_InBursts_ArrivesIntact_WithFarFewerAcks(int seed, double loss)
    {
        using var net = new SimNetwork(seed) { Bursts = true };
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        net.Faults = new SimFaults { Loss = loss, Reorder = loss, Duplicate = loss };
        a.Record = false;
        b.Record = false;
        byte[] data = Packets.Pattern(8 * 1024 * 1024, seed);
        long acksBefore = b.S.Counters.TcpSegmentsSent;
        byte[] received = TcpTransferTests.Transfer(net, client, server, data, 65536);
        Assert.True(data.AsSpan().SequenceEqual(received), $"the data differs (seed {seed})");
        long segments = data.Length / client.SendMss;
        long acks = b.S.Counters.TcpSegmentsSent - acksBefore;
        if (loss == 0)
        {
            // Every second segment would be segments / 2.
            Assert.True(acks < segments / 4, $"{acks} ACKs for {segments} segments");
        }
    }

    [Fact]
    public void Discard_TakesEverything_ClosesAfterTheHalfClose_AndAnswersNothingOnUdp()
    {
        using var net = new SimNetwork(77) { Bursts = true };
        SimPort client = net.AddHost(1);
        SimPort server = net.AddHost(2);
        using var discard = new DiscardServer(server.S, 9);
        Task run = net.Spawn(discard.RunAsync);
        byte[] data = Packets.Pattern(3_000_000, 77);
        Task<int> session = net.Spawn(async () =>
        {
            TcpConnection c = await client.S.ConnectAsync(new Ipv4Endpoint(server.Ip, 9));
            for (int i = 0; i < data.Length; i += 50_000)
            {
                await c.WriteAsync(data.AsMemory(i, Math.Min(50_000, data.Length - i)));
            }

            c.Shutdown();
            // The server closes only after reading the end: this read's 0 means everything arrived.
            int back = await c.ReadAsync(new byte[100]);
            c.Close();
            return back;
        });
        Assert.Equal(0, net.Await(session, Limit));
        Assert.Equal(data.Length, discard.BytesDiscarded);
        net.RunUntil(() => discard.Completed == 1 && server.S.ConnectionCount == 0, Limit, "the server side to close");

        UdpSocket socket = client.S.BindUdp(0);
        int mark = server.Sent.Count;
        Assert.True(socket.TrySend(new Ipv4Endpoint(server.Ip, 9), "dropped"u8));
        net.RunFor(TimeSpan.FromMilliseconds(100));
        Assert.Equal(data.Length + 7, discard.BytesDiscarded);
        Assert.Equal(mark, server.Sent.Count); // no datagram (or anything else) back
        discard.Stop();
        net.Await(run, Limit);
    }
}
