using System.Globalization;
using Multikernel.CpuDriver.Diagnostics;
using OpenTelemetry;
using OpenTelemetry.Exporter;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace Multikernel.Monitor.Telemetry;

/// <summary>
/// What <see cref="TelemetrySetup"/> decided from the options and the environment: which sampler,
/// which OTLP endpoints, which trace file. Computed without side effects so it can be logged at
/// start-up and tested.
/// </summary>
public sealed record TelemetryPlan
{
    /// <summary>Sampler name (one of <see cref="TelemetryOptions.SamplerNames"/>).</summary>
    public required string Sampler { get; init; }

    /// <summary>Ratio of the trace-id-ratio samplers (1 for the others).</summary>
    public required double SamplingRatio { get; init; }

    /// <summary>Full OTLP traces URL (HTTP: ending in <c>/v1/traces</c>), or null for no OTLP trace export.</summary>
    public Uri? OtlpTracesEndpoint { get; init; }

    /// <summary>Protocol of the OTLP trace exporter.</summary>
    public OtlpExportProtocol OtlpTracesProtocol { get; init; }

    /// <summary>Full OTLP metrics URL, or null for no OTLP metric export.</summary>
    public Uri? OtlpMetricsEndpoint { get; init; }

    /// <summary>Protocol of the OTLP metric exporter.</summary>
    public OtlpExportProtocol OtlpMetricsProtocol { get; init; }

    /// <summary>Metric export interval.</summary>
    public TimeSpan MetricsExportInterval { get; init; }

    /// <summary>Chrome trace file, or null.</summary>
    public string? TraceFile { get; init; }

    /// <summary>Cap on events in the trace file.</summary>
    public int TraceFileMaxEvents { get; init; }

    /// <summary><c>service.name</c> to set, or null when <c>OTEL_SERVICE_NAME</c> provides it.</summary>
    public string? ServiceName { get; init; }

    /// <summary>True when spans go anywhere; when false no tracer provider is built and tracing costs nothing.</summary>
    public bool TracingEnabled => OtlpTracesEndpoint is not null || TraceFile is not null;

    /// <summary>One line for the start-up log.</summary>
    public override string ToString()
    {
        string traces = TracingEnabled
            ? string.Join(" and ", new[]
                {
                    OtlpTracesEndpoint is null ? null : $"OTLP {Name(OtlpTracesProtocol)} {OtlpTracesEndpoint}",
                    TraceFile is null ? null : $"Chrome trace file {TraceFile}",
                }.Where(s => s is not null)) + $" (sampler {Sampler}{(Sampler.EndsWith("traceidratio", StringComparison.Ordinal) ? " " + SamplingRatio.ToString(CultureInfo.InvariantCulture) : "")})"
            : "off";
        string metrics = OtlpMetricsEndpoint is null ? "not exported" : $"OTLP {Name(OtlpMetricsProtocol)} {OtlpMetricsEndpoint} every {MetricsExportInterval.TotalSeconds.ToString(CultureInfo.InvariantCulture)} s";
        return $"traces: {traces}; metrics: {metrics}";

        static string Name(OtlpExportProtocol p) => p == OtlpExportProtocol.Grpc ? "grpc" : "http/protobuf";
    }
}

/// <summary>The running telemetry: dispose it at shutdown to flush and close every exporter (and the trace file).</summary>
public sealed class TelemetryPipeline : IDisposable
{
    internal TelemetryPipeline(TelemetryPlan plan, TracerProvider? tracerProvider, MeterProvider? meterProvider, ChromeTraceExporter? traceFile)
    {
        Plan = plan;
        TracerProvider = tracerProvider;
        MeterProvider = meterProvider;
        TraceFile = traceFile;
    }

    /// <summary>What was configured.</summary>
    public TelemetryPlan Plan { get; }

    /// <summary>The tracer provider, or null when tracing is off.</summary>
    public TracerProvider? TracerProvider { get; }

    /// <summary>The meter provider, or null when metrics are not exported.</summary>
    public MeterProvider? MeterProvider { get; }

    /// <summary>The Chrome trace exporter, when a trace file is written (its drop count is worth a log line at shutdown).</summary>
    public ChromeTraceExporter? TraceFile { get; }

    /// <summary>Exports everything finished so far. False when an exporter did not finish in time.</summary>
    public bool ForceFlush(int timeoutMilliseconds = 5000)
    {
        bool ok = TracerProvider?.ForceFlush(timeoutMilliseconds) ?? true;
        return (MeterProvider?.ForceFlush(timeoutMilliseconds) ?? true) && ok;
    }

