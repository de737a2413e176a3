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
            // Validate before the host starts, so a bad option is one line, not a host failure log.
            _ = host.Services.GetRequiredService<IOptions<MultikernelOptions>>().Value;
            _ = host.Services.GetRequiredService<IOptions<TelemetryOptions>>().Value;
            await host.StartAsync(cancellationToken);
            return null;
        }
        catch (Exception ex) when (StartupProblems(ex) is { } problems)
        {
            foreach (string problem in problems)
            {
                await Console.Error.WriteLineAsync($"multikernel: {problem}");
            }

            return UsageError;
        }
    }

    // What the user got wrong at start-up (options, OTEL_* variables, a trace-file path), one
    // line each; null for anything else, which is a real failure and propagates.
    private static IEnumerable<string>? StartupProblems(Exception ex) => ex switch
    {
        OptionsValidationException v => v.Failures,
        InvalidOperationException { InnerException: OptionsValidationException v } => v.Failures,
        InvalidOperationException i when i.Message.StartsWith("Failed to convert configuration value", StringComparison.Ordinal) => [$"invalid configuration: {i.Message}"],
        InvalidOperationException { InnerException: ArgumentException a } => [a.Message],
        InvalidOperationException i when i.Message.Contains("OTEL_", StringComparison.Ordinal) => [i.Message],
        ArgumentException or IOException or UnauthorizedAccessException => [ex.Message],
        _ => null,
    };

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
