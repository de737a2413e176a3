using System.Diagnostics;
using System.Globalization;
using System.Text;
using Multikernel.CpuDriver.Diagnostics;
using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Urpc;
using Multikernel.Monitor;
using Multikernel.Monitor.Hosting;
using Multikernel.Monitor.Telemetry;
using OpenTelemetry;
using OpenTelemetry.Trace;

namespace Multikernel.Cli.Bench;

/// <summary>One row of <c>bench endpoint</c>.</summary>
public sealed record EndpointBenchResult(string Name, string Tracing, double RttNs, double MsgsPerSecond, double AllocBytesPerMessage, bool Oversubscribed);

/// <summary>
/// Domain-to-domain messaging through the whole runtime: two cores, a bound channel, kernels,
/// credits, the endpoints' tracing hooks. Measured with tracing off (no listener: the path pays
/// one HasListeners() check), with the real OpenTelemetry SDK sampling 1% of traces, and with
/// every message traced; each setting on a freshly booted machine, interleaved over several
/// passes, medians reported.
/// </summary>
public static class EndpointBench
{
    private const ushort Data = 1;

    /// <summary>The tracing settings measured: no listener, the SDK sampling 1%, the SDK recording everything.</summary>
    public static readonly IReadOnlyList<string> Modes = ["off", "1%", "100%"];

    public static IReadOnlyList<EndpointBenchResult> Run(int passes, int roundTrips, int streamed, Action<string>? progress, IReadOnlyList<string>? only = null)
    {
        string[] modes = [.. Modes.Where(m => only is null || only.Contains(m))];
        var rtt = modes.ToDictionary(m => m, _ => new List<double>());
        var rate = modes.ToDictionary(m => m, _ => new List<double>());
        var alloc = modes.ToDictionary(m => m, _ => new List<double>());
        bool oversubscribed = false;
        for (int pass = 0; pass <= passes; pass++)
        {
            foreach (string mode in modes)
            {
                using TracerProvider? tracing = mode switch
                {
                    "1%" => Sdk.CreateTracerProviderBuilder().AddSource(ActivitySources.Wildcard).SetSampler(TelemetrySetup.CreateSampler("parentbased_traceidratio", 0.01)).Build(),
                    "100%" => Sdk.CreateTracerProviderBuilder().AddSource(ActivitySources.Wildcard).SetSampler(new AlwaysOnSampler()).Build(),
                    _ => null,
                };
                // As `run` does with OTEL_TRACES_SAMPLER=parentbased_traceidratio: the cores sample roots at the ratio.
                (double r, double s, double a, bool over) = RunOnce(roundTrips, mode == "100%" ? streamed / 10 : streamed, mode == "1%" ? 0.01 : 1);
                oversubscribed |= over;
                if (pass == 0)
                {
                    continue; // warm-up: JIT, tiering
                }

                rtt[mode].Add(r);
                rate[mode].Add(s);
                alloc[mode].Add(a);
                progress?.Invoke($"pass {pass}/{passes} tracing {mode}: round trip {r:F0} ns, {s / 1e6:F2} M msgs/s, {a:F3} B/msg");
            }
        }

        return [.. modes.Select(m => new EndpointBenchResult("endpoint", m, Median(rtt[m]), Median(rate[m]), alloc[m].Max(), oversubscribed))];
    }

