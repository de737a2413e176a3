using System.Diagnostics;
using System.Globalization;
using System.Text;
using Multikernel.Cli.Bench.Report;
using Multikernel.CpuDriver.Kernel;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.Cli.Bench;

/// <summary>One point of the updates figure.</summary>
/// <param name="Mode"><c>shared</c> (every core updates the lines itself) or <c>message</c> (cores send the update to the owner core).</param>
/// <param name="Cores">Cores taking part (for <c>message</c>: the owner and <c>Cores - 1</c> clients).</param>
/// <param name="Lines">Cache lines touched by one update.</param>
/// <param name="OpsPerSecond">Updates completed per second, all cores together.</param>
/// <param name="NsPerOp">Time one core waits for one of its updates to complete (latency).</param>
/// <param name="Oversubscribed">More threads than CPUs: they take turns on a CPU.</param>
internal sealed record UpdatesResult(string Mode, int Cores, int Lines, double OpsPerSecond, double NsPerOp, bool Oversubscribed);

/// <summary>Settings of one <c>bench updates</c> run.</summary>
internal sealed record UpdatesSettings(IReadOnlyList<int> CoreCounts, IReadOnlyList<int> LineCounts, TimeSpan RunDuration, int Runs)
{
    public static UpdatesSettings Quick => new([1, 2, 4], [1, 8], TimeSpan.FromMilliseconds(40), 1);

    public static UpdatesSettings Full => new([1, 2, 4, 8], [1, 2, 4, 8, 16], TimeSpan.FromMilliseconds(300), 3);

    public TimeSpan EstimatedDuration => RunDuration * (Runs * CoreCounts.Count * LineCounts.Count * 2);
}

/// <summary>
/// The multikernel paper's figure 3: N cores updating k shared cache lines, two ways, side by
/// side in one run. <b>shared</b>: every core applies its update itself with an atomic increment
/// of each of the k lines, so the lines bounce between the cores' caches (the cost of shared
/// memory grows with cores and lines). <b>message</b>: one core owns the lines; every other core
/// sends its update as one URPC message on its own ring to the owner and waits for the reply, so
/// only the ring slots move between caches and the owner's lines stay in its cache (the cost is
/// one round trip, whatever k, until the owner saturates). Threads are pinned round-robin to the
/// CPUs; with more threads than CPUs the rows are labelled oversubscribed.
/// </summary>
internal static class UpdatesBench
{
    /// <summary>The scenario's name, file stem and command.</summary>
    public const string Scenario = "updates";

    private const int LineStride = 128 / sizeof(long); // 128 bytes: no adjacent-line prefetch sharing
    private const ushort UpdateMessage = 1;
    private const ushort DoneMessage = 2;

    public static readonly IReadOnlyList<BenchColumn<UpdatesResult>> Columns =
    [
        new("mode", r => r.Mode),
        new("cores", r => r.Cores),
        new("lines", r => r.Lines),
        new("ops_per_s", r => r.OpsPerSecond),
        new("ns_per_op", r => r.NsPerOp),
        new("oversubscribed", r => r.Oversubscribed),
    ];

    public static readonly BenchPlot<UpdatesResult> Plot = new(
        "k cache lines per update: shared memory vs messages to the owner",
        "cores",
        "latency per update (ns)",
        r => r.Cores,
        r => r.NsPerOp,
        r => $"{r.Mode} k={r.Lines}",
        LogY: true,
        MarkOversubscribed: true);

    public static IReadOnlyList<UpdatesResult> Run(UpdatesSettings settings, Action<string>? progress)
    {
        var results = new List<UpdatesResult>();
        int cpus = Environment.ProcessorCount;
        foreach (int cores in settings.CoreCounts)
        {
            foreach (int lines in settings.LineCounts)
            {
                bool over = cores > cpus;
                progress?.Invoke(string.Create(CultureInfo.InvariantCulture, $"updates: {cores} cores, {lines} lines{(over ? " (oversubscribed)" : string.Empty)}"));
                // Interleave the two modes run by run, so drift on a shared machine hits both alike.
                var shared = new List<(double Ops, double Ns)>();
                var message = new List<(double Ops, double Ns)>();
                for (int run = 0; run < settings.Runs; run++)
                {
                    shared.Add(RunShared(cores, lines, settings.RunDuration));
                    message.Add(RunMessage(cores, lines, settings.RunDuration));
                }

                results.Add(Median("shared", cores, lines, over, shared));
                results.Add(Median("message", cores, lines, over, message));
            }
        }

        return results;
    }

