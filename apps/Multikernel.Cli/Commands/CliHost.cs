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
        catch (OptionsValidationException ex)
        {
            foreach (string failure in ex.Failures)
            {
                await Console.Error.WriteLineAsync($"multikernel: {failure}");
            }

            return UsageError;
        }
        catch (InvalidOperationException ex) when (ex.Message.StartsWith("Failed to convert configuration value", StringComparison.Ordinal))
        {
            await Console.Error.WriteLineAsync($"multikernel: invalid configuration: {ex.Message}");
            return UsageError;
        }
        catch (InvalidOperationException ex) when (ex.InnerException is ArgumentException inner)
        {
            // A telemetry setting rejected by its setter, or an OTEL_* variable that makes no sense.
            await Console.Error.WriteLineAsync($"multikernel: {inner.Message}");
            return UsageError;
        }
        catch (InvalidOperationException ex) when (ex.Message.Contains("OTEL_", StringComparison.Ordinal))
        {
            await Console.Error.WriteLineAsync($"multikernel: {ex.Message}");
            return UsageError;
        }
        catch (ArgumentException ex)
        {
            await Console.Error.WriteLineAsync($"multikernel: {ex.Message}");
            return UsageError;
        }
        catch (IOException ex)
        {
            await Console.Error.WriteLineAsync($"multikernel: {ex.Message}");
            return UsageError;
        }
        catch (UnauthorizedAccessException ex)
        {
            await Console.Error.WriteLineAsync($"multikernel: {ex.Message}");
            return UsageError;
        }
        catch (InvalidOperationException ex) when (ex.InnerException is OptionsValidationException inner)
        {
            foreach (string failure in inner.Failures)
            {
                await Console.Error.WriteLineAsync($"multikernel: {failure}");
            }

            return UsageError;
        }
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
