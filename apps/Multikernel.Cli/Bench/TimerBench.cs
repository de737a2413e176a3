using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json.Serialization;
using Multikernel.CpuDriver.Kernel;

namespace Multikernel.Cli.Bench;

/// <summary>One row of <c>bench timers</c>.</summary>
public sealed record TimerBenchResult(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("arms_per_s")] double ArmsPerSecond,
    [property: JsonPropertyName("resets_per_s")] double ResetsPerSecond,
    [property: JsonPropertyName("cancels_per_s")] double CancelsPerSecond,
    [property: JsonPropertyName("alloc_bytes_per_op")] double AllocBytesPerOp);

[JsonSerializable(typeof(List<TimerBenchResult>))]
[JsonSourceGenerationOptions(WriteIndented = true)]
internal sealed partial class TimerBenchJsonContext : JsonSerializerContext;

/// <summary>
/// Timer arm / reset / cancel rates through <see cref="ITimer.Change"/>: a core's timer wheel
/// (<see cref="CoreKernel.Timers"/>) against <see cref="TimeProvider.System"/> timers, both
/// measured in the same run on the same pinned core thread with the same pattern — what a TCP
/// stack does with its retransmission timer: a set of live timers armed from idle, re-armed to a
/// new due time (every ACK), then disarmed (everything acknowledged). Each side is warmed up
/// until the tiered JIT has optimized its code, then the two are measured in alternating trials
/// (so both see the same machine load) and each column reports the best trial. Allocation is the
/// measuring thread's allocated bytes over all timed loops.
/// </summary>
public static class TimerBench
{
    private const int Timers = 4096;
    private const int Trials = 5;

    public static IReadOnlyList<TimerBenchResult> Run(int rounds, Action<string>? progress)
    {
        var options = new KernelOptions { MaxTimersPerCore = Timers, PinThreads = true };
        using var machine = new Machine(1, options, TimeProvider.System);
        machine.StartCore(0);
        try
        {
            CoreKernel core = machine.Kernels[0];
            progress?.Invoke($"core-timers and system-timeprovider: {Trials} alternating trials of {rounds} rounds on core 0");
            return core.RunAsync(() => MeasureAll(core.Timers, rounds)).WaitAsync(TimeSpan.FromMinutes(5)).GetAwaiter().GetResult();
        }
        finally
        {
            machine.HaltAll(TimeSpan.FromSeconds(10));
        }
    }

