using System.Security.Cryptography;
using Multikernel.Net;
using Multikernel.Net.Tcp;
using Multikernel.Net.Wire;

namespace Multikernel.Tests.Net;

/// <summary>
/// A full transmit queue on the stack's own link (netd's transmit pages all in flight) holds TCP
/// data back instead of dropping it: SND.NXT stays, nothing is retransmitted, and the data leaves
/// as soon as the link has room — on the next received batch or the stack's 1 ms retry. Before,
/// each such segment was dropped and waited for a retransmission timeout (wrk p99 of 600 ms).
/// </summary>
public sealed class TcpLinkBackpressureTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);

    [Fact]
    public void AFullLink_HoldsDataBack_ThenSendsItWithoutARetransmission_OrADrop()
    {
        using var net = new SimNetwork(77);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        byte[] data = RandomNumberGenerator.GetBytes(64 * 1024);
        var received = new MemoryStream();
        Task reading = ReadInto(net, server, received, data.Length);

        // The link is full (it says so, and would refuse a frame): the write is held, not sent.
        a.ReportsRoom = false;
        a.AcceptTransmit = false;
        int sentBefore = Packets.TcpSent(a).Count(s => s.Payload.Length > 0);
        Task writing = net.Spawn(async () => await client.WriteAsync(data));
        net.RunFor(TimeSpan.FromMilliseconds(50));
        Assert.Equal(sentBefore, Packets.TcpSent(a).Count(s => s.Payload.Length > 0));
        Assert.True(a.S.Counters.LinkWaits > 0, "the connection never waited for the link");
        Assert.Equal(0, a.S.Counters.Drops(DropReason.TransmitQueueFull));

        // Room again: the stack's retry sends it all, in order, once.
        OpenTheLink_ThenTheHeldDataArrives(net, a, writing, reading, received, data);
        Assert.Equal(0, a.S.Counters.TcpRetransmits);
        Assert.Equal(0, a.S.Counters.TcpTimeouts);
        Assert.Equal(0, a.S.Counters.Drops(DropReason.TransmitQueueFull));
    }
    [Fact]
    public void ALinkFullForLong_WithNothingInFlight_SendsNoProbeIntoIt_AndLosesNothing()
    {
        // Nothing in flight and data held by the link looks like a zero window to the persist
        // logic; its probe (after an RTO) used to be forced onto the still-full link and dropped,
        // leaving a hole that cost another RTO — the wrk p99 of 150 ms.
        using var net = new SimNetwork(80);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        byte[] data = RandomNumberGenerator.GetBytes(6000);
        var received = new MemoryStream();
        Task reading = ReadInto(net, server, received, data.Length);
        a.ReportsRoom = false;
        a.AcceptTransmit = false;
        Task writing = net.Spawn(async () => await client.WriteAsync(data));
        net.RunFor(TimeSpan.FromSeconds(5)); // many RTOs and persist intervals
        Assert.Equal(0, a.S.Counters.Drops(DropReason.TransmitQueueFull));

        OpenTheLink_ThenTheHeldDataArrives(net, a, writing, reading, received, data);
        Assert.Equal(0, a.S.Counters.Drops(DropReason.TransmitQueueFull));
        Assert.Equal(0, a.S.Counters.TcpTimeouts);
        Assert.Equal(0, a.S.Counters.TcpRetransmits);
    }

    [Fact]
    public void DataBehindDeferredControlFrames_IsHeld_NotDroppedWhenTheyTakeTheRoom()
    {
        // Deferred control frames are flushed before anything else, so room the link reports may
        // be gone by the time a data segment reaches it (netd's last free pages taken by the
        // deferred ACKs): the data must wait like on a full link, not be dropped into a hole that
        // only the peer's duplicate ACKs or the timeout repair.
        using var net = new SimNetwork(79);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        byte[] data = RandomNumberGenerator.GetBytes(16 * 1024);
        var received = new MemoryStream();
        Task reading = ReadInto(net, server, received, data.Length);
        a.ReportsRoom = false;
        a.AcceptTransmit = false;
        net.Await(net.Spawn(async () => await server.WriteAsync(new byte[3000])), Limit);
        net.RunFor(TimeSpan.FromMilliseconds(300)); // a's ACK of it meets the full link: deferred
        Assert.True(a.S.Counters.FramesDeferred > 0, "no control frame was deferred");

        // The link now reports room, but the deferred frames go first and it takes none of them.
        a.ReportsRoom = true;
        Task writing = net.Spawn(async () => await client.WriteAsync(data));
        net.RunFor(TimeSpan.FromMilliseconds(20));
        Assert.Equal(0, a.S.Counters.Drops(DropReason.TransmitQueueFull));

        OpenTheLink_ThenTheHeldDataArrives(net, a, writing, reading, received, data);
        Assert.Equal(0, a.S.Counters.Drops(DropReason.TransmitQueueFull));
        Assert.Equal(0, a.S.Counters.TcpTimeouts);
    }

    [Fact]
    public void AResetMeetingAFullLink_IsKeptAndSentWhenItDrains_NotLost()
    {
        // A RST goes out once: dropped at a full transmit queue, it would leave the peer holding
        // a connection we consider gone (the shutdown test's stuck peer did exactly that).
        using var net = new SimNetwork(78);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        a.ReportsRoom = false;
        a.AcceptTransmit = false;
        int resetsBefore = Packets.TcpSent(a).Count(s => s.Has(TcpFlags.Rst));
        client.Abort();
        net.RunFor(TimeSpan.FromMilliseconds(20));
        Assert.Equal(resetsBefore, Packets.TcpSent(a).Count(s => s.Has(TcpFlags.Rst)));
        Assert.Equal(1, a.S.Counters.FramesDeferred);
        Assert.Equal(0, a.S.Counters.Drops(DropReason.TransmitQueueFull));

        a.ReportsRoom = null;
        a.AcceptTransmit = true;
        net.RunUntil(() => server.State == TcpState.Closed, Limit, "the peer to take the deferred RST");
        Assert.Equal(resetsBefore + 1, Packets.TcpSent(a).Count(s => s.Has(TcpFlags.Rst)));
        Assert.Equal(0, a.S.Counters.Drops(DropReason.TransmitQueueFull));
    }

    [Fact]
    public void ControlFramesBeyondTheDeferredLimit_AreDroppedAndCounted()
    {
        using var net = new SimNetwork(79);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        var pairs = new List<TcpConnection>();
        for (int i = 0; i < NetworkStack.DeferredFrames + 4; i++)
        {
            (TcpConnection c, _) = TcpHandshakeTests.Connect(net, a, b, (ushort)(100 + i));
            pairs.Add(c);
        }

        a.ReportsRoom = false;
        a.AcceptTransmit = false;
        foreach (TcpConnection c in pairs)
        {
            c.Abort();
        }

        Assert.Equal(NetworkStack.DeferredFrames, a.S.Counters.FramesDeferred);
        Assert.Equal(4, a.S.Counters.Drops(DropReason.TransmitQueueFull));
    }

    /// <summary>Reads <paramref name="connection"/> into <paramref name="into"/> until <paramref name="length"/> bytes or EOF.</summary>
    private static Task ReadInto(SimNetwork net, TcpConnection connection, MemoryStream into, int length) => net.Spawn(async () =>
    {
        var buffer = new byte[8192];
        while (into.Length < length)
        {
            int n = await connection.ReadAsync(buffer);
            if (n == 0)
            {
                break;
            }

            into.Write(buffer, 0, n);
        }
    });

    // Room again: the writer finishes and the reader gets exactly what was written.
    private static void OpenTheLink_ThenTheHeldDataArrives(SimNetwork net, SimPort a, Task writing, Task reading, MemoryStream received, byte[] data)
    {
        a.ReportsRoom = null;
        a.AcceptTransmit = true;
        net.Await(writing, Limit);
        net.RunUntil(() => received.Length == data.Length, Limit, "the held data to arrive");
        net.Await(reading, Limit);
        Assert.True(data.AsSpan().SequenceEqual(received.ToArray()), "the data arrived different");
    }
}
