using System.Net.Sockets;
using Multikernel.Net;
using Multikernel.Net.Tcp;
using Multikernel.Net.Wire;
using TcpListener = Multikernel.Net.Tcp.TcpListener;

namespace Multikernel.Tests.Net;

public sealed class TcpCloseAndAttackTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);

    [Fact]
    public void SimultaneousClose_BothGoThroughClosingToTimeWait()
    {
        using var net = new SimNetwork(20);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        client.Shutdown();
        server.Shutdown();
        Assert.Equal(TcpState.FinWait1, client.State);
        Assert.Equal(TcpState.FinWait1, server.State);
        net.RunUntil(() => client.State == TcpState.TimeWait && server.State == TcpState.TimeWait, Limit, "both TIME-WAITs");
        Assert.True(a.S.Counters.Connections(TcpState.TimeWait) == 1);
    }

    [Fact]
    public void TimeWait_LastsTwoMsl_AndAnswersARetransmittedFin()
    {
        using var net = new SimNetwork(21);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        client.Close();
        net.RunUntil(() => client.State == TcpState.FinWait2, Limit);
        server.Close();
        net.RunUntil(() => client.State == TcpState.TimeWait, Limit);
        TimeSpan enteredAt = net.Time.Elapsed;

        // The peer's FIN again (as if our ACK was lost): TIME-WAIT answers it with an ACK.
        Packets.Seg fin = Packets.TcpSent(b).Last(s => s.Has(TcpFlags.Fin));
        int mark = a.Sent.Count;
        net.Inject(a, Packets.Tcp(b.Mac, a.Mac, b.Ip, a.Ip, fin.SourcePort, fin.DestinationPort, fin.Seq, fin.Ack, fin.Flags, fin.Window, fin.Options));
        net.RunFor(TimeSpan.FromMilliseconds(500));
        Assert.Equal(TcpState.TimeWait, client.State); // the closed peer's RST to our ACK does not end it (RFC 1337)
        Assert.Contains(Packets.TcpSent(a, mark), s => s.Flags == TcpFlags.Ack && s.Ack == fin.Seq + 1);

        net.RunUntil(() => !client.IsOpen, TimeSpan.FromMinutes(3), "TIME-WAIT to end");
        TimeSpan lasted = net.Time.Elapsed - enteredAt;
        Assert.InRange(lasted, TimeSpan.FromSeconds(60), TimeSpan.FromSeconds(61)); // restarted by the FIN at +0.5 s at most
        Assert.Equal(0, a.S.ConnectionCount);
    }

    [Fact]
    public void Close_WithUnreadData_SendsRst_AndThePeerSeesReset()
    {
        using var net = new SimNetwork(22);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        net.Await(net.Spawn(async () => await client.WriteAsync(new byte[10])), Limit);
        net.RunUntil(() => server.UnreadBytes == 10, Limit);
        Task<int> read = net.Spawn(async () => await client.ReadAsync(new byte[10]));
        server.Close();
        net.RunUntil(() => read.IsCompleted, Limit);
        SocketException e = Assert.Throws<SocketException>(() => read.GetAwaiter().GetResult());
        Assert.Equal(SocketError.ConnectionReset, e.SocketErrorCode);
        Assert.Equal(0, a.S.ConnectionCount);
    }

    private static (SimNetwork Net, SimPort A, SimPort B, TcpConnection Client, TcpConnection Server, Packets.Seg LastFromB) Established(int seed)
    {
        var net = new SimNetwork(seed);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        net.RunFor(TimeSpan.FromMilliseconds(100));
        return (net, a, b, client, server, Packets.TcpSent(b).Last());
    }

    private static byte[] FromB(SimPort a, SimPort b, Packets.Seg last, uint seq, TcpFlags flags, byte[]? payload = null) =>
        Packets.Tcp(b.Mac, a.Mac, b.Ip, a.Ip, last.SourcePort, last.DestinationPort, seq, last.Ack, flags, last.Window, default, payload);

    /// <summary>The server's next sequence number, as the client expects it (RCV.NXT).</summary>
    private static uint Next(TcpConnection client) => client.ReceiveNext.Value;

    [Fact]
    public void Rfc5961_RstAtExactlyRcvNxt_Resets()
    {
        (SimNetwork net, SimPort a, SimPort b, TcpConnection client, _, Packets.Seg last) = Established(23);
        using (net)
        {
            net.Inject(a, FromB(a, b, last, Next(client), TcpFlags.Rst));
            net.RunFor(TimeSpan.FromMilliseconds(10));
            Assert.False(client.IsOpen);
            Assert.Equal(1, a.S.Counters.TcpResetsReceived);
        }
    }

    [Fact]
    public void Rfc5961_InWindowRst_GetsAChallengeAck_AndTheConnectionSurvives()
    {
        (SimNetwork net, SimPort a, SimPort b, TcpConnection client, _, Packets.Seg last) = Established(24);
        using (net)
        {
            int mark = a.Sent.Count;
            net.Inject(a, FromB(a, b, last, Next(client) + 1000, TcpFlags.Rst));
            net.RunFor(TimeSpan.FromMilliseconds(10));
            Assert.True(client.IsOpen);
            Assert.Equal(TcpState.Established, client.State);
            Assert.Equal(1, a.S.Counters.ChallengeAcks);
            Packets.Seg challenge = Assert.Single(Packets.TcpSent(a, mark));
            Assert.Equal(TcpFlags.Ack, challenge.Flags);
            Assert.Equal(Next(client), challenge.Ack);
        }
    }

    [Fact]
    public void Rfc5961_OutOfWindowRst_IsDropped_WithoutReply()
    {
        (SimNetwork net, SimPort a, SimPort b, TcpConnection client, _, Packets.Seg last) = Established(25);
        using (net)
        {
            int mark = a.Sent.Count;
            net.Inject(a, FromB(a, b, last, Next(client) + 10_000_000, TcpFlags.Rst));
            net.Inject(a, FromB(a, b, last, Next(client) - 1, TcpFlags.Rst));
            net.RunFor(TimeSpan.FromMilliseconds(10));
            Assert.Equal(TcpState.Established, client.State);
            Assert.Empty(Packets.TcpSent(a, mark));
            Assert.Equal(2, a.S.Counters.Drops(DropReason.TcpOutOfWindow));
        }
    }

    [Fact]
    public void Rfc5961_SynOnEstablished_GetsAChallengeAck_NotAReset()
    {
        (SimNetwork net, SimPort a, SimPort b, TcpConnection client, _, Packets.Seg last) = Established(26);
        using (net)
        {
            int mark = a.Sent.Count;
            net.Inject(a, Packets.Tcp(b.Mac, a.Mac, b.Ip, a.Ip, last.SourcePort, last.DestinationPort, Next(client) + 5, 0, TcpFlags.Syn));
            net.RunFor(TimeSpan.FromMilliseconds(10));
            Assert.Equal(TcpState.Established, client.State);
            Packets.Seg challenge = Assert.Single(Packets.TcpSent(a, mark));
            Assert.Equal(TcpFlags.Ack, challenge.Flags);
        }
    }

    [Fact]
    public void Rfc5961_ChallengeAcks_AreRateLimitedPerStack()
    {
        (SimNetwork net, SimPort a, SimPort b, TcpConnection client, _, Packets.Seg last) = Established(27);
        using (net)
        {
            int limit = a.S.Options.ChallengeAcksPerSecond;
            for (int i = 0; i < limit + 50; i++)
            {
                net.Inject(a, FromB(a, b, last, Next(client) + 100 + (uint)i, TcpFlags.Rst));
            }

            net.RunFor(TimeSpan.FromMilliseconds(10));
            Assert.Equal(limit, a.S.Counters.ChallengeAcks);
            Assert.Equal(50, a.S.Counters.ChallengeAcksSuppressed);
            Assert.Equal(TcpState.Established, client.State);
        }
    }

    [Fact]
    public void Rfc5961_BlindDataWithAnAckBelowTheWindow_IsDropped()
    {
        (SimNetwork net, SimPort a, SimPort b, TcpConnection client, _, Packets.Seg last) = Established(28);
        using (net)
        {
            // In-window data whose ACK is far behind SND.UNA (RFC 5961 §5.2): dropped with a challenge ACK.
            byte[] frame = Packets.Tcp(b.Mac, a.Mac, b.Ip, a.Ip, last.SourcePort, last.DestinationPort, Next(client), last.Ack - 0x4000_0000u, TcpFlags.Ack, last.Window, default, [1, 2, 3]);
            net.Inject(a, frame);
            net.RunFor(TimeSpan.FromMilliseconds(10));
            Assert.Equal(0, client.UnreadBytes);
            Assert.Equal(1, a.S.Counters.ChallengeAcks);
        }
    }

    [Fact]
    public void SynFlood_IsBoundedByTheBacklog_AndARealClientStillConnects()
    {
        using var net = new SimNetwork(29);
        SimPort server = net.AddHost(2);
        SimPort attacker = net.AddRawPort(0x0200_0000_00AA);
        SimPort client = net.AddHost(1);
        TcpListener listener = server.S.Listen(80, backlog: 16);
        Task<TcpConnection> accept = net.Spawn(async () => await listener.AcceptAsync());
        // Resolve the attacker's address in the server's ARP cache so its SYN-ACKs go out.
        for (int i = 0; i < 2000; i++)
        {
            var spoofed = new Multikernel.Netd.Wire.Ipv4Address(10, 0, 0, (byte)(100 + (i % 100)));
            net.Inject(server, Packets.Tcp(attacker.Mac, server.Mac, spoofed, server.Ip, (ushort)(1024 + i), 80, (uint)i * 7919, 0, TcpFlags.Syn));
            if (i % 100 == 50)
            {
                net.RunFor(TimeSpan.FromMilliseconds(1));
            }
        }

        net.RunFor(TimeSpan.FromMilliseconds(5));
        Assert.InRange(listener.HalfOpen, 1, 16);
        Assert.True(server.S.ConnectionCount <= 16);
        Assert.True(server.S.Counters.SynQueueEvictions >= 2000 - 16);

        Task<TcpConnection> connect = net.Spawn(async () => await client.S.ConnectAsync(new Ipv4Endpoint(server.Ip, 80)));
        net.Await(connect, Limit);
        TcpConnection accepted = net.Await(accept, Limit);
        Assert.Equal(TcpState.Established, accepted.State);
    }

    [Fact]
    public void ZeroWindow_IsProbed_AndTransferResumesWhenTheReaderDrains()
    {
        using var net = new SimNetwork(30);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2, o => o.ReceiveBufferSize = 16 * 1024);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        byte[] data = Packets.Pattern(100_000, 30);
        Task write = net.Spawn(async () => await client.WriteAsync(data));
        net.RunFor(TimeSpan.FromSeconds(10));
        Assert.Equal(0u, client.SendWindow);
        Assert.True(server.UnreadBytes >= 15 * 1024, $"the receive buffer fills ({server.UnreadBytes})");
        // Probes went out while the window was shut: segments at SND.UNA - 1 with no data.
        int probes = Packets.TcpSent(a).Count(s => s.Payload.Length == 0 && s.Seq == client.SendUnacknowledged.Value - 1);
        Assert.InRange(probes, 2, 10);

        Task<byte[]> read = net.Spawn(async () =>
        {
            var ms = new MemoryStream();
            byte[] buffer = new byte[8192];
            while (ms.Length < data.Length)
            {
                int n = await server.ReadAsync(buffer);
                ms.Write(buffer, 0, n);
            }

            return ms.ToArray();
        });
        Assert.Equal(data, net.Await(read, TimeSpan.FromMinutes(2)));
        net.Await(write, Limit);
    }

    [Fact]
    public void KeepAlive_ProbesAnIdleConnection_AndAbortsWhenThePeerIsGone()
    {
        using var net = new SimNetwork(31);
        SimPort a = net.AddHost(1, o => { o.KeepAliveIdle = TimeSpan.FromSeconds(10); o.KeepAliveInterval = TimeSpan.FromSeconds(2); o.KeepAliveProbes = 3; });
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        client.KeepAlive = true;
        net.RunFor(TimeSpan.FromSeconds(35));
        Assert.True(client.IsOpen, "an answered probe keeps the connection");
        Assert.True(Packets.TcpSent(a).Count(s => s.Payload.Length == 0 && s.Seq == client.SendUnacknowledged.Value - 1) >= 3);

        net.Tap = (from, _) => from != b; // the peer vanishes
        Task<int> read = net.Spawn(async () => await client.ReadAsync(new byte[1]));
        net.RunUntil(() => read.IsCompleted, TimeSpan.FromSeconds(30));
        SocketException e = Assert.Throws<SocketException>(() => read.GetAwaiter().GetResult());
        Assert.Equal(SocketError.TimedOut, e.SocketErrorCode);
        _ = server;
    }

    [Fact]
    public void StackShutdown_ClosesEveryConnectionWithFin_OrRstAfterTheTimeout()
    {
        using var net = new SimNetwork(32);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        SimPort c = net.AddHost(3);
        (TcpConnection ab, TcpConnection ba) = TcpHandshakeTests.Connect(net, a, b);
        (TcpConnection ac, TcpConnection ca) = TcpHandshakeTests.Connect(net, a, c, 8);
        // b answers the FIN with its own; c never closes its side.
        Task closer = net.Spawn(async () => { while (await ba.ReadAsync(new byte[64]) > 0) { } ba.Close(); });
        Task shutdown = net.Spawn(async () => await a.S.ShutdownAsync(TimeSpan.FromSeconds(5)));
        net.Await(shutdown, TimeSpan.FromSeconds(10));
        Assert.InRange(net.Time.Elapsed, TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(6));
        net.RunFor(TimeSpan.FromMilliseconds(10));
        Assert.False(ba.IsOpen);
        Assert.False(ca.IsOpen, "the connection that did not finish closing was reset");
        Assert.True(ca.PeerClosed, "it saw the FIN first");
        Assert.True(Packets.TcpSent(a).Count(s => s.Has(TcpFlags.Rst)) == 1);
        _ = (ab, ac, closer);
    }
}