    private static TimerBenchResult[] MeasureAll(CoreTimeProvider core, int rounds)
    {
        var sides = new[]
        {
            new Side("core-timers", core, core, Cycle<CoreSide>),
            new Side("system-timeprovider", TimeProvider.System, core, Cycle<SystemSide>),
            new Side("core-timers-clock-per-op", core, core, Cycle<CoreFreshSide>),
            new Side("null-itimer", new NullTimeProvider(), core, Cycle<NullSide>),
        };
        try
        {
            foreach (Side side in sides)
            {
                // Warm-up: long enough for tiered JIT to reach its optimized code on both sides.
                long warm = Stopwatch.GetTimestamp();
                while (Stopwatch.GetElapsedTime(warm) < TimeSpan.FromMilliseconds(700))
                {
                    side.Run(4, out _, out _, out _);
                }
            }

            for (int trial = 0; trial < Trials; trial++)
            {
                foreach (Side side in sides)
                {
                    long allocated = GC.GetAllocatedBytesForCurrentThread();
                    side.Run(rounds, out TimeSpan arm, out TimeSpan reset, out TimeSpan cancel);
                    side.Allocated += GC.GetAllocatedBytesForCurrentThread() - allocated;
                    side.Arm = Min(side.Arm, arm);
                    side.Reset = Min(side.Reset, reset);
                    side.Cancel = Min(side.Cancel, cancel);
                }
            }

            double ops = (double)Timers * rounds;
            return [.. sides.Select(s => new TimerBenchResult(s.Name, ops / s.Arm.TotalSeconds, ops / s.Reset.TotalSeconds, ops / s.Cancel.TotalSeconds, s.Allocated / (3 * ops * Trials)))];
        }
        finally
        {
            foreach (Side side in sides)
            {
                side.Dispose();
            }
        }
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    private delegate void CycleLoop(ITimer[] timers, CoreTimeProvider core, int rounds, out TimeSpan arm, out TimeSpan reset, out TimeSpan cancel);

    private sealed class Side : IDisposable
    {
        private readonly CycleLoop _cycle;
        private readonly CoreTimeProvider _core;

        public Side(string name, TimeProvider provider, CoreTimeProvider core, CycleLoop cycle)
        {
            Name = name;
            _cycle = cycle;
            _core = core;
            Timers = new ITimer[TimerBench.Timers];
            for (int i = 0; i < Timers.Length; i++)
            {
                Timers[i] = provider.CreateTimer(static _ => { }, null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            }
        }

        public string Name { get; }

        public ITimer[] Timers { get; }

        public TimeSpan Arm { get; set; } = TimeSpan.MaxValue;

        public TimeSpan Reset { get; set; } = TimeSpan.MaxValue;

        public TimeSpan Cancel { get; set; } = TimeSpan.MaxValue;

        public long Allocated { get; set; }

        public void Run(int rounds, out TimeSpan arm, out TimeSpan reset, out TimeSpan cancel) => _cycle(Timers, _core, rounds, out arm, out reset, out cancel);

        public void Dispose()
        {
            foreach (ITimer timer in Timers)
            {
                timer.Dispose();
            }
        }
    }

    // One native copy of the loop per side (TSide is a distinct value type for each), so each
    // side's ITimer.Change call site sees one timer type and the JIT's profile-guided
    // devirtualization treats both alike.
    private struct CoreSide;

    private struct SystemSide;

    private struct CoreFreshSide;

    private struct NullSide;

    private static void Cycle<TSide>(ITimer[] timers, CoreTimeProvider core, int rounds, out TimeSpan arm, out TimeSpan reset, out TimeSpan cancel)
        where TSide : struct
    {
        arm = reset = cancel = TimeSpan.Zero;
        for (int round = 0; round < rounds; round++)
        {
            long start = Stopwatch.GetTimestamp();
            for (int i = 0; i < timers.Length; i++)
            {
                FreshClock<TSide>(core);
                // Due times spread over 10 ms .. 2 s: several wheel levels, never due during the run.
                // Each round's arm is later than the last round's re-arm, as a TCP stack's next
                // send arms its retransmission timer later than the expiry it last disarmed.
                timers[i].Change(TimeSpan.FromMilliseconds(10 + ((i * 7919) % 2000) + (2 * round)), Timeout.InfiniteTimeSpan);
            }

            long armed = Stopwatch.GetTimestamp();
            for (int i = 0; i < timers.Length; i++)
            {
                FreshClock<TSide>(core);
                // An ACK re-arms the retransmission timer to now + RTO, with now a little later than at
                // the arm: the due time moves out (here by 1 ms), as it does on every ACK.
                timers[i].Change(TimeSpan.FromMilliseconds(11 + ((i * 7919) % 2000) + (2 * round)), Timeout.InfiniteTimeSpan);
            }

            long reset2 = Stopwatch.GetTimestamp();
            for (int i = 0; i < timers.Length; i++)
            {
                FreshClock<TSide>(core);
                timers[i].Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            }

            long end = Stopwatch.GetTimestamp();
            arm += Stopwatch.GetElapsedTime(start, armed);
            reset += Stopwatch.GetElapsedTime(armed, reset2);
            cancel += Stopwatch.GetElapsedTime(reset2, end);
        }
    }

    // The clock-per-op row: every change reads the clock, as when each re-arm is the first of its
    // work item (one ACK per message). The other rows compile this away (TSide is a value type).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FreshClock<TSide>(CoreTimeProvider core)
        where TSide : struct
    {
        if (typeof(TSide) == typeof(CoreFreshSide))
        {
            core.InvalidateCachedNow();
        }
    }

    /// <summary>The harness floor: an <see cref="ITimer"/> whose change does one add (the loop, the interface call and the TimeSpan arguments cost this much on any side).</summary>
    private sealed class NullTimeProvider : TimeProvider
    {
        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) => new NullTimer();

        private sealed class NullTimer : ITimer
        {
            private long _sum;

            public bool Change(TimeSpan dueTime, TimeSpan period)
            {
                _sum += dueTime.Ticks;
                return true;
            }

            public void Dispose() => GC.KeepAlive(_sum);

            public ValueTask DisposeAsync() => ValueTask.CompletedTask;
        }
    }

    public static string Render(IReadOnlyList<TimerBenchResult> results)
    {
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"{"name",-26} {"arms/s",14} {"resets/s",14} {"cancels/s",14} {"B/op",8}");
        foreach (TimerBenchResult r in results)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"{r.Name,-26} {r.ArmsPerSecond,14:N0} {r.ResetsPerSecond,14:N0} {r.CancelsPerSecond,14:N0} {r.AllocBytesPerOp,8:F2}");
        }

        if (results.Count >= 2)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"core-timers / system: arm x{results[0].ArmsPerSecond / results[1].ArmsPerSecond:F1}, reset x{results[0].ResetsPerSecond / results[1].ResetsPerSecond:F1}, cancel x{results[0].CancelsPerSecond / results[1].CancelsPerSecond:F1}");
        }

        return text.ToString();
    }

    public static void WriteJson(IReadOnlyList<TimerBenchResult> results, string path) =>
        File.WriteAllText(path, System.Text.Json.JsonSerializer.Serialize([.. results], TimerBenchJsonContext.Default.ListTimerBenchResult));
}
