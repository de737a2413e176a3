using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;
using Spectre.Console;

namespace Multikernel.Cli.Bench;

public static partial class UrpcBench
{
    /// <summary>URPC round trip at most this many times the shared-line floor.</summary>
    public const double RttVsFloorTarget = 1.5;

    /// <summary>URPC unbatched streaming at least this many times bounded-channel (async).</summary>
    public const double StreamVsBoundedTarget = 10;

    /// <summary>URPC unbatched streaming, messages per second.</summary>
    public const double UrpcStreamTarget = 30e6;

    /// <summary>URPC batched streaming, messages per second.</summary>
    public const double UrpcBatchedStreamTarget = 100e6;

    /// <summary>Above this many bytes per message a variant counts as allocating (one-off allocations amortised over millions of messages stay far below).</summary>
    public const double ZeroAllocationTolerance = 0.01;

    /// <summary>Judges the targets against one run's results.</summary>
    public static IReadOnlyList<UrpcBenchTarget> EvaluateTargets(IReadOnlyList<UrpcBenchResult> results)
    {
        ArgumentNullException.ThrowIfNull(results);
        UrpcBenchResult? urpc = results.FirstOrDefault(r => r.Name == Urpc);
        UrpcBenchResult? batched = results.FirstOrDefault(r => r.Name == UrpcBatched);
        UrpcBenchResult? wake = results.FirstOrDefault(r => r.Name == UrpcWakeup);
        var targets = new List<UrpcBenchTarget>
        {
            Judge($"urpc round trip <= {RttVsFloorTarget}x floor", urpc?.RttVsFloor, x => $"{x:0.00}x", x => x <= RttVsFloorTarget),
            Judge($"urpc streaming >= {StreamVsBoundedTarget}x bounded-channel (async)", urpc?.MsgsVsBoundedChannel, x => $"{x:0.0}x", x => x >= StreamVsBoundedTarget),
            Judge($"urpc streaming >= {UrpcStreamTarget / 1e6:0} M msgs/s", urpc?.MsgsPerSecond, x => $"{x / 1e6:0.0} M/s", x => x >= UrpcStreamTarget),
            Judge($"urpc-batched streaming >= {UrpcBatchedStreamTarget / 1e6:0} M msgs/s", batched?.MsgsPerSecond, x => $"{x / 1e6:0.0} M/s", x => x >= UrpcBatchedStreamTarget),
            Judge("urpc allocates 0 B/msg", urpc?.AllocatedBytesPerMessage, x => $"{x:0.###} B", x => x < ZeroAllocationTolerance),
            Judge("urpc-batched allocates 0 B/msg", batched?.AllocatedBytesPerMessage, x => $"{x:0.###} B", x => x < ZeroAllocationTolerance),
            new UrpcBenchTarget(
                "parked receiver wake-up (reported; 10-20 us expected)",
                wake?.RttNs is { } w ? string.Create(CultureInfo.InvariantCulture, $"{w / 1000:0.0} us median, {(wake.P90Ns ?? double.NaN) / 1000:0.0} us p90") : "not measured",
                wake?.RttNs is null ? "N/A" : "INFO"),
        };
        return targets;
    }

    /// <summary>
    /// The results as text: one table of figures (with ratios to the floor and to
    /// bounded-channel) and one of the targets marked PASS or MISS, plus how the run was made.
    /// </summary>
    public static string RenderTable(IReadOnlyList<UrpcBenchResult> results, int width = 132)
    {
        ArgumentNullException.ThrowIfNull(results);
        var figures = new Table().Border(TableBorder.Rounded).Title("URPC vs .NET channels, 64-byte messages");
        figures.AddColumn("variant");
        figures.AddColumn(new TableColumn("round trip ns").RightAligned());
        figures.AddColumn(new TableColumn("x floor").RightAligned());
        figures.AddColumn(new TableColumn("M msgs/s").RightAligned());
        figures.AddColumn(new TableColumn("x bounded").RightAligned());
        figures.AddColumn(new TableColumn("bytes/msg").RightAligned());
        figures.AddColumn(new TableColumn("alloc B/msg").RightAligned());
        foreach (UrpcBenchResult r in results)
        {
            string rtt = r.RttNs is { } ns ? F($"{ns:0}") : "-";
            if (r.Name == UrpcWakeup && r.P90Ns is { } p90)
            {
                rtt = F($"{r.RttNs:0} (p90 {p90:0})");
            }

            figures.AddRow(
                Cell(r.Name + (r.Batch is { } b ? F($" ({b})") : string.Empty)),
                Cell(rtt),
                Cell(r.RttVsFloor is { } xf ? F($"{xf:0.00}") : "-"),
                Cell(r.MsgsPerSecond is { } m ? F($"{m / 1e6:0.00}") : "-"),
                Cell(r.MsgsVsBoundedChannel is { } xb ? F($"{xb:0.00}") : "-"),
                Cell(F($"{r.BytesPerMessage}")),
                Cell(r.AllocatedBytesPerMessage is { } a ? F($"{a:0.###}") : "-"));
        }

        var targets = new Table().Border(TableBorder.Rounded).Title("Targets (ratios within this run)");
        targets.AddColumn("target");
        targets.AddColumn(new TableColumn("measured").RightAligned());
        targets.AddColumn("result");
        foreach (UrpcBenchTarget t in EvaluateTargets(results))
        {
            targets.AddRow(Cell(t.Target), Cell(t.Measured), Cell(t.Verdict));
        }

        using var writer = new StringWriter(CultureInfo.InvariantCulture);
        IAnsiConsole console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
            Out = new AnsiConsoleOutput(writer),
        });
        console.Profile.Width = width;
        console.Write(figures);
        console.Write(targets);
        UrpcBenchResult? any = results.FirstOrDefault();
        if (any is not null)
        {
            console.WriteLine(any.Pinned
                ? $"Two threads pinned to CPUs {any.Cpus}; medians of {any.Runs} interleaved passes."
                : $"Threads NOT pinned; medians of {any.Runs} interleaved passes.");
        }

        console.WriteLine("round trip: one message there and one back (urpc-batched: a whole batch; urpc-wakeup: write to parked receiver running).");
        console.WriteLine("M msgs/s: one-way streaming; unbounded queues are held to the ring's window so they measure the queue, not memory growth.");
        return writer.ToString();
    }

    /// <summary>Writes the results as a JSON array of objects {name, rtt_ns, msgs_per_s, bytes_per_msg, ...extras}.</summary>
    public static void WriteJson(IEnumerable<UrpcBenchResult> results, string path)
    {
        ArgumentNullException.ThrowIfNull(results);
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        string? directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (!string.IsNullOrEmpty(directory))
        {
            Directory.CreateDirectory(directory);
        }

        // Relaxed escaping so method texts read as written ('->', '+'); the file is data, never embedded in HTML.
        var context = new UrpcBenchJsonContext(new JsonSerializerOptions
        {
            WriteIndented = true,
            DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
            Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        });
        using FileStream file = File.Create(path);
        JsonSerializer.Serialize(file, results.ToList(), context.ListUrpcBenchResult);
    }

    private static UrpcBenchTarget Judge(string target, double? value, Func<double, string> format, Func<double, bool> pass) =>
        value is { } v
            ? new UrpcBenchTarget(target, format(v), pass(v) ? "PASS" : "MISS")
            : new UrpcBenchTarget(target, "not measured", "N/A");

    private static Text Cell(string text) => new(text);

    private static string F(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
