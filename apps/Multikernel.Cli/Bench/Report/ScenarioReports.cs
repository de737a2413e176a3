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
        LogY: true);

    public static readonly IReadOnlyList<BenchColumn<EndpointBenchResult>> EndpointColumns =
    [
        new("name", r => r.Name),
        new("tracing", r => r.Tracing),
        new("rtt_ns", r => r.RttNs),
        new("msgs_per_s", r => r.MsgsPerSecond),
        new("alloc_bytes_per_msg", r => r.AllocBytesPerMessage),
        new("oversubscribed", r => r.Oversubscribed),
    ];
}
