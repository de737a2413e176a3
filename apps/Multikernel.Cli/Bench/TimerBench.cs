using System.Diagnostics;
using System.Globalization;
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
/// (<see cref="CoreKernel.Timers"/>, measured on the core's own thread) against
/// <see cref="TimeProvider.System"/> timers in the same run, the same pattern on both: a set of
/// timers armed from idle, re-armed to a new due time (a TCP stack's retransmission timer on every
/// ACK), then disarmed. Allocation is the measuring thread's allocated bytes over the timed loops.
/// </summary>
public static class TimerBench
{
    private const int Timers = 4096;

    public static IReadOnlyList<TimerBenchResult> Run(int rounds, Action<string>? progress)
    {
        var results = new List<TimerBenchResult>();
        var options = new KernelOptions { MaxTimersPerCore = Timers, PinThreads = true };
        using (var machine = new Machine(1, options, TimeProvider.System))
        {
            machine.StartCore(0);
            try
            {
                progress?.Invoke("core-timers: measuring on core 0");
                CoreKernel core = machine.Kernels[0];
                results.Add(core.RunAsync(() => Measure("core-timers", core.Timers, rounds)).WaitAsync(TimeSpan.FromMinutes(2)).GetAwaiter().GetResult());
            }
            finally
            {
                machine.HaltAll(TimeSpan.FromSeconds(10));
            }
        }

        progress?.Invoke("system-timeprovider: measuring on this thread");
        results.Add(Measure("system-timeprovider", TimeProvider.System, Math.Max(1, rounds / 10)));
        return results;
    }

    private static TimerBenchResult Measure(string name, TimeProvider provider, int rounds)
    {
        var timers = new ITimer[Timers];
        for (int i = 0; i < Timers; i++)
        {
            timers[i] = provider.CreateTimer(static _ => { }, null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        }

        // Warm-up round (JIT, first-touch of the wheel's slots).
        Cycle(timers, 1, out _, out _, out _);
        long allocated = GC.GetAllocatedBytesForCurrentThread();
        Cycle(timers, rounds, out TimeSpan arm, out TimeSpan reset, out TimeSpan cancel);
        allocated = GC.GetAllocatedBytesForCurrentThread() - allocated;
        foreach (ITimer timer in timers)
        {
            timer.Dispose();
        }

        double ops = (double)Timers * rounds;
        return new TimerBenchResult(name, ops / arm.TotalSeconds, ops / reset.TotalSeconds, ops / cancel.TotalSeconds, allocated / (3 * ops));
    }

    private static void Cycle(ITimer[] timers, int rounds, out TimeSpan arm, out TimeSpan reset, out TimeSpan cancel)
    {
        arm = reset = cancel = TimeSpan.Zero;
        for (int round = 0; round < rounds; round++)
        {
            long start = Stopwatch.GetTimestamp();
            for (int i = 0; i < timers.Length; i++)
            {
                // Due times spread over 10 ms .. 2 s: several wheel levels, never due during the run.
                timers[i].Change(TimeSpan.FromMilliseconds(10 + ((i * 7919) % 2000)), Timeout.InfiniteTimeSpan);
            }

            long armed = Stopwatch.GetTimestamp();
            for (int i = 0; i < timers.Length; i++)
            {
                timers[i].Change(TimeSpan.FromMilliseconds(200 + ((i + round) % 1000)), Timeout.InfiniteTimeSpan);
            }

            long reset2 = Stopwatch.GetTimestamp();
            for (int i = 0; i < timers.Length; i++)
            {
                timers[i].Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            }

            long end = Stopwatch.GetTimestamp();
            arm += Stopwatch.GetElapsedTime(start, armed);
            reset += Stopwatch.GetElapsedTime(armed, reset2);
            cancel += Stopwatch.GetElapsedTime(reset2, end);
        }
    }

    public static string Render(IReadOnlyList<TimerBenchResult> results)
    {
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"{"name",-22} {"arms/s",14} {"resets/s",14} {"cancels/s",14} {"B/op",8}");
        foreach (TimerBenchResult r in results)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"{r.Name,-22} {r.ArmsPerSecond,14:N0} {r.ResetsPerSecond,14:N0} {r.CancelsPerSecond,14:N0} {r.AllocBytesPerOp,8:F2}");
        }

        if (results.Count == 2)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"core-timers / system: arm x{results[0].ArmsPerSecond / results[1].ArmsPerSecond:F1}, reset x{results[0].ResetsPerSecond / results[1].ResetsPerSecond:F1}, cancel x{results[0].CancelsPerSecond / results[1].CancelsPerSecond:F1}");
        }

        return text.ToString();
    }

    public static void WriteJson(IReadOnlyList<TimerBenchResult> results, string path) =>
        File.WriteAllText(path, System.Text.Json.JsonSerializer.Serialize([.. results], TimerBenchJsonContext.Default.ListTimerBenchResult));
}
