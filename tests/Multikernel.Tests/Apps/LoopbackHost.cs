using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;

namespace Multikernel.Tests.Apps;

/// <summary>
/// A minimal loopback TCP host for the engines: 127.0.0.1, an ephemeral port, one bounded pipe
/// per direction per connection pumped to and from the socket (the same shape the library-OS
/// stack's pipe adapters give the engines). For tests and manual use only.
/// </summary>
public sealed class LoopbackHost : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly Func<IDuplexPipe, CancellationToken, Task> _serve;
    private readonly long _inputBytes;
    private readonly long _outputBytes;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentDictionary<Socket, Task> _connections = new();
    private readonly Task _acceptLoop;

    private LoopbackHost(Func<IDuplexPipe, CancellationToken, Task> serve, long inputBytes, long outputBytes)
    {
        _serve = serve;
        _inputBytes = inputBytes;
        _outputBytes = outputBytes;
        _listener = new TcpListener(IPAddress.Loopback, 0);
        _listener.Start(512);
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _acceptLoop = Task.Run(AcceptLoopAsync);
    }

    public int Port { get; }

    /// <summary>Starts serving: <paramref name="serve"/> runs once per accepted connection.</summary>
    public static LoopbackHost Start(Func<IDuplexPipe, CancellationToken, Task> serve, long inputBytes, long outputBytes = 256 * 1024) =>
        new(serve, inputBytes, outputBytes);

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await _listener.AcceptSocketAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            socket.NoDelay = true;
            _connections[socket] = Task.Run(() => RunConnectionAsync(socket));
        }
    }

    private async Task RunConnectionAsync(Socket socket)
    {
        var input = new Pipe(new PipeOptions(pauseWriterThreshold: _inputBytes, resumeWriterThreshold: _inputBytes / 2));
        var output = new Pipe(new PipeOptions(pauseWriterThreshold: _outputBytes, resumeWriterThreshold: _outputBytes / 2));
        var transport = new Duplex(input.Reader, output.Writer);
        Task receive = ReceiveAsync(socket, input.Writer);
        Task send = SendAsync(socket, output.Reader);
        try
        {
            await _serve(transport, _stop.Token);
            await send.WaitAsync(TimeSpan.FromSeconds(30));
        }
        catch (Exception e) when (e is TimeoutException or OperationCanceledException or SocketException or IOException)
        {
            // The connection ends either way.
        }
        finally
        {
            try
            {
                socket.Shutdown(SocketShutdown.Send);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
            }

            // Let the peer's FIN arrive so unread input does not turn the close into a reset.
            await Task.WhenAny(receive, Task.Delay(TimeSpan.FromSeconds(1)));
            socket.Dispose();
            _connections.TryRemove(socket, out _);
        }
    }

    private static async Task ReceiveAsync(Socket socket, PipeWriter writer)
    {
        try
        {
            while (true)
            {
                Memory<byte> memory = writer.GetMemory(16 * 1024);
                int n = await socket.ReceiveAsync(memory, SocketFlags.None);
                if (n == 0)
                {
                    break;
                }

                writer.Advance(n);
                FlushResult flushed = await writer.FlushAsync();
                if (flushed.IsCompleted)
                {
                    // The server stopped reading; drain the socket so the peer's close is seen.
                    byte[] sink = new byte[16 * 1024];
                    while (await socket.ReceiveAsync(sink, SocketFlags.None) > 0)
                    {
                    }

                    break;
                }
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or InvalidOperationException)
        {
        }
        finally
        {
            await writer.CompleteAsync();
        }
    }

    private static async Task SendAsync(Socket socket, PipeReader reader)
    {
        try
        {
            while (true)
            {
                ReadResult read = await reader.ReadAsync();
                foreach (ReadOnlyMemory<byte> segment in read.Buffer)
                {
                    int sent = 0;
                    while (sent < segment.Length)
                    {
                        sent += await socket.SendAsync(segment[sent..], SocketFlags.None);
                    }
                }

                reader.AdvanceTo(read.Buffer.End);
                if (read.IsCompleted)
                {
                    break;
                }
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }
        finally
        {
            await reader.CompleteAsync();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        await _acceptLoop.WaitAsync(TimeSpan.FromSeconds(10));
        foreach (Socket socket in _connections.Keys)
        {
            socket.Dispose();
        }

        await Task.WhenAll(_connections.Values).WaitAsync(TimeSpan.FromSeconds(10));
        _stop.Dispose();
    }

    private sealed class Duplex(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input => input;

        public PipeWriter Output => output;
    }
}
