using System.CommandLine;
using System.Globalization;
using System.Net;
using Multikernel.Cli.Bench;

namespace Multikernel.Cli.Commands;

/// <summary><c>bench net</c>: our applications over TAP against the Linux peers over veth.</summary>
internal static partial class BenchScenarioCommands
{
    public static Command Net()
    {
        var common = new Common();
        var kestrel = new Option<string?>("--kestrel-dll") { Description = "The built Kestrel peer (default: bench/peers/KestrelPeer/bin/Release/net10.0/KestrelPeer.dll, searched upwards from this command)." };
        var command = new ScenarioCommand(NetBench.Scenario, "Our echo, http and kv, each on its own stack over TAP, vs the Linux kernel over veth in the same run: echo round trip and bulk vs socat/iperf3, wrk on a 4 KiB file vs nginx and Kestrel, redis-benchmark SET/GET vs redis-server and Garnet. Needs root and the Debian tools (exit 3 and what is missing otherwise).",
            quick => (quick ? NetBenchSettings.Quick : NetBenchSettings.Full).EstimatedDuration * NetBench.DefaultCoreCounts.Count);
        common.AddTo(command);
        command.Options.Add(kestrel);
        command.Subcommands.Add(Probe());
        command.SetAction(parse =>
        {
            if (NetBench.Missing() is { } missing)
            {
                Console.Error.WriteLine($"multikernel: {missing}");
                return Skipped;
            }

            // Our machine's kernel counts (2 CPUs: 1 and 2 by default; more are oversubscribed here).
            IReadOnlyList<int>? cores = Common.ParseCounts(parse.GetValue(common.Cores), "--cores", 64, NetBench.DefaultCoreCounts);
            if (cores is null)
            {
                return CliHost.UsageError;
            }

            NetBenchSettings settings = parse.GetValue(common.Quick) ? NetBenchSettings.Quick : NetBenchSettings.Full;
            Announce(NetBench.Scenario, settings.EstimatedDuration * cores.Count);
            IReadOnlyList<NetBenchRow> rows = NetBench.Run(settings, parse.GetValue(kestrel), cores, m => Console.Error.WriteLine(m));
            Console.WriteLine(NetBench.Render(rows));
            return Report(parse.GetValue(common.Out)!, parse.GetValue(common.Json), NetBench.Scenario, rows, NetBench.Columns, NetBench.Plot);
        });
        return command;
    }

    // `bench net probe rtt|bulk HOST PORT N`: the echo client bench net runs inside a namespace (hidden: a part of bench net, not a tool).
    private static Command Probe()
    {
        var kind = new Argument<string>("kind") { Description = "rtt (N round trips of 64 bytes), bulk (N MiB through the echo, read back) or sink (N MiB into a discard server, one way)." };
        var host = new Argument<string>("host");
        var port = new Argument<int>("port");
        var amount = new Argument<int>("amount");
        var command = new Command("probe", "The echo and discard client of bench net (run inside a namespace).") { kind, host, port, amount };
        command.Hidden = true;
        command.SetAction(async (parse, cancellationToken) =>
        {
            IPAddress? address = NetBench.ParseHost(parse.GetValue(host)!);
            int p = parse.GetValue(port);
            int n = parse.GetValue(amount);
            if (address is null || p is < 1 or > 65535 || n is < 1 or > 10_000_000)
            {
                Console.Error.WriteLine("multikernel: bench net probe needs an IPv4 host, a port 1-65535 and an amount 1-10000000.");
                return CliHost.UsageError;
            }

            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            deadline.CancelAfter(TimeSpan.FromMinutes(2));
            string? line = parse.GetValue(kind) switch
            {
                "rtt" => await NetProbe.RttAsync(address, p, n, deadline.Token),
                "bulk" => await NetProbe.BulkAsync(address, p, n, deadline.Token),
                "sink" => await NetProbe.SinkAsync(address, p, n, deadline.Token),
                _ => null,
            };
            if (line is null)
            {
                Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"multikernel: bench net probe: kind must be rtt, bulk or sink (got '{parse.GetValue(kind)}')."));
                return CliHost.UsageError;
            }

            Console.WriteLine(line);
            return 0;
        });
        return command;
    }
}
