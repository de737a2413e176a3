using System.Text.Json;
using System.Xml.Linq;

namespace Multikernel.Tests.Netd.Bench;

/// <summary>
/// <c>multikernel bench netd --quick</c> run as a user runs it: exit 0, the shared report's four
/// files with the promised columns, one row per frame size, the same run's raw channel rate on
/// every row, and 64-byte frames delivered into small buffers, 1500-byte frames into pages.
/// Speed is not asserted.
/// </summary>
public sealed class NetdBenchTests : IDisposable
{
    private static readonly string[] Columns =
    [
        "size", "packets_per_s", "alloc_bytes_per_packet", "urpc_messages_per_s", "vs_urpc", "packets", "lost",
        "small_deliveries", "page_deliveries", "payload_copies", "netd_core_alloc_bytes_per_packet", "app_core_alloc_bytes_per_packet",
        "netd_core_parks_per_packet", "app_core_parks_per_packet", "no_buffer_drops", "queue_full_drops",
    ];

    private readonly string _out = Path.Combine(Path.GetTempPath(), "mk-bench-netd-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_out))
        {
            Directory.Delete(_out, recursive: true);
        }
    }

    [Fact]
    public async Task BenchNetd_Quick_WritesBothSizes_WithTheSameRunsRawChannelRate()
    {
        string json = Path.Combine(_out, "extra", "n.json");
        var (code, stdout, stderr) = await Multikernel.Tests.Cli.CliProcess.RunAsync($"bench netd --quick --out \"{_out}\" --json \"{json}\"", timeout: TimeSpan.FromMinutes(3));
        Assert.True(code == 0, $"exit {code}: {stderr}");
        Assert.Contains("raw channel one-way", stdout, StringComparison.Ordinal);

        string stem = Path.Combine(_out, "netd");
        using JsonDocument document = JsonDocument.Parse(File.ReadAllText(stem + ".json"));
        JsonElement[] rows = [.. document.RootElement.EnumerateArray().Select(e => e.Clone())];
        Assert.Equal([64, 1500], rows.Select(r => r.GetProperty("size").GetInt32()));
        Assert.All(rows, r => Assert.All(Columns, c => Assert.True(r.TryGetProperty(c, out _), $"netd.json row lacks '{c}': {r}")));
        double urpc = rows[0].GetProperty("urpc_messages_per_s").GetDouble();
        Assert.True(urpc > 0, "the raw channel made no progress");
        foreach (JsonElement row in rows)
        {
            Assert.Equal(urpc, row.GetProperty("urpc_messages_per_s").GetDouble());
            Assert.True(row.GetProperty("packets_per_s").GetDouble() > 0, $"no packet came back: {row}");
            Assert.True(row.GetProperty("packets").GetInt64() > 0);
        }

        Assert.True(rows[0].GetProperty("small_deliveries").GetInt64() > 0, "64-byte frames go into small buffers");
        Assert.Equal(0, rows[1].GetProperty("small_deliveries").GetInt64());
        Assert.True(rows[1].GetProperty("page_deliveries").GetInt64() > 0, "1500-byte frames go into pages");

        string[] csv = File.ReadAllLines(stem + ".csv");
        Assert.Equal(string.Join(',', Columns), csv[0]);
        Assert.Equal(rows.Length, csv.Length - 1);
        Assert.Equal("svg", XDocument.Load(stem + ".svg").Root!.Name.LocalName);
        byte[] png = File.ReadAllBytes(stem + ".png");
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, png[..4]);
        Assert.Equal(File.ReadAllText(stem + ".json"), File.ReadAllText(json));
    }
}
