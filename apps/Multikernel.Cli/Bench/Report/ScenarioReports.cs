namespace Multikernel.Cli.Bench.Report;

/// <summary>
/// Columns and plots of the scenarios that had their own JSON writers before the suite had one
/// report writer: the same JSON property names as before, now also as CSV and a plot.
/// </summary>
internal static class ScenarioReports
{
    public static readonly IReadOnlyList<BenchColumn<UrpcBenchResult>> UrpcColumns =
    [
        new("name", r => r.Name),
        new("rtt_ns", r => r.RttNs),
        new("msgs_per_s", r => r.MsgsPerSecond),
        new("bytes_per_msg", r => r.BytesPerMessage),
        new("alloc_bytes_per_msg", r => r.AllocatedBytesPerMessage),
        new("rtt_vs_floor", r => r.RttVsFloor),
        new("msgs_vs_bounded_channel", r => r.MsgsVsBoundedChannel),
        new("p90_ns", r => r.P90Ns),
        new("batch", r => r.Batch),
        new("runs", r => r.Runs),
        new("pinned", r => r.Pinned),
    ];

    // One bar per variant that streams (the floor and the wake-up row have no throughput).
    public static readonly BenchPlot<UrpcBenchResult> UrpcPlot = new(
        "Two pinned threads: one-way messages per second by channel",
        "channel",
        "messages/s",
        _ => 0,
        r => r.MsgsPerSecond ?? double.NaN,
        r => r.Name,
        Bars: true);

    public static readonly IReadOnlyList<BenchColumn<ShootdownResult>> ShootdownColumns =
    [
        new("protocol", r => r.Protocol),
        new("cores", r => r.Cores),
        new("latency_ns", r => r.LatencyNs),
        new("p90_ns", r => r.P90Ns),
        new("iterations", r => r.Iterations),
        new("oversubscribed", r => r.Oversubscribed),
    ];

    public static readonly BenchPlot<ShootdownResult> ShootdownPlot = new(
        "Revoke of a frame copied to every core (\"TLB shootdown\"), median latency",
        "cores",
        "latency (ns)",
        r => r.Cores,
        r => r.LatencyNs,
        r => r.Protocol,
        LogY: true,
        MarkOversubscribed: true);

    public static readonly IReadOnlyList<BenchColumn<EndpointBenchResult>> EndpointColumns =
    [
        new("name", r => r.Name),
        new("tracing", r => r.Tracing),
        new("rtt_ns", r => r.RttNs),
        new("msgs_per_s", r => r.MsgsPerSecond),
        new("alloc_bytes_per_msg", r => r.AllocBytesPerMessage),
        new("oversubscribed", r => r.Oversubscribed),
    ];

    public static readonly BenchPlot<EndpointBenchResult> EndpointPlot = new(
        "Domain-to-domain messages through two kernels by tracing setting",
        "tracing",
        "messages per second (millions)",
        _ => 0,
        r => r.MsgsPerSecond / 1e6,
        r => $"tracing {r.Tracing}",
        Bars: true);

    public static readonly IReadOnlyList<BenchColumn<ClassifyBenchResult>> ClassifyColumns =
    [
        new("filters", r => r.Filters),
        new("trie_ns", r => r.TrieNs),
        new("naive_ns", r => r.NaiveNs),
        new("trie_nodes", r => r.TrieNodes),
        new("matched_fraction", r => r.MatchedFraction),
        new("naive_vs_trie", r => r.NaiveNs / r.TrieNs),
    ];

    // Both lines come from the same rows: the plot's series split each row in two.
    public static readonly BenchPlot<ClassifyPoint> ClassifyPlot = new(
        "netd's classifier: ns per packet, merged trie vs each filter in turn",
        "installed filters",
        "ns per packet",
        p => p.Filters,
        p => p.Ns,
        p => p.Way,
        LogY: true,
        LogX: true);

    public static IReadOnlyList<ClassifyPoint> ClassifyPoints(IReadOnlyList<ClassifyBenchResult> rows) =>
        [.. rows.Select(r => new ClassifyPoint("merged trie", r.Filters, r.TrieNs)), .. rows.Select(r => new ClassifyPoint("each filter in turn", r.Filters, r.NaiveNs))];

    public static readonly IReadOnlyList<BenchColumn<TimerBenchResult>> TimerColumns =
    [
        new("name", r => r.Name),
        new("arms_per_s", r => r.ArmsPerSecond),
        new("resets_per_s", r => r.ResetsPerSecond),
        new("cancels_per_s", r => r.CancelsPerSecond),
        new("alloc_bytes_per_op", r => r.AllocBytesPerOp),
    ];

    public static readonly BenchPlot<TimerBenchResult> TimerPlot = new(
        "Timer operations through ITimer.Change: a core's wheel vs TimeProvider.System",
        "timers",
        "operations per second (millions)",
        _ => 0,
        _ => double.NaN,
        r => r.Name,
        Bars: true,
        BarMetrics: [("arm", r => r.ArmsPerSecond / 1e6), ("reset", r => r.ResetsPerSecond / 1e6), ("cancel", r => r.CancelsPerSecond / 1e6)]);

    public static readonly IReadOnlyList<BenchColumn<WakeupBenchResult>> WakeupColumns =
    [
        new("name", r => r.Name),
        new("samples", r => r.Samples),
        new("p50_us", r => r.P50Us),
        new("p99_us", r => r.P99Us),
        new("mean_us", r => r.MeanUs),
    ];

    public static readonly BenchPlot<WakeupBenchResult> WakeupPlot = new(
        "Wake-up latency of a parked core (published -> running)",
        "park and wake-up path",
        "latency (µs)",
        _ => 0,
        _ => double.NaN,
        r => r.Name,
        Bars: true,
        BarMetrics: [("p50", r => r.P50Us), ("mean", r => r.MeanUs), ("p99", r => r.P99Us)]);
}

/// <summary>One point of the classify plot: one of the two ways at one filter count.</summary>
internal sealed record ClassifyPoint(string Way, int Filters, double Ns);
