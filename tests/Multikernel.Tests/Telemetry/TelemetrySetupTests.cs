using System.Diagnostics;
using System.Text.Json;
using Multikernel.CpuDriver.Diagnostics;
using Multikernel.CpuDriver.Urpc;
using Multikernel.Monitor.Telemetry;
using OpenTelemetry.Exporter;

namespace Multikernel.Tests.Telemetry;

[Collection(TelemetryCollection.Name)]
public sealed class TelemetrySetupTests
{
    private static Func<string, string?> Env(params (string Name, string Value)[] variables)
    {
        var table = variables.ToDictionary(v => v.Name, v => v.Value);
        return name => table.GetValueOrDefault(name);
    }

    [Fact]
    public void Resolve_NothingConfigured_TracingOff_DefaultSampler()
    {
        TelemetryPlan plan = TelemetrySetup.Resolve(new TelemetryOptions(), Env());

        Assert.False(plan.TracingEnabled);
        Assert.Null(plan.OtlpTracesEndpoint);
        Assert.Null(plan.OtlpMetricsEndpoint);
        Assert.Equal("parentbased_always_on", plan.Sampler);
        Assert.Equal(1.0, plan.SamplingRatio);
        Assert.Equal(TimeSpan.FromSeconds(10), plan.MetricsExportInterval);
        Assert.Equal("multikernel", plan.ServiceName);
        Assert.Contains("traces: off", plan.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void Resolve_GenericEndpoint_Http_AppendsSignalPaths()
    {
        TelemetryPlan plan = TelemetrySetup.Resolve(new TelemetryOptions(), Env(
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")));

        Assert.True(plan.TracingEnabled);
        Assert.Equal(new Uri("http://collector:4318/v1/traces"), plan.OtlpTracesEndpoint);
        Assert.Equal(new Uri("http://collector:4318/v1/metrics"), plan.OtlpMetricsEndpoint);
        Assert.Equal(OtlpExportProtocol.HttpProtobuf, plan.OtlpTracesProtocol);
    }

    [Fact]
    public void Resolve_Grpc_IsTheDefault_AndUsesTheEndpointAsIs()
    {
        TelemetryPlan plan = TelemetrySetup.Resolve(new TelemetryOptions(), Env(("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")));

        Assert.Equal(OtlpExportProtocol.Grpc, plan.OtlpTracesProtocol);
        Assert.Equal(new Uri("http://collector:4317"), plan.OtlpTracesEndpoint);
    }

    [Fact]
    public void Resolve_SignalSpecificVariables_WinAndAreUsedAsIs()
    {
        TelemetryPlan plan = TelemetrySetup.Resolve(new TelemetryOptions(), Env(
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:9999/custom"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
            ("OTEL_METRICS_EXPORTER", "none")));

        Assert.Equal(new Uri("http://traces:9999/custom"), plan.OtlpTracesEndpoint);
        Assert.Null(plan.OtlpMetricsEndpoint);
    }

    [Fact]
    public void Resolve_TracesExporterNone_AndSdkDisabled_TurnOtlpOff_ButKeepTheTraceFile()
    {
        TelemetryPlan none = TelemetrySetup.Resolve(new TelemetryOptions(), Env(("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"), ("OTEL_TRACES_EXPORTER", "none")));
        Assert.Null(none.OtlpTracesEndpoint);
        Assert.NotNull(none.OtlpMetricsEndpoint);

        TelemetryPlan disabled = TelemetrySetup.Resolve(new TelemetryOptions { TraceFile = "t.json" }, Env(("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"), ("OTEL_SDK_DISABLED", "true")));
        Assert.Null(disabled.OtlpTracesEndpoint);
        Assert.Null(disabled.OtlpMetricsEndpoint);
        Assert.True(disabled.TracingEnabled);
        Assert.Equal(Path.GetFullPath("t.json"), disabled.TraceFile);
    }

    [Theory]
    [InlineData("always_on", null, "always_on", 1.0)]
    [InlineData("traceidratio", "0.25", "traceidratio", 0.25)]
    [InlineData("PARENTBASED_TRACEIDRATIO", "0", "parentbased_traceidratio", 0.0)]
    [InlineData(null, "0.5", "parentbased_always_on", 0.5)]
    public void Resolve_SamplerFromTheStandardVariables(string? sampler, string? arg, string expected, double ratio)
    {
        var vars = new List<(string, string)>();
        if (sampler is not null)
        {
            vars.Add(("OTEL_TRACES_SAMPLER", sampler));
        }

        if (arg is not null)
        {
            vars.Add(("OTEL_TRACES_SAMPLER_ARG", arg));
        }

        TelemetryPlan plan = TelemetrySetup.Resolve(new TelemetryOptions(), Env([.. vars]));

        Assert.Equal(expected, plan.Sampler);
        Assert.Equal(ratio, plan.SamplingRatio);
    }

    [Fact]
    public void Resolve_OptionsWinOverVariables()
    {
        var options = new TelemetryOptions { SamplingRatio = 0.1, OtlpEndpoint = new Uri("http://configured:4318"), OtlpProtocol = "http/protobuf", MetricsExportInterval = TimeSpan.FromSeconds(2) };

        TelemetryPlan plan = TelemetrySetup.Resolve(options, Env(
            ("OTEL_TRACES_SAMPLER_ARG", "0.9"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "60000"),
            ("OTEL_SERVICE_NAME", "from-env")));

        Assert.Equal("parentbased_traceidratio", plan.Sampler);
        Assert.Equal(0.1, plan.SamplingRatio);
        Assert.Equal(new Uri("http://configured:4318/v1/traces"), plan.OtlpTracesEndpoint);
        Assert.Equal(TimeSpan.FromSeconds(2), plan.MetricsExportInterval);
        Assert.Null(plan.ServiceName); // OTEL_SERVICE_NAME names the service
    }

    [Theory]
    [InlineData("OTEL_TRACES_SAMPLER", "jaeger_remote")]
    [InlineData("OTEL_TRACES_SAMPLER_ARG", "1.5")]
    [InlineData("OTEL_TRACES_SAMPLER_ARG", "half")]
    [InlineData("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]
    [InlineData("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]
    [InlineData("OTEL_TRACES_EXPORTER", "zipkin")]
    [InlineData("OTEL_METRIC_EXPORT_INTERVAL", "5")]
    public void Resolve_InvalidVariable_FailsNamingIt(string name, string value)
    {
        Func<string, string?> env = name == "OTEL_EXPORTER_OTLP_ENDPOINT"
            ? Env((name, value))
            : Env((name, value), ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"));
        var ex = Assert.Throws<InvalidOperationException>(() => TelemetrySetup.Resolve(new TelemetryOptions(), env));
        Assert.Contains(name, ex.Message, StringComparison.Ordinal);
        Assert.Contains(value, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Options_RejectInvalidValuesInTheirSetters()
    {
        var options = new TelemetryOptions();
        Assert.Throws<ArgumentOutOfRangeException>(() => options.SamplingRatio = 1.01);
        Assert.Throws<ArgumentOutOfRangeException>(() => options.SamplingRatio = -0.1);
        Assert.Throws<ArgumentException>(() => options.Sampler = "sometimes");
        Assert.Throws<ArgumentException>(() => options.OtlpProtocol = "udp");
        Assert.Throws<ArgumentException>(() => options.OtlpEndpoint = new Uri("ftp://x"));
        Assert.Throws<ArgumentException>(() => options.TraceFile = " ");
        Assert.Throws<ArgumentOutOfRangeException>(() => options.TraceFileMaxEvents = 2);
        Assert.Throws<ArgumentOutOfRangeException>(() => options.MetricsExportInterval = TimeSpan.Zero);
        options.Sampler = " TraceIdRatio ";
        Assert.Equal("traceidratio", options.Sampler);
        Assert.Null(options.TraceFile); // rejected values left nothing behind
        Assert.Null(options.SamplingRatio);
    }

    [Fact]
    public void Start_NothingConfigured_BuildsNoProvider_SoTracingCostsNothing()
    {
        using TelemetryPipeline pipeline = TelemetrySetup.Start(new TelemetryOptions(), Env());

        Assert.Null(pipeline.TracerProvider);
        Assert.Null(pipeline.MeterProvider);
        Assert.False(ActivitySources.Urpc.HasListeners());
    }

    [Fact]
    public void Start_WithATraceFile_WritesItAtDispose_AndHonoursTheSampler()
    {
        string path = Path.Combine(Path.GetTempPath(), "mk-setup-" + Guid.NewGuid().ToString("N") + ".json");
        try
        {
            using (TelemetryPipeline pipeline = TelemetrySetup.Start(new TelemetryOptions { TraceFile = path }, Env()))
            {
                Assert.NotNull(pipeline.TraceFile);
                Message message = Message.Create(1);
                MessageTracing.StartSend(ref message, 0, 1, "ping", 0)?.Dispose();
                MessageTracing.StartProcess(in message, 0, 1, "ping")?.Dispose();
            }

            using JsonDocument document = JsonDocument.Parse(File.ReadAllBytes(path));
            Assert.Equal(2, document.RootElement.EnumerateArray().Count(e => e.GetProperty("ph").GetString() == "X"));

            using (TelemetrySetup.Start(new TelemetryOptions { TraceFile = path, Sampler = "always_off" }, Env()))
            {
                Message message = Message.Create(1);
                MessageTracing.StartSend(ref message, 0, 1, "ping", 0)?.Dispose();
            }

            using JsonDocument empty = JsonDocument.Parse(File.ReadAllBytes(path));
            Assert.DoesNotContain(empty.RootElement.EnumerateArray(), e => e.GetProperty("ph").GetString() == "X");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Start_RatioSampler_KeepsAboutThatShareOfRootTraces()
    {
        string path = Path.Combine(Path.GetTempPath(), "mk-ratio-" + Guid.NewGuid().ToString("N") + ".json");
        try
        {
            int recorded = 0;
            using (TelemetrySetup.Start(new TelemetryOptions { TraceFile = path }, Env(("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.25"))))
            {
                for (int i = 0; i < 2000; i++)
                {
                    Message message = Message.Create(1);
                    using Activity? send = MessageTracing.StartSend(ref message, 0, 1, "ping", 0);
                    if (send is { Recorded: true })
                    {
                        recorded++;
                    }
                }
            }

            Assert.InRange(recorded, 350, 650); // 2000 × 0.25 = 500; bounds ~7 standard deviations wide
        }
        finally
        {
            File.Delete(path);
        }
    }
}
