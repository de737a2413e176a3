using System.Diagnostics;
using Multikernel.CpuDriver.Kernel;

namespace Multikernel.Cli.Bench;

/// <summary>
/// <c>multikernel bench urpc</c>: the URPC ring measured side by side with the shared-line
/// hardware floor, <c>Channel.CreateBounded</c> (async and TryWrite/TryRead),
/// <c>Channel.CreateUnbounded</c> and <c>ConcurrentQueue&lt;T&gt;</c>, two threads pinned to two
/// CPUs, 64-byte messages: round-trip latency, one-way streaming throughput, managed bytes
/// allocated per message, and the cost of waking a parked receiver.
/// </summary>
/// <remarks>
/// Figures that mean something are ratios within one run, so every variant is measured in the
/// same process, interleaved: one warm-up pass over all variants, then <see cref="UrpcBenchSettings.Runs"/>
/// passes, each running every variant once; each figure is the median over the passes. That
/// keeps a burst of load from another process on this shared machine from landing on one
/// variant only.
/// </remarks>
public static partial class UrpcBench
{
    /// <summary>A plain shared cache line ping-ponged between the two threads: the hardware floor.</summary>
    public const string Floor = "floor";

    /// <summary>Two URPC rings (A to B, B to A); one message at a time with TryWrite and Peek/Advance.</summary>
    public const string Urpc = "urpc";

    /// <summary>URPC with TryWriteBatch/TryReadBatch.</summary>
    public const string UrpcBatched = "urpc-batched";

    /// <summary>Channel.CreateBounded, WriteAsync/ReadAsync awaited on each pinned thread.</summary>
    public const string BoundedChannel = "bounded-channel";

    /// <summary>Channel.CreateBounded, TryWrite/TryRead in a spin loop.</summary>
    public const string BoundedChannelTry = "bounded-channel-try";

    /// <summary>Channel.CreateUnbounded (single reader), WriteAsync/ReadAsync awaited.</summary>
    public const string UnboundedChannel = "unbounded-channel";

    /// <summary>ConcurrentQueue&lt;T&gt;, Enqueue/TryDequeue in a spin loop.</summary>
    public const string ConcurrentQueue = "concurrent-queue";

    /// <summary>A receiver parked on its <see cref="Doorbell"/> woken by the sender's ring.</summary>
    public const string UrpcWakeup = "urpc-wakeup";

    /// <summary>Bytes of one message in every variant: a 64-byte ring slot or a 64-byte struct.</summary>
    public const int MessageBytes = 64;

    private const int Measurements = 13; // floor (round trip only) + 6 variants x 2 modes

