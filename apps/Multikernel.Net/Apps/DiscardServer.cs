using Multikernel.Net.Tcp;
using Multikernel.Net.Udp;
using TcpListener = Multikernel.Net.Tcp.TcpListener;

namespace Multikernel.Net.Apps;

/// <summary>
/// The discard application (RFC 863) over the socket API: on TCP it reads and throws away every
/// byte until the peer half-closes, then closes its side (so the peer's read of end-of-stream
/// says everything it sent was received and acknowledged); on UDP it drops every datagram.
/// It is the one-direction sink a bulk-throughput client needs, the counterpart of
/// <c>iperf3 -s</c>: what it measures is the stack's receive path alone, where echo measures both
/// directions at once. Runs as ordinary async code on the stack's core; <see cref="Stop"/> ends it.
/// </summary>
public sealed class DiscardServer : IDisposable
{
    private readonly TcpListener _listener;
    private readonly UdpSocket _udp;
    private readonly CancellationTokenSource _stop = new();
    private readonly int _bufferSize;

    /// <summary>Listens on <paramref name="port"/> for TCP (with <paramref name="backlog"/>) and UDP.</summary>
    public DiscardServer(NetworkStack stack, ushort port, int backlog = 128, int bufferSize = 64 * 1024)
    {
        ArgumentNullException.ThrowIfNull(stack);
        ArgumentOutOfRangeException.ThrowIfLessThan(bufferSize, 512);
        _bufferSize = bufferSize;
        _listener = stack.Listen(port, backlog);
        _udp = stack.BindUdp(port);
    }

    /// <summary>Connections served to the end (the peer half-closed and we closed).</summary>
    public long Completed { get; private set; }

    /// <summary>Payload bytes received and discarded, TCP and UDP.</summary>
    public long BytesDiscarded { get; private set; }

    /// <summary>Runs the TCP accept loop and the UDP loop until <see cref="Stop"/>.</summary>
    public Task RunAsync() => Task.WhenAll(AcceptLoopAsync(), UdpLoopAsync());

    private async Task AcceptLoopAsync()
    {
        // One buffer for every connection: they all run on this core, one read at a time, and
        // nobody ever looks at what it holds.
        byte[] sink = new byte[_bufferSize];
        while (!_stop.IsCancellationRequested)
        {
            TcpConnection connection;
            try
            {
                connection = await _listener.AcceptAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }

            _ = DiscardAsync(connection, sink);
        }
    }

    private async Task DiscardAsync(TcpConnection connection, byte[] sink)
    {
        try
        {
            int n;
            while ((n = await connection.ReadAsync(sink, _stop.Token)) > 0)
            {
                BytesDiscarded += n;
            }

            connection.Close();
            Completed++;
        }
        catch (Exception e) when (e is System.Net.Sockets.SocketException or OperationCanceledException or ObjectDisposedException or InvalidOperationException)
        {
            connection.Close();
        }
    }

    private async Task UdpLoopAsync()
    {
        byte[] buffer = new byte[ushort.MaxValue];
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                UdpReceiveResult r = await _udp.ReceiveAsync(buffer, _stop.Token);
                BytesDiscarded += r.Length;
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
        }
    }

    /// <summary>Stops accepting and receiving (call on the stack's thread). Open connections are left to <see cref="NetworkStack.ShutdownAsync"/>.</summary>
    public void Stop()
    {
        _stop.Cancel();
        _listener.Dispose();
        _udp.Dispose();
    }

    public void Dispose()
    {
        Stop();
        _stop.Dispose();
    }
}
