using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Serialization;
using Multikernel.CpuDriver.Capabilities;
using Multikernel.CpuDriver.Kernel;
using Multikernel.Monitor;
using Multikernel.Monitor.Hosting;

namespace Multikernel.Cli.Bench;

/// <summary>One point of the shootdown figure.</summary>
public sealed record ShootdownResult(
    [property: JsonPropertyName("protocol")] string Protocol,
    [property: JsonPropertyName("cores")] int Cores,
    [property: JsonPropertyName("latency_ns")] double LatencyNs,
    [property: JsonPropertyName("oversubscribed")] bool Oversubscribed,
    [property: JsonPropertyName("p90_ns")] double P90Ns,
    [property: JsonPropertyName("iterations")] int Iterations);

[JsonSerializable(typeof(List<ShootdownResult>))]
[JsonSourceGenerationOptions(WriteIndented = true)]
internal sealed partial class ShootdownJsonContext : JsonSerializerContext;

/// <summary>
/// "TLB shootdown" (the multikernel paper, figures 6-7): revoke a Frame capability that has a
/// copy on every core and wait until every core has acknowledged. Three protocols side by side on
/// the same booted machine, interleaved: the capability protocol's two-phase revoke sent to each
/// core (unicast) or down a multicast tree, and a shared-memory baseline (one table under a lock,
/// every core polling an epoch and writing an ack array) polled from the same kernel loops. The
/// kernels spin instead of parking during the run, so neither side pays for wake-ups.
/// </summary>
public static class ShootdownBench
{
    public static IReadOnlyList<ShootdownResult> Run(IReadOnlyList<int> coreCounts, int iterations, Action<string>? progress)
    {
        var results = new List<ShootdownResult>();
        foreach (int cores in coreCounts)
        {
            results.AddRange(RunMachine(cores, iterations, progress));
        }

        return results;
    }

