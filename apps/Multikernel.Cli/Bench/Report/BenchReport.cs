using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Multikernel.Cli.Bench.Report;

/// <summary>One column of a scenario's result table: its JSON/CSV name and how a row yields it.</summary>
/// <param name="Name">JSON property and CSV header, snake_case.</param>
/// <param name="Value">The cell: a string, a bool or a number (null for "not measured").</param>
internal sealed record BenchColumn<TRow>(string Name, Func<TRow, object?> Value);

/// <summary>What the plot of a scenario shows: x and y columns, one series per group key.</summary>
/// <param name="Title">Plot title.</param>
/// <param name="XLabel">X axis label.</param>
/// <param name="YLabel">Y axis label.</param>
/// <param name="X">X value of a row.</param>
/// <param name="Y">Y value of a row (NaN rows are left out).</param>
/// <param name="Series">Series a row belongs to (its legend text).</param>
/// <param name="LogY">Plot Y on a log10 scale (latencies spanning decades).</param>
/// <param name="Bars">One bar per row, labelled by its series (variants side by side) instead of lines over X.</param>
/// <param name="LogX">Plot X on a log10 scale (filter counts 1, 10, 100, 1000).</param>
/// <param name="MarkOversubscribed">X is a core or thread count: label the counts above this machine's CPUs "oversubscribed" and draw a line at the CPU count.</param>
/// <param name="BarMetrics">With <paramref name="Bars"/>: a group of bars per row, one per metric (its legend text and value), instead of one bar of <paramref name="Y"/>.</param>
internal sealed record BenchPlot<TRow>(
    string Title,
    string XLabel,
    string YLabel,
    Func<TRow, double> X,
    Func<TRow, double> Y,
    Func<TRow, string> Series,
    bool LogY = false,
    bool Bars = false,
    bool LogX = false,
    bool MarkOversubscribed = false,
    IReadOnlyList<(string Name, Func<TRow, double> Value)>? BarMetrics = null);

/// <summary>
/// Writes one scenario's rows as CSV, JSON and a plot (SVG and PNG) under an output directory:
/// <c>DIR/SCENARIO.csv</c>, <c>DIR/SCENARIO.json</c>, <c>DIR/SCENARIO.svg</c>, <c>DIR/SCENARIO.png</c>.
/// Every scenario of <c>multikernel bench</c> reports through this one writer, so the files of
/// all scenarios have the same shape and a test can check them all the same way.
/// </summary>
internal static class BenchReport
{
    /// <summary>Default output directory.</summary>
    public const string DefaultDirectory = "bench-results";

    /// <summary>Writes the four files and returns their paths.</summary>
    public static IReadOnlyList<string> Write<TRow>(string directory, string scenario, IReadOnlyList<TRow> rows, IReadOnlyList<BenchColumn<TRow>> columns, BenchPlot<TRow>? plot) =>
        Write(directory, scenario, rows, columns, rows, plot);

    /// <summary>As <see cref="Write{TRow}(string, string, IReadOnlyList{TRow}, IReadOnlyList{BenchColumn{TRow}}, BenchPlot{TRow}?)"/>, plotting points derived from the rows (two lines from one row, say).</summary>
    public static IReadOnlyList<string> Write<TRow, TPoint>(string directory, string scenario, IReadOnlyList<TRow> rows, IReadOnlyList<BenchColumn<TRow>> columns, IReadOnlyList<TPoint> points, BenchPlot<TPoint>? plot)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        Directory.CreateDirectory(directory);
        string basePath = Path.Combine(directory, scenario);
        var written = new List<string>();

        File.WriteAllText(basePath + ".csv", ToCsv(rows, columns));
        written.Add(basePath + ".csv");
        File.WriteAllText(basePath + ".json", ToJson(rows, columns));
        written.Add(basePath + ".json");
        if (plot is not null)
        {
            written.AddRange(Plotting.Save(basePath, points, plot));
        }

        return written;
    }

    /// <summary>Writes only the JSON array (the <c>--json FILE</c> option).</summary>
    public static void WriteJson<TRow>(string path, IReadOnlyList<TRow> rows, IReadOnlyList<BenchColumn<TRow>> columns)
    {
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null)
        {
            Directory.CreateDirectory(dir);
        }

        File.WriteAllText(path, ToJson(rows, columns));
    }

    public static string ToCsv<TRow>(IReadOnlyList<TRow> rows, IReadOnlyList<BenchColumn<TRow>> columns)
    {
        var text = new StringBuilder();
        text.AppendJoin(',', columns.Select(c => c.Name)).Append('\n');
        foreach (TRow row in rows)
        {
            text.AppendJoin(',', columns.Select(c => CsvCell(c.Value(row)))).Append('\n');
        }

        return text.ToString();
    }

    public static string ToJson<TRow>(IReadOnlyList<TRow> rows, IReadOnlyList<BenchColumn<TRow>> columns)
    {
        var array = new JsonArray();
        foreach (TRow row in rows)
        {
            var o = new JsonObject();
            foreach (BenchColumn<TRow> c in columns)
            {
                o[c.Name] = JsonCell(c.Value(row));
            }

            array.Add(o);
        }

        return array.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    private static JsonNode? JsonCell(object? value) => value switch
    {
        null => null,
        string s => JsonValue.Create(s),
        bool b => JsonValue.Create(b),
        int i => JsonValue.Create(i),
        long l => JsonValue.Create(l),
        double d when !double.IsFinite(d) => null, // JSON has no NaN: "not measured"
        double d => JsonValue.Create(Math.Round(d, 3)),
        _ => JsonValue.Create(Convert.ToString(value, CultureInfo.InvariantCulture)),
    };

    private static string CsvCell(object? value) => value switch
    {
        null => string.Empty,
        string s when s.Contains(',', StringComparison.Ordinal) || s.Contains('"', StringComparison.Ordinal) => "\"" + s.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"",
        string s => s,
        bool b => b ? "true" : "false",
        double d when !double.IsFinite(d) => string.Empty,
        double d => d.ToString("0.###", CultureInfo.InvariantCulture),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? string.Empty,
    };
}
