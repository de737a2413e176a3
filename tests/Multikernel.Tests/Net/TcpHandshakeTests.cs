using System.Net.Sockets;
using Multikernel.Net;
using Multikernel.Net.Tcp;
using Multikernel.Net.Wire;
using TcpListener = Multikernel.Net.Tcp.TcpListener;

namespace Multikernel.Tests.Net;

public sealed class TcpHandshakeTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);

    internal static (TcpConnection Client, TcpConnection Server) Connect(SimNetwork net, SimPort a, SimPort b, ushort port = 7)
    {
        TcpListener listener = b.S.Listen(port);
        Task<TcpConnection> accept = net.Spawn(async () => await listener.AcceptAsync());
        Task<TcpConnection> connect = net.Spawn(async () => await a.S.ConnectAsync(new Ipv4Endpoint(b.Ip, port)));
        TcpConnection client = net.Await(connect, Limit);
        TcpConnection server = net.Await(accept, Limit);
        return (client, server);
    }

    [Fact]
    public void Handshake_NegotiatesMssWindowScaleTimestampsAndSack()
    {
        using var net = new SimNetwork(1);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = Connect(net, a, b);

        Assert.Equal(TcpState.Established, client.State);
        Assert.Equal(TcpState.Established, server.State);
        Assert.Equal(1460 - 12, client.SendMss);
        Assert.True(client.TimestampsEnabled && server.TimestampsEnabled);
        Assert.True(client.SackEnabled && server.SackEnabled);
        Assert.Equal(3, client.ReceiveWindowShift); // 256 KiB is 65536 << 2: one more than a 16-bit field holds, so 3
        Assert.Equal(3, server.SendWindowShift);

        Packets.Seg syn = Packets.TcpSent(a).First(s => s.Has(TcpFlags.Syn));
        Assert.Equal((ushort)1460, syn.Options.MaxSegmentSize);
        Assert.Equal((byte)3, syn.Options.WindowScale);
        Assert.True(syn.Options.SackPermitted);
        Assert.True(syn.Options.HasTimestamps);
        Assert.Equal(1, a.S.Counters.Connections(TcpState.Established));
    }

    [Fact]
    public void Handshake_WithoutOptions_WhenThePeerOffersNone()
    {
        using var net = new SimNetwork(2);
        SimPort a = net.AddHost(1, o => { o.WindowScaling = false; o.Timestamps = false; o.SelectiveAck = false; });
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = Connect(net, a, b);
        Assert.False(server.TimestampsEnabled);
        Assert.False(server.SackEnabled);
        Assert.Equal(0, server.SendWindowShift);
        Assert.Equal(0, server.ReceiveWindowShift); // scaling is both ways or neither (RFC 7323 §2.2)
        Assert.Equal(1460, server.SendMss);
        Assert.Equal(TcpState.Established, client.State);
    }

    [Fact]
    public void Connect_ToAClosedPort_IsRefusedByRst()
    {
        using var net = new SimNetwork(3);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        Task<TcpConnection> connect = net.Spawn(async () => await a.S.ConnectAsync(new Ipv4Endpoint(b.Ip, 9)));
        net.RunUntil(() => connect.IsCompleted, Limit);
        SocketException e = Assert.Throws<SocketException>(() => connect.GetAwaiter().GetResult());
        Assert.Equal(SocketError.ConnectionRefused, e.SocketErrorCode);
        Assert.Equal(1, b.S.Counters.TcpResetsSent);
        Assert.Equal(0, a.S.ConnectionCount);
    }

    [Fact]
    public void Connect_ToNobody_TimesOutAfterSynRetries_WithBackoff()
    {
        using var net = new SimNetwork(4);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        net.Tap = (from, frame) => from != a || Packets.ParseTcp(frame) is null; // every SYN is lost
        Task<TcpConnection> connect = net.Spawn(async () => await a.S.ConnectAsync(new Ipv4Endpoint(b.Ip, 7)));
        net.RunUntil(() => connect.IsCompleted, TimeSpan.FromMinutes(5));
        SocketException e = Assert.Throws<SocketException>(() => connect.GetAwaiter().GetResult());
        Assert.Equal(SocketError.TimedOut, e.SocketErrorCode);
        int syns = Packets.TcpSent(a).Count(s => s.Has(TcpFlags.Syn));
        Assert.Equal(1 + a.S.Options.MaxSynRetransmissions, syns);
        // 1 + 2 + 4 + 8 + 16 + 32 s of exponential backoff before giving up.
        Assert.InRange(net.Time.Elapsed, TimeSpan.FromSeconds(62), TimeSpan.FromSeconds(64));
    }

    [Fact]
    public void SimultaneousOpen_BothSidesReachEstablished()
    {
        using var net = new SimNetwork(5);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        // Each side connects to the other's port from a fixed port: craft it through the internal API.
        var ta = TcpConnectionFactory.ConnectFrom(a.S, 5000, new Ipv4Endpoint(b.Ip, 6000), net);
        var tb = TcpConnectionFactory.ConnectFrom(b.S, 6000, new Ipv4Endpoint(a.Ip, 5000), net);
        TcpConnection ca = net.Await(ta, Limit);
        TcpConnection cb = net.Await(tb, Limit);
        Assert.Equal(TcpState.Established, ca.State);
        Assert.Equal(TcpState.Established, cb.State);
        Assert.Contains(Packets.TcpSent(a), s => s.Flags == (TcpFlags.Syn | TcpFlags.Ack));

        Task echo = net.Spawn(async () =>
        {
            await ca.WriteAsync("hello"u8.ToArray());
            byte[] buffer = new byte[16];
            int n = await cb.ReadAsync(buffer);
            Assert.Equal("hello", System.Text.Encoding.ASCII.GetString(buffer, 0, n));
        });
        net.Await(echo, Limit);
    }
}

/// <summary>Test access to an active open from a chosen local port (simultaneous open needs both ports known in advance).</summary>
internal static class TcpConnectionFactory
{
    public static Task<TcpConnection> ConnectFrom(NetworkStack stack, ushort localPort, Ipv4Endpoint remote, SimNetwork net) =>
        net.Spawn(async () => await stack.ConnectFromPortAsync(localPort, remote));
}
