using System.Diagnostics;
using System.Security.Cryptography;
using Multikernel.Cli.Apps;
using Multikernel.Tests.Netd.Drivers;

namespace Multikernel.Tests.Apps;

/// <summary>
/// The applications (echo, http, kv) in their domains, each with its own stack, reached by the
/// Linux kernel's own stack and real tools through netd's TAP mode: a TAP device netd opens (so it
/// is deleted when netd stops) inside a network namespace each test creates and deletes, where the
/// clients run too (<see cref="TapRig"/>). As root only (skipped with the reason otherwise; with
/// CI=true they always run). Needs ping, nc (netcat-openbsd), curl, redis-cli and ss.
/// </summary>
public sealed class TapAppsTests
{
    private static readonly TimeSpan Tool = TimeSpan.FromSeconds(60);

    private static Task<TapRig> StartAsync() => TapRig.StartAsync("nc", "curl", "redis-cli", "ss");

    [RootFact]
    public async Task Ping_IsAnsweredByTheApplicationsStack_IncludingA3000BytePingThatNeedsReassembly()
    {
        await using TapRig rig = await StartAsync();
        foreach (int size in new[] { 56, 3000 })
        {
            (int exit, string output) = rig.Exec(Tool, "ping", "-c", "3", "-W", "2", "-s", size.ToString(System.Globalization.CultureInfo.InvariantCulture), rig.Echo);
            Assert.True(exit == 0, $"ping -s {size} {rig.Echo}: {output}");
            Assert.Contains("3 received", output, StringComparison.Ordinal);
        }
    }

    [RootFact]
    public async Task Nc_10MB_Echo_ByteExact_WithHalfClose_AndUdpEcho()
    {
        await using TapRig rig = await StartAsync();
        string input = Path.GetTempFileName();
        string output = Path.GetTempFileName();
        try
        {
            await File.WriteAllBytesAsync(input, RandomNumberGenerator.GetBytes(10 << 20));
            // -N: shut down the sending side at end of input (the half-close); nc then reads until the echo's FIN.
            (int exit, string text) = rig.Shell($"nc -N -w 30 {rig.Echo} 7 < {input} > {output}", Tool);
            Assert.True(exit == 0, $"nc: {text}");
            byte[] sent = await File.ReadAllBytesAsync(input);
            byte[] echoed = await File.ReadAllBytesAsync(output);
            Assert.True(sent.AsSpan().SequenceEqual(echoed), $"the 10 MB echo is not byte-exact ({echoed.Length} of {sent.Length} bytes back)");

            (exit, text) = rig.Shell($"echo datagram | nc -u -w 2 {rig.Echo} 7", Tool);
            Assert.Contains("datagram", text, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(input);
            File.Delete(output);
        }
    }

    [RootFact]
    public async Task Nc_20MB_IntoDiscard_IsTakenWhole_AndTheServerClosesAfterTheHalfClose()
    {
        await using TapRig rig = await StartAsync();
        long before = rig.Snapshot("discard").SegmentsReceived;
        // -N: half-close at the end of input; nc then waits for the server's FIN, which discard
        // sends only after reading everything, and prints nothing (discard answers nothing).
        (int exit, string text) = rig.Shell($"head -c {20 << 20} /dev/urandom | nc -N -w 30 {rig.Discard} 9 | wc -c", Tool);
        Assert.True(exit == 0, $"nc: {text}");
        Assert.Equal("0", text.Trim());
        await TestMachine.EventuallyAsync(() => rig.Snapshot("discard").Served >= 1, "discard to count the connection served");
        AppSnapshot after = rig.Snapshot("discard");
        // 20 MiB in 1448-byte segments, one ACK per receive burst: far fewer than one per two.
        long segments = after.SegmentsReceived - before;
        Assert.True(segments >= (20 << 20) / 1460, $"{segments} segments for 20 MiB");
        Assert.True(after.SegmentsSent < segments / 3, $"{after.SegmentsSent} segments sent for {segments} received");
    }

    [RootFact]
    public async Task Curl_GetsAPageAndA5MBFile_ChecksumMatches()
    {
        await using TapRig rig = await StartAsync();
        await File.WriteAllTextAsync(Path.Combine(rig.Root, "index.html"), "<h1>tap</h1>");
        byte[] blob = RandomNumberGenerator.GetBytes(5 << 20);
        await File.WriteAllBytesAsync(Path.Combine(rig.Root, "blob.bin"), blob);
        (int exit, string page) = rig.Exec(Tool, "curl", "-sS", "--max-time", "30", $"http://{rig.Http}/");
        Assert.True(exit == 0, page);
        Assert.Equal("<h1>tap</h1>", page);
        (exit, string sum) = rig.Shell($"curl -sS --max-time 60 http://{rig.Http}/blob.bin | sha256sum", Tool);
        Assert.True(exit == 0, sum);
        Assert.StartsWith(Convert.ToHexStringLower(SHA256.HashData(blob)), sum, StringComparison.Ordinal);
    }

    [RootFact]
    public async Task RedisCli_PingSetGet()
    {
        await using TapRig rig = await StartAsync();
        Assert.Equal("PONG", Cli(rig, "PING"));
        Assert.Equal("OK", Cli(rig, "SET", "greeting", "hello"));
        Assert.Equal("hello", Cli(rig, "GET", "greeting"));
    }

    private static string Cli(TapRig rig, params string[] command)
    {
        (int exit, string output) = rig.Exec(Tool, ["redis-cli", "-h", rig.Kv, "-p", "6379", .. command]);
        Assert.True(exit == 0, output);
        return output.Trim();
    }

    [RootFact]
    public async Task WhenTheMachineStops_LinuxHasNoEstablishedConnectionLeft()
    {
        TapRig rig = await StartAsync();
        Process? held = null;
        try
        {
            // A connection Linux holds open (nc with its input still open), then the machine stops.
            // (sleep keeps nc's input open without a terminal.)
            held = rig.Namespace.Start("bash", "-c", $"sleep 60 | nc {rig.Echo} 7");
            await TestMachine.EventuallyAsync(() => Established(rig).Length > 0, "nc's connection is established");
            await rig.StopAsync();
            string left = Established(rig);
            Assert.True(left.Length == 0, $"still established after the machine stopped: {left}");
        }
        finally
        {
            if (held is { HasExited: false })
            {
                held.Kill(entireProcessTree: true);
            }

            held?.Dispose();
            await rig.DisposeAsync();
        }
    }

    private static string Established(TapRig rig)
    {
        (_, string output) = rig.Exec(TimeSpan.FromSeconds(10), "ss", "-Htn", "state", "established", "dst", rig.Echo);
        return output.Trim();
    }
}
