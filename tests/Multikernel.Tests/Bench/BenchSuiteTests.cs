using System.Diagnostics;
using System.Text.Json;
using System.Xml.Linq;
using Multikernel.Tests.Netd.Drivers;

namespace Multikernel.Tests.Bench;

/// <summary>
/// Every scenario of the scalability suite, run as a user runs it (<c>multikernel bench X --quick</c>
/// in a real process): exit code 0, and well-formed CSV, JSON, SVG and PNG files that hold the rows
/// the scenario promises. Speed is not asserted; the shape of the report is.
/// </summary>
public sealed class BenchSuiteTests : IDisposable
{
    private readonly string _out = Path.Combine(Path.GetTempPath(), "mk-bench-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_out))
        {
            Directory.Delete(_out, recursive: true);
        }
    }

    [Fact]
    public async Task Updates_Quick_WritesEveryModeCoreCountAndLineCount()
    {
        string json = Path.Combine(_out, "extra", "u.json");
        var (code, stdout, stderr) = await RunAsync($"bench updates --quick --cores 1,2,3 --lines 1,4 --out \"{_out}\" --json \"{json}\"");
        Assert.True(code == 0, $"exit {code}: {stderr}");
        Assert.Contains("message/shared latency", stdout, StringComparison.Ordinal);

        JsonElement[] rows = CheckFiles("updates", ["mode", "cores", "lines", "ops_per_s", "ns_per_op", "oversubscribed"]);
        Assert.Equal(2 * 3 * 2, rows.Length);
        foreach (string mode in new[] { "shared", "message" })
        {
            foreach (int cores in new[] { 1, 2, 3 })
            {
                foreach (int lines in new[] { 1, 4 })
                {
                    JsonElement row = Assert.Single(rows, r => r.GetProperty("mode").GetString() == mode && r.GetProperty("cores").GetInt32() == cores && r.GetProperty("lines").GetInt32() == lines);
                    Assert.True(row.GetProperty("ops_per_s").GetDouble() > 0, $"{mode}/{cores}/{lines} made no progress");
                    Assert.Equal(cores > Environment.ProcessorCount, row.GetProperty("oversubscribed").GetBoolean());
                }
            }
        }

        Assert.Equal(File.ReadAllText(Path.Combine(_out, "updates.json")), File.ReadAllText(json));
    }

    [Fact]
    public async Task Urpc_Quick_WritesEveryVariant()
    {
        var (code, _, stderr) = await RunAsync($"bench urpc --quick --out \"{_out}\"");
        Assert.True(code == 0, $"exit {code}: {stderr}");
        JsonElement[] rows = CheckFiles("urpc", ["name", "rtt_ns", "msgs_per_s", "bytes_per_msg", "alloc_bytes_per_msg", "rtt_vs_floor", "msgs_vs_bounded_channel", "p90_ns", "batch", "runs", "pinned"]);
        string[] names = [.. rows.Select(r => r.GetProperty("name").GetString()!)];
        Assert.Subset(names.ToHashSet(), new HashSet<string> { "floor", "urpc", "urpc-batched", "bounded-channel", "unbounded-channel", "concurrent-queue", "urpc-wakeup" });
    }

    [Fact]
    public async Task Shootdown_WritesEveryProtocolAndCoreCount()
    {
        var (code, _, stderr) = await RunAsync($"bench shootdown --cores 1,3 --iterations 5 --out \"{_out}\"");
        Assert.True(code == 0, $"exit {code}: {stderr}");
        JsonElement[] rows = CheckFiles("shootdown", ["protocol", "cores", "latency_ns", "p90_ns", "iterations", "oversubscribed"]);
        Assert.Equal(6, rows.Length);
        foreach (string protocol in new[] { "unicast", "multicast", "shared-memory" })
        {
            Assert.Single(rows, r => r.GetProperty("protocol").GetString() == protocol && r.GetProperty("cores").GetInt32() == 3 && r.GetProperty("oversubscribed").GetBoolean() == (Environment.ProcessorCount < 3));
        }
    }