    /// <summary>Flushes and shuts down the providers; the trace file gets its closing bracket.</summary>
    public void Dispose()
    {
        TracerProvider?.Dispose();
        MeterProvider?.Dispose();
    }
}

/// <summary>
/// Builds the OpenTelemetry pipeline of a Multikernel host from <see cref="TelemetryOptions"/> and
/// the standard variables: <c>OTEL_TRACES_SAMPLER</c> / <c>OTEL_TRACES_SAMPLER_ARG</c>,
/// <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> (and the <c>_TRACES_</c> / <c>_METRICS_</c> variants),
/// <c>OTEL_EXPORTER_OTLP_PROTOCOL</c> (and variants), <c>OTEL_TRACES_EXPORTER</c> /
/// <c>OTEL_METRICS_EXPORTER</c> (<c>otlp</c> or <c>none</c>), <c>OTEL_METRIC_EXPORT_INTERVAL</c>,
/// <c>OTEL_SDK_DISABLED</c> and <c>OTEL_SERVICE_NAME</c>. OTLP export is on only when an endpoint
/// is configured; other exporter settings (headers, timeout, compression) are read by the OTLP
/// exporter itself from the process environment.
/// </summary>
/// <remarks>
/// Invalid values stop start-up with an <see cref="InvalidOperationException"/> naming the
/// variable (the specification lets SDKs ignore them; this project prefers one clear failure).
/// <c>OTEL_SDK_DISABLED=true</c> switches off what the environment asks for; what the options ask
/// for explicitly (a trace file from <c>--trace-file</c>, an endpoint from configuration) still runs.
/// </remarks>
public static class TelemetrySetup
{
    /// <summary>Builds and starts the providers. Dispose the result at shutdown.</summary>
    /// <param name="options">Settings from configuration / the command line.</param>
    /// <param name="environment">Reads an environment variable (default <see cref="Environment.GetEnvironmentVariable(string)"/>).</param>
    /// <param name="configureTracing">Extra tracer configuration (more sources or processors), applied only when tracing is enabled.</param>
    /// <param name="configureMetrics">Extra meter configuration (another reader); when given, a meter provider is built even without OTLP.</param>
    public static TelemetryPipeline Start(
        TelemetryOptions options,
        Func<string, string?>? environment = null,
        Action<TracerProviderBuilder>? configureTracing = null,
        Action<MeterProviderBuilder>? configureMetrics = null)
    {
        TelemetryPlan plan = Resolve(options, environment);
        ResourceBuilder resource = ResourceBuilder.CreateDefault();
        if (plan.ServiceName is not null)
        {
            resource.AddService(plan.ServiceName);
        }

        TracerProvider? tracerProvider = null;
        ChromeTraceExporter? traceFile = null;
        if (plan.TracingEnabled)
        {
            TracerProviderBuilder tracing = Sdk.CreateTracerProviderBuilder()
                .SetResourceBuilder(resource)
                .AddSource(ActivitySources.Wildcard)
                .SetSampler(CreateSampler(plan.Sampler, plan.SamplingRatio));
            if (plan.OtlpTracesEndpoint is { } tracesEndpoint)
            {
                tracing.AddOtlpExporter(o =>
                {
                    o.Endpoint = tracesEndpoint;
                    o.Protocol = plan.OtlpTracesProtocol;
                });
            }

            if (plan.TraceFile is { } path)
            {
                // Opened now, so a bad path stops start-up instead of losing the trace at the end.
                traceFile = new ChromeTraceExporter(path, plan.TraceFileMaxEvents);
                tracing.AddProcessor(new BatchActivityExportProcessor(
                    traceFile,
                    maxQueueSize: 16_384,
                    scheduledDelayMilliseconds: 1_000,
                    exporterTimeoutMilliseconds: 30_000,
                    maxExportBatchSize: 4_096));
            }

            configureTracing?.Invoke(tracing);
            tracerProvider = tracing.Build();
        }

        MeterProvider? meterProvider = null;
        if (plan.OtlpMetricsEndpoint is not null || configureMetrics is not null)
        {
            MeterProviderBuilder metrics = Sdk.CreateMeterProviderBuilder()
                .SetResourceBuilder(resource)
                .AddMeter(MultikernelMetrics.MeterName, MultikernelMetrics.MeterName + ".*");
            if (plan.OtlpMetricsEndpoint is { } metricsEndpoint)
            {
                metrics.AddOtlpExporter((o, reader) =>
                {
                    o.Endpoint = metricsEndpoint;
                    o.Protocol = plan.OtlpMetricsProtocol;
                    reader.PeriodicExportingMetricReaderOptions.ExportIntervalMilliseconds = (int)plan.MetricsExportInterval.TotalMilliseconds;
                });
            }

            configureMetrics?.Invoke(metrics);
            meterProvider = metrics.Build();
        }

        return new TelemetryPipeline(plan, tracerProvider, meterProvider, traceFile);
    }