    /// <summary>
    /// Runs the whole measurement (about 30 s with the default settings; never more than
    /// <see cref="UrpcBenchSettings.TimeBudget"/> plus thread start-up) and returns one result per variant.
    /// </summary>
    /// <param name="settings">CPUs, runs, durations and sizes.</param>
    /// <param name="progress">Receives one line per phase (and a note when the threads run unpinned); may be null.</param>
    /// <exception cref="ArgumentException">The settings are invalid.</exception>
    /// <exception cref="InvalidOperationException">A variant misbehaved (lost or reordered a message, or hung).</exception>
    public static IReadOnlyList<UrpcBenchResult> Run(UrpcBenchSettings settings, Action<string>? progress)
    {
        ArgumentNullException.ThrowIfNull(settings);
        string? problem = settings.Validate();
        if (problem is not null)
        {
            throw new ArgumentException(problem, nameof(settings));
        }

        BenchPlan plan = BenchPlan.Create(settings, progress);
        int slots = settings.RingSlots;
        int batch = settings.BatchSize;

        // Order is the order of the table. Each entry: round-trip factory (always) and streaming factory (null for the floor).
        var variants = new (string Name, Func<Variant> RoundTrip, Func<Variant>? Stream, int? Batch, string Method)[]
        {
            (Floor, () => new FloorVariant(), null, null,
                "one 64-byte line, each side spins until the other's write; msgs_per_s not applicable (a line cannot stream)"),
            (Urpc, () => new RingVariant(Mode.RoundTrip, slots, 0), () => new RingVariant(Mode.Stream, slots, 0), null,
                $"UrpcRing({slots}) A->B and B->A, TryWrite / spin on Peek+Advance"),
            (UrpcBatched, () => new RingVariant(Mode.RoundTrip, slots, batch), () => new RingVariant(Mode.Stream, slots, batch), batch,
                $"UrpcRing({slots}) TryWriteBatch/TryReadBatch of {batch}; rtt_ns is the round trip of a whole batch"),
            (BoundedChannel, () => new AsyncChannelVariant(Mode.RoundTrip, slots, bounded: true), () => new AsyncChannelVariant(Mode.Stream, slots, bounded: true), null,
                $"Channel.CreateBounded({slots}, single reader/writer), await WriteAsync/ReadAsync, continuations posted back to each pinned thread"),
            (BoundedChannelTry, () => SpinQueueVariant<ChannelQueue>.Create(Mode.RoundTrip, slots, window: 0, bounded: true), () => SpinQueueVariant<ChannelQueue>.Create(Mode.Stream, slots, window: 0, bounded: true), null,
                $"Channel.CreateBounded({slots}, single reader/writer), spin on TryWrite/TryRead"),
            (UnboundedChannel, () => new AsyncChannelVariant(Mode.RoundTrip, slots, bounded: false), () => new AsyncChannelVariant(Mode.Stream, slots, bounded: false), null,
                $"Channel.CreateUnbounded(single reader/writer), await WriteAsync/ReadAsync; streaming held to a {slots}-message window"),
            (ConcurrentQueue, () => SpinQueueVariant<ConcurrentQueueAdapter>.Create(Mode.RoundTrip, slots, window: 0, bounded: false), () => SpinQueueVariant<ConcurrentQueueAdapter>.Create(Mode.Stream, slots, window: slots, bounded: false), null,
                $"ConcurrentQueue<Msg64>, spin on Enqueue/TryDequeue; streaming held to a {slots}-message window"),
        };

        var roundTrips = new Samples[variants.Length];
        var streams = new Samples?[variants.Length];
        for (int v = 0; v < variants.Length; v++)
        {
            roundTrips[v] = new Samples(settings.Runs);
            streams[v] = variants[v].Stream is null ? null : new Samples(settings.Runs);
        }

        for (int pass = 0; pass <= settings.Runs; pass++)
        {
            bool warmUp = pass == 0;
            progress?.Invoke(warmUp
                ? $"warm-up pass ({Measurements} measurements of {plan.RunDuration.TotalMilliseconds:0} ms)"
                : $"pass {pass}/{settings.Runs}");
            for (int v = 0; v < variants.Length; v++)
            {
                RunOutcome rt = RunOnce(plan, variants[v].Name, variants[v].RoundTrip);
                if (!warmUp)
                {
                    roundTrips[v].Add(rt.NsPerRoundTrip, rt.AllocatedBytes, rt.Messages);
                }

                if (variants[v].Stream is { } stream)
                {
                    RunOutcome st = RunOnce(plan, variants[v].Name, stream);
                    if (!warmUp)
                    {
                        streams[v]!.Add(st.MessagesPerSecond, st.AllocatedBytes, st.Messages);
                    }
                }
            }
        }

        var results = new List<UrpcBenchResult>(variants.Length + 1);
        for (int v = 0; v < variants.Length; v++)
        {
            double alloc = Math.Max(roundTrips[v].AllocatedPerMessage, streams[v]?.AllocatedPerMessage ?? 0);
            results.Add(new UrpcBenchResult
            {
                Name = variants[v].Name,
                RttNs = Finite(Math.Round(roundTrips[v].Median, 1)),
                MsgsPerSecond = streams[v] is { } s ? Finite(Math.Round(s.Median)) : null,
                BytesPerMessage = MessageBytes,
                AllocatedBytesPerMessage = Finite(Math.Round(alloc, 4)),
                Batch = variants[v].Batch,
                Runs = settings.Runs,
                Pinned = plan.Pinned,
                Cpus = plan.Pinned ? $"{settings.CpuA},{settings.CpuB}" : null,
                Method = variants[v].Method,
            });
        }

        progress?.Invoke($"wake-up: {settings.WakeSamples} wake-ups of a parked receiver");
        results.Add(MeasureWakeup(plan));
        return AddRatios(results);
    }

    private static List<UrpcBenchResult> AddRatios(List<UrpcBenchResult> results)
    {
        double? floorRtt = results.Find(r => r.Name == Floor)?.RttNs;
        double? boundedRate = results.Find(r => r.Name == BoundedChannel)?.MsgsPerSecond;
        for (int i = 0; i < results.Count; i++)
        {
            UrpcBenchResult r = results[i];
            if (r.Name == UrpcWakeup)
            {
                continue;
            }

            results[i] = r with
            {
                RttVsFloor = r.RttNs is { } rtt && floorRtt is { } f && f > 0 ? Math.Round(rtt / f, 3) : null,
                MsgsVsBoundedChannel = r.MsgsPerSecond is { } rate && boundedRate is { } b && b > 0 ? Math.Round(rate / b, 3) : null,
            };
        }

        return results;
    }

