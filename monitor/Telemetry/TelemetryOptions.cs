using System.Collections.Immutable;

namespace Multikernel.Monitor.Telemetry;

/// <summary>
/// Telemetry settings (section <c>Multikernel:Telemetry</c>). Each one, when set, wins over the
/// standard <c>OTEL_*</c> environment variable it mirrors; left unset, the variable decides.
/// Setters reject invalid values with a message that names the setting.
/// </summary>
public sealed class TelemetryOptions
{
    /// <summary>The sampler names of the OpenTelemetry specification that are supported.</summary>
    public static readonly ImmutableArray<string> SamplerNames =
        ["always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"];

    private string? _traceFile;
    private int _traceFileMaxEvents = ChromeTraceExporter.DefaultMaxEvents;
    private string? _sampler;
    private double? _samplingRatio;
    private Uri? _otlpEndpoint;
    private string? _otlpProtocol;
    private TimeSpan? _metricsExportInterval;
    private string _serviceName = "multikernel";

    /// <summary>
    /// Write spans to this file as Chrome Trace Event JSON (Perfetto). Default: none. The CLI's
    /// <c>--trace-file</c> sets it. Setting it turns tracing on even without an OTLP endpoint.
    /// </summary>
    public string? TraceFile
    {
        get => _traceFile;
        set
        {
            if (value is not null && string.IsNullOrWhiteSpace(value))
            {
                throw new ArgumentException("Telemetry:TraceFile must be a file path (or unset).", nameof(value));
            }

            _traceFile = value;
        }
    }

    /// <summary>Cap on events in the trace file; spans beyond it are dropped and counted. Default 1,000,000; at least 16.</summary>
    public int TraceFileMaxEvents
    {
        get => _traceFileMaxEvents;
        set => _traceFileMaxEvents = value >= 16
            ? value
            : throw new ArgumentOutOfRangeException(nameof(value), value, "Telemetry:TraceFileMaxEvents must be at least 16.");
    }

    /// <summary>
    /// Sampler, as in <c>OTEL_TRACES_SAMPLER</c>: one of <see cref="SamplerNames"/>. Default: the
    /// variable, else <c>parentbased_traceidratio</c> when <see cref="SamplingRatio"/> is set, else
    /// <c>parentbased_always_on</c>.
    /// </summary>
    public string? Sampler
    {
        get => _sampler;
        set
        {
            if (value is not null && !SamplerNames.Contains(value.Trim().ToLowerInvariant()))
            {
                throw new ArgumentException($"Telemetry:Sampler '{value}' is not one of {string.Join(", ", SamplerNames)}.", nameof(value));
            }

            _sampler = value?.Trim().ToLowerInvariant();
        }
    }

    /// <summary>Ratio for the trace-id-ratio samplers, in [0, 1], as <c>OTEL_TRACES_SAMPLER_ARG</c>. Default: the variable, else 1.</summary>
    public double? SamplingRatio
    {
        get => _samplingRatio;
        set => _samplingRatio = value is null or (>= 0 and <= 1)
            ? value
            : throw new ArgumentOutOfRangeException(nameof(value), value, "Telemetry:SamplingRatio must be between 0 and 1.");
    }

    /// <summary>
    /// OTLP endpoint for traces and metrics (as <c>OTEL_EXPORTER_OTLP_ENDPOINT</c>: the base URL;
    /// <c>/v1/traces</c> and <c>/v1/metrics</c> are appended for HTTP). Default: the variables; when
    /// neither this nor a variable is set, nothing is exported over OTLP.
    /// </summary>
    public Uri? OtlpEndpoint
    {
        get => _otlpEndpoint;
        set
        {
            if (value is not null && (!value.IsAbsoluteUri || (value.Scheme != Uri.UriSchemeHttp && value.Scheme != Uri.UriSchemeHttps)))
            {
                throw new ArgumentException($"Telemetry:OtlpEndpoint '{value}' must be an absolute http:// or https:// URL.", nameof(value));
            }

            _otlpEndpoint = value;
        }
    }

    /// <summary>OTLP protocol, <c>grpc</c> or <c>http/protobuf</c>, as <c>OTEL_EXPORTER_OTLP_PROTOCOL</c>. Default: the variable, else <c>grpc</c> (the OpenTelemetry .NET default).</summary>
    public string? OtlpProtocol
    {
        get => _otlpProtocol;
        set
        {
            if (value is not null && TelemetrySetup.ParseProtocol(value) is null)
            {
                throw new ArgumentException($"Telemetry:OtlpProtocol '{value}' must be 'grpc' or 'http/protobuf'.", nameof(value));
            }

            _otlpProtocol = value;
        }
    }

    /// <summary>How often metrics are exported over OTLP, between 100 ms and 1 h. Default: <c>OTEL_METRIC_EXPORT_INTERVAL</c>, else 10 s.</summary>
    public TimeSpan? MetricsExportInterval
    {
        get => _metricsExportInterval;
        set => _metricsExportInterval = value is null || (value >= TimeSpan.FromMilliseconds(100) && value <= TimeSpan.FromHours(1))
            ? value
            : throw new ArgumentOutOfRangeException(nameof(value), value, "Telemetry:MetricsExportInterval must be between 100 ms and 1 hour.");
    }

    /// <summary><c>service.name</c> of the resource when <c>OTEL_SERVICE_NAME</c> does not set one. Default <c>multikernel</c>.</summary>
    public string ServiceName
    {
        get => _serviceName;
        set
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(value);
            _serviceName = value;
        }
    }
}
