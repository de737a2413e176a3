using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Multikernel.Monitor.Telemetry;

namespace Multikernel.Monitor.Hosting;

/// <summary>
/// Starts the OpenTelemetry pipeline (OTLP from the standard OTEL_* variables, the Perfetto trace
/// file) before the machine boots and flushes it after the machine has stopped: it is registered
/// before the runtime's hosted service, and hosted services stop in reverse order.
/// </summary>
internal sealed partial class TelemetryHostedService : IHostedService, IDisposable
{
    private readonly TelemetryOptions _options;
    private readonly ILogger _logger;
    private TelemetryPipeline? _pipeline;

    public TelemetryHostedService(IOptions<TelemetryOptions> options, ILogger<TelemetryHostedService> logger)
    {
        _options = options.Value;
        _logger = logger;
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _pipeline = TelemetrySetup.Start(_options);
        if (_pipeline.Plan.TracingEnabled || _pipeline.MeterProvider is not null)
        {
            Started(_logger, _pipeline.Plan.ToString());
        }

        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken)
    {
        Dispose();
        return Task.CompletedTask;
    }

    public void Dispose()
    {
        TelemetryPipeline? pipeline = Interlocked.Exchange(ref _pipeline, null);
        if (pipeline is null)
        {
            return;
        }

        ChromeTraceExporter? file = pipeline.TraceFile;
        pipeline.Dispose();
        if (file is not null && file.DroppedSpans > 0)
        {
            // Capped: say so loudly, with how much is missing and how to keep it next time.
            TraceFileCapped(_logger, pipeline.Plan.TraceFile ?? "?", pipeline.Plan.TraceFileMaxEvents, file.DroppedSpans);
        }
        else if (file is not null)
        {
            TraceFileWritten(_logger, pipeline.Plan.TraceFile ?? "?", file.DroppedSpans);
        }
    }

    [LoggerMessage(20, LogLevel.Information, "Telemetry: {Plan}")]
    private static partial void Started(ILogger logger, string plan);

    [LoggerMessage(21, LogLevel.Information, "Trace file {Path} written ({Dropped} spans dropped at the event cap); open it in https://ui.perfetto.dev")]
    private static partial void TraceFileWritten(ILogger logger, string path, long dropped);

    [LoggerMessage(22, LogLevel.Warning, "Trace file {Path} reached its cap of {MaxEvents} events: {Dropped} spans were dropped (raise Multikernel:Telemetry:TraceFileMaxEvents to keep them)")]
    private static partial void TraceFileCapped(ILogger logger, string path, int maxEvents, long dropped);
}