    private static UrpcBenchResult MeasureWakeup(BenchPlan plan)
    {
        using var wake = new WakeVariant(plan.Settings.RingSlots, plan.Settings.WakeSamples);
        RunOutcome outcome = RunOnce(plan, UrpcWakeup, () => wake, disposeVariant: false);
        double[] ns = wake.LatenciesNs();
        Array.Sort(ns);
        return new UrpcBenchResult
        {
            Name = UrpcWakeup,
            RttNs = ns.Length > 0 ? Finite(Math.Round(Percentile(ns, 0.5), 1)) : null,
            P90Ns = ns.Length > 0 ? Finite(Math.Round(Percentile(ns, 0.9), 1)) : null,
            MsgsPerSecond = null,
            BytesPerMessage = MessageBytes,
            AllocatedBytesPerMessage = outcome.Messages > 0 ? Finite(Math.Round((double)outcome.AllocatedBytes / outcome.Messages, 4)) : null,
            Runs = ns.Length,
            Pinned = plan.Pinned,
            Cpus = plan.Pinned ? $"{plan.Settings.CpuA},{plan.Settings.CpuB}" : null,
            Method = "receiver parks on a Doorbell (PrepareToPark, re-check, Park); sender waits until it has slept 500 us, "
                + "writes a timestamped message and rings; rtt_ns = median time from the write to the receiver running, p90_ns its 90th percentile",
        };
    }

    /// <summary>Runs one variant once on two fresh threads and returns what its sides recorded.</summary>
    private static RunOutcome RunOnce(BenchPlan plan, string name, Func<Variant> factory, bool disposeVariant = true)
    {
        // Collect now so no collection of earlier garbage lands inside a timed run.
        GC.Collect();
        GC.WaitForPendingFinalizers();
        Variant variant = factory();
        try
        {
            var control = new RunControl(plan.RunDuration, plan.YieldWhileSpinning);
            var a = new SideState();
            var b = new SideState();
            var threadA = new Thread(() => RunSide(control, plan, plan.Settings.CpuA, variant.SideA, a)) { IsBackground = true, Name = $"bench {name} A" };
            var threadB = new Thread(() => RunSide(control, plan, plan.Settings.CpuB, variant.SideB, b)) { IsBackground = true, Name = $"bench {name} B" };
            threadA.Start();
            threadB.Start();
            while (Volatile.Read(ref control.Ready) < 2 && !control.Aborted)
            {
                Thread.Sleep(1);
            }

            Volatile.Write(ref control.Go, 1);
            // A generous bound: a run is RunDuration long (the wake-up run ~0.6 ms per sample).
            TimeSpan limit = plan.RunDuration + TimeSpan.FromSeconds(15) + TimeSpan.FromMilliseconds(plan.Settings.WakeSamples * 2.0);
            if (!threadA.Join(limit) || !threadB.Join(TimeSpan.FromSeconds(5)))
            {
                control.Abort();
                threadA.Join(TimeSpan.FromSeconds(5));
                threadB.Join(TimeSpan.FromSeconds(5));
                throw new InvalidOperationException($"{name}: a run did not finish within {limit.TotalSeconds:0} s (a message was lost or a side hung).");
            }

            Exception? error = a.Error ?? b.Error;
            if (error is not null)
            {
                throw new InvalidOperationException($"{name}: {error.Message}", error);
            }

            if (control.Count <= 0 || control.EndTicks <= control.StartTicks)
            {
                throw new InvalidOperationException($"{name}: the run recorded no messages.");
            }

            double ns = Stopwatch.GetElapsedTime(control.StartTicks, control.EndTicks).TotalNanoseconds;
            long messages = control.Count * control.MessagesPerCount;
            return new RunOutcome(
                NsPerRoundTrip: ns / control.Count,
                MessagesPerSecond: control.Count * 1e9 / ns,
                AllocatedBytes: a.AllocatedBytes + b.AllocatedBytes,
                Messages: messages);
        }
        finally
        {
            if (disposeVariant)
            {
                variant.Dispose();
            }
        }
    }

    private static void RunSide(RunControl control, BenchPlan plan, int cpu, Action<RunControl> body, SideState state)
    {
        try
        {
            if (plan.Pinned && !CpuAffinity.TryPinCurrentThread(cpu, out string? error))
            {
                throw new InvalidOperationException($"could not pin a thread to CPU {cpu}: {error}");
            }

            Interlocked.Increment(ref control.Ready);
            while (Volatile.Read(ref control.Go) == 0)
            {
                if (control.Aborted)
                {
                    return;
                }

                Thread.SpinWait(20);
            }

            long before = GC.GetAllocatedBytesForCurrentThread();
            body(control);
            state.AllocatedBytes = GC.GetAllocatedBytesForCurrentThread() - before;
        }
#pragma warning disable CA1031 // Any failure of a side is reported by the main thread after the join.
        catch (Exception e)
#pragma warning restore CA1031
        {
            state.Error = e;
            control.Abort();
        }
    }

