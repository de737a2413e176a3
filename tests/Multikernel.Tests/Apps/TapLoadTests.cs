using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Multikernel.Cli.Apps;
using Multikernel.Tests.Netd.Drivers;
using Xunit.Abstractions;

namespace Multikernel.Tests.Apps;

/// <summary>
/// Load from real Linux clients — <c>wrk</c>, <c>redis-benchmark</c>, a <c>hping3</c> SYN flood —
/// against the applications over TAP, inside a namespace the test creates and deletes
/// (<see cref="TapRig"/>). As root (skipped with the reason otherwise; with CI=true they always
/// run). Correctness under load is asserted (no socket errors, no non-2xx, no RESP errors, a real
/// client served during a flood, the SYN queue bounded); speed is not.
/// </summary>
public sealed partial class TapLoadTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Tool = TimeSpan.FromSeconds(90);

    [RootFact]
    public async Task Wrk_10s_OverKeepAlive_NoSocketErrors_NoNon2xx_AndTheServerCountedTheConnections()
    {
        await using TapRig rig = await TapRig.StartAsync("wrk");
        await File.WriteAllBytesAsync(Path.Combine(rig.Root, "page.html"), new byte[4096]);
        (int exit, string text) = rig.Exec(Tool, "wrk", "-t1", "-c8", "-d10s", "--latency", "--timeout", "5s", $"http://{rig.Http}/page.html");
        output.WriteLine(text);
        Assert.True(exit == 0, $"wrk failed: {text}");

        AppSnapshot http = rig.Snapshot("http");
        output.WriteLine($"http app: {http.SegmentsReceived} segments in, {http.SegmentsSent} out, {http.Retransmits} retransmitted; {http.Detail}");
        WrkSummary wrk = WrkSummary.Parse(text);
        Assert.True(wrk.Requests > 0, $"wrk made no request: {text}");
        Assert.True(wrk.SocketErrors is null, $"wrk saw socket errors ({wrk.SocketErrors}): {text}");
        Assert.True(wrk.Non2xx == 0, $"wrk saw {wrk.Non2xx} non-2xx/3xx responses: {text}");
        Assert.True(wrk.RequestsPerSecond > 0, text);

        // wrk's connections are served to the end once it closes them: the server saw all 8.
        await rig.StopAsync();
        Assert.True(rig.Snapshot("http").Served >= 8, $"the http app served {rig.Snapshot("http").Served} connections, wrk opened 8");
    }

    [RootFact]
    public async Task RedisBenchmark_PingSetGet_PlainAndPipelined16_NoErrors_EveryTestReportsARate()
    {
        await using TapRig rig = await TapRig.StartAsync("redis-benchmark", "redis-cli");
        foreach (string[] extra in new[] { Array.Empty<string>(), ["-P", "16"] })
        {
            (int exit, string text) = rig.Exec(Tool, ["redis-benchmark", "-h", rig.Kv, "-p", "6379", "-t", "ping,set,get", "-n", "2000", "-q", .. extra]);
            output.WriteLine(text);
            string what = $"redis-benchmark{(extra.Length > 0 ? " -P 16" : string.Empty)}";
            Assert.True(exit == 0, $"{what} failed: {text}");
            Assert.DoesNotMatch(ErrorWord(), text);

            Dictionary<string, double> rates = ParseRates(text);
            Assert.True(
                rates.Keys.Order().SequenceEqual(["GET", "PING_INLINE", "PING_MBULK", "SET"]),
                $"{what}: expected a rate for PING_INLINE, PING_MBULK, SET and GET, got {string.Join(", ", rates.Keys)}: {text}");
            Assert.All(rates, r => Assert.True(r.Value > 0, $"{what}: {r.Key} reports {r.Value} requests per second"));
        }

        // The SETs really stored: redis-benchmark's key (no -r) with its default 3-byte (random) value.
        (int cliExit, string value) = rig.Exec(Tool, "redis-cli", "-h", rig.Kv, "-p", "6379", "GET", "key:__rand_int__");
        Assert.True(cliExit == 0, value);
        Assert.Equal(3, value.TrimEnd('\n').Length);
    }

    [RootFact]
    public async Task SynFlood_FromTheTestsOwnSubnet_ARealClientStillGetsItsPage_AndTheSynQueueStaysBounded()
    {
        const int Backlog = 128; // TcpListener's default, which the http app uses
        const int Syns = 30_000;
        await using TapRig rig = await TapRig.StartAsync("hping3", "curl");
        await File.WriteAllTextAsync(Path.Combine(rig.Root, "index.html"), "<h1>flood</h1>");

        // A source address in the namespace's own subnet that no host owns: our SYN-ACKs go
        // nowhere and every half-open connection stays until it is evicted or times out.
        string spoofed = rig.Subnet + ".77";
        long segmentsBefore = rig.Snapshot("http").SegmentsReceived;
        using Process flood = rig.Namespace.Start("hping3", "-S", "-p", "80", "-a", spoofed, "-i", "u100", "-c", Syns.ToString(CultureInfo.InvariantCulture), "-q", rig.Http);
        Task<string> floodOut = flood.StandardOutput.ReadToEndAsync();
        Task<string> floodErr = flood.StandardError.ReadToEndAsync();
        int peak = 0;
        try
        {
            // The flood has filled the SYN queue before the real client tries.
            var filled = Stopwatch.StartNew();
            while (rig.Snapshot("http").Connections < Backlog && filled.Elapsed < TimeSpan.FromSeconds(10) && !flood.HasExited)
            {
                await Task.Delay(20);
            }

            peak = rig.Snapshot("http").Connections;
            Assert.True(peak >= Backlog / 2, $"the flood did not reach the listener (at most {peak} connections seen): {rig.Snapshot("http").Detail}");

            using var sampling = new CancellationTokenSource();
            Task sampler = Task.Run(async () =>
            {
                while (!sampling.IsCancellationRequested)
                {
                    peak = Math.Max(peak, rig.Snapshot("http").Connections);
                    await Task.Delay(10);
                }
            });
            (int exit, string page) = rig.Exec(Tool, "curl", "-sS", "--max-time", "20", $"http://{rig.Http}/");
            bool floodStillRunning = !flood.HasExited;
            await sampling.CancelAsync();
            await sampler;
            Assert.True(exit == 0, $"curl during the flood failed: {page}\n{rig.Snapshot("http").Detail}");
            Assert.Equal("<h1>flood</h1>", page);
            Assert.True(floodStillRunning, "the flood ended before the real client finished: the test did not test a client during a flood");
        }
        finally
        {
            if (!flood.HasExited)
            {
                flood.Kill(entireProcessTree: true);
            }

            await flood.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
        }

        output.WriteLine($"hping3: {await floodOut}{await floodErr}");
        AppSnapshot after = rig.Snapshot("http");
        output.WriteLine($"peak connections {peak}; segments received {after.SegmentsReceived - segmentsBefore}; {after.Detail}");
        Assert.True(after.SegmentsReceived - segmentsBefore >= Backlog * 4, $"only {after.SegmentsReceived - segmentsBefore} segments reached the http app's stack");
        // Half-open connections never exceed the SYN queue (the backlog); the real client's one connection may sit beside them.
        Assert.True(peak <= Backlog + 1, $"{peak} connections at once on a listener whose SYN queue holds {Backlog}: the flood was not bounded");

        // Healthy afterwards: a fresh client is served at once.
        (int again, string page2) = rig.Exec(Tool, "curl", "-sS", "--max-time", "10", $"http://{rig.Http}/");
        Assert.True(again == 0, page2);
        Assert.Equal("<h1>flood</h1>", page2);
    }

    // redis-benchmark -q writes "\r"-separated progress, then "NAME: RATE requests per second, p50=…" per test.
    private static Dictionary<string, double> ParseRates(string text)
    {
        var rates = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (string line in text.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            Match m = RateLine().Match(line);
            if (m.Success)
            {
                rates[m.Groups[1].Value] = double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture);
            }
        }

        return rates;
    }

    [GeneratedRegex(@"^([A-Z_]+): ([0-9.]+) requests per second")]
    private static partial Regex RateLine();

    [GeneratedRegex(@"(?i)\berr(or)?\b|\bERR ")]
    private static partial Regex ErrorWord();
}