    private static UpdatesResult Median(string mode, int cores, int lines, bool over, List<(double Ops, double Ns)> runs)
    {
        var ordered = runs.OrderBy(r => r.Ops).ToList();
        (double ops, double ns) = ordered[ordered.Count / 2];
        return new UpdatesResult(mode, cores, lines, ops, ns, over);
    }

    // ------------------------------------------------------------------ shared memory

    private static (double Ops, double Ns) RunShared(int cores, int lines, TimeSpan duration)
    {
        long[] table = GC.AllocateArray<long>((lines + 1) * LineStride, pinned: true);
        var control = new RunControl(cores);
        var counts = new long[cores];
        var threads = new Thread[cores];
        for (int t = 0; t < cores; t++)
        {
            int index = t;
            threads[t] = new Thread(() =>
            {
                Pin(index);
                control.ArriveAndWaitForStart();
                long ops = 0;
                while (!control.Stop)
                {
                    for (int j = 0; j < lines; j++)
                    {
                        Interlocked.Increment(ref table[(j + 1) * LineStride]);
                    }

                    ops++;
                }

                counts[index] = ops;
            }) { IsBackground = true, Name = $"updates-shared-{t}" };
        }

        return Measure(threads, control, counts, cores, duration);
    }

    // ------------------------------------------------------------------ messages to the owner

    private static (double Ops, double Ns) RunMessage(int cores, int lines, TimeSpan duration)
    {
        if (cores == 1)
        {
            // One core owns the lines and is its only user: updates are local, no message needed.
            return RunLocalOwner(lines, duration);
        }

        int clients = cores - 1;
        var requests = new UrpcRing[clients];
        var replies = new UrpcRing[clients];
        for (int i = 0; i < clients; i++)
        {
            requests[i] = new UrpcRing(4);
            replies[i] = new UrpcRing(4);
        }

        try
        {
            var control = new RunControl(cores);
            var counts = new long[cores];
            var threads = new Thread[cores];
            threads[0] = new Thread(() => Owner(control, requests, replies, lines)) { IsBackground = true, Name = "updates-owner" };
            for (int c = 0; c < clients; c++)
            {
                int index = c;
                threads[c + 1] = new Thread(() =>
                {
                    Pin(index + 1);
                    control.ArriveAndWaitForStart();
                    UrpcRing request = requests[index];
                    UrpcRing reply = replies[index];
                    Message update = Message.Create(UpdateMessage, (ulong)lines);
                    long ops = 0;
                    var wait = default(SpinWait);
                    while (!control.Stop)
                    {
                        while (!request.TryWrite(in update))
                        {
                            wait.SpinOnce(sleep1Threshold: -1);
                        }

                        Message done;
                        while (!reply.TryRead(out done))
                        {
                            if (control.Stop)
                            {
                                break;
                            }

                            wait.SpinOnce(sleep1Threshold: -1);
                        }

                        reply.PublishConsumed();
                        wait.Reset();
                        ops++;
                    }

                    counts[index + 1] = ops;
                }) { IsBackground = true, Name = $"updates-client-{c}" };
            }

            (double ops, double ns) = Measure(threads, control, counts, clients, duration);
            return (ops, ns);
        }
        finally
        {
            foreach (UrpcRing ring in requests)
            {
                ring.Dispose();
            }

            foreach (UrpcRing ring in replies)
            {
                ring.Dispose();
            }
        }
    }

    private static void Owner(RunControl control, UrpcRing[] requests, UrpcRing[] replies, int lines)
    {
        Pin(0);
        // The owner's lines are its own: plain stores, never shared with another core.
        long[] local = new long[(lines + 1) * LineStride];
        control.ArriveAndWaitForStart();
        var wait = default(SpinWait);
        Message done = Message.Create(DoneMessage);
        while (!control.Stop)
        {
            bool any = false;
            for (int i = 0; i < requests.Length; i++)
            {
                if (!requests[i].TryRead(out Message update))
                {
                    continue;
                }

                requests[i].PublishConsumed();
                int k = (int)update.Word0;
                for (int j = 0; j < k; j++)
                {
                    local[(j + 1) * LineStride]++;
                }

                while (!replies[i].TryWrite(in done) && !control.Stop)
                {
                    Thread.SpinWait(1);
                }

                any = true;
            }

            if (any)
            {
                wait.Reset();
            }
            else
            {
                wait.SpinOnce(sleep1Threshold: -1);
            }
        }

        GC.KeepAlive(local);
    }