    /// <summary>Works out the plan from <paramref name="options"/> and the environment, without starting anything.</summary>
    public static TelemetryPlan Resolve(TelemetryOptions options, Func<string, string?>? environment = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        Func<string, string?> env = environment ?? Environment.GetEnvironmentVariable;
        string? Var(string name) => env(name) is { } v && !string.IsNullOrWhiteSpace(v) ? v.Trim() : null;

        bool sdkDisabled = string.Equals(Var("OTEL_SDK_DISABLED"), "true", StringComparison.OrdinalIgnoreCase);

        string sampler = options.Sampler
            ?? NormalizeSampler(Var("OTEL_TRACES_SAMPLER"))
            ?? (options.SamplingRatio is not null ? "parentbased_traceidratio" : "parentbased_always_on");
        double ratio = options.SamplingRatio ?? ParseRatio(Var("OTEL_TRACES_SAMPLER_ARG")) ?? 1.0;

        (Uri? tracesEndpoint, OtlpExportProtocol tracesProtocol) = ResolveOtlp(options, Var, sdkDisabled, "TRACES", "traces");
        (Uri? metricsEndpoint, OtlpExportProtocol metricsProtocol) = ResolveOtlp(options, Var, sdkDisabled, "METRICS", "metrics");

        TimeSpan interval = options.MetricsExportInterval
            ?? ParseInterval(Var("OTEL_METRIC_EXPORT_INTERVAL"))
            ?? TimeSpan.FromSeconds(10);

        return new TelemetryPlan
        {
            Sampler = sampler,
            SamplingRatio = ratio,
            OtlpTracesEndpoint = tracesEndpoint,
            OtlpTracesProtocol = tracesProtocol,
            OtlpMetricsEndpoint = metricsEndpoint,
            OtlpMetricsProtocol = metricsProtocol,
            MetricsExportInterval = interval,
            TraceFile = options.TraceFile is null ? null : Path.GetFullPath(options.TraceFile),
            TraceFileMaxEvents = options.TraceFileMaxEvents,
            ServiceName = Var("OTEL_SERVICE_NAME") is null ? options.ServiceName : null,
        };
    }

    /// <summary>Parses <c>grpc</c> / <c>http/protobuf</c> (null for anything else).</summary>
    internal static OtlpExportProtocol? ParseProtocol(string value) => value.Trim().ToLowerInvariant() switch
    {
        "grpc" => OtlpExportProtocol.Grpc,
        "http/protobuf" => OtlpExportProtocol.HttpProtobuf,
        _ => null,
    };

    /// <summary>
    /// Creates the sampler for a specification sampler name. The ratio samplers record a root
    /// span the kernel already sampled (<see cref="MessageSampler"/>) without drawing again, so
    /// message traces are kept at the ratio, not at its square.
    /// </summary>
    public static Sampler CreateSampler(string name, double ratio) => name switch
    {
        "always_on" => new AlwaysOnSampler(),
        "always_off" => new AlwaysOffSampler(),
        "traceidratio" => new KernelSampledAware(new TraceIdRatioBasedSampler(ratio)),
        "parentbased_always_on" => new ParentBasedSampler(new AlwaysOnSampler()),
        "parentbased_always_off" => new ParentBasedSampler(new AlwaysOffSampler()),
        "parentbased_traceidratio" => new ParentBasedSampler(new KernelSampledAware(new TraceIdRatioBasedSampler(ratio))),
        _ => throw new ArgumentException($"Unknown sampler '{name}'; use one of {string.Join(", ", TelemetryOptions.SamplerNames)}.", nameof(name)),
    };

    /// <summary>
    /// The fraction of root message traces each core should sample itself for
    /// <paramref name="plan"/>: the ratio of a ratio sampler when tracing is on, else 1 (the SDK
    /// decides everything).
    /// </summary>
    public static double MessageTraceRatio(TelemetryPlan plan)
    {
        ArgumentNullException.ThrowIfNull(plan);
        return plan.TracingEnabled && plan.Sampler.EndsWith("traceidratio", StringComparison.Ordinal) ? plan.SamplingRatio : 1;
    }

