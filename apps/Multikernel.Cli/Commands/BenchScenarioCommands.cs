using System.CommandLine;
using System.Globalization;
using Multikernel.Cli.Bench;
using Multikernel.Cli.Bench.Report;

namespace Multikernel.Cli.Commands;

/// <summary>
/// A scenario of the scalability suite: a <c>bench</c> subcommand that knows roughly how long it
/// takes, so <c>bench all</c> can say so before it starts.
/// </summary>
internal sealed class ScenarioCommand(string name, string description, Func<bool, TimeSpan> estimate) : Command(name, description)
{
    /// <summary>About how long the scenario runs with its defaults, quick or full.</summary>
    public TimeSpan Estimate(bool quick) => estimate(quick);
}

/// <summary>
/// The options every scenario of the scalability suite shares (<c>--cores LIST</c>,
/// <c>--out DIR</c>, <c>--json FILE</c>, <c>--quick</c>) and the scenarios built on them.
/// </summary>
internal static partial class BenchScenarioCommands
{
    /// <summary>
    /// Exit code of a scenario that cannot run here (not root, a tool missing); it says what is
    /// missing on stderr. <c>bench all</c> reports it as skipped, not failed.
    /// </summary>
    public const int Skipped = 3;

    internal sealed class Common
    {
        public Option<string?> Cores { get; } = new("--cores") { Description = "Core counts to measure, comma-separated (counts above the CPUs are labelled oversubscribed)." };

        public Option<string> Out { get; } = BenchCommand.OutOption();

        public Option<string?> Json { get; } = new("--json") { Description = "Also write the rows as a JSON array to this file." };

        public Option<bool> Quick { get; } = new("--quick") { Description = "A few seconds per scenario (a smoke test, not figures)." };

        public void AddTo(Command command, bool cores = true)
        {
            if (cores)
            {
                command.Options.Add(Cores);
            }

            command.Options.Add(Out);
            command.Options.Add(Json);
            command.Options.Add(Quick);
        }

        /// <summary>Parses <c>--cores</c>; null (and a message on stderr) when it is malformed.</summary>
        public static IReadOnlyList<int>? ParseCounts(string? list, string option, int max, IReadOnlyList<int> fallback)
        {
            if (list is null)
            {
                return fallback;
            }

            var counts = new List<int>();
            foreach (string part in list.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            {
                if (!int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n < 1 || n > max)
                {
                    Console.Error.WriteLine($"multikernel: {option} must be a comma-separated list of numbers between 1 and {max} (got '{list}').");
                    return null;
                }

                counts.Add(n);
            }

            if (counts.Count == 0)
            {
                Console.Error.WriteLine($"multikernel: {option} needs at least one number.");
                return null;
            }

            return counts;
        }
    }

    /// <summary>Prints how long a scenario is about to take (before it starts) and how busy the machine is.</summary>
    internal static void Announce(string scenario, TimeSpan estimate) =>
        Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{scenario}: about {Math.Max(1, Math.Round(estimate.TotalSeconds)):F0} s; {MachineLoad()}"));

