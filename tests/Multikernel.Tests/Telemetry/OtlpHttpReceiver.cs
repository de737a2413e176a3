using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace Multikernel.Tests.Telemetry;

/// <summary>A tiny OTLP/HTTP receiver on loopback: records every POST body by path and answers 200 with an empty protobuf response.</summary>
internal sealed class OtlpHttpReceiver : IAsyncDisposable
{
    private readonly HttpListener _listener = new();
    private readonly Task _loop;
    private readonly ConcurrentQueue<(string Path, string? ContentType, byte[] Body)> _requests = new();
    private readonly SemaphoreSlim _arrived = new(0);

    public OtlpHttpReceiver()
    {
        // A free port: bind to 0, read it, release it for the HttpListener.
        using (var probe = new TcpListener(IPAddress.Loopback, 0))
        {
            probe.Start();
            Port = ((IPEndPoint)probe.LocalEndpoint).Port;
        }

        _listener.Prefixes.Add($"http://127.0.0.1:{Port}/");
        _listener.Start();
        _loop = Task.Run(Serve);
    }

    public int Port { get; }

    public Uri Endpoint => new($"http://127.0.0.1:{Port}");

    public IReadOnlyList<(string Path, string? ContentType, byte[] Body)> Requests => [.. _requests];

    /// <summary>Waits until a request to <paramref name="path"/> has arrived.</summary>
    public async Task<byte[]> WaitForAsync(string path, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        while (true)
        {
            foreach ((string p, _, byte[] body) in _requests)
            {
                if (p == path)
                {
                    return body;
                }
            }

            await _arrived.WaitAsync(cts.Token);
        }
    }

    private async Task Serve()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext context;
            try
            {
                context = await _listener.GetContextAsync();
            }
            catch (Exception ex) when (ex is HttpListenerException or ObjectDisposedException or InvalidOperationException)
            {
                return;
            }

            using var body = new MemoryStream();
            await context.Request.InputStream.CopyToAsync(body);
            _requests.Enqueue((context.Request.Url!.AbsolutePath, context.Request.ContentType, body.ToArray()));
            context.Response.StatusCode = 200;
            context.Response.ContentType = "application/x-protobuf";
            context.Response.ContentLength64 = 0;
            context.Response.Close();
            _arrived.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        _listener.Stop();
        _listener.Close();
        await _loop;
        _arrived.Dispose();
    }
}
