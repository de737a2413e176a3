using System.Text.Json;
using System.Xml.Linq;

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

    [Theory]
    [InlineData("bench updates --cores 0", "--cores must be a comma-separated list of numbers between 1 and 64")]
    [InlineData("bench updates --lines 2,x", "--lines must be a comma-separated list")]
    public async Task BadScenarioOptions_StopWithOneClearLine(string arguments, string expected)
    {
        var (code, _, stderr) = await RunAsync(arguments);
        Assert.Equal(2, code);
        Assert.Contains(expected, stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);
    }

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

    private static Task<(int ExitCode, string Out, string Err)> RunAsync(string arguments) =>
        Cli.CliProcess.RunAsync(arguments, timeout: TimeSpan.FromMinutes(3));
}
