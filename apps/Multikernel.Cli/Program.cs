// TEMPORARY stub from the bench branch so the CLI builds and the URPC measurement can be run
// before the real System.CommandLine Program.cs exists. The main developer discards this file.
using Multikernel.Cli.Bench;

string? json = null;
bool quick = false;
for (int i = 0; i < args.Length; i++)
{
    if (args[i] == "--json" && i + 1 < args.Length)
    {
        json = args[++i];
    }
    else if (args[i] == "--quick")
    {
        quick = true;
    }
}

var settings = quick ? new UrpcBenchSettings { Runs = 2, RunDuration = TimeSpan.FromMilliseconds(50), WakeSamples = 50 } : new UrpcBenchSettings();
var started = System.Diagnostics.Stopwatch.StartNew();
IReadOnlyList<UrpcBenchResult> results = UrpcBench.Run(settings, line => Console.Error.WriteLine(line));
Console.WriteLine(UrpcBench.RenderTable(results));
Console.Error.WriteLine($"took {started.Elapsed.TotalSeconds:0.0} s");
if (json is not null)
{
    UrpcBench.WriteJson(results, json);
}
