using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Multikernel.Cli.Bench;

/// <summary>Reads the figures out of what the real clients print (wrk, redis-benchmark --csv, iperf3 -J).</summary>
internal static partial class NetBenchParsers
{
    /// <summary>wrk --latency: requests/s and the 99th percentile in ms; throws when wrk reported errors (a run with errors is not a figure).</summary>
    public static (double RequestsPerSecond, double P99Ms) Wrk(string text)
    {
        Match rate = WrkRate().Match(text);
        Match p99 = WrkP99().Match(text);
        if (!rate.Success || !p99.Success)
        {
            throw new FormatException($"wrk printed no Requests/sec or 99% line: {text}");
        }

        if (WrkErrors().Match(text) is { Success: true } errors)
        {
            throw new InvalidOperationException($"wrk saw socket errors ({errors.Groups[1].Value.Trim()}): {text}");
        }

        if (WrkNon2xx().Match(text) is { Success: true } non2xx)
        {
            throw new InvalidOperationException($"wrk saw {non2xx.Groups[1].Value} non-2xx/3xx responses: {text}");
        }

        double value = double.Parse(p99.Groups[1].Value, CultureInfo.InvariantCulture);
        double ms = p99.Groups[2].Value switch
        {
            "us" => value / 1000,
            "ms" => value,
            "s" => value * 1000,
            _ => value * 60_000,
        };
        return (double.Parse(rate.Groups[1].Value, CultureInfo.InvariantCulture), ms);
    }

    /// <summary>redis-benchmark --csv: requests/s and p99 (ms) per test name (SET, GET, …).</summary>
    public static Dictionary<string, (double Rps, double P99Ms)> RedisCsv(string text)
    {
        var result = new Dictionary<string, (double, double)>(StringComparer.Ordinal);
        string[]? header = null;
        foreach (string raw in text.Split(['\n', '\r'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!raw.StartsWith('"'))
            {
                continue;
            }

            string[] cells = [.. raw.Split(',').Select(c => c.Trim('"'))];
            if (cells[0] == "test")
            {
                header = cells;
                continue;
            }

            int rps = header is null ? 1 : Array.IndexOf(header, "rps");
            int p99 = header is null ? -1 : Array.IndexOf(header, "p99_latency_ms");
            if (rps > 0 && rps < cells.Length && double.TryParse(cells[rps], NumberStyles.Float, CultureInfo.InvariantCulture, out double r))
            {
                double p = p99 > 0 && p99 < cells.Length && double.TryParse(cells[p99], NumberStyles.Float, CultureInfo.InvariantCulture, out double v) ? v : double.NaN;
                result[cells[0]] = (r, p);
            }
        }

        return result;
    }

    /// <summary>iperf3 -J: the receiver's bits/s of the whole test, in Gbit/s.</summary>
    public static double Iperf3(string json)
    {
        int start = json.IndexOf('{', StringComparison.Ordinal);
        if (start < 0)
        {
            throw new FormatException($"iperf3 printed no JSON: {json}");
        }

        using JsonDocument doc = JsonDocument.Parse(json[start..]);
        if (doc.RootElement.TryGetProperty("error", out JsonElement error))
        {
            throw new InvalidOperationException($"iperf3: {error.GetString()}");
        }

        return doc.RootElement.GetProperty("end").GetProperty("sum_received").GetProperty("bits_per_second").GetDouble() / 1e9;
    }

    [GeneratedRegex(@"Requests/sec:\s+([0-9.]+)")]
    private static partial Regex WrkRate();

    [GeneratedRegex(@"\s99%\s+([0-9.]+)(us|ms|s|m)\b")]
    private static partial Regex WrkP99();

    [GeneratedRegex(@"Socket errors:([^\n]*)")]
    private static partial Regex WrkErrors();

    [GeneratedRegex(@"Non-2xx or 3xx responses:\s+(\d+)")]
    private static partial Regex WrkNon2xx();
}