    [Fact]
    public async Task Scale_Quick_WritesEveryModeMixAndCoreCount_Oversubscribed()
    {
        string json = Path.Combine(_out, "extra", "s.json");
        int over = Environment.ProcessorCount + 1;
        var (code, stdout, stderr) = await RunAsync($"bench scale --quick --cores 1,{over} --keys 4096 --batch 8 --window 2 --out \"{_out}\" --json \"{json}\"");
        Assert.True(code == 0, $"exit {code}: {stderr}");
        Assert.Contains("scale: about", stderr, StringComparison.Ordinal);
        Assert.Contains("sharded/shared", stdout, StringComparison.Ordinal);
        Assert.Contains("oversubscribed", stdout, StringComparison.Ordinal);

        JsonElement[] rows = CheckFiles("scale", ScaleColumns);
        Assert.Equal(2 * 2 * 2, rows.Length);
        foreach (string mix in new[] { "read-heavy", "write-heavy" })
        {
            foreach (int cores in new[] { 1, over })
            {
                JsonElement sharded = Assert.Single(rows, r => r.GetProperty("mode").GetString() == "sharded" && r.GetProperty("mix").GetString() == mix && r.GetProperty("cores").GetInt32() == cores);
                JsonElement shared = Assert.Single(rows, r => r.GetProperty("mode").GetString() == "shared" && r.GetProperty("mix").GetString() == mix && r.GetProperty("cores").GetInt32() == cores);
                foreach (JsonElement row in new[] { sharded, shared })
                {
                    Assert.True(row.GetProperty("ops_per_s").GetDouble() > 0, $"{row} made no progress");
                    Assert.Equal(cores > Environment.ProcessorCount, row.GetProperty("oversubscribed").GetBoolean());
                    Assert.Equal(4096, row.GetProperty("keys").GetInt32());
                    Assert.True(row.GetProperty("cpus_used").GetDouble() > 0, $"{row} used no CPU");
                }

                Assert.Equal(8, sharded.GetProperty("batch").GetInt32());
                Assert.Equal(2, sharded.GetProperty("window").GetInt32());
                Assert.Equal(JsonValueKind.Null, shared.GetProperty("batch").ValueKind);
                double ratio = sharded.GetProperty("ops_per_s").GetDouble() / shared.GetProperty("ops_per_s").GetDouble();
                // The JSON rounds every figure to 3 decimals; the ratio is of the unrounded ones.
                Assert.True(Math.Abs(ratio - sharded.GetProperty("vs_shared").GetDouble()) <= 0.002 + (0.01 * ratio), $"vs_shared is not sharded/shared ({ratio}): {sharded}");
                if (cores == 1)
                {
                    Assert.Equal(1.0, sharded.GetProperty("scaling").GetDouble(), 3);
                }
            }
        }

        Assert.Equal(File.ReadAllText(Path.Combine(_out, "scale.json")), File.ReadAllText(json));
    }

    [Fact]
    public async Task All_Quick_RunsEveryScenarioIntoOneDirectory()
    {
        string json = Path.Combine(_out, "all.json");
        // net (root, real peers) has its own test above; here it would only add its half minute.
        var (code, stdout, stderr) = await RunAsync($"bench all --quick --skip net --out \"{_out}\" --json \"{json}\"", TimeSpan.FromMinutes(6));
        Assert.True(code == 0, $"exit {code}: {stderr}\n{stdout}");
        // The plan (with its duration) comes before the first scenario starts.
        int plan = stderr.IndexOf("bench all --quick:", StringComparison.Ordinal);
        Assert.True(plan >= 0 && plan < stderr.IndexOf("== bench ", StringComparison.Ordinal), stderr);
        Assert.Matches(@"bench all --quick: \d+ scenarios, about \d+ (s|min)", stderr);

        using JsonDocument combined = JsonDocument.Parse(File.ReadAllText(json));
        foreach ((string scenario, string[] columns) in Suite)
        {
            Assert.Matches($@"(?m)^{scenario} +[0-9.]+ s  ok$", stdout);
            JsonElement[] rows = CheckFiles(scenario, columns);
            Assert.Equal(rows.Length, combined.RootElement.GetProperty(scenario).GetArrayLength());
        }

        string[] timers = [.. CheckFiles("timers", Suite["timers"]).Select(r => r.GetProperty("name").GetString()!)];
        Assert.Equal(["core-timers", "system-timeprovider", "core-timers-clock-per-op", "null-itimer"], timers);
        Assert.Equal(3, CheckFiles("wakeup", Suite["wakeup"]).Length);
        Assert.Equal([1, 10, 100, 1000], CheckFiles("classify", Suite["classify"]).Select(r => r.GetProperty("filters").GetInt32()));
    }

    private static readonly string[] NetColumns = ["app", "cores", "peer", "metric", "ours", "theirs", "ours_vs_theirs", "ours_min", "ours_max", "theirs_min", "theirs_max", "runs"];

