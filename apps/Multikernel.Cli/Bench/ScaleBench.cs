using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Multikernel.Cli.Bench.Report;
using Multikernel.Monitor;
using Multikernel.Monitor.Hosting;

namespace Multikernel.Cli.Bench;

/// <summary>One point of the scale figure.</summary>
/// <param name="Mode"><c>sharded</c> (each core owns a shard, requests travel to the owner over the rings) or <c>shared</c> (N threads on one <c>ConcurrentDictionary</c>).</param>
/// <param name="Mix">The read/write mix.</param>
/// <param name="Cores">Cores (sharded) or threads (shared).</param>
/// <param name="OpsPerSecond">Requests completed per second, all cores together (median of the runs).</param>
/// <param name="Oversubscribed">More cores or threads than CPUs: they take turns on a CPU.</param>
/// <param name="Keys">Size of the key space.</param>
/// <param name="Batch">Requests per message to another core (sharded only).</param>
/// <param name="Window">Batches in flight per destination core (sharded only).</param>
/// <param name="Scaling">Scaling efficiency: ops/s at this count over this count times ops/s at 1, same mode and mix (NaN without a 1-core row).</param>
/// <param name="VsShared">Sharded over shared at the same count and mix (NaN for shared rows).</param>
/// <param name="CpusUsed">CPU seconds the process used per second while the run was counted: how many CPUs it really had (median run).</param>
internal sealed record ScaleResult(string Mode, string Mix, int Cores, double OpsPerSecond, bool Oversubscribed, int Keys, int Batch, int Window, double Scaling, double VsShared, double CpusUsed);

/// <summary>Settings of one <c>bench scale</c> run.</summary>
/// <param name="CoreCounts">Core (thread) counts to measure.</param>
/// <param name="Mixes">Read/write mixes.</param>
/// <param name="KeySpace">Keys in the store (every key exists; SETs overwrite).</param>
/// <param name="Batch">Requests a core gathers for one other core before it sends them as one call.</param>
/// <param name="Window">Batches a core may have in flight to one other core (the bound on in-flight work).</param>
/// <param name="Warmup">Work before counting starts, each run.</param>
/// <param name="RunDuration">Counted time per run.</param>
/// <param name="Runs">Runs per point (the median is reported); the two modes alternate run by run.</param>
internal sealed record ScaleSettings(IReadOnlyList<int> CoreCounts, IReadOnlyList<ScaleMix> Mixes, int KeySpace, int Batch, int Window, TimeSpan Warmup, TimeSpan RunDuration, int Runs)
{
    public static ScaleSettings Quick => new([1, 2], ScaleMix.All, 1 << 16, 512, 4, TimeSpan.FromMilliseconds(20), TimeSpan.FromMilliseconds(60), 1);

    public static ScaleSettings Full => new([1, 2, 4], ScaleMix.All, 1 << 20, 512, 4, TimeSpan.FromMilliseconds(100), TimeSpan.FromMilliseconds(400), 5);

    /// <summary>The full run's core counts: powers of two up to the CPUs, the CPU count, and one oversubscribed count (twice the CPUs).</summary>
    public static IReadOnlyList<int> DefaultCoreCounts(int cpus)
    {
        var counts = new SortedSet<int> { cpus, 2 * cpus };
        for (int n = 1; n < cpus; n *= 2)
        {
            counts.Add(n);
        }

        return [.. counts];
    }

    /// <summary>Counted time, warm-up and a boot plus table fill per core count.</summary>
    public TimeSpan EstimatedDuration =>
        ((Warmup + RunDuration) * (Runs * CoreCounts.Count * Mixes.Count * 2)) + (TimeSpan.FromMilliseconds(300 + (KeySpace / 4000)) * (CoreCounts.Count + 1));

    /// <summary>The first problem with these settings, or null.</summary>
    public string? Validate()
    {
        if (KeySpace is < 1 or > 1 << 28)
        {
            return $"--keys must be between 1 and {1 << 28} (got {KeySpace}).";
        }

        if (Batch is < 1 or > 4096)
        {
            return $"--batch must be between 1 and 4096 (got {Batch}).";
        }

        // The window must fit the per-destination budget of the sharded-service API.
        return Window is < 1 or > 16 ? $"--window must be between 1 and 16 (got {Window})." : null;
    }
}

