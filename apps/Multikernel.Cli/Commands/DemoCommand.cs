using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Multikernel.Cli.Display;
using Multikernel.Cli.Demo;
using Multikernel.Monitor.Hosting;
using Spectre.Console;

namespace Multikernel.Cli.Commands;

/// <summary>
/// <c>multikernel demo</c>: the embedded default, the whole product at a glance. Boots every CPU;
/// netd owns the in-memory NIC; the http and kv applications run on their own TCP/IP stacks in
/// their own domains and a built-in load generator (one more stack) drives them; meanwhile every
/// core streams to every other core and a token circles them all. It prints requests/s and
/// latency percentiles per application, the per-core summary, the core x core message matrix,
/// netd's counters, and a capability shared with every core and revoked.
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
        var network = new NetworkDemo();
        using IHost? host = CliHost.TryBuild(CliHost.Overrides(cores, traceFile, memory), out int unusable, o =>
        {
            DemoWorkload.Configure(o, counters);
            int machineCores;
            try
            {
                machineCores = o.ResolveCores(Environment.ProcessorCount);
            }
            catch (FormatException)
            {
                return; // a malformed --cores: the options' own validation says so
            }

            network.Configure(o, machineCores);
        });
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
        AnsiConsole.MarkupLine($"[bold]multikernel demo[/]: {runtime.Cores} cores on {runtime.Machine.Cpus} CPUs{(runtime.Machine.Oversubscribed ? " [yellow](oversubscribed)[/]" : string.Empty)}; netd owns the in-memory NIC (core {runtime.Cores - 1}), http and kv run on their own stacks and a load generator drives them; every core streams to every other core, and a token circles all cores.");
        string? networkProblem = null;
        try
        {
            await network.StartLoadAsync(runtime, TimeSpan.FromSeconds(seconds), Connections, cancellationToken);
        }
        catch (Exception ex) when (ex is TimeoutException or Monitor.MonitorException or OperationCanceledException)
        {
            networkProblem = ex.Message;
        }

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
        if (networkProblem is null)
        {
            try
            {
                await network.Finished.WaitAsync(TimeSpan.FromSeconds(30), cancellationToken);
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
            {
                networkProblem = ex.Message;
            }
        }

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

        Table netdTable = NetdTable(network.Netd); // read while netd still runs
        await host.StopAsync(CancellationToken.None);

        AnsiConsole.Write(ApplicationTable(network, seconds));
        if (networkProblem is not null)
        {
            AnsiConsole.MarkupLine($"[yellow]network load: {Markup.Escape(networkProblem)}[/]");
        }

        AnsiConsole.Write(StatsRenderer.CoreTable(start, end, time, runtime.Machine.Oversubscribed));
        AnsiConsole.Write(StatsRenderer.Matrix(start, end, time));
        long laps = counters.Laps - lapsAtStart;
        AnsiConsole.MarkupLine($"token ring: {laps:N0} laps through {runtime.Cores} cores in {elapsed:F1} s ({StatsRenderer.Rate(laps * runtime.Cores / Math.Max(elapsed, 1e-9))} hops/s)");
        AnsiConsole.Write(netdTable);
        System.Console.WriteLine(capabilities);
        return 0;
    }

    /// <summary>Keep-alive connections the load generator holds to each application.</summary>
    private const int Connections = 4;

    private static Table ApplicationTable(NetworkDemo network, double seconds)
    {
        var table = new Table().Border(TableBorder.Rounded).Title($"applications on our stack, driven by the built-in load generator ({Connections} connections each, {seconds:0.#} s)");
        table.AddColumns("app", "workload", "requests", "requests/s", "p50 µs", "p99 µs", "errors");
        foreach (LoadResult r in new[] { network.Http, network.Kv })
        {
            table.AddRow(r.Application, r.Workload, r.Requests.ToString("N0", CultureInfo.InvariantCulture), StatsRenderer.Rate(r.Requests / Math.Max(seconds, 1e-9)),
                Micro(r.Percentile(0.50)), Micro(r.Percentile(0.99)), r.Errors.ToString(CultureInfo.InvariantCulture));
        }

        return table;
    }

    private static string Micro(double us) => double.IsNaN(us) ? "-" : us.ToString("F0", CultureInfo.InvariantCulture);

    private static Table NetdTable(Multikernel.Netd.Daemon.NetdHost netd)
    {
        var table = new Table().Border(TableBorder.Rounded).Title("netd (in-memory NIC)");
        table.AddColumns("received", "sent", "between local stacks", "delivered small (copied)", "delivered in pages", "ARP replies", "unclaimed drops", "no-buffer drops");
        if (netd.Counters is { } c)
        {
            table.AddRow(N(c.RxPackets), N(c.TxPackets), N(c.LocalFrames), N(c.SmallDeliveries), N(c.PageDeliveries), N(c.ArpReplies),
                N(c.Dropped(Multikernel.Netd.Daemon.RxDropReason.Unclaimed)), N(c.Dropped(Multikernel.Netd.Daemon.RxDropReason.NoBuffer)));
        }

        return table;
    }

    private static string N(long value) => value.ToString("N0", CultureInfo.InvariantCulture);

    private static long TotalSent(MultikernelRuntime runtime) => runtime.Machine.Kernels.Sum(k => k.Counters.TotalSent);
}