    [RootFact]
    public async Task Net_Quick_AsRoot_EveryRowHasOursAndTheirs_AndEverythingItMadeIsGone()
    {
        PrivilegedTests.RequirePrerequisites();
        string json = Path.Combine(_out, "extra", "n.json");
        var (code, stdout, stderr) = await RunAsync($"bench net --quick --out \"{_out}\" --json \"{json}\"", TimeSpan.FromMinutes(5));
        Assert.True(code == 0, $"exit {code}: {stderr}\n{stdout}");
        // The duration comes before the first measurement.
        Assert.Matches(@"^net: about \d+ s", stderr);

        JsonElement[] rows = CheckFiles("net", NetColumns);
        var expected = new List<(string App, string Peer, string Metric)>
        {
            ("echo", "linux-veth", "rtt_p50_us"), ("echo", "linux-veth", "bulk_gbit_s"), ("discard", "linux-veth", "bulk_gbit_s"),
            ("http", "nginx", "req_per_s"), ("http", "nginx", "p99_ms"), ("http", "kestrel", "req_per_s"), ("http", "kestrel", "p99_ms"),
        };
        // Garnet is restored from NuGet on first use: a failed restore skips that peer, and says so.
        bool garnet = !stderr.Contains("garnet peer skipped", StringComparison.Ordinal);
        foreach (string peer in garnet ? new[] { "redis", "garnet" } : ["redis"])
        {
            foreach (string metric in new[] { "set_per_s", "get_per_s", "set_per_s_p16", "get_per_s_p16", "p99_ms" })
            {
                expected.Add(("kv", peer, metric));
            }
        }

        // Every figure for each of our machine's default core counts (one kernel, then two).
        Assert.Equal(
            new[] { 1, 2 }.SelectMany(c => expected.Select(e => $"{c}/{e.App}/{e.Peer}/{e.Metric}")).Order(),
            rows.Select(r => $"{r.GetProperty("cores").GetInt32()}/{r.GetProperty("app").GetString()}/{r.GetProperty("peer").GetString()}/{r.GetProperty("metric").GetString()}").Order());

        // Our machine was stopped gracefully each time: every application reported its stack's counters.
        foreach (int cores in new[] { 1, 2 })
        {
            foreach (string app in new[] { "echo", "discard", "http", "kv" })
            {
                Assert.Contains($"net: ours ({cores} core{(cores == 1 ? "" : "s")}) {app}: ", stderr, StringComparison.Ordinal);
            }
        }
        foreach (JsonElement row in rows)
        {
            double ours = row.GetProperty("ours").GetDouble();
            double theirs = row.GetProperty("theirs").GetDouble();
            Assert.True(ours > 0 && theirs > 0, $"a row without both sides measured: {row}");
            bool latency = row.GetProperty("metric").GetString()!.EndsWith("_ms", StringComparison.Ordinal) || row.GetProperty("metric").GetString()!.EndsWith("_us", StringComparison.Ordinal);
            // ours and theirs are rounded to 3 decimals in the JSON, the ratio is of the unrounded figures.
            double ratio = latency ? theirs / ours : ours / theirs;
            Assert.True(Math.Abs(ratio - row.GetProperty("ours_vs_theirs").GetDouble()) <= 0.002 + (0.01 * ratio), $"ours_vs_theirs is not {(latency ? "theirs/ours" : "ours/theirs")}: {row}");
            Assert.Equal(1, row.GetProperty("runs").GetInt32());
        }

        Assert.Equal(File.ReadAllText(Path.Combine(_out, "net.json")), File.ReadAllText(json));

        // Its namespaces (and with them the veth pair, the TAP and every peer) are gone.
        (int exit, string namespaces) = PrivilegedTests.Run("ip", TimeSpan.FromSeconds(10), "netns", "list");
        Assert.Equal(0, exit);
        Assert.DoesNotContain("mkb-", namespaces, StringComparison.Ordinal);
    }

    [RootFact]
    public async Task Net_NotRoot_SaysWhatIsMissing_InOneLine_AndIsSkippedWithExitCode3()
    {
        PrivilegedTests.RequirePrerequisites();
        string? setpriv = PrivilegedTests.FindTool("setpriv");
        Assert.NotNull(setpriv);
        var start = new ProcessStartInfo(setpriv) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in (string[])["--reuid", "65534", "--regid", "65534", "--clear-groups", "--inh-caps=-all", "--", "env", "HOME=/tmp", "DOTNET_CLI_HOME=/tmp",
            PrivilegedTests.FindTool("dotnet") ?? "dotnet", Path.Combine(AppContext.BaseDirectory, "multikernel.dll"), "bench", "net", "--quick", "--out", Path.Combine(Path.GetTempPath(), "mk-bench-nobody")])
        {
            start.ArgumentList.Add(a);
        }

        using Process process = Process.Start(start)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        try
        {
            await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }

