using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Serialization;
using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Kernel;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.Cli.Bench;

/// <summary>One row of <c>bench wakeup</c>: latency from "work published" to "parked core running it".</summary>
public sealed record WakeupBenchResult(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("samples")] int Samples,
    [property: JsonPropertyName("p50_us")] double P50Us,
    [property: JsonPropertyName("p99_us")] double P99Us,
    [property: JsonPropertyName("mean_us")] double MeanUs);

[JsonSerializable(typeof(List<WakeupBenchResult>))]
[JsonSourceGenerationOptions(WriteIndented = true)]
internal sealed partial class WakeupBenchJsonContext : JsonSerializerContext;

/// <summary>
/// Wake-up latency of a parked core, side by side: the old park (a thread blocked on a
/// <see cref="SemaphoreSlim"/>, released by the sender), the new park woken by a doorbell (a
/// message from another core: eventfd in the receiver's epoll set, through dispatch to the
/// awaiting domain) and woken by a registered descriptor (an eventfd a kernel service watches,
/// as netd's TAP device). The sender waits 1 ms between samples so the receiver is always parked.
/// No thread is pinned (the semaphore threads are not either): on a shared machine a pinned
/// thread waits for its one CPU, which measures the neighbours rather than the wake-up path.
/// </summary>
public static class WakeupBench
{
    public static IReadOnlyList<WakeupBenchResult> Run(int samples, Action<string>? progress)
    {
        progress?.Invoke("semaphore park (old)");
        var results = new List<WakeupBenchResult> { Summarize("semaphore-park (old)", Semaphore(samples)) };
        progress?.Invoke("doorbell through epoll (message from another core)");
        results.Add(Summarize("doorbell-epoll-park", Doorbell(samples)));
        progress?.Invoke("descriptor through epoll (kernel service)");
        results.Add(Summarize("descriptor-epoll-park", Descriptor(samples)));
        return results;
    }

    private static double[] Semaphore(int samples)
    {
        using var semaphore = new SemaphoreSlim(0);
        long published = 0;
        var latencies = new double[samples];
        var receiver = new Thread(() =>
        {
            for (int i = 0; i < samples; i++)
            {
                semaphore.Wait();
                latencies[i] = Stopwatch.GetElapsedTime(Volatile.Read(ref published)).TotalMicroseconds;
            }
        });
        receiver.Start();
        for (int i = 0; i < samples; i++)
        {
            Thread.Sleep(1);
            Volatile.Write(ref published, Stopwatch.GetTimestamp());
            semaphore.Release();
        }

        receiver.Join();
        return latencies;
    }

    private static double[] Doorbell(int samples)
    {
        var latencies = new double[samples];
        using var machine = new Machine(2, new KernelOptions { PinThreads = false }, TimeProvider.System);
        machine.StartCore(0);
        machine.StartCore(1);
        try
        {
            CoreKernel sender = machine.Kernels[0];
            CoreKernel receiver = machine.Kernels[1];
            Endpoint a = sender.RunAsync(() => sender.CreateEndpoint("wake a")).GetAwaiter().GetResult();
            Endpoint b = receiver.RunAsync(() => receiver.CreateEndpoint("wake b")).GetAwaiter().GetResult();
            sender.RunAsync(() => { a.Connect(1, b.Id); return 0; }).GetAwaiter().GetResult();
            receiver.RunAsync(() => { b.Connect(0, a.Id); return 0; }).GetAwaiter().GetResult();
            Task<int> reading = receiver.RunAsync(async () =>
            {
                for (int i = 0; i < samples; i++)
                {
                    Message m = await b.ReadAsync();
                    latencies[i] = Stopwatch.GetElapsedTime((long)m.Word0).TotalMicroseconds;
                }

                return 0;
            });
            sender.RunAsync(async () =>
            {
                for (int i = 0; i < samples; i++)
                {
                    await sender.Delay(TimeSpan.FromMilliseconds(1));
                    await a.WriteAsync(Message.Create(1, (ulong)Stopwatch.GetTimestamp()));
                }

                return 0;
            }).WaitAsync(TimeSpan.FromMinutes(2)).GetAwaiter().GetResult();
            reading.WaitAsync(TimeSpan.FromMinutes(1)).GetAwaiter().GetResult();
        }
        finally
        {
            machine.HaltAll(TimeSpan.FromSeconds(10));
        }

        return latencies;
    }

    private static double[] Descriptor(int samples)
    {
        int fd = LinuxInterop.CreateEventFd();
        var service = new EventFdService(fd, samples);
        try
        {
            using var machine = new Machine(1, new KernelOptions { PinThreads = false }, TimeProvider.System);
            machine.StartCore(0);
            try
            {
                CoreKernel core = machine.Kernels[0];
                core.RunAsync(() => core.RegisterWakeSource(fd, service)).GetAwaiter().GetResult();
                for (int i = 0; i < samples; i++)
                {
                    Thread.Sleep(1);
                    Volatile.Write(ref service.Published, Stopwatch.GetTimestamp());
                    _ = LinuxInterop.SignalEventFd(fd);
                    var spin = new SpinWait();
                    while (Volatile.Read(ref service.Count) <= i)
                    {
                        spin.SpinOnce();
                    }
                }
            }
            finally
            {
                machine.HaltAll(TimeSpan.FromSeconds(10));
            }
        }
        finally
        {
            _ = LinuxInterop.close(fd);
        }

        return service.Latencies;
    }

    private sealed class EventFdService(int fd, int samples) : IKernelService
    {
        public long Published;
        public int Count;

        public double[] Latencies { get; } = new double[samples];

        public bool HasWork => false;

        public int Poll()
        {
            if (!LinuxInterop.TryDrainEventFd(fd, out _))
            {
                return 0;
            }

            if (Count < Latencies.Length)
            {
                Latencies[Count] = Stopwatch.GetElapsedTime(Volatile.Read(ref Published)).TotalMicroseconds;
                Volatile.Write(ref Count, Count + 1);
            }

            return 1;
        }
    }

    private static WakeupBenchResult Summarize(string name, double[] latencies)
    {
        double[] sorted = [.. latencies.OrderBy(x => x)];
        return new WakeupBenchResult(name, sorted.Length, sorted[sorted.Length / 2], sorted[Math.Min(sorted.Length - 1, (int)(sorted.Length * 0.99))], sorted.Average());
    }

    public static string Render(IReadOnlyList<WakeupBenchResult> results)
    {
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"{"name",-24} {"samples",8} {"p50 us",9} {"p99 us",9} {"mean us",9}");
        foreach (WakeupBenchResult r in results)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"{r.Name,-24} {r.Samples,8} {r.P50Us,9:F1} {r.P99Us,9:F1} {r.MeanUs,9:F1}");
        }

        return text.ToString();
    }

    public static void WriteJson(IReadOnlyList<WakeupBenchResult> results, string path) =>
        File.WriteAllText(path, System.Text.Json.JsonSerializer.Serialize([.. results], WakeupBenchJsonContext.Default.ListWakeupBenchResult));
}
