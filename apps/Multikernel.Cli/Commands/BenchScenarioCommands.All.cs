using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;

namespace Multikernel.Cli.Commands;

/// <summary><c>bench all</c>: every scenario of the suite, one after another, into one output directory.</summary>
internal static partial class BenchScenarioCommands
{
    /// <summary>
    /// Runs every subcommand of <paramref name="bench"/> that takes <c>--out</c> and
    /// <c>--quick</c> (the suite's contract), in registration order, each through the same
    /// parser and action a user's <c>bench SCENARIO</c> goes through. Scenarios registered after
    /// this command was made are picked up too: the list is read when <c>all</c> runs.
    /// </summary>
    public static Command All(Command bench)
    {
        var outDir = BenchCommand.OutOption();
        var json = new Option<string?>("--json") { Description = "Also write one JSON object {scenario: rows} of every scenario that completed to this file." };
        var quick = new Option<bool>("--quick") { Description = "Every scenario in its quick mode (seconds each; a smoke test, not figures)." };
        var skip = new Option<string?>("--skip") { Description = "Scenarios to leave out, comma-separated." };
        var only = new Option<string?>("--only") { Description = "Run only these scenarios, comma-separated." };
        var command = new Command("all", "Run every scenario of the suite (each with its defaults) into one --out directory; say how long it will take first; skipped scenarios (not root, tools missing) say what is missing.")
        {
            outDir, json, quick, skip, only,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            List<Command> suite = [.. bench.Subcommands.Where(c => !ReferenceEquals(c, command) && IsScenario(c))];
            HashSet<string> known = [.. suite.Select(c => c.Name)];
            if (Names(parse.GetValue(skip), known, "--skip") is not { } skipped || Names(parse.GetValue(only), known, "--only") is not { } onlyNames)
            {
                return CliHost.UsageError;
            }

            suite = [.. suite.Where(c => !skipped.Contains(c.Name) && (onlyNames.Count == 0 || onlyNames.Contains(c.Name)))];
            bool q = parse.GetValue(quick);
            string directory = parse.GetValue(outDir)!;
            Console.Error.WriteLine(Plan(suite, bench, command, q));

            var outcomes = new List<(string Name, string Status, TimeSpan Took)>();
            var combined = new JsonObject();
            foreach (Command scenario in suite)
            {
                cancellationToken.ThrowIfCancellationRequested();
                Console.Error.WriteLine($"== bench {scenario.Name}{(q ? " --quick" : string.Empty)}");
                List<string> arguments = [scenario.Name, "--out", directory];
                if (q)
                {
                    arguments.Add("--quick");
                }

                long began = Stopwatch.GetTimestamp();
                int code;
                try
                {
                    code = await bench.Parse(arguments).InvokeAsync(cancellationToken: cancellationToken);
                }
#pragma warning disable CA1031 // one scenario's failure is reported; the others still run
                catch (Exception ex) when (ex is not OperationCanceledException)
#pragma warning restore CA1031
                {
                    Console.Error.WriteLine($"multikernel: bench {scenario.Name} failed: {ex.GetType().Name}: {ex.Message}");
                    code = 1;
                }

                TimeSpan took = Stopwatch.GetElapsedTime(began);
                string status = code switch
                {
                    0 => "ok",
                    Skipped => "skipped (see above for what is missing)",
                    _ => $"failed (exit {code})",
                };
                outcomes.Add((scenario.Name, status, took));
                string rows = Path.Combine(directory, scenario.Name + ".json");
                if (code == 0 && File.Exists(rows))
                {
                    combined[scenario.Name] = JsonNode.Parse(await File.ReadAllTextAsync(rows, cancellationToken));
                }
            }

            Console.WriteLine(Summary(outcomes));
            if (parse.GetValue(json) is { } path)
            {
                string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
                if (dir is not null)
                {
                    Directory.CreateDirectory(dir);
                }

                await File.WriteAllTextAsync(path, combined.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }), cancellationToken);
                Console.WriteLine($"wrote {Path.GetFullPath(path)}");
            }

            return outcomes.Any(o => o.Status.StartsWith("failed", StringComparison.Ordinal)) ? 1 : 0;
        });
        return command;
    }

    private static bool IsScenario(Command command) =>
        command.Options.Any(o => o.Name == "--out") && command.Options.Any(o => o.Name == "--quick");

    private static HashSet<string>? Names(string? list, HashSet<string> known, string option)
    {
        HashSet<string> names = list is null ? [] : [.. list.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)];
        foreach (string name in names)
        {
            if (!known.Contains(name))
            {
                Console.Error.WriteLine($"multikernel: {option}: no scenario '{name}' (the suite has {string.Join(", ", known)}).");
                return null;
            }
        }

        return names;
    }

    private static string Plan(List<Command> suite, Command bench, Command all, bool quick)
    {
        var text = new StringBuilder();
        TimeSpan total = TimeSpan.Zero;
        var unknown = new List<string>();
        var parts = new List<string>();
        foreach (Command scenario in suite)
        {
            if (scenario is ScenarioCommand s)
            {
                TimeSpan e = s.Estimate(quick);
                total += e;
                parts.Add(string.Create(CultureInfo.InvariantCulture, $"{scenario.Name} ~{Math.Max(1, Math.Round(e.TotalSeconds)):F0} s"));
            }
            else
            {
                unknown.Add(scenario.Name);
                parts.Add($"{scenario.Name} (no estimate)");
            }
        }

        text.Append(CultureInfo.InvariantCulture, $"bench all{(quick ? " --quick" : string.Empty)}: {suite.Count} scenarios, about {FormatDuration(total)}");
        if (unknown.Count > 0)
        {
            text.Append(CultureInfo.InvariantCulture, $" plus {string.Join(", ", unknown)}");
        }

        text.Append(CultureInfo.InvariantCulture, $": {string.Join(", ", parts)}; {MachineLoad()}.");
        string[] outside = [.. bench.Subcommands.Where(c => !ReferenceEquals(c, all) && !IsScenario(c)).Select(c => c.Name)];
        if (outside.Length > 0)
        {
            text.Append(CultureInfo.InvariantCulture, $" Not in the suite (no report files): {string.Join(", ", outside)}.");
        }

        return text.ToString();
    }

    private static string FormatDuration(TimeSpan t) =>
        t.TotalMinutes >= 2
            ? string.Create(CultureInfo.InvariantCulture, $"{t.TotalMinutes:F0} min")
            : string.Create(CultureInfo.InvariantCulture, $"{Math.Max(1, Math.Round(t.TotalSeconds)):F0} s");

    private static string Summary(List<(string Name, string Status, TimeSpan Took)> outcomes)
    {
        var text = new StringBuilder();
        text.AppendLine("scenario      took      status");
        foreach ((string name, string status, TimeSpan took) in outcomes)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"{name,-12}  {took.TotalSeconds,6:F1} s  {status}");
        }

        text.Append(CultureInfo.InvariantCulture, $"total {outcomes.Sum(o => o.Took.TotalSeconds):F1} s");
        return text.ToString();
    }
}