/// <summary>
/// The <c>scale</c> scenario: a sharded in-memory key-value store on the per-core service API
/// (<see cref="Sharded{TService}"/>) against the shared-memory way (N threads on one
/// <c>ConcurrentDictionary</c>), by core count and read/write mix, side by side in one run.
/// </summary>
/// <remarks>
/// <para><b>Sharded.</b> Each core owns the keys <c>k mod N == core</c> in a plain
/// <see cref="Dictionary{TKey, TValue}"/> only it touches. Each core also generates uniformly
/// random requests, so (N−1)/N of them belong to another core. A request for the core's own shard
/// is applied at once; one for another core joins that core's open batch, and a full batch goes
/// out as one sharded call (one ring message each way; the handler applies the whole batch on the
/// owner and returns the sum of the values read). A core keeps at most <c>Window</c> batches in
/// flight per destination and waits for the oldest before sending another, so the work in flight
/// is bounded by <c>Window × Batch × (N−1)</c> requests per core. While it waits, its kernel serves
/// the batches other cores sent it. A core yields once per 256 requests when it did not wait, so
/// the batches sent to it are served even while all its own replies are already back.</para>
/// <para><b>Shared.</b> N pinned threads generate the same request streams and apply every
/// request to one <c>ConcurrentDictionary</c> holding every key.</para>
/// <para>Both count the requests completed between the same warm-up and end marks of the
/// monotonic clock, and every key exists from the start (SETs overwrite, GETs hit).</para>
/// </remarks>
internal static class ScaleBench
{
    /// <summary>The scenario's name, file stem and command.</summary>
    public const string Scenario = "scale";

    private const int ChunkSize = 64;
    private const int ChunksPerYield = 4;

    public static readonly IReadOnlyList<BenchColumn<ScaleResult>> Columns =
    [
        new("mode", r => r.Mode),
        new("mix", r => r.Mix),
        new("cores", r => r.Cores),
        new("ops_per_s", r => r.OpsPerSecond),
        new("oversubscribed", r => r.Oversubscribed),
        new("keys", r => r.Keys),
        new("batch", r => r.Mode == "sharded" ? r.Batch : null),
        new("window", r => r.Mode == "sharded" ? r.Window : null),
        new("scaling", r => r.Scaling),
        new("vs_shared", r => r.VsShared),
        new("cpus_used", r => r.CpusUsed),
        new("ops_per_cpu_s", r => r.OpsPerSecond / r.CpusUsed),
    ];

    public static readonly BenchPlot<ScaleResult> Plot = new(
        "Sharded key-value store on the rings vs one ConcurrentDictionary",
        "cores (sharded) / threads (shared)",
        "requests per second (millions)",
        r => r.Cores,
        r => r.OpsPerSecond / 1e6,
        r => $"{r.Mode} {r.Mix}",
        MarkOversubscribed: true);

    public static IReadOnlyList<ScaleResult> Run(ScaleSettings settings, Action<string>? progress)
    {
        int cpus = Environment.ProcessorCount;
        var raw = new List<(string Mode, ScaleMix Mix, int Cores, double Ops, double Cpus)>();
        progress?.Invoke(string.Create(CultureInfo.InvariantCulture, $"scale: filling the shared table ({settings.KeySpace} keys)"));
        var table = SharedDictionaryScale.CreateTable(settings.KeySpace);
        foreach (int cores in settings.CoreCounts)
        {
            bool over = cores > cpus;
            var options = new MultikernelOptions { Cores = cores.ToString(CultureInfo.InvariantCulture), ShutdownTimeout = TimeSpan.FromSeconds(10) };
            var runtime = new MultikernelRuntime(options);
            try
            {
                runtime.StartAsync().GetAwaiter().GetResult();
                Sharded<KvShard> shards = runtime
                    .StartShardedAsync("scale-kv", ctx => new KvShard(ctx.Core, cores, settings.KeySpace))
                    .WaitAsync(TimeSpan.FromMinutes(2)).GetAwaiter().GetResult();
                foreach (ScaleMix mix in settings.Mixes)
                {
                    var sharded = new List<(double Ops, double Cpus)>();
                    var shared = new List<(double Ops, double Cpus)>();
                    for (int run = 0; run < settings.Runs; run++)
                    {
                        // Alternate the modes run by run, so drift on a shared machine hits both alike.
                        sharded.Add(RunSharded(runtime, shards, mix, settings));
                        shared.Add(SharedDictionaryScale.Run(table, cores, mix, settings.KeySpace, settings.Warmup, settings.RunDuration));
                    }

                    (double so, double sc) = Median(sharded);
                    (double co, double cc) = Median(shared);
                    raw.Add(("sharded", mix, cores, so, sc));
                    raw.Add(("shared", mix, cores, co, cc));
                    progress?.Invoke(string.Create(CultureInfo.InvariantCulture,
                        $"scale: {cores} cores, {mix.Name}: sharded {so / 1e6:F2} M/s on {sc:F2} CPUs, shared {co / 1e6:F2} M/s on {cc:F2} CPUs{(over ? " (oversubscribed)" : string.Empty)}"));
                }
            }
            finally
            {
                runtime.StopAsync().GetAwaiter().GetResult();
            }
        }

        var results = new List<ScaleResult>(raw.Count);
        foreach ((string mode, ScaleMix mix, int cores, double ops, double cpusUsed) in raw)
        {
            double one = raw.Where(r => r.Mode == mode && r.Mix == mix && r.Cores == 1).Select(r => r.Ops).DefaultIfEmpty(double.NaN).First();
            double sharedOps = raw.First(r => r.Mode == "shared" && r.Mix == mix && r.Cores == cores).Ops;
            results.Add(new ScaleResult(mode, mix.Name, cores, ops, cores > cpus, settings.KeySpace, settings.Batch, settings.Window,
                ops / (cores * one), mode == "sharded" ? ops / sharedOps : double.NaN, cpusUsed));
        }

        return results;
    }