/// <summary>What <c>wrk</c> printed: requests, rate, and the error lines it prints only when there were errors.</summary>
internal sealed partial record WrkSummary(long Requests, double RequestsPerSecond, string? SocketErrors, long Non2xx, double? P99Ms)
{
    public static WrkSummary Parse(string text)
    {
        Match requests = RequestsLine().Match(text);
        Match rate = RateLine().Match(text);
        Match errors = SocketErrorsLine().Match(text);
        Match non2xx = Non2xxLine().Match(text);
        Match p99 = P99Line().Match(text);
        return new WrkSummary(
            requests.Success ? long.Parse(requests.Groups[1].Value, CultureInfo.InvariantCulture) : 0,
            rate.Success ? double.Parse(rate.Groups[1].Value, CultureInfo.InvariantCulture) : 0,
            errors.Success ? errors.Groups[1].Value.Trim() : null,
            non2xx.Success ? long.Parse(non2xx.Groups[1].Value, CultureInfo.InvariantCulture) : 0,
            p99.Success ? ToMs(double.Parse(p99.Groups[1].Value, CultureInfo.InvariantCulture), p99.Groups[2].Value) : null);
    }

    private static double ToMs(double value, string unit) => unit switch
    {
        "us" => value / 1000,
        "ms" => value,
        "s" => value * 1000,
        "m" => value * 60_000,
        _ => double.NaN,
    };

    [GeneratedRegex(@"(\d+) requests in ")]
    private static partial Regex RequestsLine();

    [GeneratedRegex(@"Requests/sec:\s+([0-9.]+)")]
    private static partial Regex RateLine();

    [GeneratedRegex(@"Socket errors:([^\n]*)")]
    private static partial Regex SocketErrorsLine();

    [GeneratedRegex(@"Non-2xx or 3xx responses:\s+(\d+)")]
    private static partial Regex Non2xxLine();

    [GeneratedRegex(@"\s99%\s+([0-9.]+)(us|ms|s|m)\b")]
    private static partial Regex P99Line();
}
