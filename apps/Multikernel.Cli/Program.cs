using System.CommandLine;
using Multikernel.Cli.Commands;
using Spectre.Console;

if (Console.IsOutputRedirected)
{
    // Logs and CI: plain text, wide enough that tables do not wrap.
    AnsiConsole.Profile.Capabilities.Ansi = false;
    AnsiConsole.Profile.Width = 160;
}

var root = new RootCommand("multikernel: a Barrelfish-style multikernel for .NET. Each core runs its own kernel; cores share no mutable state and talk only over bounded URPC channels.")
{
    RunCommand.Create(),
    DemoCommand.Create(),
    BenchCommand.Create(),
    HealthCommand.Create(),
};

ParseResult parse = root.Parse(args);
if (parse.Errors.Count > 0)
{
    // One clear line per problem, then where to look: never a stack trace.
    foreach (System.CommandLine.Parsing.ParseError error in parse.Errors)
    {
        await Console.Error.WriteLineAsync($"multikernel: {error.Message}");
    }

    await Console.Error.WriteLineAsync("Run 'multikernel --help' for usage.");
    return CliHost.UsageError;
}

return await parse.InvokeAsync();
