using Multikernel.Net;
using Multikernel.Net.Tcp;
using Multikernel.Net.Wire;

namespace Multikernel.Tests.Net;

public sealed class TcpZeroWindowTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);

    [Fact]
    public void ZeroWindow_TheAckOfADataSegmentAtRcvNxt_IsTaken_ItsDataDropped()
    {
        // RFC 9293 §3.10.7.4: with RCV.WND = 0 no segment is acceptable, "but special allowance
        // should be made to accept valid ACKs". A peer whose every segment carries data (here, one
        // byte at exactly RCV.NXT) must still be able to acknowledge what we sent, or a receiver
        // that waits on its own send before reading never opens its window again.
        using var net = new SimNetwork(90);
        SimPort a = net.AddHost(1, o => o.ReceiveBufferSize = 8192);
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        Task fill = net.Spawn(async () => await server.WriteAsync(new byte[20_000]));
        net.RunFor(TimeSpan.FromSeconds(2));
        Assert.Equal(8192, client.UnreadBytes); // a's window is shut: the application does not read

        // a sends 1000 bytes; b's acknowledgment of them is lost.
        net.Tap = (from, _) => from != b;
        Task write = net.Spawn(async () => await client.WriteAsync(new byte[1000]));
        net.RunFor(TimeSpan.FromMilliseconds(50));
        Assert.Equal(1000, client.BufferedToSend);
        Packets.Seg data = Packets.TcpSent(a).Last(s => s.Payload.Length == 1000);
        uint rcvNxt = Packets.TcpSent(a).Last().Ack;

        // b's next segment carries one byte at exactly a's RCV.NXT and acknowledges a's data.
        long outOfWindow = a.S.Counters.Drops(DropReason.TcpOutOfWindow);
        net.Inject(a, Packets.Tcp(b.Mac, a.Mac, b.Ip, a.Ip, data.DestinationPort, data.SourcePort, rcvNxt, data.Seq + 1000, TcpFlags.Ack | TcpFlags.Psh, 65535, default, [42]));
        net.RunFor(TimeSpan.FromMilliseconds(10));

        Assert.Equal(0, client.BufferedToSend); // the ACK was taken
        Assert.Equal(8192, client.UnreadBytes); // the byte was not
        Assert.Equal(outOfWindow + 1, a.S.Counters.Drops(DropReason.TcpOutOfWindow));
        Assert.Equal(TcpState.Established, client.State);

        // A data segment beside RCV.NXT under the zero window is still refused whole, ACK included.
        net.Spawn(async () => await client.WriteAsync(new byte[500]));
        net.RunFor(TimeSpan.FromMilliseconds(10));
        Packets.Seg more = Packets.TcpSent(a).Last(s => s.Payload.Length == 500);
        net.Inject(a, Packets.Tcp(b.Mac, a.Mac, b.Ip, a.Ip, more.DestinationPort, more.SourcePort, rcvNxt + 1, more.Seq + 500, TcpFlags.Ack, 65535, default, [43]));
        net.RunFor(TimeSpan.FromMilliseconds(10));
        Assert.Equal(500, client.BufferedToSend);
        _ = fill;
        _ = write;
    }
}
