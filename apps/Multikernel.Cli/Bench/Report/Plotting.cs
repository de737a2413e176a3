namespace Multikernel.Cli.Bench.Report;

/// <summary>Line plots of a scenario's rows with ScottPlot, saved as SVG and PNG.</summary>
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
            return SaveBars(basePath, rows, plot, figure);
        }

        figure.XLabel(plot.XLabel);
        figure.YLabel(plot.LogY ? plot.YLabel + " (log10)" : plot.YLabel);
        foreach (IGrouping<string, TRow> series in rows.GroupBy(plot.Series))
        {
            var points = series
                .Select(r => (X: plot.X(r), Y: plot.Y(r)))
                .Where(p => double.IsFinite(p.X) && double.IsFinite(p.Y) && (!plot.LogY || p.Y > 0))
                .OrderBy(p => p.X)
                .ToArray();
            if (points.Length == 0)
            {
                continue;
            }

            double[] xs = [.. points.Select(p => p.X)];
            double[] ys = [.. points.Select(p => plot.LogY ? Math.Log10(p.Y) : p.Y)];
            ScottPlot.Plottables.Scatter line = figure.Add.Scatter(xs, ys);
            line.LegendText = series.Key;
            line.LineWidth = 2;
            line.MarkerSize = 7;
        }

        // Ticks at the measured x values (core counts), not at fractions between them.
        double[] xsAll = [.. rows.Select(plot.X).Where(double.IsFinite).Distinct().Order()];
        if (xsAll.Length > 0)
        {
            figure.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(xsAll, [.. xsAll.Select(x => x.ToString("0.##", System.Globalization.CultureInfo.InvariantCulture))]);
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
        string svg = basePath + ".svg";
        string png = basePath + ".png";
        figure.SaveSvg(svg, Width, Height);
        figure.SavePng(png, Width, Height);
        return [svg, png];
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

        figure.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual([.. positions], [.. labels]);
        figure.Axes.Bottom.TickLabelStyle.Rotation = -35;
        figure.Axes.Bottom.TickLabelStyle.Alignment = ScottPlot.Alignment.UpperRight;
        figure.Axes.Bottom.MinimumSize = 130; // room for the slanted variant names
        figure.Axes.Margins(bottom: 0);
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
            >= 1e9 => $"{value / 1e9:0.#}G",
            >= 1e6 => $"{value / 1e6:0.#}M",
            >= 1e3 => $"{value / 1e3:0.#}k",
            >= 1 => $"{value:0.#}",
            _ => $"{value:0.###}",
        };
    }
}
