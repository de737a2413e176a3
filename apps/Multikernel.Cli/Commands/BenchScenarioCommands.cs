using System.CommandLine;
using System.Globalization;
using Multikernel.Cli.Bench;
using Multikernel.Cli.Bench.Report;

namespace Multikernel.Cli.Commands;

/// <summary>
/// The options every scenario of the scalability suite shares (<c>--cores LIST</c>,
/// <c>--out DIR</c>, <c>--json FILE</c>, <c>--quick</c>) and the scenarios built on them.
/// </summary>
internal static class BenchScenarioCommands
{
    internal sealed class Common
    {
        public Option<string?> Cores { get; } = new("--cores") { Description = "Core counts to measure, comma-separated (counts above the CPUs are labelled oversubscribed)." };

        public Option<string> Out { get; } = BenchCommand.OutOption();

        public Option<string?> Json { get; } = new("--json") { Description = "Also write the rows as a JSON array to this file." };

        public Option<bool> Quick { get; } = new("--quick") { Description = "A few seconds per scenario (a smoke test, not figures)." };

        public void AddTo(Command command)
        {
            command.Options.Add(Cores);
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

    public static Command Updates()
    {
        var common = new Common();
        var lines = new Option<string?>("--lines") { Description = "Cache lines per update, comma-separated (default 1,2,4,8,16; --quick 1,8)." };
        var command = new Command(UpdatesBench.Scenario, "The multikernel paper's figure 3: N cores updating k shared cache lines with atomic increments vs sending each update to the one core that owns the lines, by core count and k.");
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
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"updates: about {settings.EstimatedDuration.TotalSeconds:F0} s"));
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
            Console.Error.WriteLine(quick ? "netd: about 3 s" : "netd: about 15 s");
            IReadOnlyList<NetdBenchResult> results = NetdBench.Run(quick, m => Console.Error.WriteLine(m));
            Console.WriteLine(NetdBench.Render(results));
            return Report(parse.GetValue(common.Out)!, parse.GetValue(common.Json), NetdBench.Scenario, results, NetdBench.Columns, NetdBench.Plot);
        });
        return command;
    }

    internal static int Report<TRow>(string outDir, string? json, string scenario, IReadOnlyList<TRow> rows, IReadOnlyList<BenchColumn<TRow>> columns, BenchPlot<TRow>? plot)
    {
        BenchCommand.WriteReport(outDir, scenario, rows, columns, plot);

        if (json is not null)
        {
            BenchReport.WriteJson(json, rows, columns);
            Console.WriteLine($"wrote {Path.GetFullPath(json)}");
        }

        return 0;
    }
}
