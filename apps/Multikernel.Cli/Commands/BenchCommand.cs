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
        command.Subcommands.Add(Urpc());
        command.Subcommands.Add(Endpoint());
        command.Subcommands.Add(Shootdown());
        command.Subcommands.Add(Classify());
        command.Subcommands.Add(BenchScenarioCommands.Updates());
        command.Subcommands.Add(BenchScenarioCommands.Netd());
        command.Subcommands.Add(Timers());
        command.Subcommands.Add(Wakeup());
        command.Subcommands.Add(ShardedCalls());
        return command;
    }

    private static Command Classify()
    {
        var json = new Option<string?>("--json") { Description = "Also write an array of {filters, trie_ns, naive_ns, ...}." };
        var quick = new Option<bool>("--quick") { Description = "Fewer, shorter runs (a smoke test, not figures)." };
        var command = new Command("classify", "netd's packet classifier: ns per packet with 1, 10, 100 and 1000 installed filters, merged trie vs evaluating each filter in turn, in the same run.")
        {
            json, quick,
        };
        command.SetAction(parse =>
        {
            IReadOnlyList<ClassifyBenchResult> results = ClassifyBench.Run(parse.GetValue(quick), m => Console.Error.WriteLine(m));
            Console.WriteLine(ClassifyBench.Render(results));
            if (parse.GetValue(json) is { } path)
            {
                ClassifyBench.WriteJson(results, path);
                Console.WriteLine($"wrote {Path.GetFullPath(path)}");
            }

            return 0;
        });
        return command;
    }

    private static Command Timers()
    {
        var json = new Option<string?>("--json") { Description = "Also write an array of {name, arms_per_s, resets_per_s, cancels_per_s, alloc_bytes_per_op}." };
        var rounds = new Option<int>("--rounds") { Description = "Rounds of 4096 arms, resets and cancels on the core.", DefaultValueFactory = _ => 200 };
        var command = new Command("timers", "Timer arm/reset/cancel through ITimer.Change: a core's timer wheel vs TimeProvider.System, same run.") { json, rounds };
        command.SetAction(parse =>
        {
            int n = parse.GetValue(rounds);
            if (n is < 1 or > 100_000)
            {
                Console.Error.WriteLine("multikernel: --rounds must be between 1 and 100000.");
                return CliHost.UsageError;
            }

            IReadOnlyList<TimerBenchResult> results = TimerBench.Run(n, m => Console.Error.WriteLine(m));
            Console.WriteLine(TimerBench.Render(results));
            if (parse.GetValue(json) is { } path)
            {
                TimerBench.WriteJson(results, path);
                Console.WriteLine($"wrote {Path.GetFullPath(path)}");
            }

            return 0;
        });
        return command;
    }

    private static Command Wakeup()
    {
        var json = new Option<string?>("--json") { Description = "Also write an array of {name, samples, p50_us, p99_us, mean_us}." };
        var samples = new Option<int>("--samples") { Description = "Wake-ups per variant (1 ms apart).", DefaultValueFactory = _ => 500 };
        var command = new Command("wakeup", "Wake-up latency of a parked core: the old semaphore park vs the epoll park woken by a doorbell and by a descriptor.") { json, samples };
        command.SetAction(parse =>
        {
            int n = parse.GetValue(samples);
            if (n is < 10 or > 100_000)
            {
                Console.Error.WriteLine("multikernel: --samples must be between 10 and 100000.");
                return CliHost.UsageError;
            }

            IReadOnlyList<WakeupBenchResult> results = WakeupBench.Run(n, m => Console.Error.WriteLine(m));
            Console.WriteLine(WakeupBench.Render(results));
            if (parse.GetValue(json) is { } path)
            {
                WakeupBench.WriteJson(results, path);
                Console.WriteLine($"wrote {Path.GetFullPath(path)}");
            }

            return 0;
        });
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
        var cores = new Option<string>("--cores") { Description = "Core counts to measure, comma-separated.", DefaultValueFactory = _ => "1,2,4,8" };
        var json = new Option<string?>("--json") { Description = "Also write an array of {protocol, cores, latency_ns, oversubscribed}." };
        var iterations = new Option<int>("--iterations") { Description = "Revokes per protocol and core count.", DefaultValueFactory = _ => 200 };
        var outDir = OutOption();
        var command = new Command("shootdown", "Revoke a frame capability copied to every core and wait for every acknowledgement: unicast vs multicast tree vs a shared-memory/lock baseline, by core count (the multikernel paper's figures 6-7).")
        {
            cores, json, iterations, outDir,
        };
        command.SetAction(parse =>
        {
            string list = parse.GetValue(cores)!;
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

            int n2 = parse.GetValue(iterations);
            if (counts.Count == 0 || n2 < 1 || n2 > 100_000)
            {
                Console.Error.WriteLine("multikernel: give at least one core count and --iterations between 1 and 100000.");
                return CliHost.UsageError;
            }

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
        var command = new Command("endpoint", "Domain-to-domain messaging through two kernels with tracing off, sampled at 1% (OpenTelemetry SDK) and always on: the cost of the instrumentation in the path.")
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

            IReadOnlyList<EndpointBenchResult> results = EndpointBench.Run(q ? 1 : 5, q ? 20_000 : 200_000, q ? 200_000 : 2_000_000, m => Console.Error.WriteLine(m), modes);
            Console.WriteLine(EndpointBench.Render(results));
            WriteReport(parse.GetValue(outDir)!, "endpoint", results, ScenarioReports.EndpointColumns, plot: null);
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
        var command = new Command("urpc", "URPC ring vs Channel.CreateBounded (async and TryWrite/TryRead) vs Channel.CreateUnbounded vs ConcurrentQueue vs a shared cache line: round trip, one-way streaming, allocation, wake-up cost. Two pinned threads, 64-byte messages, under two minutes.")
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