    private static double? Finite(double value) => double.IsFinite(value) ? value : null;

    private static double Percentile(double[] sorted, double p)
    {
        double rank = p * (sorted.Length - 1);
        int lo = (int)Math.Floor(rank);
        int hi = Math.Min(lo + 1, sorted.Length - 1);
        return sorted[lo] + ((rank - lo) * (sorted[hi] - sorted[lo]));
    }

    private readonly record struct RunOutcome(double NsPerRoundTrip, double MessagesPerSecond, long AllocatedBytes, long Messages);

    private sealed class SideState
    {
        public long AllocatedBytes;
        public Exception? Error;
    }

    /// <summary>Per-run medians plus the allocation total over all measured runs of one variant and mode.</summary>
    private sealed class Samples(int capacity)
    {
        private readonly List<double> _values = new(capacity);
        private long _allocated;
        private long _messages;

        public void Add(double value, long allocated, long messages)
        {
            _values.Add(value);
            _allocated += allocated;
            _messages += messages;
        }

        public double Median
        {
            get
            {
                double[] sorted = [.. _values];
                Array.Sort(sorted);
                return sorted.Length == 0 ? double.NaN : Percentile(sorted, 0.5);
            }
        }

        public double AllocatedPerMessage => _messages == 0 ? double.NaN : (double)_allocated / _messages;
    }

    /// <summary>Resolved settings: whether to pin, whether spinners must yield, and the run length that fits the budget.</summary>
    private sealed class BenchPlan
    {
        private BenchPlan(UrpcBenchSettings settings, bool pinned, bool yieldWhileSpinning, TimeSpan runDuration)
        {
            Settings = settings;
            Pinned = pinned;
            YieldWhileSpinning = yieldWhileSpinning;
            RunDuration = runDuration;
        }

        public UrpcBenchSettings Settings { get; }

        public bool Pinned { get; }

        public bool YieldWhileSpinning { get; }

        public TimeSpan RunDuration { get; }

        public static BenchPlan Create(UrpcBenchSettings settings, Action<string>? progress)
        {
            bool pinned = settings.Pin;
            if (pinned && Environment.ProcessorCount < 2)
            {
                progress?.Invoke("this machine has 1 CPU: running unpinned, and spinning threads yield (figures are not comparable with a 2-CPU run)");
                pinned = false;
            }
            else if (pinned && ProbePinning(settings) is { } why)
            {
                progress?.Invoke($"cannot pin to CPUs {settings.CpuA} and {settings.CpuB} ({why}): running unpinned");
                pinned = false;
            }
            else if (!pinned)
            {
                progress?.Invoke("pinning disabled: running unpinned");
            }

            // Two busy-spinning threads on one CPU would each wait a whole time slice for the other.
            bool yieldWhileSpinning = Environment.ProcessorCount < 2;

            // Fit the budget: the wake-up run is about 0.6 ms per sample; thread start and GC about 5 ms per run.
            TimeSpan fixedCost = TimeSpan.FromMilliseconds((settings.WakeSamples * 0.6) + (Measurements * (settings.Runs + 1) * 5.0));
            TimeSpan duration = settings.RunDuration;
            TimeSpan estimate = (duration * (Measurements * (settings.Runs + 1))) + fixedCost;
            if (estimate > settings.TimeBudget)
            {
                TimeSpan fitted = (settings.TimeBudget - fixedCost) / (Measurements * (settings.Runs + 1));
                duration = fitted < TimeSpan.FromMilliseconds(10) ? TimeSpan.FromMilliseconds(10) : fitted;
                progress?.Invoke($"runs shortened to {duration.TotalMilliseconds:0} ms to fit the {settings.TimeBudget.TotalSeconds:0} s budget");
            }

            progress?.Invoke($"{(pinned ? $"pinned to CPUs {settings.CpuA} and {settings.CpuB}" : "unpinned")}; "
                + $"{settings.Runs} passes + warm-up, {duration.TotalMilliseconds:0} ms per run, about {((duration * (Measurements * (settings.Runs + 1))) + fixedCost).TotalSeconds:0} s in all");
            return new BenchPlan(settings, pinned, yieldWhileSpinning, duration);
        }

        private static string? ProbePinning(UrpcBenchSettings settings)
        {
            string? failure = null;
            var probe = new Thread(() =>
            {
                if (!CpuAffinity.TryPinCurrentThread(settings.CpuA, out string? e1))
                {
                    failure = $"CPU {settings.CpuA}: {e1}";
                }
                else if (!CpuAffinity.TryPinCurrentThread(settings.CpuB, out string? e2))
                {
                    failure = $"CPU {settings.CpuB}: {e2}";
                }
            });
            probe.Start();
            probe.Join();
            return failure;
        }
    }
}