    private static (double RttNs, double MsgsPerSecond, double AllocPerMessage, bool Oversubscribed) RunOnce(int roundTrips, int streamed, double messageTraceRatio)
    {
        var result = new TaskCompletionSource<(double, double, double)>(TaskCreationOptions.RunContinuationsAsynchronously);
        var options = new MultikernelOptions { Cores = "2", ShutdownTimeout = TimeSpan.FromSeconds(5) };
        options.AddProgram("bench-echo", async ctx =>
        {
            using ServiceListener listener = await ctx.ExportAsync("bench-echo");
            DomainChannel channel = await listener.AcceptAsync(ctx.Stopping);
            Endpoint endpoint = channel.Endpoint;
            for (int i = 0; i < roundTrips; i++)
            {
                Message m = await endpoint.ReadAsync();
                await endpoint.WriteAsync(in m);
            }

            for (int i = 0; i < streamed; i++)
            {
                _ = await endpoint.ReadAsync();
            }
        });
        options.AddProgram("bench-client", async ctx =>
        {
            try
            {
                DomainChannel channel = await ctx.BindAsync("bench-echo", TimeSpan.FromSeconds(30));
                Endpoint endpoint = channel.Endpoint;
                var message = Message.Create(Data);
                long allocated = GC.GetAllocatedBytesForCurrentThread();
                long start = Stopwatch.GetTimestamp();
                for (int i = 0; i < roundTrips; i++)
                {
                    message.Word0 = (ulong)i;
                    await endpoint.WriteAsync(in message);
                    message = await endpoint.ReadAsync();
                }

                double rttNs = Stopwatch.GetElapsedTime(start).TotalMilliseconds * 1e6 / roundTrips;
                start = Stopwatch.GetTimestamp();
                for (int i = 0; i < streamed; i++)
                {
                    message.Word0 = (ulong)i;
                    await endpoint.WriteAsync(in message);
                }

                double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
                double perMessage = (GC.GetAllocatedBytesForCurrentThread() - allocated) / (double)(roundTrips * 2 + streamed);
                result.SetResult((rttNs, streamed / seconds, perMessage));
            }
#pragma warning disable CA1031 // reported to the caller
            catch (Exception ex)
#pragma warning restore CA1031
            {
                result.SetException(ex);
            }
        });
        options.SpawnAtBoot("bench-echo", core: 1);
        options.SpawnAtBoot("bench-client", core: 0);
        var runtime = new MultikernelRuntime(options, messageTraceRatio: messageTraceRatio);
        try
        {
            runtime.StartAsync().GetAwaiter().GetResult();
            (double r, double s, double a) = result.Task.WaitAsync(TimeSpan.FromMinutes(2)).GetAwaiter().GetResult();
            return (r, s, a, runtime.Machine.Oversubscribed);
        }
        finally
        {
            runtime.StopAsync().GetAwaiter().GetResult();
        }
    }

    private static double Median(List<double> values)
    {
        values.Sort();
        return values.Count == 0 ? double.NaN : values.Count % 2 == 1 ? values[values.Count / 2] : (values[(values.Count / 2) - 1] + values[values.Count / 2]) / 2;
    }

    public static string Render(IReadOnlyList<EndpointBenchResult> results)
    {
        EndpointBenchResult off = results.FirstOrDefault(r => r.Tracing == "off") ?? results[0];
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"domain-to-domain through two kernels (bound channel, credits, tracing hooks){(off.Oversubscribed ? " [oversubscribed]" : string.Empty)}");
        text.AppendLine("tracing   round trip ns   x off   M msgs/s   x off   alloc B/msg (client core)");
        foreach (EndpointBenchResult r in results)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"{r.Tracing,-8} {r.RttNs,14:F0} {r.RttNs / off.RttNs,7:F2} {r.MsgsPerSecond / 1e6,10:F2} {r.MsgsPerSecond / off.MsgsPerSecond,7:F2} {r.AllocBytesPerMessage,12:F3}");
        }

        return text.ToString();
    }

    public static void WriteJson(IReadOnlyList<EndpointBenchResult> results, string path)
    {
        var text = new StringBuilder("[\n");
        for (int i = 0; i < results.Count; i++)
        {
            EndpointBenchResult r = results[i];
            text.Append(CultureInfo.InvariantCulture, $"  {{\"name\": \"{r.Name}\", \"tracing\": \"{r.Tracing}\", \"rtt_ns\": {r.RttNs:F1}, \"msgs_per_s\": {r.MsgsPerSecond:F0}, \"bytes_per_msg\": 64, \"alloc_bytes_per_msg\": {r.AllocBytesPerMessage:F4}, \"oversubscribed\": {(r.Oversubscribed ? "true" : "false")}}}");
            text.Append(i + 1 < results.Count ? ",\n" : "\n");
        }

        File.WriteAllText(path, text.Append("]\n").ToString());
    }
}