        Assert.Equal(3, process.ExitCode);
        string line = Assert.Single((await stderr).Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        Assert.StartsWith("multikernel: bench net skipped: it needs root (CAP_NET_ADMIN", line, StringComparison.Ordinal);
        Assert.Equal(string.Empty, (await stdout).Trim());
    }

    [Theory]
    [InlineData("bench updates --cores 0", "--cores must be a comma-separated list of numbers between 1 and 64")]
    [InlineData("bench updates --lines 2,x", "--lines must be a comma-separated list")]
    [InlineData("bench scale --cores 2,a", "--cores must be a comma-separated list of numbers between 1 and 64")]
    [InlineData("bench scale --window 0", "--window must be between 1 and 16")]
    [InlineData("bench scale --batch 5000", "--batch must be between 1 and 4096")]
    [InlineData("bench all --only scale,nosuch", "--only: no scenario 'nosuch'")]
    [InlineData("bench timers --rounds 0", "--rounds must be between 1 and 100000")]
    public async Task BadScenarioOptions_StopWithOneClearLine(string arguments, string expected)
    {
        var (code, _, stderr) = await RunAsync(arguments);
        Assert.Equal(2, code);
        Assert.Contains(expected, stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);
    }

    private static readonly string[] ScaleColumns = ["mode", "mix", "cores", "ops_per_s", "oversubscribed", "keys", "batch", "window", "scaling", "vs_shared", "cpus_used", "ops_per_cpu_s"];

    // Every scenario `bench all` must run, with the columns its rows carry.
    private static readonly Dictionary<string, string[]> Suite = new()
    {
        ["urpc"] = ["name", "rtt_ns", "msgs_per_s", "bytes_per_msg", "alloc_bytes_per_msg", "rtt_vs_floor", "msgs_vs_bounded_channel", "p90_ns", "batch", "runs", "pinned"],
        ["scale"] = ScaleColumns,
        ["updates"] = ["mode", "cores", "lines", "ops_per_s", "ns_per_op", "oversubscribed"],
        ["shootdown"] = ["protocol", "cores", "latency_ns", "p90_ns", "iterations", "oversubscribed"],
        ["classify"] = ["filters", "trie_ns", "naive_ns", "trie_nodes", "matched_fraction", "naive_vs_trie"],
        ["timers"] = ["name", "arms_per_s", "resets_per_s", "cancels_per_s", "alloc_bytes_per_op"],
        ["wakeup"] = ["name", "samples", "p50_us", "p99_us", "mean_us"],
        ["endpoint"] = ["name", "tracing", "rtt_ns", "msgs_per_s", "alloc_bytes_per_msg", "oversubscribed"],
        ["netd"] = ["size", "packets_per_s", "alloc_bytes_per_packet", "urpc_messages_per_s", "vs_urpc", "packets", "lost", "small_deliveries", "page_deliveries", "payload_copies", "netd_core_alloc_bytes_per_packet", "app_core_alloc_bytes_per_packet", "netd_core_parks_per_packet", "app_core_parks_per_packet", "no_buffer_drops", "queue_full_drops"],
    };

    /// <summary>Checks the four files of a scenario and returns its JSON rows.</summary>
    private JsonElement[] CheckFiles(string scenario, string[] columns)
    {
        string stem = Path.Combine(_out, scenario);
        using JsonDocument document = JsonDocument.Parse(File.ReadAllText(stem + ".json"));
        JsonElement[] rows = [.. document.RootElement.EnumerateArray().Select(e => e.Clone())];
        Assert.NotEmpty(rows);
        Assert.All(rows, r => Assert.All(columns, c => Assert.True(r.TryGetProperty(c, out _), $"{scenario}.json row lacks '{c}': {r}")));

        string[] csv = File.ReadAllLines(stem + ".csv");
        Assert.Equal(string.Join(',', columns), csv[0]);
        Assert.Equal(rows.Length, csv.Length - 1);
        Assert.All(csv.Skip(1), line => Assert.Equal(columns.Length, line.Split(',').Length));

        XDocument svg = XDocument.Load(stem + ".svg");
        Assert.Equal("svg", svg.Root!.Name.LocalName);
        byte[] png = File.ReadAllBytes(stem + ".png");
        Assert.True(png.Length > 1000, "the PNG is empty");
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, png[..4]);
        return rows;
    }

    private static Task<(int ExitCode, string Out, string Err)> RunAsync(string arguments, TimeSpan? timeout = null) =>
        Cli.CliProcess.RunAsync(arguments, timeout: timeout ?? TimeSpan.FromMinutes(3));
}