    private static (double Ops, double Cpus) RunSharded(MultikernelRuntime runtime, Sharded<KvShard> shards, ScaleMix mix, ScaleSettings settings)
    {
        long start = Stopwatch.GetTimestamp() + (long)(settings.Warmup.TotalSeconds * Stopwatch.Frequency);
        long end = start + (long)(settings.RunDuration.TotalSeconds * Stopwatch.Frequency);
        var drivers = new Task<long>[shards.Cores];
        for (int core = 0; core < shards.Cores; core++)
        {
            int here = core;
            drivers[core] = runtime.InvokeAsync(core, _ => DriveAsync(shards, here, mix, settings, start, end));
        }

        double cpus = CpuClock.CpusUsedBetween(start, end);
        Task.WhenAll(drivers).WaitAsync(settings.Warmup + settings.RunDuration + TimeSpan.FromMinutes(1)).GetAwaiter().GetResult();
        return (drivers.Sum(d => d.Result) / settings.RunDuration.TotalSeconds, cpus);
    }

    /// <summary>One core's request generator; returns the requests it completed between the marks.</summary>
    private static async Task<long> DriveAsync(Sharded<KvShard> shards, int core, ScaleMix mix, ScaleSettings settings, long start, long end)
    {
        int cores = shards.Cores;
        KvShard local = shards.Local;
        var owner = new ShardOf(cores);
        var requests = new ScaleRequestStream(core + 1, settings.KeySpace, mix.ReadPercent);
        var lanes = new BatchLane?[cores];
        for (int peer = 0; peer < cores; peer++)
        {
            if (peer != core)
            {
                lanes[peer] = new BatchLane(settings.Window, settings.Batch);
            }
        }

        long ops = 0;
        long sink = 0;
        int sinceYield = 0;
        bool counting = false;
        while (true)
        {
            bool waited = false;
            for (int i = 0; i < ChunkSize; i++)
            {
                (long key, bool read) = requests.Next();
                int to = owner.Of(key);
                if (to == core)
                {
                    if (read)
                    {
                        sink += local.Get(key);
                    }
                    else
                    {
                        local.Set(key, key);
                    }

                    ops++;
                    continue;
                }

                BatchLane lane = lanes[to]!;
                ScaleBatch batch = lane.Filling;
                batch.Requests[batch.Count++] = (key << 1) | (read ? 0L : 1L);
                if (batch.Count < batch.Requests.Length)
                {
                    continue;
                }

                if (lane.InFlight == lane.Window)
                {
                    // The window is full: wait for the oldest batch (the kernel serves others meanwhile).
                    ScaleBatch oldest = lane.Oldest;
                    waited |= !oldest.Pending.IsCompleted;
                    sink += await oldest.Pending;
                    ops += oldest.Count;
                    lane.RetireOldest();
                }

                batch.Pending = shards.InvokeOnAsync(to, batch, static (shard, b) => new ValueTask<long>(shard.Apply(b)));
                lane.Sent();
            }

            long now = Stopwatch.GetTimestamp();
            if (!counting)
            {
                if (now >= start)
                {
                    counting = true;
                    ops = 0;
                }
            }
            else if (now >= end)
            {
                break;
            }

            // Let this kernel serve the batches other cores sent it, once per few chunks when this
            // core did not wait anyway (a yield is a trip round the kernel loop, ~1 µs). Alone,
            // there is no one to serve.
            if (waited)
            {
                sinceYield = 0;
            }
            else if (cores > 1 && ++sinceYield == ChunksPerYield)
            {
                sinceYield = 0;
                await Task.Yield();
            }
        }

        long counted = ops;
        foreach (BatchLane? lane in lanes)
        {
            while (lane is { InFlight: > 0 })
            {
                sink += await lane.Oldest.Pending;
                lane.RetireOldest();
            }
        }

        local.Sink += sink;
        return counted;
    }

