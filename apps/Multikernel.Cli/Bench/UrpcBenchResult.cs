using System.Text.Json.Serialization;

namespace Multikernel.Cli.Bench;

/// <summary>
/// One row of the channel measurement. The first four JSON properties are the contract
/// (<c>name</c>, <c>rtt_ns</c>, <c>msgs_per_s</c>, <c>bytes_per_msg</c>) and are always written,
/// as <c>null</c> where a variant has no such figure (the shared-line floor cannot stream; the
/// wake-up row has no throughput). The rest are extras.
/// </summary>
public sealed record UrpcBenchResult
{
    /// <summary>Variant name: floor, urpc, urpc-batched, bounded-channel, bounded-channel-try, unbounded-channel, concurrent-queue, urpc-wakeup.</summary>
    [JsonPropertyName("name")]
    [JsonIgnore(Condition = JsonIgnoreCondition.Never)]
    public required string Name { get; init; }

    /// <summary>
    /// Median round-trip time in ns (one message there, one back). For urpc-batched: the round
    /// trip of a whole batch. For urpc-wakeup: the median time from the sender's write to the
    /// parked receiver running again.
    /// </summary>
    [JsonPropertyName("rtt_ns")]
    [JsonIgnore(Condition = JsonIgnoreCondition.Never)]
    public double? RttNs { get; init; }

    /// <summary>Median one-way streaming throughput, messages per second.</summary>
    [JsonPropertyName("msgs_per_s")]
    [JsonIgnore(Condition = JsonIgnoreCondition.Never)]
    public double? MsgsPerSecond { get; init; }

    /// <summary>Bytes one message occupies in the channel (a 64-byte ring slot, or a 64-byte struct).</summary>
    [JsonPropertyName("bytes_per_msg")]
    [JsonIgnore(Condition = JsonIgnoreCondition.Never)]
    public required int BytesPerMessage { get; init; }

    /// <summary>Managed bytes allocated per message on both threads (the worse of the round-trip and streaming runs).</summary>
    [JsonPropertyName("alloc_bytes_per_msg")]
    public double? AllocatedBytesPerMessage { get; init; }

    /// <summary>Round-trip time divided by the floor's.</summary>
    [JsonPropertyName("rtt_vs_floor")]
    public double? RttVsFloor { get; init; }

    /// <summary>Throughput divided by bounded-channel's (async).</summary>
    [JsonPropertyName("msgs_vs_bounded_channel")]
    public double? MsgsVsBoundedChannel { get; init; }

    /// <summary>90th percentile (wake-up row only), ns.</summary>
    [JsonPropertyName("p90_ns")]
    public double? P90Ns { get; init; }

    /// <summary>Messages per batch, for batched variants.</summary>
    [JsonPropertyName("batch")]
    public int? Batch { get; init; }

    /// <summary>Measured runs (or wake-up samples) behind the medians.</summary>
    [JsonPropertyName("runs")]
    public int Runs { get; init; }

    /// <summary>True when the two threads were pinned to <see cref="Cpus"/>.</summary>
    [JsonPropertyName("pinned")]
    public bool Pinned { get; init; }

    /// <summary>The two CPUs, "a,b", when pinned.</summary>
    [JsonPropertyName("cpus")]
    public string? Cpus { get; init; }

    /// <summary>What exactly was measured.</summary>
    [JsonPropertyName("method")]
    public string? Method { get; init; }
}

/// <summary>One of the targets, judged against a run's results.</summary>
/// <param name="Target">What is required, e.g. "urpc round trip &lt;= 1.5x floor".</param>
/// <param name="Measured">The measured figure, formatted.</param>
/// <param name="Verdict">PASS, MISS, INFO (reported, no target) or N/A (not measured).</param>
public sealed record UrpcBenchTarget(string Target, string Measured, string Verdict)
{
    /// <summary>True when the target was judged and missed.</summary>
    public bool Missed => Verdict == "MISS";
}

[JsonSourceGenerationOptions(WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(List<UrpcBenchResult>))]
internal sealed partial class UrpcBenchJsonContext : JsonSerializerContext;
