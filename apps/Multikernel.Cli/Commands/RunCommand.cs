using System.CommandLine;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Multikernel.Cli.Display;
using Multikernel.Monitor.Hosting;
using Multikernel.Monitor.Telemetry;
using Spectre.Console;

namespace Multikernel.Cli.Commands;

/// <summary><c>multikernel run</c>: boot N cores and keep them running until Ctrl-C, SIGTERM or the duration ends.</summary>
internal static partial class RunCommand
{
    public static Command Create()
    {
        var cores = CommonOptions.Cores();
        var duration = new Option<double?>("--duration")
        {
            Description = "Stop after this many seconds (default: run until Ctrl-C or SIGTERM).",
        };
        duration.Validators.Add(r =>
        {
            if (CommonOptions.TryGet<double?>(r) is double d && (d <= 0 || double.IsNaN(d) || double.IsInfinity(d)))
            {
                r.AddError($"--duration must be a positive number of seconds (got {d}).");
            }
        });
        var stats = new Option<bool>("--stats") { Description = "Show a live table of per-core activity, refreshed every second." };
        var traceFile = CommonOptions.TraceFile();
        var memory = CommonOptions.Memory();
        var command = new Command("run", "Boot the cores under the generic host and keep them running until Ctrl-C/SIGTERM or --duration ends.")
        {
            cores, duration, stats, traceFile, memory,
        };
        var netd = new RunNetdOptions();
        netd.AddTo(command);
        Func<ParseResult, AppRequest> apps = AddAppOptions(command);
        command.SetAction((parse, ct) => RunAsync(parse.GetValue(cores), parse.GetValue(duration), parse.GetValue(stats), parse.GetValue(traceFile), parse.GetValue(memory), netd.Overrides(parse), apps(parse), ct));
        return command;
    }

    private static async Task<int> RunAsync(string? cores, double? durationSeconds, bool stats, string? traceFile, string? memory, Dictionary<string, string?> netdOverrides, AppRequest apps, CancellationToken cancellationToken)
    {
        Dictionary<string, string?> overrides = CliHost.Overrides(cores, traceFile, memory);
        foreach ((string key, string? value) in netdOverrides)
        {
            overrides[key] = value;
        }

        // netd's options first: the applications add the in-memory netd only when --nic chose none.
        using IHost? host = CliHost.TryBuild(overrides, out int unusable, services: s =>
        {
            RunNetdOptions.AddServices(s);
            ConfigureApps(s, apps);
        });
        if (host is null)
        {
            return unusable;
        }

        if (await CliHost.TryStartAsync(host, cancellationToken) is int failed)
        {
            return failed;
        }

        if (await RunNetdOptions.WaitForNetdAsync(host, cancellationToken) is int netdFailed)
        {
            return netdFailed;
        }

        var runtime = host.Services.GetRequiredService<MultikernelRuntime>();
        Hosting.SystemdNotify.Ready($"{runtime.Cores} cores booted");
        var lifetime = host.Services.GetRequiredService<IHostApplicationLifetime>();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(lifetime.ApplicationStopping, cancellationToken);
        if (durationSeconds is double seconds)
        {
            stop.CancelAfter(TimeSpan.FromSeconds(seconds));
        }

        if (stats)
        {
            await ShowStatsAsync(runtime, host.Services.GetRequiredService<Multikernel.Netd.Daemon.NetdHost>(), stop.Token);
        }
        else
        {
            try
            {
                await Task.Delay(Timeout.Infinite, stop.Token);
            }
            catch (OperationCanceledException)
            {
            }
        }

        Hosting.SystemdNotify.Stopping("stopping the cores");
        await host.StopAsync(CancellationToken.None);
        return 0;
    }

    private static async Task ShowStatsAsync(MultikernelRuntime runtime, Multikernel.Netd.Daemon.NetdHost netd, CancellationToken stop)
    {
        TimeProvider time = runtime.Time;
        using var meter = new MetricsSnapshotReader();
        MachineSnapshot previous = MachineSnapshot.Take(runtime.Machine, time);
        await AnsiConsole.Live(new Markup("[grey]collecting...[/]")).StartAsync(async live =>
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    await Task.Delay(TimeSpan.FromSeconds(1), stop);
                }
                catch (OperationCanceledException)
                {
                    break;
                }

                MachineSnapshot now = MachineSnapshot.Take(runtime.Machine, time);
                IReadOnlyList<MetricValue> values = meter.Collect();
                live.UpdateTarget(new Rows(
                    StatsRenderer.CoreTable(previous, now, time, runtime.Machine.Oversubscribed),
                    StatsRenderer.Matrix(previous, now, time),
                    StatsRenderer.MeterTables(values),
                    await NetdStatsRenderer.TablesAsync(values, netd)));
                previous = now;
            }
        });
    }
}

/// <summary>Options shared by several commands.</summary>
internal static class CommonOptions
{
    /// <summary>The option's value, or default when it did not parse (the parser reports that error itself).</summary>
    public static T? TryGet<T>(System.CommandLine.Parsing.OptionResult result)
    {
        try
        {
            return result.GetValueOrDefault<T>();
        }
        catch (InvalidOperationException)
        {
            return default;
        }
    }

    public static Option<string?> TraceFile() => new("--trace-file")
    {
        Description = "Write a Chrome Trace Event JSON file (open it in Perfetto): one track per core, an arrow from each send to its process. OTLP export is switched on by OTEL_EXPORTER_OTLP_ENDPOINT.",
    };

    public static Option<string?> Memory() => new("--memory")
    {
        Description = "Physical memory arena allocated at boot and split among the cores as RAM capabilities, e.g. 256MiB. Overrides Multikernel:Memory.",
    };

    public static Option<string?> Cores() => new("--cores")
    {
        Description = "Number of cores (kernels) to boot, or 'auto' for one per CPU. Overrides Multikernel:Cores.",
    };
}
