using System.Security.Cryptography;
using System.Text;
using Multikernel.Apps.Http;
using Xunit.Abstractions;

namespace Multikernel.Tests.Apps.Http;

/// <summary>The HTTP engine over loopback TCP with the real curl and nc.</summary>
public sealed class HttpRealClientTests(ITestOutputHelper output) : IDisposable
{
    private static readonly TimeSpan ToolTimeout = TimeSpan.FromSeconds(120);
    private readonly TempSite _site = new();

    public void Dispose() => _site.Dispose();

    private LoopbackHost Start(HttpServer server) => LoopbackHost.Start((pipe, ct) => server.RunConnectionAsync(pipe, ct), server.Options.RequiredInputBufferBytes);

    private static string Url(LoopbackHost host, string path) => $"http://127.0.0.1:{host.Port}{path}";

    private static async Task<ExternalTools.Result> Curl(params string[] args)
    {
        ExternalTools.Result r = await ExternalTools.RunAsync("curl", ["-sS", "--max-time", "100", .. args], ToolTimeout);
        Assert.True(r.ExitCode == 0, $"curl exit {r.ExitCode}: {r.Stderr}");
        return r;
    }

    [ToolFact("curl")]
    public async Task Curl_SmallPages_Http10_Range_AndErrors()
    {
        var server = new HttpServer(new HttpOptions());
        await using LoopbackHost host = Start(server);
        Assert.Contains("<h1>Multikernel</h1>", (await Curl(Url(host, "/"))).Stdout, StringComparison.Ordinal);
        Assert.Equal("Hello from the multikernel.\n", (await Curl(Url(host, "/hello.txt"))).Stdout);

        ExternalTools.Result http10 = await Curl("--http1.0", "-i", Url(host, "/hello.txt"));
        Assert.Contains("Connection: close", http10.Stdout, StringComparison.Ordinal);
        Assert.EndsWith("Hello from the multikernel.\n", http10.Stdout, StringComparison.Ordinal);

        ExternalTools.Result range = await Curl("-i", "-r", "6-9", Url(host, "/hello.txt"));
        Assert.StartsWith("HTTP/1.1 206 Partial Content", range.Stdout, StringComparison.Ordinal);
        Assert.Contains("Content-Range: bytes 6-9/28", range.Stdout, StringComparison.Ordinal);
        Assert.EndsWith("\r\n\r\nfrom", range.Stdout, StringComparison.Ordinal);

        Assert.Equal("404", (await Curl("-o", "/dev/null", "-w", "%{http_code}", Url(host, "/missing"))).Stdout);
        Assert.Equal("405", (await Curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", Url(host, "/"))).Stdout);
        Assert.Equal("400", (await Curl("--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", Url(host, "/../etc/passwd"))).Stdout);

        // Several URLs on one curl reuse one keep-alive connection.
        ExternalTools.Result reuse = await Curl("-v", Url(host, "/hello.txt"), Url(host, "/hello.txt"), Url(host, "/style.css"));
        Assert.Contains("Re-using existing connection", reuse.Stderr, StringComparison.Ordinal);
        long before = server.Statistics.AcceptedConnections;
        await Curl(Url(host, "/hello.txt"), Url(host, "/style.css"), Url(host, "/favicon.svg"));
        Assert.Equal(before + 1, server.Statistics.AcceptedConnections);
    }

    [ToolFact("curl")]
    public async Task Curl_50MegabyteFile_ChecksumMatches()
    {
        byte[] data = new byte[50 << 20];
        new Random(50).NextBytes(data);
        _site.Write("big.bin", data);
        await using LoopbackHost host = Start(new HttpServer(new HttpOptions { Root = _site.Root }));
        string target = Path.Combine(_site.Path, "download.bin");
        ExternalTools.Result r = await Curl("-o", target, "-w", "%{http_code} %{size_download}", Url(host, "/big.bin"));
        Assert.Equal($"200 {data.Length}", r.Stdout);
        Assert.Equal(SHA256.HashData(data), SHA256.HashData(await File.ReadAllBytesAsync(target)));
    }

    [ToolFact("curl")]
    public async Task Curl_RateLimitedSlowReader_GetsTheWholeFile()
    {
        byte[] data = new byte[4 << 20];
        new Random(4).NextBytes(data);
        _site.Write("slow.bin", data);
        var server = new HttpServer(new HttpOptions { Root = _site.Root });
        await using LoopbackHost host = Start(server);
        string target = Path.Combine(_site.Path, "slow.bin");
        var started = DateTime.UtcNow;
        ExternalTools.Result r = await Curl("--limit-rate", "2M", "-o", target, "-w", "%{http_code}", Url(host, "/slow.bin"));
        output.WriteLine($"4 MiB at 2 MiB/s took {(DateTime.UtcNow - started).TotalSeconds:F1} s");
        Assert.Equal("200", r.Stdout);
        Assert.Equal(SHA256.HashData(data), SHA256.HashData(await File.ReadAllBytesAsync(target)));
        Assert.Equal(0, server.Statistics.SendTimeouts);
    }

    [ToolFact("nc")]
    public async Task Netcat_PipelinedRequests_AnsweredInOrder()
    {
        _site.Write("a.txt", "AAA");
        _site.Write("b.txt", "BBBB");
        await using LoopbackHost host = Start(new HttpServer(new HttpOptions { Root = _site.Root }));
        byte[] requests = Encoding.ASCII.GetBytes(
            "GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n" +
            "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n" +
            "HEAD /b.txt HTTP/1.1\r\nHost: x\r\n\r\n" +
            "GET /b.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        ExternalTools.Result r = await ExternalTools.RunAsync("nc", ["-N", "127.0.0.1", host.Port.ToString(System.Globalization.CultureInfo.InvariantCulture)], ToolTimeout, requests);
        output.WriteLine(r.Stdout);
        string[] statusLines = [.. System.Text.RegularExpressions.Regex.Matches(r.Stdout, "HTTP/1\\.1 [0-9]{3} [^\r]*").Select(m => m.Value)];
        Assert.Equal(["HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK"], statusLines);
        Assert.Contains("\r\n\r\nAAA", r.Stdout, StringComparison.Ordinal);
        Assert.EndsWith("\r\n\r\nBBBB", r.Stdout, StringComparison.Ordinal);
    }
}
