using System.CommandLine;
using Multikernel.Cli.Bench;

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
        command.Subcommands.Add(ShardedCalls());
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
        var command = new Command("shootdown", "Revoke a frame capability copied to every core and wait for every acknowledgement: unicast vs multicast tree vs a shared-memory/lock baseline, by core count (the multikernel paper's figures 6-7).")
        {
            cores, json, iterations,
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
        var tracing = new Option<string>("--tracing") { Description = "Which tracing settings to measure: off, 1%, 100% (comma-separated).", DefaultValueFactory = _ => "off,1%,100%" };
        var command = new Command("endpoint", "Domain-to-domain messaging through two kernels with tracing off, sampled at 1% (OpenTelemetry SDK) and always on: the cost of the instrumentation in the path.")
        {
            json, quick, tracing,
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
        var command = new Command("urpc", "URPC ring vs Channel.CreateBounded (async and TryWrite/TryRead) vs Channel.CreateUnbounded vs ConcurrentQueue vs a shared cache line: round trip, one-way streaming, allocation, wake-up cost. Two pinned threads, 64-byte messages, under two minutes.")
        {
            json, cpus, slots, quick,
        };
        command.SetAction(parse => RunUrpc(parse.GetValue(json), parse.GetValue(cpus), parse.GetValue(slots), parse.GetValue(quick)));
        return command;
    }

    private static int RunUrpc(string? json, string? cpus, int slots, bool quick)
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
        if (json is not null)
        {
            UrpcBench.WriteJson(results, json);
            Console.WriteLine($"wrote {Path.GetFullPath(json)}");
        }

        return 0;
    }
}
