using System.CommandLine;
using System.Diagnostics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Multikernel.Cli.Display;
using Multikernel.Cli.Demo;
using Multikernel.Monitor.Hosting;
using Spectre.Console;

namespace Multikernel.Cli.Commands;

/// <summary>
/// <c>multikernel demo</c>: the embedded default. Boots every CPU, runs the built-in cross-core
/// workload (every core streams to every other core, plus a token ring), shows progress and
/// prints a per-core summary and the core x core message matrix.
/// </summary>
internal static class DemoCommand
{
    public static Command Create()
    {
        var cores = CommonOptions.Cores();
        var seconds = new Option<double>("--seconds")
        {
            Description = "How long the workload runs.",
            DefaultValueFactory = _ => 5,
        };
        seconds.Validators.Add(r =>
        {
            double s = CommonOptions.TryGet<double?>(r) ?? 5;
            if (s <= 0 || s > 3600 || double.IsNaN(s))
            {
                r.AddError($"--seconds must be between 0 and 3600 (got {s}).");
            }
        });
        var traceFile = CommonOptions.TraceFile();
        var memory = CommonOptions.Memory();
        var command = new Command("demo", "Boot all CPUs, run a cross-core streaming workload and a token ring, and print the per-core summary and message matrix.")
        {
            cores, seconds, traceFile, memory,
        };
        command.SetAction((parse, ct) => RunAsync(parse.GetValue(cores), parse.GetValue(seconds), parse.GetValue(traceFile), parse.GetValue(memory), ct));
        return command;
    }

    private static async Task<int> RunAsync(string? cores, double seconds, string? traceFile, string? memory, CancellationToken cancellationToken)
    {
        var counters = new DemoCounters();
        using IHost? host = CliHost.TryBuild(CliHost.Overrides(cores, traceFile, memory), out int unusable, o => DemoWorkload.Configure(o, counters));
        if (host is null)
        {
            return unusable;
        }

        if (await CliHost.TryStartAsync(host, cancellationToken) is int failed)
        {
            return failed;
        }

        var runtime = host.Services.GetRequiredService<MultikernelRuntime>();
        TimeProvider time = runtime.Time;
        AnsiConsole.MarkupLine($"[bold]multikernel demo[/]: {runtime.Cores} cores on {runtime.Machine.Cpus} CPUs{(runtime.Machine.Oversubscribed ? " [yellow](oversubscribed)[/]" : string.Empty)}; every core streams to every other core, and a token circles all cores.");
        MachineSnapshot start = MachineSnapshot.Take(runtime.Machine, time);
        long lapsAtStart = counters.Laps;
        var watch = Stopwatch.StartNew();
        bool interactive = AnsiConsole.Profile.Capabilities.Interactive && !System.Console.IsOutputRedirected;
        try
        {
            if (interactive)
            {
                await AnsiConsole.Progress().AutoClear(true).StartAsync(async progress =>
                {
                    ProgressTask task = progress.AddTask("cross-core workload", maxValue: seconds);
                    while (watch.Elapsed.TotalSeconds < seconds)
                    {
                        await Task.Delay(TimeSpan.FromMilliseconds(200), cancellationToken);
                        task.Value = Math.Min(seconds, watch.Elapsed.TotalSeconds);
                        task.Description = $"cross-core workload: {StatsRenderer.Rate(TotalSent(runtime) / Math.Max(0.001, watch.Elapsed.TotalSeconds))} msgs/s";
                    }
                });
            }
            else
            {
                for (double remaining = seconds; remaining > 0.001; remaining = seconds - watch.Elapsed.TotalSeconds)
                {
                    await Task.Delay(TimeSpan.FromSeconds(Math.Min(1, remaining)), cancellationToken);
                    System.Console.WriteLine($"  {watch.Elapsed.TotalSeconds,5:F1} s  {TotalSent(runtime),14:N0} messages sent, token laps {counters.Laps - lapsAtStart:N0}");
                }
            }
        }
        catch (OperationCanceledException)
        {
            // Ctrl-C: still print what was measured.
        }

        MachineSnapshot end = MachineSnapshot.Take(runtime.Machine, time);
        double elapsed = time.GetElapsedTime(start.Timestamp, end.Timestamp).TotalSeconds;

        // Capabilities: share one frame from core 0 with every other core, then revoke it.
        string capabilities;
        try
        {
            for (int k = 1; k < runtime.Cores; k++)
            {
                await runtime.SpawnAsync(k, DemoWorkload.Holder);
            }

            await runtime.SpawnAsync(0, DemoWorkload.Revoker);
            var (holders, read, revoked, took) = await counters.Capabilities.Task.WaitAsync(TimeSpan.FromSeconds(30), cancellationToken);
            capabilities = $"capabilities: a frame written on core 0 was read in place on {read} of {holders} other cores, then revoked on all of them in {took.TotalMicroseconds:F1} µs (median of 5 rounds, while the streams run) ({revoked} of {holders} holders now get CapabilityRevokedException)";
        }
        catch (Exception ex) when (ex is TimeoutException or OperationCanceledException or Monitor.MonitorException)
        {
            capabilities = $"capabilities: step skipped ({ex.Message})";
        }

        await host.StopAsync(CancellationToken.None);

        AnsiConsole.Write(StatsRenderer.CoreTable(start, end, time, runtime.Machine.Oversubscribed));
        AnsiConsole.Write(StatsRenderer.Matrix(start, end, time));
        long laps = counters.Laps - lapsAtStart;
        AnsiConsole.MarkupLine($"token ring: {laps:N0} laps through {runtime.Cores} cores in {elapsed:F1} s ({StatsRenderer.Rate(laps * runtime.Cores / Math.Max(elapsed, 1e-9))} hops/s)");
        System.Console.WriteLine(capabilities);
        return 0;
    }

    private static long TotalSent(MultikernelRuntime runtime) => runtime.Machine.Kernels.Sum(k => k.Counters.TotalSent);
}