    private static List<ShootdownResult> RunMachine(int cores, int iterations, Action<string>? progress)
    {
        var samples = new Dictionary<string, List<double>> { ["unicast"] = [], ["multicast"] = [], ["shared-memory"] = [] };
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var shared = new SharedMemoryShootdown(cores, entries: 1);
        var options = new MultikernelOptions
        {
            Cores = cores.ToString(CultureInfo.InvariantCulture),
            Memory = "16MiB",
            DomainMemory = "64KiB",
            SpinBudget = int.MaxValue, // poll, never park: both protocols measured without wake-ups
            ShutdownTimeout = TimeSpan.FromSeconds(5),
        };
        options.AddProgram("sd-holder", async ctx =>
        {
            using ServiceListener listener = await ctx.ExportAsync($"sd-{ctx.Core}");
            DomainChannel channel = await listener.AcceptAsync(ctx.Stopping);
            while (!ctx.Stopping.IsCancellationRequested)
            {
                _ = await channel.ReceiveCapabilityAsync(); // a copy is installed here; the owner revokes it
            }
        });
        options.AddProgram("sd-owner", async ctx =>
        {
            try
            {
                var holders = new List<DomainChannel>();
                for (int k = 1; k < ctx.CoreCount; k++)
                {
                    holders.Add(await ctx.BindAsync($"sd-{k}", TimeSpan.FromSeconds(30)));
                }

                int frame = ctx.Capabilities.Retype(ctx.RamSlot, CapabilityType.Frame, 1);
                int warmup = Math.Max(5, iterations / 10);
                for (int i = 0; i < warmup + iterations; i++)
                {
                    foreach (RevokeMode mode in new[] { RevokeMode.Unicast, RevokeMode.Multicast })
                    {
                        foreach (DomainChannel holder in holders)
                        {
                            await holder.SendCapabilityAsync(frame, TransferMode.Copy, CapabilityRights.Read);
                        }

                        long start = Stopwatch.GetTimestamp();
                        await ctx.Capabilities.RevokeAsync(frame, mode);
                        double ns = Stopwatch.GetElapsedTime(start).TotalMilliseconds * 1e6;
                        if (i >= warmup)
                        {
                            samples[mode == RevokeMode.Unicast ? "unicast" : "multicast"].Add(ns);
                        }
                    }

                    for (int k = 0; k < ctx.CoreCount; k++)
                    {
                        shared.Map(k, 0);
                    }

                    long s0 = Stopwatch.GetTimestamp();
                    shared.Revoke(0, initiator: 0);
                    double sharedNs = Stopwatch.GetElapsedTime(s0).TotalMilliseconds * 1e6;
                    if (i >= warmup)
                    {
                        samples["shared-memory"].Add(sharedNs);
                    }
                }

                done.SetResult();
            }
#pragma warning disable CA1031 // reported to the caller
            catch (Exception ex)
#pragma warning restore CA1031
            {
                done.TrySetException(ex);
            }
        });
        for (int k = 1; k < cores; k++)
        {
            options.SpawnAtBoot("sd-holder", core: k);
        }

        options.SpawnAtBoot("sd-owner", core: 0);
        var runtime = new MultikernelRuntime(options);
        for (int k = 0; k < cores; k++)
        {
            // The baseline's pollers run where a kernel would run them: in each core's loop.
            runtime.Machine.Kernels[k].AddService(new SharedMemoryPoller(shared, k));
        }

        bool oversubscribed = runtime.Machine.Oversubscribed;
        progress?.Invoke($"{cores} cores{(oversubscribed ? " (oversubscribed)" : string.Empty)}: {iterations} revokes per protocol");
        try
        {
            runtime.StartAsync().GetAwaiter().GetResult();
            done.Task.WaitAsync(TimeSpan.FromMinutes(5)).GetAwaiter().GetResult();
        }
        finally
        {
            runtime.StopAsync().GetAwaiter().GetResult();
        }

        return [.. samples.Select(kv => new ShootdownResult(kv.Key, cores, Percentile(kv.Value, 0.5), oversubscribed, Percentile(kv.Value, 0.9), kv.Value.Count))];
    }

    private static double Percentile(List<double> values, double p)
    {
        if (values.Count == 0)
        {
            return double.NaN;
        }

        values.Sort();
        return values[Math.Min(values.Count - 1, (int)(p * values.Count))];
    }

    public static string Render(IReadOnlyList<ShootdownResult> results)
    {
        var text = new StringBuilder();
        text.AppendLine("revoke of a frame with a copy on every core, until every core acknowledged (median µs, p90 in brackets)");
        text.AppendLine("cores   unicast              multicast            shared-memory");
        foreach (IGrouping<int, ShootdownResult> group in results.GroupBy(r => r.Cores))
        {
            string Cell(string protocol)
            {
                ShootdownResult r = group.First(x => x.Protocol == protocol);
                return string.Create(CultureInfo.InvariantCulture, $"{r.LatencyNs / 1000,8:F1} ({r.P90Ns / 1000,7:F1})");
            }

            bool over = group.First().Oversubscribed;
            text.AppendLine(CultureInfo.InvariantCulture, $"{group.Key,5}   {Cell("unicast"),-20} {Cell("multicast"),-20} {Cell("shared-memory"),-20}{(over ? " oversubscribed" : string.Empty)}");
        }

        text.AppendLine("oversubscribed: more kernels than CPUs, so cores take turns on a CPU; those rows measure the scheduler as much as the protocol.");
        return text.ToString();
    }

    public static void WriteJson(IReadOnlyList<ShootdownResult> results, string path) =>
        File.WriteAllText(path, System.Text.Json.JsonSerializer.Serialize([.. results], ShootdownJsonContext.Default.ListShootdownResult));

    private sealed class SharedMemoryPoller(SharedMemoryShootdown shared, int core) : IKernelService
    {
        public bool HasWork => false;

        public int Poll() => shared.Poll(core) ? 1 : 0;
    }
}
