using Multikernel.Net.Tcp;
using Multikernel.Net.Udp;
using TcpListener = Multikernel.Net.Tcp.TcpListener;

namespace Multikernel.Net.Apps;

/// <summary>
/// The echo application (RFC 862) over the socket API: on TCP it echoes every byte until the
/// peer half-closes, then closes its side; on UDP it returns every datagram to its sender.
/// Runs as ordinary async code on the stack's core; <see cref="Stop"/> ends it.
/// </summary>
public sealed class EchoServer : IDisposable
{
    private readonly NetworkStack _stack;
    private readonly TcpListener _listener;
    private readonly UdpSocket _udp;
    private readonly CancellationTokenSource _stop = new();
    private readonly int _bufferSize;
    private int _active;

    /// <summary>Listens on <paramref name="port"/> for TCP (with <paramref name="backlog"/>) and UDP.</summary>
    public EchoServer(NetworkStack stack, ushort port, int backlog = 128, int bufferSize = 16 * 1024)
    {
        ArgumentNullException.ThrowIfNull(stack);
        ArgumentOutOfRangeException.ThrowIfLessThan(bufferSize, 512);
        _stack = stack;
        _bufferSize = bufferSize;
        _listener = stack.Listen(port, backlog);
        _udp = stack.BindUdp(port);
    }

    /// <summary>Connections being echoed now.</summary>
    public int ActiveConnections => _active;

    /// <summary>Connections served to the end.</summary>
    public long Completed { get; private set; }

    /// <summary>Runs the TCP accept loop and the UDP loop until <see cref="Stop"/>.</summary>
    public Task RunAsync() => Task.WhenAll(AcceptLoopAsync(), UdpLoopAsync());

    private async Task AcceptLoopAsync()
    {
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

            _ = EchoAsync(connection);
        }
    }

    private async Task EchoAsync(TcpConnection connection)
    {
        _active++;
        // Each read is echoed at once: Nagle would hold its last partial segment until the peer's
        // (delayed) ACK for the rest, a 40 ms stall per read that halves nothing but throughput.
        connection.NoDelay = true;
        byte[] buffer = new byte[_bufferSize];
        try
        {
            int n;
            while ((n = await connection.ReadAsync(buffer, _stop.Token)) > 0)
            {
                await connection.WriteAsync(buffer.AsMemory(0, n), _stop.Token);
            }

            // The peer half-closed: everything is echoed, so close our side too.
            connection.Close();
            Completed++;
        }
        catch (Exception e) when (e is System.Net.Sockets.SocketException or OperationCanceledException or ObjectDisposedException or InvalidOperationException)
        {
            // Reset, timed out or stopped: the stack has already torn it down or will on close.
            connection.Close();
        }
        finally
        {
            _active--;
        }
    }

    private async Task UdpLoopAsync()
    {
        byte[] buffer = new byte[ushort.MaxValue];
        while (!_stop.IsCancellationRequested)
        {
            UdpReceiveResult r;
            try
            {
                r = await _udp.ReceiveAsync(buffer, _stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }

            _udp.TrySend(r.Remote, buffer.AsSpan(0, r.Length));
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
        _ = _stack;
    }
}
