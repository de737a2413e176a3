using System.Security.Cryptography;
using Multikernel.Tests.Netd.Drivers;

namespace Multikernel.Tests.Apps;

/// <summary>
/// The http application on our stack, reached over TAP by the clients people use, inside a
/// namespace the test creates (<see cref="TapRig"/>): HTTP/1.1 and 1.0, a range read, pipelined
/// requests over <c>nc</c>, a 50 MB file compared by checksum and a rate-limited slow reader. As
/// root (skipped with the reason otherwise; with CI=true they always run).
/// </summary>
public sealed class TapHttpTests
{
    private static readonly TimeSpan Tool = TimeSpan.FromSeconds(120);

    [RootFact]
    public async Task Curl_Http11_Http10_Range_404_AndPipelinedRequestsOverNc()
    {
        await using TapRig rig = await TapRig.StartAsync("curl", "nc");
        byte[] file = RandomNumberGenerator.GetBytes(64 * 1024);
        await File.WriteAllBytesAsync(Path.Combine(rig.Root, "data.bin"), file);
        await File.WriteAllTextAsync(Path.Combine(rig.Root, "a.txt"), "first");
        await File.WriteAllTextAsync(Path.Combine(rig.Root, "b.txt"), "second");
        string url = $"http://{rig.Http}";

        // HTTP/1.1: status and body.
        (int exit, string text) = rig.Exec(Tool, "curl", "-sS", "--max-time", "30", "-w", "\n%{http_code} %{http_version}", $"{url}/a.txt");
        Assert.True(exit == 0, text);
        Assert.Equal("first\n200 1.1", text);

        // HTTP/1.0: answered in terms a 1.0 client reads (a 1.1 status line, as RFC 9110 §6.2
        // prescribes and nginx does; a Content-Length, never chunked) and the connection closed.
        (exit, text) = rig.Exec(Tool, "curl", "-sS", "-0", "-i", "--max-time", "30", $"{url}/b.txt");
        Assert.True(exit == 0, text);
        Assert.StartsWith("HTTP/1.1 200", text, StringComparison.Ordinal);
        Assert.Contains("Content-Length: 6\r\n", text, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("chunked", text, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("Connection: close\r\n", text, StringComparison.OrdinalIgnoreCase);
        Assert.EndsWith("second", text, StringComparison.Ordinal);

        // A range: 206 and exactly those bytes.
        string part = Path.GetTempFileName();
        try
        {
            (exit, text) = rig.Exec(Tool, "curl", "-sS", "--max-time", "30", "-r", "1000-1999", "-o", part, "-w", "%{http_code}", $"{url}/data.bin");
            Assert.True(exit == 0, text);
            Assert.Equal("206", text);
            byte[] got = await File.ReadAllBytesAsync(part);
            Assert.True(file.AsSpan(1000, 1000).SequenceEqual(got), "the range's bytes differ from the file's");
        }
        finally
        {
            File.Delete(part);
        }

        // A missing file: 404, not a reset.
        (exit, text) = rig.Exec(Tool, "curl", "-sS", "--max-time", "30", "-o", "/dev/null", "-w", "%{http_code}", $"{url}/missing.txt");
        Assert.True(exit == 0, text);
        Assert.Equal("404", text);

        // Pipelining: two requests in one write, answered in order on one connection.
        (exit, text) = rig.Shell(
            $"printf 'GET /a.txt HTTP/1.1\\r\\nHost: t\\r\\n\\r\\nGET /b.txt HTTP/1.1\\r\\nHost: t\\r\\nConnection: close\\r\\n\\r\\n' | nc -w 10 {rig.Http} 80",
            Tool);
        Assert.True(exit == 0, text);
        int first = text.IndexOf("\r\n\r\nfirst", StringComparison.Ordinal);
        int second = text.IndexOf("\r\n\r\nsecond", StringComparison.Ordinal);
        Assert.True(first > 0 && second > first, $"the pipelined responses are missing or out of order: {text}");
        Assert.Equal(2, CountOf(text, "HTTP/1.1 200"));
    }

    [RootFact]
    public async Task Curl_A50MegabyteFile_ChecksumMatches_AndARateLimitedSlowReaderGetsTheWholeFile()
    {
        await using TapRig rig = await TapRig.StartAsync("curl", "sha256sum");
        byte[] big = RandomNumberGenerator.GetBytes(50 << 20);
        await File.WriteAllBytesAsync(Path.Combine(rig.Root, "big.bin"), big);
        byte[] small = RandomNumberGenerator.GetBytes(1 << 20);
        await File.WriteAllBytesAsync(Path.Combine(rig.Root, "small.bin"), small);

        (int exit, string sum) = rig.Shell($"set -o pipefail; curl -sS --max-time 110 http://{rig.Http}/big.bin | sha256sum", Tool);
        Assert.True(exit == 0, sum);
        Assert.StartsWith(Convert.ToHexStringLower(SHA256.HashData(big)), sum, StringComparison.Ordinal);

        // A reader that takes 256 KB/s: the server's bounded send buffer waits for it (about 4 s).
        (exit, sum) = rig.Shell($"set -o pipefail; curl -sS --max-time 60 --limit-rate 256k http://{rig.Http}/small.bin | sha256sum", Tool);
        Assert.True(exit == 0, sum);
        Assert.StartsWith(Convert.ToHexStringLower(SHA256.HashData(small)), sum, StringComparison.Ordinal);
    }

    private static int CountOf(string text, string what)
    {
        int count = 0;
        for (int at = text.IndexOf(what, StringComparison.Ordinal); at >= 0; at = text.IndexOf(what, at + what.Length, StringComparison.Ordinal))
        {
            count++;
        }

        return count;
    }
}
