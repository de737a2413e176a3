using System.Diagnostics;
using System.Globalization;
using System.Text;
using Multikernel.Monitor;
using Multikernel.Monitor.Hosting;

namespace Multikernel.Cli.Bench;

/// <summary>One row of <c>bench sharded</c>.</summary>
public sealed record ShardedBenchResult(string Name, double RttNs, double AllocBytesPerCall, bool Oversubscribed);

/// <summary>
/// The round trip of a sharded-service call from core 0 to core 1's instance (a pooled slot, one
/// ring message each way, the handler run on the serving core), next to a local call on the same
/// machine in the same run. Allocation is counted over the whole process (both cores), per call.
/// </summary>
public static class ShardedBench
{
    private sealed class Counter
    {
        public long Value { get; set; }
    }

    public static IReadOnlyList<ShardedBenchResult> Run(int calls, int passes, Action<string>? progress)
    {
        var options = new MultikernelOptions { Cores = "2", ShutdownTimeout = TimeSpan.FromSeconds(5) };
        var runtime = new MultikernelRuntime(options);
        var remote = new List<double>();
        var local = new List<double>();
        var allocations = new List<double>();
        try
        {
            runtime.StartAsync().GetAwaiter().GetResult();
            Sharded<Counter> shards = runtime.StartShardedAsync("bench", _ => new Counter()).GetAwaiter().GetResult();
            for (int pass = 0; pass <= passes; pass++)
            {
                (double r, double l, double a) = runtime.InvokeAsync(0, async _ =>
                {
                    long allocated = GC.GetTotalAllocatedBytes(precise: true);
                    long start = Stopwatch.GetTimestamp();
                    for (int i = 0; i < calls; i++)
                    {
                        await shards.InvokeOnAsync(1, 1L, static (c, x) => new ValueTask<long>(c.Value += x));
                    }

                    double rtt = Stopwatch.GetElapsedTime(start).TotalMilliseconds * 1e6 / calls;
                    double perCall = (GC.GetTotalAllocatedBytes(precise: true) - allocated) / (double)calls;
                    start = Stopwatch.GetTimestamp();
                    for (int i = 0; i < calls; i++)
                    {
                        await shards.InvokeOnAsync(0, 1L, static (c, x) => new ValueTask<long>(c.Value += x));
                    }

                    return (rtt, Stopwatch.GetElapsedTime(start).TotalMilliseconds * 1e6 / calls, perCall);
                }).WaitAsync(TimeSpan.FromMinutes(2)).GetAwaiter().GetResult();
                if (pass == 0)
                {
                    continue; // warm-up
                }

                remote.Add(r);
                local.Add(l);
                allocations.Add(a);
                progress?.Invoke($"pass {pass}/{passes}: remote {r:F0} ns, local {l:F0} ns, {a:F2} B/call; parks {runtime.Machine.Kernels[0].Counters.ParkCount}/{runtime.Machine.Kernels[1].Counters.ParkCount}");
            }

            return
            [
                new ShardedBenchResult("sharded-remote", Median(remote), allocations.Min(), runtime.Machine.Oversubscribed),
                new ShardedBenchResult("sharded-local", Median(local), 0, runtime.Machine.Oversubscribed),
            ];
        }
        finally
        {
            runtime.StopAsync().GetAwaiter().GetResult();
        }
    }

    private static double Median(List<double> values)
    {
        values.Sort();
        return values[values.Count / 2];
    }

    public static string Render(IReadOnlyList<ShardedBenchResult> results)
    {
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"sharded service call, core 0 -> core 1 vs on core 0{(results[0].Oversubscribed ? " [oversubscribed]" : string.Empty)}");
        text.AppendLine("name              round trip ns   x local   alloc B/call (process)");
        foreach (ShardedBenchResult r in results)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"{r.Name,-16} {r.RttNs,14:F0} {r.RttNs / results[1].RttNs,9:F1} {r.AllocBytesPerCall,12:F2}");
        }

        return text.ToString();
    }
}