    // The run with the median throughput, and the CPU it had.
    private static (double Ops, double Cpus) Median(List<(double Ops, double Cpus)> runs) =>
        runs.OrderBy(r => r.Ops).ElementAt(runs.Count / 2);

    public static string Render(IReadOnlyList<ScaleResult> results)
    {
        var text = new StringBuilder();
        ScaleResult first = results[0];
        text.AppendLine(CultureInfo.InvariantCulture, $"key-value requests per second, {first.Keys} keys; sharded: batches of {first.Batch}, {first.Window} in flight per destination core");
        text.AppendLine("mix           cores   sharded M/s   shared M/s   sharded/shared   sharded scaling   shared scaling   CPUs had (sharded/shared)");
        foreach (IGrouping<(string Mix, int Cores), ScaleResult> g in results.GroupBy(r => (r.Mix, r.Cores)))
        {
            ScaleResult s = g.First(r => r.Mode == "sharded");
            ScaleResult c = g.First(r => r.Mode == "shared");
            text.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"{g.Key.Mix,-12}  {g.Key.Cores,5}   {s.OpsPerSecond / 1e6,11:F2}   {c.OpsPerSecond / 1e6,10:F2}   {s.VsShared,13:F2}x   {s.Scaling,15:F2}   {c.Scaling,14:F2}   {s.CpusUsed,8:F2} / {c.CpusUsed:F2}{(s.Oversubscribed ? "  oversubscribed" : string.Empty)}"));
        }

        text.AppendLine("scaling: ops/s at N over N x ops/s at 1 (same mode and mix). CPUs had: process CPU seconds per second while counted (below N: the machine was busy).");
        text.AppendLine("oversubscribed: more cores or threads than CPUs.");
        return text.ToString();
    }
}

/// <summary>One core's shard of the <c>scale</c> store: touched only on its core.</summary>
internal sealed class KvShard
{
    private readonly Dictionary<long, long> _table;

    public KvShard(int core, int cores, int keySpace)
    {
        var owner = new ShardOf(cores);
        _table = new Dictionary<long, long>((keySpace / cores) + 1);
        for (long k = 0; k < keySpace; k++)
        {
            if (owner.Of(k) == core)
            {
                _table[k] = k;
            }
        }
    }

    /// <summary>Sum of the values read (so the reads are not optimised away).</summary>
    public long Sink { get; set; }

    public long Get(long key) => _table.TryGetValue(key, out long value) ? value : 0;

    public void Set(long key, long value) => CollectionsMarshal.GetValueRefOrAddDefault(_table, key, out _) = value;

    /// <summary>Applies a batch sent by another core; returns the sum of the values it read.</summary>
    public long Apply(ScaleBatch batch)
    {
        long sum = 0;
        long[] requests = batch.Requests;
        for (int i = 0; i < batch.Count; i++)
        {
            long request = requests[i];
            long key = request >> 1;
            if ((request & 1) == 0)
            {
                sum += Get(key);
            }
            else
            {
                Set(key, key);
            }
        }

        return sum;
    }
}

/// <summary>
/// Requests for one other core, gathered into one call. Written by the sending core until it is
/// sent, read by the owner while it is served, reused once the reply is back (the ring message each
/// way orders the hand-overs).
/// </summary>
internal sealed class ScaleBatch(int capacity)
{
    /// <summary><c>key &lt;&lt; 1 | isWrite</c> per request.</summary>
    public long[] Requests { get; } = new long[capacity];

    public int Count { get; set; }

    /// <summary>The call carrying this batch while it is in flight.</summary>
    public ValueTask<long> Pending { get; set; }
}

/// <summary>A core's batches for one destination: at most <c>Window</c> in flight plus the one filling.</summary>
internal sealed class BatchLane
{
    private readonly ScaleBatch[] _batches;
    private int _oldest;

    public BatchLane(int window, int batch)
    {
        Window = window;
        _batches = new ScaleBatch[window + 1];
        for (int i = 0; i < _batches.Length; i++)
        {
            _batches[i] = new ScaleBatch(batch);
        }
    }

    public int Window { get; }

    public int InFlight { get; private set; }

    public ScaleBatch Filling => _batches[(_oldest + InFlight) % _batches.Length];

    public ScaleBatch Oldest => _batches[_oldest];

    public void Sent() => InFlight++;

    public void RetireOldest()
    {
        ScaleBatch oldest = _batches[_oldest];
        oldest.Count = 0;
        oldest.Pending = default;
        _oldest = (_oldest + 1) % _batches.Length;
        InFlight--;
    }
}
