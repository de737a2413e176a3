using Multikernel.Net;
using Multikernel.Net.Tcp;

namespace Multikernel.Tests.Net;

public sealed class TcpTransferTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromMinutes(10);

    /// <summary>Sends <paramref name="data"/> one way, reads it all on the other side until EOF, and closes both.</summary>
    internal static byte[] Transfer(SimNetwork net, TcpConnection sender, TcpConnection receiver, byte[] data, int chunk = 16384)
    {
        Task send = net.Spawn(async () =>
        {
            for (int i = 0; i < data.Length; i += chunk)
            {
                await sender.WriteAsync(data.AsMemory(i, Math.Min(chunk, data.Length - i)));
            }

            sender.Shutdown();
        });
        Task<byte[]> receive = Read(net, receiver);
        net.Await(send, Limit);
        return net.Await(receive, Limit);
    }

    [Fact]
    public void SmallExchange_BothWays_ThenHalfCloseEachWay()
    {
        using var net = new SimNetwork(10);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        byte[] request = Packets.Pattern(1000, 1);
        Assert.Equal(request, Transfer(net, client, server, request));
        net.RunUntil(() => client.State == TcpState.FinWait2, TimeSpan.FromSeconds(1), "the FIN's ACK");
        Assert.Equal(TcpState.CloseWait, server.State);

        // The half-closed client still receives.
        byte[] response = Packets.Pattern(5000, 2);
        Assert.Equal(response, Transfer(net, server, client, response));
        net.RunUntil(() => server.State == TcpState.Closed, TimeSpan.FromSeconds(10), "the server's LAST-ACK to finish");
        Assert.Equal(TcpState.TimeWait, client.State);
        Assert.Equal(0, b.S.ConnectionCount);
    }

    [Theory]
    [InlineData(100, 0.0, 0.0, 0.0)]
    [InlineData(101, 0.05, 0.05, 0.0)]
    [InlineData(102, 0.02, 0.02, 0.02)]
    public void Bulk_10MB_ArrivesIntact_UnderLossReorderingAndDuplication(int seed, double loss, double reorder, double duplicate)
    {
        using var net = new SimNetwork(seed, new SimFaults { Loss = loss, Reorder = reorder, Duplicate = duplicate });
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        net.Faults = SimFaults.None;
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        net.Faults = new SimFaults { Loss = loss, Reorder = reorder, Duplicate = duplicate };
        a.Record = false;
        b.Record = false;
        byte[] data = Packets.Pattern(10 * 1024 * 1024, seed);
        byte[] received = Transfer(net, client, server, data, 65536);
        Assert.True(data.AsSpan().SequenceEqual(received), $"the data differs (seed {seed}, {received.Length} of {data.Length} bytes)");
        if (loss > 0)
        {
            Assert.True(a.S.Counters.TcpRetransmits > 0, "loss must have caused retransmissions");
            Assert.True(a.S.Counters.TcpFastRetransmits > 0, "duplicate ACKs must have triggered fast retransmit");
        }

        server.Close();
        net.RunUntil(() => client.State == TcpState.TimeWait || client.State == TcpState.Closed, TimeSpan.FromMinutes(2), "the close");
        net.RunUntil(() => !server.IsOpen, TimeSpan.FromMinutes(2), "the server to close");
    }

    [Fact]
    public void Bulk_WithCorruption_CorruptFramesAreDroppedByChecksum_AndDataArrivesIntact()
    {
        using var net = new SimNetwork(103);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        net.Faults = new SimFaults { Corrupt = 0.05 };
        a.Record = false;
        b.Record = false;
        byte[] data = Packets.Pattern(2 * 1024 * 1024, 103);
        Assert.True(data.AsSpan().SequenceEqual(Transfer(net, client, server, data)));
        long checksumDrops = b.S.Counters.Drops(DropReason.BadTcpChecksum) + b.S.Counters.Drops(DropReason.BadIpv4Checksum)
            + a.S.Counters.Drops(DropReason.BadTcpChecksum) + a.S.Counters.Drops(DropReason.BadIpv4Checksum);
        Assert.True(checksumDrops > 0, "single-bit corruption must be caught by the checksums");
    }

    [Fact]
    public void Sack_OutOfOrderData_IsReportedInSackBlocks()
    {
        using var net = new SimNetwork(11);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        int dropped = 0;
        net.Tap = (from, frame) =>
        {
            // Lose the second data segment once.
            if (from == a && Packets.ParseTcp(frame) is { Payload.Length: > 0 } && ++dropped == 2)
            {
                return false;
            }

            return true;
        };
        byte[] data = Packets.Pattern(20 * 1448, 5);
        Assert.Equal(data, Transfer(net, client, server, data, data.Length));
        Assert.Contains(Packets.TcpSent(b), s => s.Options.SackCount > 0);
        Packets.Seg sack = Packets.TcpSent(b).First(s => s.Options.SackCount > 0);
        Assert.Equal(sack.Ack + 1448, sack.Options.Sack(0).Left.Value);
        Assert.True(a.S.Counters.TcpFastRetransmits >= 1);
    }

    [Fact]
    public void SackBlocks_TakeRoomFromData_WithoutSkippingBytes()
    {
        // Both directions carry data; a lost segment from a leaves b holding out-of-order data, so
        // b's own full-size data segments must also carry SACK blocks. The blocks take room the MSS
        // left for data: the segment carries less, and the next one must start where it ended (a
        // hole there is repaired only by the retransmission timer — the 200 ms stalls of bulk echo).
        using var net = new SimNetwork(12);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        int fromA = 0;
        net.Tap = (from, frame) => !(from == a && Packets.ParseTcp(frame) is { Payload.Length: > 0 } && ++fromA == 3);
        byte[] up = Packets.Pattern(200 * 1448, 6);
        byte[] down = Packets.Pattern(200 * 1448, 7);
        int sentBefore = b.Sent.Count;
        Task<byte[]> atServer = Read(net, server);
        Task<byte[]> atClient = Read(net, client);
        Task upload = net.Spawn(async () => { await client.WriteAsync(up); client.Shutdown(); });
        Task download = net.Spawn(async () => { await server.WriteAsync(down); server.Shutdown(); });
        net.Await(upload, Limit);
        net.Await(download, Limit);
        Assert.Equal(up, net.Await(atServer, Limit));
        Assert.Equal(down, net.Await(atClient, Limit));

        Packets.Seg[] data = [.. Packets.TcpSent(b, sentBefore).Where(s => s.Payload.Length > 0)];
        Assert.Contains(data, s => s.Options.SackCount > 0 && s.Payload.Length < server.SendMss);
        uint end = data[0].Seq;
        foreach (Packets.Seg s in data)
        {
            Assert.True((int)(s.Seq - end) <= 0, $"b skipped {(int)(s.Seq - end)} bytes before {s.Seq} (a hole only a timeout repairs)");
            if ((int)(s.Seq + (uint)s.Payload.Length - end) > 0)
            {
                end = s.Seq + (uint)s.Payload.Length;
            }
        }

        Assert.Equal(0, b.S.Counters.TcpTimeouts);
    }

    [Fact]
    public void AResponseOfThreeSegments_WhoseFirstIsLost_IsRepairedByEarlyRetransmit_NotTheTimeout()
    {
        // An HTTP response of 4 KiB is three segments; losing the first brings two duplicate ACKs,
        // never three. RFC 5827 lowers the threshold when nothing more can be sent.
        using var net = new SimNetwork(14);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        int fromA = 0;
        net.Tap = (from, frame) => !(from == a && Packets.ParseTcp(frame) is { Payload.Length: > 0 } && ++fromA == 1);
        byte[] data = Packets.Pattern((2 * 1448) + 1200, 9);
        Task writing = net.Spawn(async () => await client.WriteAsync(data));
        byte[] received = new byte[data.Length];
        Task<int> reading = net.Spawn(async () =>
        {
            int got = 0;
            while (got < received.Length)
            {
                int n = await server.ReadAsync(received.AsMemory(got));
                if (n == 0)
                {
                    break;
                }

                got += n;
            }

            return got;
        });
        net.Await(writing, Limit);
        Assert.Equal(data.Length, net.Await(reading, Limit));
        Assert.Equal(data, received);
        Assert.Equal(1, a.S.Counters.TcpFastRetransmits);
        Assert.Equal(0, a.S.Counters.TcpTimeouts);
    }

    [Fact]
    public void DuplicateAcks_ThatMoveTheWindow_StillTriggerFastRetransmit_WhenTheySackNewData()
    {
        // Linux's receive buffer grows during a transfer, so the window of its duplicate ACKs keeps
        // changing: by RFC 5681's strict definition none is a duplicate and every loss waits for the
        // retransmission timeout. RFC 6675 counts an ACK that SACKs new data as a duplicate.
        using var net = new SimNetwork(13);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        int fromA = 0;
        int fromB = 0;
        net.Tap = (from, frame) =>
        {
            if (from == a)
            {
                return !(Packets.ParseTcp(frame) is { Payload.Length: > 0 } && ++fromA == 3);
            }

            if (Packets.ParseTcp(frame) is not null && ++fromB % 2 == 0)
            {
                // Each segment of b's offers a window other than the one before, and stays valid.
                Span<byte> tcp = frame.AsSpan(14 + 20);
                tcp[15] ^= 1;
                Multikernel.Net.Wire.TcpSegment.WriteChecksum(tcp, b.Ip, a.Ip);
            }

            return true;
        };
        byte[] data = Packets.Pattern(60 * 1448, 8);
        Assert.Equal(data, Transfer(net, client, server, data, data.Length));
        Assert.True(a.S.Counters.TcpFastRetransmits >= 1, "the loss was not repaired by fast retransmit");
        Assert.Equal(0, a.S.Counters.TcpTimeouts);
    }

    private static Task<byte[]> Read(SimNetwork net, TcpConnection connection) => net.Spawn(async () =>
    {
        var received = new MemoryStream();
        byte[] buffer = new byte[65536];
        int n;
        while ((n = await connection.ReadAsync(buffer)) > 0)
        {
            received.Write(buffer, 0, n);
        }

        return received.ToArray();
    });

    [Fact]
    public void Nagle_CoalescesSmallWrites_UntilTheFirstIsAcknowledged_AndNoDelayDoesNot()
    {
        foreach (bool noDelay in new[] { false, true })
        {
            using var net = new SimNetwork(12);
            SimPort a = net.AddHost(1);
            SimPort b = net.AddHost(2);
            (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
            client.NoDelay = noDelay;
            int before = Packets.TcpSent(a).Count(s => s.Payload.Length > 0);
            Task writes = net.Spawn(async () =>
            {
                for (int i = 0; i < 10; i++)
                {
                    await client.WriteAsync(new byte[] { (byte)i });
                }
            });
            net.Await(writes, Limit);
            int immediately = Packets.TcpSent(a).Count(s => s.Payload.Length > 0) - before;
            Assert.Equal(noDelay ? 10 : 1, immediately);
            net.RunFor(TimeSpan.FromSeconds(1));
            Assert.Equal(10, server.UnreadBytes);
        }
    }

    [Fact]
    public void DelayedAck_OneSegmentIsAcknowledgedAfterTheDelay_TwoAtOnce()
    {
        using var net = new SimNetwork(13);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        client.NoDelay = true;
        foreach ((int size, long expectedDelay) in new[] { (100, 40L), (2 * client.SendMss, 0L) })
        {
            net.RunFor(TimeSpan.FromSeconds(1));
            int sentMark = b.Sent.Count;
            int receivedMark = b.Received.Count;
            net.Await(net.Spawn(async () => await client.WriteAsync(new byte[size])), Limit);
            net.RunUntil(() => b.Sent.Count > sentMark, TimeSpan.FromSeconds(1), "the ACK");
            int lastData = Enumerable.Range(receivedMark, b.Received.Count - receivedMark).Last(i => Packets.ParseTcp(b.Received[i]) is { Payload.Length: > 0 });
            Assert.Equal(expectedDelay, b.SentAtMs[sentMark] - b.ReceivedAtMs[lastData]);
            Assert.Single(Packets.TcpSent(b, sentMark));
        }

        Assert.Equal(100 + (2 * client.SendMss), server.UnreadBytes);
    }
}