    private static (double Ops, double Ns) RunLocalOwner(int lines, TimeSpan duration)
    {
        var control = new RunControl(1);
        var counts = new long[1];
        var thread = new Thread(() =>
        {
            Pin(0);
            long[] local = new long[(lines + 1) * LineStride];
            control.ArriveAndWaitForStart();
            long ops = 0;
            while (!control.Stop)
            {
                for (int j = 0; j < lines; j++)
                {
                    local[(j + 1) * LineStride]++;
                }

                ops++;
            }

            counts[0] = ops;
            GC.KeepAlive(local);
        }) { IsBackground = true, Name = "updates-local" };
        return Measure([thread], control, counts, 1, duration);
    }

    // ------------------------------------------------------------------ plumbing

    private static (double Ops, double Ns) Measure(Thread[] threads, RunControl control, long[] counts, int workers, TimeSpan duration)
    {
        try
        {
            foreach (Thread t in threads)
            {
                t.Start();
            }

            control.WaitForArrivals();
            long start = Stopwatch.GetTimestamp();
            control.Go();
            Thread.Sleep(duration);
            control.Stop = true;
            double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
            foreach (Thread t in threads)
            {
                if (!t.Join(TimeSpan.FromSeconds(30)))
                {
                    throw new TimeoutException($"{t.Name} did not stop.");
                }
            }

            long total = counts.Sum();
            double ops = total / seconds;
            // Each worker completes its updates one after another: its latency is its time per update.
            double ns = total == 0 ? double.NaN : workers * seconds * 1e9 / total;
            return (ops, ns);
        }
        finally
        {
            control.Stop = true;
            control.Go();
            foreach (Thread t in threads)
            {
                if (t.IsAlive)
                {
                    t.Join(TimeSpan.FromSeconds(30));
                }
            }
        }
    }

    private static void Pin(int index)
    {
        // Best effort: unpinned threads still measure the same thing, with more noise.
        _ = CpuAffinity.TryPinCurrentThread(index % Environment.ProcessorCount, out _);
    }

    public static string Render(IReadOnlyList<UpdatesResult> results)
    {
        var text = new StringBuilder();
        text.AppendLine("updating k cache lines per operation: latency per update (ns) and all cores' updates/s");
        text.AppendLine("cores  lines   shared ns/op    message ns/op   shared Mops/s   message Mops/s   message/shared latency");
        foreach (IGrouping<(int Cores, int Lines), UpdatesResult> g in results.GroupBy(r => (r.Cores, r.Lines)))
        {
            UpdatesResult s = g.First(r => r.Mode == "shared");
            UpdatesResult m = g.First(r => r.Mode == "message");
            text.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"{g.Key.Cores,5}  {g.Key.Lines,5}   {s.NsPerOp,12:F1}    {m.NsPerOp,12:F1}    {s.OpsPerSecond / 1e6,12:F2}    {m.OpsPerSecond / 1e6,13:F2}   {m.NsPerOp / s.NsPerOp,10:F2}x{(s.Oversubscribed ? "  oversubscribed" : string.Empty)}"));
        }

        text.AppendLine("message at 1 core: the owner updates its own lines (nothing to send). oversubscribed: more threads than CPUs.");
        return text.ToString();
    }

    /// <summary>Start barrier and stop flag shared by one run's threads (benchmark harness, not kernel state).</summary>
    private sealed class RunControl(int participants)
    {
        private readonly CountdownEvent _arrived = new(participants);
        private readonly ManualResetEventSlim _go = new(false);
        private volatile bool _stop;

        public bool Stop
        {
            get => _stop;
            set => _stop = value;
        }

        public void ArriveAndWaitForStart()
        {
            _arrived.Signal();
            _go.Wait();
        }

        public void WaitForArrivals() => _arrived.Wait(TimeSpan.FromSeconds(30));

        public void Go() => _go.Set();
    }
}
