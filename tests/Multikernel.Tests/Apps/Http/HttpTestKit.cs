using System.Globalization;
using System.Text;
using Multikernel.Apps.Http;

namespace Multikernel.Tests.Apps.Http;

/// <summary>One parsed response as the client saw it.</summary>
public sealed record HttpReply(int Status, string Reason, Dictionary<string, string> Headers, byte[] Body)
{
    public string Text => Encoding.UTF8.GetString(Body);

    public string? this[string header] => Headers.TryGetValue(header, out string? v) ? v : null;
}

public static class HttpWire
{
    /// <summary>Parses as many whole responses as <paramref name="data"/> holds (HEAD responses carry no body).</summary>
    public static List<HttpReply> Parse(byte[] data, int headCount = 0)
    {
        var replies = new List<HttpReply>();
        int pos = 0;
        while (pos < data.Length)
        {
            int end = IndexOf(data, "\r\n\r\n"u8, pos);
            if (end < 0)
            {
                break;
            }

            string[] lines = Encoding.ASCII.GetString(data, pos, end - pos).Split("\r\n");
            string[] status = lines[0].Split(' ', 3);
            Assert.Equal("HTTP/1.1", status[0]);
            var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
            foreach (string line in lines.Skip(1))
            {
                int colon = line.IndexOf(':', StringComparison.Ordinal);
                headers[line[..colon]] = line[(colon + 1)..].Trim();
            }

            int bodyStart = end + 4;
            long length = replies.Count < headCount ? 0 : long.Parse(headers["Content-Length"], CultureInfo.InvariantCulture);
            if (bodyStart + length > data.Length)
            {
                break;
            }

            replies.Add(new HttpReply(int.Parse(status[1], CultureInfo.InvariantCulture), status.Length > 2 ? status[2] : "", headers, data.AsSpan(bodyStart, (int)length).ToArray()));
            pos = bodyStart + (int)length;
        }

        return replies;
    }

    private static int IndexOf(byte[] data, ReadOnlySpan<byte> what, int from)
    {
        int i = data.AsSpan(from).IndexOf(what);
        return i < 0 ? -1 : from + i;
    }
}

/// <summary>An HTTP server on an in-memory connection.</summary>
public sealed class HttpHarness : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();

    public HttpHarness(HttpServer server, long serverOutputBytes = 64 * 1024)
    {
        Server = server;
        Connection = new PipeConnection(server.Options.RequiredInputBufferBytes, serverOutputBytes);
        Serving = Server.RunConnectionAsync(Connection.ServerSide, _stop.Token);
    }

    public HttpHarness(HttpOptions? options = null, TimeProvider? time = null, long serverOutputBytes = 64 * 1024)
        : this(new HttpServer(options ?? new HttpOptions(), time), serverOutputBytes)
    {
    }

    public HttpServer Server { get; }

    public PipeConnection Connection { get; }

    public Task Serving { get; }

    /// <summary>Sends <paramref name="raw"/> and waits for <paramref name="count"/> whole responses.</summary>
    public async Task<List<HttpReply>> ExchangeAsync(string raw, int count = 1, int headCount = 0)
    {
        await Connection.SendAsync(raw);
        byte[] got = await Connection.ReadUntilAsync(b => HttpWire.Parse(b, headCount).Count >= count);
        List<HttpReply> replies = HttpWire.Parse(got, headCount);
        Assert.True(replies.Count >= count, $"got {replies.Count} responses: {Encoding.ASCII.GetString(got)}");
        return replies;
    }

    public async Task<HttpReply> GetAsync(string target, string extraHeaders = "") =>
        (await ExchangeAsync($"GET {target} HTTP/1.1\r\nHost: test\r\n{extraHeaders}\r\n")).Single();

    public async ValueTask DisposeAsync()
    {
        await Connection.ClientOutput.CompleteAsync();
        await _stop.CancelAsync();
        await Serving.WaitAsync(PipeConnection.Patience);
        _stop.Dispose();
    }
}

/// <summary>A temporary site directory, removed afterwards.</summary>
public sealed class TempSite : IDisposable
{
    public TempSite()
    {
        Path = Directory.CreateTempSubdirectory("mk-http-").FullName;
        Root = System.IO.Path.Combine(Path, "root");
        Directory.CreateDirectory(Root);
    }

    /// <summary>The parent (outside the root), for files a traversal must not reach.</summary>
    public string Path { get; }

    public string Root { get; }

    public string Write(string relative, string content) => Write(relative, Encoding.UTF8.GetBytes(content));

    public string Write(string relative, byte[] content)
    {
        string full = System.IO.Path.Combine(Root, relative);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
        File.WriteAllBytes(full, content);
        return full;
    }

    public void Dispose() => Directory.Delete(Path, recursive: true);
}
