using System.Diagnostics.Metrics;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Multikernel.Monitor.Hosting;
using Multikernel.Monitor.Telemetry;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers a multikernel machine in a generic host.</summary>
public static class MultikernelServiceCollectionExtensions
{
    /// <summary>
    /// Adds a <see cref="MultikernelRuntime"/> booted by a hosted service. Options bind from the
    /// <c>Multikernel</c> section when <paramref name="configuration"/> is given, then
    /// <paramref name="configure"/> runs; invalid options stop start-up with
    /// <see cref="OptionsValidationException"/>.
    /// </summary>
    public static IServiceCollection AddMultikernel(this IServiceCollection services, Action<MultikernelOptions>? configure = null, IConfiguration? configuration = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        OptionsBuilder<MultikernelOptions> options = services.AddOptions<MultikernelOptions>();
        if (configuration is not null)
        {
            options.Bind(configuration.GetSection(MultikernelOptions.SectionName));
        }

        if (configure is not null)
        {
            options.Configure(configure);
        }

        options.ValidateOnStart();
        services.AddSingleton<IValidateOptions<MultikernelOptions>, MultikernelOptionsValidator>();
        OptionsBuilder<TelemetryOptions> telemetry = services.AddOptions<TelemetryOptions>();
        if (configuration is not null)
        {
            telemetry.Bind(configuration.GetSection(MultikernelOptions.SectionName + ":Telemetry"));
        }

        services.AddMetrics();
        services.TryAddSingleton(TimeProvider.System);
        services.AddSingleton(sp => new MultikernelRuntime(
            sp.GetRequiredService<IOptions<MultikernelOptions>>().Value,
            sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<ILoggerFactory>().CreateLogger("Multikernel"),
            meterFactory: sp.GetRequiredService<IMeterFactory>(),
            // The same plan the telemetry service starts from: cores sample message roots at its ratio.
            messageTraceRatio: TelemetrySetup.MessageTraceRatio(TelemetrySetup.Resolve(sp.GetRequiredService<IOptions<TelemetryOptions>>().Value))));

        // Telemetry starts first and stops last, so the whole run is traced and flushed.
        services.AddHostedService<TelemetryHostedService>();
        services.AddHostedService<MultikernelHostedService>();
        return services;
    }
}

/// <summary>Reports every invalid option, one line each.</summary>
internal sealed class MultikernelOptionsValidator : IValidateOptions<MultikernelOptions>
{
    public ValidateOptionsResult Validate(string? name, MultikernelOptions options)
    {
        string[] problems = [.. options.Validate()];
        return problems.Length == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(problems);
    }
}
