using System.Net.Sockets;
using Multikernel.Apps.Http;
using Multikernel.Apps.Kv;
using Multikernel.Apps.Kv.Store;
using Multikernel.Net;
using Multikernel.Net.Apps;
using Multikernel.Net.Tcp;
using TcpListener = Multikernel.Net.Tcp.TcpListener;

namespace Multikernel.Cli.Apps;

/// <summary>An application running on one domain's stack, on that domain's core.</summary>
internal interface INetworkApp
{
    /// <summary>Connections (or datagrams, for UDP echo) served to the end.</summary>
    long Served { get; }

    /// <summary>Serves until <paramref name="stop"/> or until its listener closes.</summary>
    Task RunAsync(CancellationToken stop);

    /// <summary>Stops taking new connections; open ones are left to the stack's shutdown (FIN, RST after the timeout).</summary>
    void StopAccepting();
}

/// <summary><c>echo</c>: TCP echo until the peer half-closes, then close; UDP echo (<see cref="EchoServer"/>).</summary>
internal sealed class EchoApp(NetworkStack stack, ushort port) : INetworkApp
{
    private readonly EchoServer _echo = new(stack, port);

    public long Served => _echo.Completed;

    // Ends when StopAccepting stops the server (the host always stops it before cancelling).
    public Task RunAsync(CancellationToken stop) => _echo.RunAsync();

    public void StopAccepting() => _echo.Stop();
}

/// <summary><c>discard</c>: TCP discard until the peer half-closes, then close; UDP datagrams dropped (<see cref="DiscardServer"/>, RFC 863).</summary>
internal sealed class DiscardApp(NetworkStack stack, ushort port) : INetworkApp
{
    private readonly DiscardServer _discard = new(stack, port);

    public long Served => _discard.Completed;

    // Ends when StopAccepting stops the server (the host always stops it before cancelling).
    public Task RunAsync(CancellationToken stop) => _discard.RunAsync();

    public void StopAccepting() => _discard.Stop();
}

/// <summary>
/// An accept loop that serves every connection as an <see cref="System.IO.Pipelines.IDuplexPipe"/>
/// (the stack's pipe adapter) with a protocol engine; the engine completes both halves, which closes the connection.
/// </summary>
internal abstract class PipeApp(NetworkStack stack, ushort port) : INetworkApp
{
    private readonly TcpListener _listener = stack.Listen(port);
    private long _served;

    public long Served => _served;

    /// <summary>The unconsumed input the engine needs buffered (its largest request head or command).</summary>
    protected abstract int MinimumReadSize { get; }

    protected abstract Task ServeAsync(TcpPipe pipe, CancellationToken stop);

    public virtual async Task RunAsync(CancellationToken stop)
    {
        var connections = new List<Task>();
        while (!stop.IsCancellationRequested)
        {
            TcpConnection connection;
            try
            {
                connection = await _listener.AcceptAsync(stop);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                break;
            }

            connections.RemoveAll(static t => t.IsCompleted);
            connections.Add(ServeOneAsync(connection, stop));
        }

        await Task.WhenAll(connections);
    }

    private async Task ServeOneAsync(TcpConnection connection, CancellationToken stop)
    {
        // Request/response protocols: a reply written in pieces (head, then body) must not wait
        // for the peer's delayed ACK (Nagle against delayed ACK costs tens of milliseconds).
        connection.NoDelay = true;
        try
        {
            await ServeAsync(connection.AsPipe(MinimumReadSize), stop);
            _served++;
        }
        finally
        {
            connection.Close();
        }
    }

    public void StopAccepting() => _listener.Dispose();
}

/// <summary><c>http</c>: <see cref="HttpServer"/> over the stack's pipe adapter (static files from <c>--http-root</c> or the built-in site).</summary>
internal sealed class HttpApp(NetworkStack stack, ushort port, string? root, TimeProvider time) : PipeApp(stack, port)
{
    private readonly HttpServer _server = new(new HttpOptions { Root = root }, time);

    protected override int MinimumReadSize => 16 * 1024;

    protected override Task ServeAsync(TcpPipe pipe, CancellationToken stop) => _server.RunConnectionAsync(pipe, stop);
}

/// <summary>
/// <c>kv</c>: <see cref="KvServer"/> (RESP2) over the stack's pipe adapter. The keys live in the
/// machine's one <see cref="KvStore"/> — a shard per core, expiry swept by each shard on its own
/// core — which every kv application shares: a key set through a connection on one core is read
/// through a connection on any other. The server is this domain's: its router runs the local
/// shard inline and forwards the rest over the rings.
/// </summary>
internal sealed class KvApp(NetworkStack stack, ushort port, KvServer server) : PipeApp(stack, port)
{
    public KvServer Server => server;

    protected override int MinimumReadSize => 16 * 1024;

    protected override Task ServeAsync(TcpPipe pipe, CancellationToken stop) => server.RunConnectionAsync(pipe, stop);
}
