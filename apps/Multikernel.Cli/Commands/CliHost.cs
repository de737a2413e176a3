using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Multikernel.Monitor.Hosting;
using Multikernel.Monitor.Telemetry;

namespace Multikernel.Cli.Commands;

/// <summary>
/// Builds the generic host every command runs under: configuration from appsettings.json (next
/// to the executable), <c>MULTIKERNEL__*</c> environment variables and the command line, in
/// that order of precedence (last wins).
/// </summary>
internal static class CliHost
{
    /// <summary>Exit code for invalid options or arguments.</summary>
    public const int UsageError = 2;

    /// <summary>
    /// Builds the host, or prints why it cannot be built (a malformed appsettings.json, a value the
    /// options refuse) as one line each and returns exit code 2 in <paramref name="failed"/>.
    /// </summary>
    public static IHost? TryBuild(IDictionary<string, string?> overrides, out int failed, Action<MultikernelOptions>? configure = null, Action<IServiceCollection>? services = null)
    {
        failed = 0;
        try
        {
            return Build(overrides, configure, services);
        }
        catch (Exception ex) when (StartupProblems(ex) is { } problems)
        {
            Report(problems);
            failed = UsageError;
            return null;
        }
    }

    private static void Report(IEnumerable<string> problems)
    {
        foreach (string problem in problems)
        {
            Console.Error.WriteLine($"multikernel: {problem}");
        }
    }

    public static IHost Build(IDictionary<string, string?> overrides, Action<MultikernelOptions>? configure = null, Action<IServiceCollection>? services = null)
    {
        HostApplicationBuilder builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings
        {
            ContentRootPath = AppContext.BaseDirectory,
            DisableDefaults = false,
            Args = [],
        });
        builder.Configuration.AddInMemoryCollection(overrides);
        builder.Logging.AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "HH:mm:ss.fff ";
        });
        builder.Services.AddMultikernel(configure, builder.Configuration);
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(30));
        services?.Invoke(builder.Services);
        return builder.Build();
    }

    /// <summary>Starts the host, turning invalid options into one clear line and exit code 2.</summary>
    public static async Task<int?> TryStartAsync(IHost host, CancellationToken cancellationToken)
    {
        try
        {
            // Validate before the host starts, so a bad option is one line on stderr, not a host
            // failure logged to stdout first: the options, the OTEL_* variables, the trace file's
            // directory and the memory arena are all checked here.
            _ = host.Services.GetRequiredService<IOptions<MultikernelOptions>>().Value;
            TelemetryOptions telemetry = host.Services.GetRequiredService<IOptions<TelemetryOptions>>().Value;
            TelemetryPlan plan = TelemetrySetup.Resolve(telemetry);
            if (plan.TraceFile is { } path && Path.GetDirectoryName(path) is { Length: > 0 } directory && !Directory.Exists(directory))
            {
                throw new IOException($"Cannot create the trace file '{path}': the directory '{directory}' does not exist.");
            }

            _ = host.Services.GetRequiredService<MultikernelRuntime>();
            await host.StartAsync(cancellationToken);
            return null;
        }
        catch (Exception ex) when (StartupProblems(ex) is { } problems)
        {
            Report(problems);
            return UsageError;
        }
    }

    // What the user got wrong at start-up (options, OTEL_* variables, a trace-file path), one
    // line each; null for anything else, which is a real failure and propagates.
    internal static IEnumerable<string>? StartupProblems(Exception ex) => ex switch
    {
        System.Reflection.TargetInvocationException { InnerException: { } inner } => StartupProblems(inner),
        OptionsValidationException v => v.Failures,
        InvalidDataException { InnerException: FormatException f } d when d.Message.StartsWith("Failed to load configuration", StringComparison.Ordinal) =>
            [$"{d.Message[..^1]} (malformed JSON: {f.InnerException?.Message ?? f.Message})"],
        OutOfMemoryException => ["the memory arena could not be allocated: give --memory (Multikernel:Memory) a size this machine has free."],
        InvalidOperationException { InnerException: System.Reflection.TargetInvocationException t } => StartupProblems(t),
        InvalidOperationException { InnerException: ArgumentOutOfRangeException a } => [OneLine(a)],
        ArgumentOutOfRangeException a => [OneLine(a)],
        InvalidOperationException { InnerException: OptionsValidationException v } => v.Failures,
        InvalidOperationException i when i.Message.StartsWith("Failed to convert configuration value", StringComparison.Ordinal) => [$"invalid configuration: {i.Message}"],
        InvalidOperationException { InnerException: ArgumentException a } => [a.Message],
        InvalidOperationException i when i.Message.Contains("OTEL_", StringComparison.Ordinal) => [i.Message],
        ArgumentException a => [OneLine(a)],
        IOException or UnauthorizedAccessException => [ex.Message],
        _ => null,
    };

    // "X must be ... (Parameter 'value')" and "Actual value was 5." on the next line, as one line.
    private static string OneLine(ArgumentException a)
    {
        string message = a.Message;
        int cut = message.IndexOf(" (Parameter '", StringComparison.Ordinal);
        if (cut < 0)
        {
            cut = message.IndexOf('\n', StringComparison.Ordinal);
        }

        string first = cut < 0 ? message : message[..cut];
        return a is ArgumentOutOfRangeException { ActualValue: { } actual } ? $"{first.TrimEnd('.')} (got {actual})." : first;
    }

    public static Dictionary<string, string?> Overrides(string? cores, string? traceFile = null, string? memory = null)
    {
        var overrides = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
        if (memory is not null)
        {
            overrides[$"{MultikernelOptions.SectionName}:Memory"] = memory;
        }

        if (cores is not null)
        {
            overrides[$"{MultikernelOptions.SectionName}:Cores"] = cores;
        }

        if (traceFile is not null)
        {
            overrides[$"{MultikernelOptions.SectionName}:Telemetry:TraceFile"] = Path.GetFullPath(traceFile);
        }

        return overrides;
    }
}
