using System.Globalization;

namespace Multikernel.Cli.Bench.Report;

/// <summary>Line and bar plots of a scenario's rows with ScottPlot, saved as SVG and PNG.</summary>
internal static class Plotting
{
    private const int Width = 900;
    private const int Height = 560;

    public static IReadOnlyList<string> Save<TRow>(string basePath, IReadOnlyList<TRow> rows, BenchPlot<TRow> plot)
    {
        var figure = new ScottPlot.Plot();
        figure.Title(plot.Title);
        if (plot.Bars)
        {
            return plot.BarMetrics is { Count: > 0 } metrics ? SaveGroupedBars(basePath, rows, plot, metrics, figure) : SaveBars(basePath, rows, plot, figure);
        }

        figure.XLabel(plot.LogX ? plot.XLabel + " (log10)" : plot.XLabel);
        figure.YLabel(plot.LogY ? plot.YLabel + " (log10)" : plot.YLabel);
        foreach (IGrouping<string, TRow> series in rows.GroupBy(plot.Series))
        {
            var points = series
                .Select(r => (X: plot.X(r), Y: plot.Y(r)))
                .Where(p => double.IsFinite(p.X) && double.IsFinite(p.Y) && (!plot.LogY || p.Y > 0) && (!plot.LogX || p.X > 0))
                .OrderBy(p => p.X)
                .ToArray();
            if (points.Length == 0)
            {
                continue;
            }

            double[] xs = [.. points.Select(p => plot.LogX ? Math.Log10(p.X) : p.X)];
            double[] ys = [.. points.Select(p => plot.LogY ? Math.Log10(p.Y) : p.Y)];
            ScottPlot.Plottables.Scatter line = figure.Add.Scatter(xs, ys);
            line.LegendText = series.Key;
            line.LineWidth = 2;
            line.MarkerSize = 7;
        }

        // Ticks at the measured x values (core counts, filter counts), not at fractions between
        // them; counts above the CPUs say they are oversubscribed.
        double[] xsAll = [.. rows.Select(plot.X).Where(x => double.IsFinite(x) && (!plot.LogX || x > 0)).Distinct().Order()];
        if (xsAll.Length > 0)
        {
            int cpus = Environment.ProcessorCount;
            string[] labels = [.. xsAll.Select(x => x.ToString("0.##", CultureInfo.InvariantCulture) + (plot.MarkOversubscribed && x > cpus ? "\n(oversubscribed)" : string.Empty))];
            figure.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual([.. xsAll.Select(x => plot.LogX ? Math.Log10(x) : x)], labels);
            if (plot.MarkOversubscribed && xsAll[^1] > cpus)
            {
                ScottPlot.Plottables.VerticalLine edge = figure.Add.VerticalLine(plot.LogX ? Math.Log10(cpus) : cpus);
                edge.LinePattern = ScottPlot.LinePattern.Dashed;
                edge.LineWidth = 1;
                edge.LegendText = string.Create(CultureInfo.InvariantCulture, $"{cpus} CPUs (oversubscribed beyond)");
            }
        }

        if (plot.LogY)
        {
            // Label ticks with the real values, not their logarithms.
            var ticks = new ScottPlot.TickGenerators.NumericAutomatic
            {
                LabelFormatter = y => FormatLog(y),
            };
            figure.Axes.Left.TickGenerator = ticks;
        }

        figure.ShowLegend(ScottPlot.Edge.Right);
        return SaveBoth(basePath, figure);
    }

    private static IReadOnlyList<string> SaveBars<TRow>(string basePath, IReadOnlyList<TRow> rows, BenchPlot<TRow> plot, ScottPlot.Plot figure)
    {
        figure.XLabel(plot.XLabel);
        figure.YLabel(plot.YLabel);
        var labels = new List<string>();
        var positions = new List<double>();
        foreach (TRow row in rows)
        {
            double y = plot.Y(row);
            if (!double.IsFinite(y))
            {
                continue;
            }

            double position = positions.Count;
            figure.Add.Bar(position, y);
            positions.Add(position);
            labels.Add(plot.Series(row));
        }

        SlantedLabels(figure, positions, labels);
        return SaveBoth(basePath, figure);
    }

    // One group per row (a variant), one bar per metric in each, coloured by metric.
    private static IReadOnlyList<string> SaveGroupedBars<TRow>(string basePath, IReadOnlyList<TRow> rows, BenchPlot<TRow> plot, IReadOnlyList<(string Name, Func<TRow, double> Value)> metrics, ScottPlot.Plot figure)
    {
        figure.XLabel(plot.XLabel);
        figure.YLabel(plot.YLabel);
        var palette = new ScottPlot.Palettes.Category10();
        var groups = new List<double>();
        var labels = new List<string>();
        var bars = new List<ScottPlot.Bar>();
        double width = 0.8 / metrics.Count;
        for (int r = 0; r < rows.Count; r++)
        {
            double center = r;
            groups.Add(center);
            labels.Add(plot.Series(rows[r]));
            for (int m = 0; m < metrics.Count; m++)
            {
                double y = metrics[m].Value(rows[r]);
                if (!double.IsFinite(y))
                {
                    continue;
                }

                bars.Add(new ScottPlot.Bar
                {
                    Position = center - 0.4 + (width * (m + 0.5)),
                    Value = y,
                    Size = width * 0.9,
                    FillColor = palette.GetColor(m),
                });
            }
        }

        figure.Add.Bars(bars);
        for (int m = 0; m < metrics.Count; m++)
        {
            figure.Legend.ManualItems.Add(new ScottPlot.LegendItem { LabelText = metrics[m].Name, FillColor = palette.GetColor(m) });
        }

        figure.ShowLegend(ScottPlot.Edge.Right);
        SlantedLabels(figure, groups, labels);
        return SaveBoth(basePath, figure);
    }

    private static void SlantedLabels(ScottPlot.Plot figure, List<double> positions, List<string> labels)
    {
        figure.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual([.. positions], [.. labels]);
        figure.Axes.Bottom.TickLabelStyle.Rotation = -35;
        figure.Axes.Bottom.TickLabelStyle.Alignment = ScottPlot.Alignment.UpperRight;
        figure.Axes.Bottom.MinimumSize = 130; // room for the slanted variant names
        figure.Axes.Margins(bottom: 0);
    }

    private static IReadOnlyList<string> SaveBoth(string basePath, ScottPlot.Plot figure)
    {
        string svg = basePath + ".svg";
        string png = basePath + ".png";
        figure.SaveSvg(svg, Width, Height);
        figure.SavePng(png, Width, Height);
        return [svg, png];
    }

    private static string FormatLog(double exponent)
    {
        double value = Math.Pow(10, exponent);
        return value switch
        {
            >= 1e9 => string.Create(CultureInfo.InvariantCulture, $"{value / 1e9:0.#}G"),
            >= 1e6 => string.Create(CultureInfo.InvariantCulture, $"{value / 1e6:0.#}M"),
            >= 1e3 => string.Create(CultureInfo.InvariantCulture, $"{value / 1e3:0.#}k"),
            >= 1 => string.Create(CultureInfo.InvariantCulture, $"{value:0.#}"),
            _ => string.Create(CultureInfo.InvariantCulture, $"{value:0.###}"),
        };
    }
}
