using System.CommandLine;
using Multikernel.Cli.Bench;
using Multikernel.Cli.Bench.Report;

namespace Multikernel.Cli.Commands;

/// <summary><c>multikernel bench</c>: measurements that compare the multikernel with the usual way, side by side in one run.</summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var command = new Command("bench", "Side-by-side measurements (ratios against a baseline in the same run).");
        // The suite: every subcommand with --out and --quick is a scenario `bench all` runs, in
        // this order. A new scenario is one line here.
        command.Subcommands.Add(Urpc());
        command.Subcommands.Add(BenchScenarioCommands.Scale());
        command.Subcommands.Add(BenchScenarioCommands.Updates());
        command.Subcommands.Add(Shootdown());
        command.Subcommands.Add(BenchScenarioCommands.Classify());
        command.Subcommands.Add(BenchScenarioCommands.Timers());
        command.Subcommands.Add(BenchScenarioCommands.Wakeup());
        command.Subcommands.Add(Endpoint());
        command.Subcommands.Add(BenchScenarioCommands.Netd());
        command.Subcommands.Add(BenchScenarioCommands.Net());

        // Not in the suite (no report files): a table only.
        command.Subcommands.Add(ShardedCalls());
        command.Subcommands.Add(BenchScenarioCommands.All(command));
        return command;
    }

    private static Command ShardedCalls()
    {
        var quick = new Option<bool>("--quick") { Description = "Fewer, shorter runs (a smoke test, not figures)." };
        var command = new Command("sharded", "Round trip of a sharded-service call to another core's instance vs a local call, and bytes allocated per call.") { quick };
        command.SetAction(parse =>
        {
            bool q = parse.GetValue(quick);
            IReadOnlyList<ShardedBenchResult> results = ShardedBench.Run(q ? 20_000 : 200_000, q ? 1 : 5, m => Console.Error.WriteLine(m));
            Console.WriteLine(ShardedBench.Render(results));
            return 0;
        });
        return command;
    }

    private static Command Shootdown()
    {
        var cores = new Option<string?>("--cores") { Description = "Core counts to measure, comma-separated (default 1,2,4,8; --quick 1,2,4)." };
        var json = new Option<string?>("--json") { Description = "Also write an array of {protocol, cores, latency_ns, oversubscribed}." };
        var iterations = new Option<int?>("--iterations") { Description = "Revokes per protocol and core count (default 200; --quick 10)." };
        var quick = new Option<bool>("--quick") { Description = "Cores 1,2,4 and 10 revokes each (a smoke test, not figures)." };
        var outDir = OutOption();
        var command = new ScenarioCommand("shootdown", "Revoke a frame capability copied to every core and wait for every acknowledgement: unicast vs multicast tree vs a shared-memory/lock baseline, by core count (the multikernel paper's figures 6-7).",
            q => ShootdownEstimate(q ? [1, 2, 4] : [1, 2, 4, 8], q ? 10 : 200))
        {
            cores, json, iterations, quick, outDir,
        };
        command.SetAction(parse =>
        {
            bool q = parse.GetValue(quick);
            string list = parse.GetValue(cores) ?? (q ? "1,2,4" : "1,2,4,8");
            var counts = new List<int>();
            foreach (string part in list.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            {
                if (!int.TryParse(part, out int n) || n < 1 || n > 64)
                {
                    Console.Error.WriteLine($"multikernel: --cores must be a comma-separated list of core counts between 1 and 64 (got '{list}').");
                    return CliHost.UsageError;
                }

                counts.Add(n);
            }

            int n2 = parse.GetValue(iterations) ?? (q ? 10 : 200);
            if (counts.Count == 0 || n2 < 1 || n2 > 100_000)
            {
                Console.Error.WriteLine("multikernel: give at least one core count and --iterations between 1 and 100000.");
                return CliHost.UsageError;
            }

            BenchScenarioCommands.Announce("shootdown", ShootdownEstimate(counts, n2));

            IReadOnlyList<ShootdownResult> results = ShootdownBench.Run(counts, n2, m => Console.Error.WriteLine(m));
            Console.WriteLine(ShootdownBench.Render(results));
            WriteReport(parse.GetValue(outDir)!, "shootdown", results, ScenarioReports.ShootdownColumns, ScenarioReports.ShootdownPlot);
            if (parse.GetValue(json) is { } path)
            {
                ShootdownBench.WriteJson(results, path);
                Console.WriteLine($"wrote {Path.GetFullPath(path)}");
            }

            return 0;
        });
        return command;
    }

    private static Command Endpoint()
    {
        var json = new Option<string?>("--json") { Description = "Also write the results as JSON." };
        var quick = new Option<bool>("--quick") { Description = "Fewer, shorter runs (a smoke test, not figures)." };
        var outDir = OutOption();
        var tracing = new Option<string>("--tracing") { Description = "Which tracing settings to measure: off, 1%, 100% (comma-separated).", DefaultValueFactory = _ => "off,1%,100%" };
        var command = new ScenarioCommand("endpoint", "Domain-to-domain messaging through two kernels with tracing off, sampled at 1% (OpenTelemetry SDK) and always on: the cost of the instrumentation in the path.",
            q => q ? TimeSpan.FromSeconds(4) : TimeSpan.FromSeconds(40))
        {
            json, quick, tracing, outDir,
        };
        command.SetAction(parse =>
        {
            bool q = parse.GetValue(quick);
            string[] modes = parse.GetValue(tracing)!.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
            if (modes.Length == 0 || modes.Any(m => !EndpointBench.Modes.Contains(m)))
            {
                Console.Error.WriteLine($"multikernel: --tracing takes off, 1% and 100%, comma-separated (got '{parse.GetValue(tracing)}').");
                return CliHost.UsageError;
            }

            BenchScenarioCommands.Announce("endpoint", q ? TimeSpan.FromSeconds(4) : TimeSpan.FromSeconds(40));
            IReadOnlyList<EndpointBenchResult> results = EndpointBench.Run(q ? 1 : 5, q ? 20_000 : 200_000, q ? 200_000 : 2_000_000, m => Console.Error.WriteLine(m), modes);
            Console.WriteLine(EndpointBench.Render(results));
            WriteReport(parse.GetValue(outDir)!, "endpoint", results, ScenarioReports.EndpointColumns, ScenarioReports.EndpointPlot);
            if (parse.GetValue(json) is { } path)
            {
                EndpointBench.WriteJson(results, path);
                Console.WriteLine($"wrote {Path.GetFullPath(path)}");
            }

            return 0;
        });
        return command;
    }

    private static Command Urpc()
    {
        var json = new Option<string?>("--json") { Description = "Also write the results as a JSON array of {name, rtt_ns, msgs_per_s, bytes_per_msg, ...}." };
        var cpus = new Option<string?>("--cpus") { Description = "The two CPUs to pin the threads to, as A,B (default 0,1)." };
        var slots = new Option<int>("--ring-slots") { Description = "Slots of the URPC ring under test (power of two).", DefaultValueFactory = _ => 256 };
        var quick = new Option<bool>("--quick") { Description = "Fewer, shorter runs (a smoke test, not figures)." };
        var outDir = OutOption();
        var command = new ScenarioCommand("urpc", "URPC ring vs Channel.CreateBounded (async and TryWrite/TryRead) vs Channel.CreateUnbounded vs ConcurrentQueue vs a shared cache line: round trip, one-way streaming, allocation, wake-up cost. Two pinned threads, 64-byte messages, under two minutes.",
            q => UrpcEstimate(q))
        {
            json, cpus, slots, quick, outDir,
        };
        command.SetAction(parse => RunUrpc(parse.GetValue(json), parse.GetValue(cpus), parse.GetValue(slots), parse.GetValue(quick), parse.GetValue(outDir)!));
        return command;
    }

    private static int RunUrpc(string? json, string? cpus, int slots, bool quick, string outDir)
    {
        int cpuA = 0;
        int cpuB = 1;
        if (cpus is not null)
        {
            string[] parts = cpus.Split(',');
            if (parts.Length != 2 || !int.TryParse(parts[0], out cpuA) || !int.TryParse(parts[1], out cpuB) || cpuA < 0 || cpuB < 0 || cpuA == cpuB)
            {
                Console.Error.WriteLine($"multikernel: --cpus must be two different CPU numbers as A,B (got '{cpus}').");
                return CliHost.UsageError;
            }
        }

        var settings = new UrpcBenchSettings
        {
            CpuA = cpuA,
            CpuB = cpuB,
            RingSlots = slots,
            BatchSize = Math.Max(1, Math.Min(32, slots / 2)),
            Runs = quick ? 2 : 7,
            RunDuration = quick ? TimeSpan.FromMilliseconds(60) : TimeSpan.FromMilliseconds(250),
            WakeSamples = quick ? 30 : 300,
        };
        if (settings.Validate() is { } problem)
        {
            Console.Error.WriteLine($"multikernel: {problem}");
            return CliHost.UsageError;
        }

        BenchScenarioCommands.Announce("urpc", UrpcEstimate(quick));
        IReadOnlyList<UrpcBenchResult> results = UrpcBench.Run(settings, message => Console.Error.WriteLine(message));
        Console.WriteLine(UrpcBench.RenderTable(results));
        WriteReport(outDir, "urpc", results, ScenarioReports.UrpcColumns, ScenarioReports.UrpcPlot);
        if (json is not null)
        {
            UrpcBench.WriteJson(results, json);
            Console.WriteLine($"wrote {Path.GetFullPath(json)}");
        }

        return 0;
    }

    // Measured on the 2-CPU development machine (the variants' runs plus their warm-ups).
    private static TimeSpan UrpcEstimate(bool quick) => quick ? TimeSpan.FromSeconds(4) : TimeSpan.FromSeconds(30);

    // A boot and a shutdown per core count, then three protocols of revokes at ~0.2 ms each;
    // oversubscribed, the shared-memory baseline waits out a parked core (~100 ms) per revoke.
    private static TimeSpan ShootdownEstimate(IReadOnlyList<int> counts, int iterations) =>
        TimeSpan.FromMilliseconds(counts.Sum(n => 400 + (3 * iterations * 0.2 * Math.Max(1, n / 2.0)) + (n > Environment.ProcessorCount ? iterations * 100.0 : 0)));

    /// <summary>The <c>--out DIR</c> option every scenario shares.</summary>
    internal static Option<string> OutOption() =>
        new("--out") { Description = "Directory for the CSV, JSON and plot (SVG, PNG) files.", DefaultValueFactory = _ => BenchReport.DefaultDirectory };

    internal static void WriteReport<TRow>(string outDir, string scenario, IReadOnlyList<TRow> rows, IReadOnlyList<BenchColumn<TRow>> columns, BenchPlot<TRow>? plot)
    {
        foreach (string path in BenchReport.Write(outDir, scenario, rows, columns, plot))
        {
            Console.WriteLine($"wrote {Path.GetFullPath(path)}");
        }
    }
}