    private sealed class KernelSampledAware(Sampler inner) : Sampler
    {
        public override SamplingResult ShouldSample(in SamplingParameters samplingParameters)
        {
            if (samplingParameters.Tags is { } tags)
            {
                foreach (KeyValuePair<string, object?> tag in tags)
                {
                    if (tag.Key == MessageSampler.KernelSampledTag && tag.Value is MessageSampler.KernelSampledValue)
                    {
                        return new SamplingResult(SamplingDecision.RecordAndSample);
                    }
                }
            }

            return inner.ShouldSample(samplingParameters);
        }
    }

    private static (Uri? Endpoint, OtlpExportProtocol Protocol) ResolveOtlp(TelemetryOptions options, Func<string, string?> var, bool sdkDisabled, string signal, string path)
    {
        string? protocolText = options.OtlpProtocol ?? var($"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") ?? var("OTEL_EXPORTER_OTLP_PROTOCOL");
        OtlpExportProtocol protocol = OtlpExportProtocol.Grpc;
        if (protocolText is not null)
        {
            protocol = ParseProtocol(protocolText)
                ?? throw new InvalidOperationException($"OTEL_EXPORTER_OTLP_PROTOCOL '{protocolText}' is not supported; use 'grpc' or 'http/protobuf'.");
        }

        if (options.OtlpEndpoint is { } configured)
        {
            return (SignalUrl(configured, protocol, path), protocol);
        }

        if (sdkDisabled || !ExporterWanted(var($"OTEL_{signal}_EXPORTER"), $"OTEL_{signal}_EXPORTER"))
        {
            return (null, protocol);
        }

        // Per the specification the signal-specific variable is the full URL, used as is; the
        // generic one is a base to which HTTP appends the signal's path.
        if (var($"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT") is { } specific)
        {
            return (ParseUrl(specific, $"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"), protocol);
        }

        if (var("OTEL_EXPORTER_OTLP_ENDPOINT") is { } generic)
        {
            return (SignalUrl(ParseUrl(generic, "OTEL_EXPORTER_OTLP_ENDPOINT"), protocol, path), protocol);
        }

        return (null, protocol);
    }

    private static bool ExporterWanted(string? value, string variable)
    {
        if (value is null)
        {
            return true;
        }

        string[] names = value.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (names.Contains("otlp", StringComparer.OrdinalIgnoreCase))
        {
            return true;
        }

        if (names.Length == 1 && names[0].Equals("none", StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        throw new InvalidOperationException($"{variable} '{value}' is not supported; use 'otlp' or 'none' (the trace file is --trace-file).");
    }

    private static Uri SignalUrl(Uri baseUrl, OtlpExportProtocol protocol, string path) =>
        protocol == OtlpExportProtocol.Grpc
            ? baseUrl
            : new Uri(baseUrl.AbsoluteUri.TrimEnd('/') + "/v1/" + path);

    private static Uri ParseUrl(string text, string variable) =>
        Uri.TryCreate(text, UriKind.Absolute, out Uri? url) && (url.Scheme == Uri.UriSchemeHttp || url.Scheme == Uri.UriSchemeHttps)
            ? url
            : throw new InvalidOperationException($"{variable} '{text}' is not an absolute http:// or https:// URL.");

    private static string? NormalizeSampler(string? value)
    {
        if (value is null)
        {
            return null;
        }

        string name = value.ToLowerInvariant();
        return TelemetryOptions.SamplerNames.Contains(name)
            ? name
            : throw new InvalidOperationException($"OTEL_TRACES_SAMPLER '{value}' is not supported; use one of {string.Join(", ", TelemetryOptions.SamplerNames)}.");
    }

    private static double? ParseRatio(string? value)
    {
        if (value is null)
        {
            return null;
        }

        return double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double ratio) && ratio >= 0 && ratio <= 1
            ? ratio
            : throw new InvalidOperationException($"OTEL_TRACES_SAMPLER_ARG '{value}' is not a ratio between 0 and 1.");
    }

    private static TimeSpan? ParseInterval(string? value)
    {
        if (value is null)
        {
            return null;
        }

        return int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int ms) && ms >= 100 && ms <= 3_600_000
            ? TimeSpan.FromMilliseconds(ms)
            : throw new InvalidOperationException($"OTEL_METRIC_EXPORT_INTERVAL '{value}' is not a number of milliseconds between 100 and 3600000.");
    }
}