    /// <summary>
    /// The CPUs and the 1-minute load average (Linux): a load above the CPU count means other work
    /// competes for them, and every figure of the run is then a figure of a shared machine.
    /// </summary>
    internal static string MachineLoad()
    {
        int cpus = Environment.ProcessorCount;
        try
        {
            string[] fields = File.ReadAllText("/proc/loadavg").Split(' ');
            if (fields.Length > 0 && double.TryParse(fields[0], NumberStyles.Float, CultureInfo.InvariantCulture, out double load))
            {
                return string.Create(CultureInfo.InvariantCulture, $"{cpus} CPUs, load average {load:F2}{(load > cpus ? " (busy: other work competes for the CPUs)" : string.Empty)}");
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }

        return string.Create(CultureInfo.InvariantCulture, $"{cpus} CPUs");
    }

    public static Command Updates()
    {
        var common = new Common();
        var lines = new Option<string?>("--lines") { Description = "Cache lines per update, comma-separated (default 1,2,4,8,16; --quick 1,8)." };
        var command = new ScenarioCommand(UpdatesBench.Scenario, "The multikernel paper's figure 3: N cores updating k shared cache lines with atomic increments vs sending each update to the one core that owns the lines, by core count and k.",
            quick => (quick ? UpdatesSettings.Quick : UpdatesSettings.Full).EstimatedDuration);
        common.AddTo(command);
        command.Options.Add(lines);
        command.SetAction(parse =>
        {
            bool quick = parse.GetValue(common.Quick);
            UpdatesSettings defaults = quick ? UpdatesSettings.Quick : UpdatesSettings.Full;
            IReadOnlyList<int>? cores = Common.ParseCounts(parse.GetValue(common.Cores), "--cores", 64, defaults.CoreCounts);
            IReadOnlyList<int>? k = Common.ParseCounts(parse.GetValue(lines), "--lines", 1024, defaults.LineCounts);
            if (cores is null || k is null)
            {
                return CliHost.UsageError;
            }

            UpdatesSettings settings = defaults with { CoreCounts = cores, LineCounts = k };
            Announce(UpdatesBench.Scenario, settings.EstimatedDuration);
            IReadOnlyList<UpdatesResult> results = UpdatesBench.Run(settings, m => Console.Error.WriteLine(m));
            Console.WriteLine(UpdatesBench.Render(results));
            return Report(parse.GetValue(common.Out)!, parse.GetValue(common.Json), UpdatesBench.Scenario, results, UpdatesBench.Columns, UpdatesBench.Plot);
        });
        return command;
    }

    public static Command Netd()
    {
        var common = new Common();
        var command = new Command(NetdBench.Scenario, "netd: packets/s through the in-memory NIC -> netd -> an application on another core -> back, for 64- and 1500-byte frames, bytes allocated per packet, and the same run's raw channel one-way message rate.");
        command.Options.Add(common.Out);
        command.Options.Add(common.Json);
        command.Options.Add(common.Quick);
        command.SetAction(parse =>
        {
            bool quick = parse.GetValue(common.Quick);
            Announce(NetdBench.Scenario, TimeSpan.FromSeconds(quick ? 3 : 15));
            IReadOnlyList<NetdBenchResult> results = NetdBench.Run(quick, m => Console.Error.WriteLine(m));
            Console.WriteLine(NetdBench.Render(results));
            return Report(parse.GetValue(common.Out)!, parse.GetValue(common.Json), NetdBench.Scenario, results, NetdBench.Columns, NetdBench.Plot);
        });
        return command;
    }

    public static Command Scale()
    {
        var common = new Common();
        var keys = new Option<int?>("--keys") { Description = "Keys in the store (default 1048576; --quick 65536)." };
        var batch = new Option<int?>("--batch") { Description = "Requests a core gathers for another core before sending them as one call (default 512; 1 = one call per request)." };
        var window = new Option<int?>("--window") { Description = "Batches a core may have in flight to one other core (default 4)." };
        var command = new ScenarioCommand(ScaleBench.Scenario, "A sharded in-memory key-value store on the per-core service API (each core owns a shard; requests for other cores' keys travel over the rings in batches) vs N threads on one ConcurrentDictionary, by core count, read-heavy (95% GET) and write-heavy (50% GET).",
            quick => (quick ? ScaleSettings.Quick : ScaleSettings.Full).EstimatedDuration);
        common.AddTo(command);
        command.Options.Add(keys);
        command.Options.Add(batch);
        command.Options.Add(window);
        command.SetAction(parse =>
        {
            ScaleSettings defaults = parse.GetValue(common.Quick) ? ScaleSettings.Quick : ScaleSettings.Full;
            IReadOnlyList<int>? cores = Common.ParseCounts(parse.GetValue(common.Cores), "--cores", 64, parse.GetValue(common.Quick) ? defaults.CoreCounts : ScaleSettings.DefaultCoreCounts(Environment.ProcessorCount));
            if (cores is null)
            {
                return CliHost.UsageError;
            }

            ScaleSettings settings = defaults with
            {
                CoreCounts = cores,
                KeySpace = parse.GetValue(keys) ?? defaults.KeySpace,
                Batch = parse.GetValue(batch) ?? defaults.Batch,
                Window = parse.GetValue(window) ?? defaults.Window,
            };
            if (settings.Validate() is { } problem)
            {
                Console.Error.WriteLine($"multikernel: {problem}");
                return CliHost.UsageError;
            }

            Announce(ScaleBench.Scenario, settings.EstimatedDuration);
            IReadOnlyList<ScaleResult> results = ScaleBench.Run(settings, m => Console.Error.WriteLine(m));
            Console.WriteLine(ScaleBench.Render(results));
            return Report(parse.GetValue(common.Out)!, parse.GetValue(common.Json), ScaleBench.Scenario, results, ScaleBench.Columns, ScaleBench.Plot);
        });
        return command;
    }

    public static Command Classify()
    {
        var common = new Common();
        var command = new ScenarioCommand("classify", "netd's packet classifier: ns per packet with 1, 10, 100 and 1000 installed filters, merged trie vs evaluating each filter in turn, in the same run.",
            ClassifyBench.EstimatedDuration);
        common.AddTo(command, cores: false);
        command.SetAction(parse =>
        {
            bool quick = parse.GetValue(common.Quick);
            Announce("classify", ClassifyBench.EstimatedDuration(quick));
            IReadOnlyList<ClassifyBenchResult> results = ClassifyBench.Run(quick, m => Console.Error.WriteLine(m));
            Console.WriteLine(ClassifyBench.Render(results));
            foreach (string path in BenchReport.Write(parse.GetValue(common.Out)!, "classify", results, ScenarioReports.ClassifyColumns, ScenarioReports.ClassifyPoints(results), ScenarioReports.ClassifyPlot))
            {
                Console.WriteLine($"wrote {Path.GetFullPath(path)}");
            }

            WriteJson(parse.GetValue(common.Json), results, ScenarioReports.ClassifyColumns);
            return 0;
        });
        return command;
    }

    public static Command Timers()
    {
        const int FullRounds = 200;
        const int QuickRounds = 20;
        var common = new Common();
        var rounds = new Option<int?>("--rounds") { Description = $"Rounds of 4096 arms, resets and cancels on the core (default {FullRounds}; --quick {QuickRounds})." };
        // About 10 ms a round for both variants on this machine.
        var command = new ScenarioCommand("timers", "Timer arm/reset/cancel through ITimer.Change: a core's timer wheel vs TimeProvider.System, same run.",
            quick => TimeSpan.FromMilliseconds(300 + (10 * (quick ? QuickRounds : FullRounds))));
        common.AddTo(command, cores: false);
        command.Options.Add(rounds);
        command.SetAction(parse =>
        {
            bool quick = parse.GetValue(common.Quick);
            int n = parse.GetValue(rounds) ?? (quick ? QuickRounds : FullRounds);
            if (n is < 1 or > 100_000)
            {
                Console.Error.WriteLine("multikernel: --rounds must be between 1 and 100000.");
                return CliHost.UsageError;
            }

            Announce("timers", TimeSpan.FromMilliseconds(300 + (10 * n)));
            IReadOnlyList<TimerBenchResult> results = TimerBench.Run(n, m => Console.Error.WriteLine(m));
            Console.WriteLine(TimerBench.Render(results));
            return Report(parse.GetValue(common.Out)!, parse.GetValue(common.Json), "timers", results, ScenarioReports.TimerColumns, ScenarioReports.TimerPlot);
        });
        return command;
    }

    public static Command Wakeup()
    {
        const int FullSamples = 500;
        const int QuickSamples = 50;
        var common = new Common();
        var samples = new Option<int?>("--samples") { Description = $"Wake-ups per variant, 1 ms apart (default {FullSamples}; --quick {QuickSamples})." };
        // Three variants, a sample every ~1.2 ms.
        var command = new ScenarioCommand("wakeup", "Wake-up latency of a parked core: the old semaphore park vs the epoll park woken by a doorbell and by a descriptor.",
            quick => TimeSpan.FromMilliseconds(500 + (3.6 * (quick ? QuickSamples : FullSamples))));
        common.AddTo(command, cores: false);
        command.Options.Add(samples);
        command.SetAction(parse =>
        {
            bool quick = parse.GetValue(common.Quick);
            int n = parse.GetValue(samples) ?? (quick ? QuickSamples : FullSamples);
            if (n is < 10 or > 100_000)
            {
                Console.Error.WriteLine("multikernel: --samples must be between 10 and 100000.");
                return CliHost.UsageError;
            }

            Announce("wakeup", TimeSpan.FromMilliseconds(500 + (3.6 * n)));
            IReadOnlyList<WakeupBenchResult> results = WakeupBench.Run(n, m => Console.Error.WriteLine(m));
            Console.WriteLine(WakeupBench.Render(results));
            return Report(parse.GetValue(common.Out)!, parse.GetValue(common.Json), "wakeup", results, ScenarioReports.WakeupColumns, ScenarioReports.WakeupPlot);
        });
        return command;
    }

    internal static int Report<TRow>(string outDir, string? json, string scenario, IReadOnlyList<TRow> rows, IReadOnlyList<BenchColumn<TRow>> columns, BenchPlot<TRow>? plot)
    {
        BenchCommand.WriteReport(outDir, scenario, rows, columns, plot);
        WriteJson(json, rows, columns);
        return 0;
    }

    private static void WriteJson<TRow>(string? json, IReadOnlyList<TRow> rows, IReadOnlyList<BenchColumn<TRow>> columns)
    {
        if (json is not null)
        {
            BenchReport.WriteJson(json, rows, columns);
            Console.WriteLine($"wrote {Path.GetFullPath(json)}");
        }
    }
}
