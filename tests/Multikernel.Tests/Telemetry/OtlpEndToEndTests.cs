using System.Diagnostics;
using System.Text.Json;
using Multikernel.CpuDriver.Diagnostics;
using Multikernel.CpuDriver.Urpc;
using Multikernel.Monitor.Telemetry;

namespace Multikernel.Tests.Telemetry;

/// <summary>
/// Real kernels on two threads, the real OpenTelemetry SDK and OTLP exporter configured only
/// through the standard variables, and a receiver on loopback that decodes what arrives.
/// </summary>
[Collection(TelemetryCollection.Name)]
public sealed class OtlpEndToEndTests
{
    [Fact]
    public async Task RevokeRoundTrip_ReachesAnOtlpHttpReceiver_WithParentsAndLinks_AndTheTraceFileHasOneTrackPerCore()
    {
        await using var receiver = new OtlpHttpReceiver();
        string traceFile = Path.Combine(Path.GetTempPath(), "mk-e2e-" + Guid.NewGuid().ToString("N") + ".json");
        var variables = new Dictionary<string, string>
        {
            ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.Endpoint.ToString(),
            ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf",
            ["OTEL_TRACES_SAMPLER"] = "always_on",
        };

        try
        {
            using (var rig = new TwoCoreRig())
            using (var metrics = new MultikernelMetrics([rig.Core0, rig.Core1]))
            {
                using (TelemetryPipeline pipeline = TelemetrySetup.Start(new TelemetryOptions { TraceFile = traceFile }, variables.GetValueOrDefault))
                {
                    Assert.Equal(new Uri(receiver.Endpoint, "/v1/traces"), pipeline.Plan.OtlpTracesEndpoint);
                    Assert.True(await TwoCoreRig.On(rig.Core0, () => metrics.TryRegisterChannel(rig.Sender)));
                    Assert.True(await TwoCoreRig.On(rig.Core1, () => metrics.TryRegisterChannel(rig.Receiver)));

                    Task participant = TwoCoreRig.RunOn(rig.Core1, async () =>
                    {
                        // Endpoints trace themselves ("process core/1" as the read completes);
                        // the protocol step continues the trace the message carries, and its
                        // reply is the step's child.
                        Message mark = await rig.Receiver.ReadAsync();
                        using (MessageTracing.StartProtocol(ProtocolSpanNames.RevokeMark, 1, in mark))
                        {
                            metrics.RecordCapabilityOperation(1, "revoke");
                            await rig.Receiver.WriteAsync(Message.Create(11, mark.Word0));
                        }
                    });
                    Task initiator = TwoCoreRig.RunOn(rig.Core0, async () =>
                    {
                        using Activity? revoke = MessageTracing.StartProtocol(ProtocolSpanNames.Revoke, 0);
                        await rig.Sender.WriteAsync(Message.Create(10, 1234));
                        _ = await rig.Sender.ReadAsync();
                        metrics.RecordMonitorOperation(0, ProtocolSpanNames.Revoke);
                    });
                    await Task.WhenAll(initiator, participant).WaitAsync(TimeSpan.FromSeconds(30));
                } // disposing the pipeline flushes traces and metrics to the receiver and closes the trace file
            }

            // ---- traces over OTLP/HTTP
            var traceRequests = receiver.Requests.Where(r => r.Path == "/v1/traces").ToList();
            Assert.NotEmpty(traceRequests);
            Assert.All(traceRequests, r => Assert.Equal("application/x-protobuf", r.ContentType));
            List<OtlpSpan> spans = [.. traceRequests.SelectMany(r => OtlpSpan.FromRequest(r.Body))];

            OtlpSpan revoke = Assert.Single(spans, s => s.Name == "revoke");
            OtlpSpan send = Assert.Single(spans, s => s.Name == "send core/1");
            OtlpSpan process = Assert.Single(spans, s => s.Name == "process core/1");
            OtlpSpan mark = Assert.Single(spans, s => s.Name == "revoke mark");
            OtlpSpan reply = Assert.Single(spans, s => s.Name == "send core/0");
            OtlpSpan replyProcess = Assert.Single(spans, s => s.Name == "process core/0");

            Assert.Equal(32, revoke.TraceId.Length);
            Assert.All([send, process, mark, reply, replyProcess], s => Assert.Equal(revoke.TraceId, s.TraceId));
            Assert.Equal("", revoke.ParentSpanId);
            Assert.Equal(revoke.SpanId, send.ParentSpanId);
            Assert.Equal(send.SpanId, process.ParentSpanId);
            Assert.Equal([(send.TraceId, send.SpanId)], process.Links);
            Assert.Equal(send.SpanId, mark.ParentSpanId);
            Assert.Equal(mark.SpanId, reply.ParentSpanId);
            Assert.Equal(reply.SpanId, replyProcess.ParentSpanId);
            Assert.Equal([(reply.TraceId, reply.SpanId)], replyProcess.Links);

            const int Producer = 4;
            const int Consumer = 5;
            Assert.Equal(Producer, send.Kind);
            Assert.Equal(Consumer, process.Kind);
            Assert.Equal(ActivitySources.UrpcName, send.Scope);
            Assert.Equal(ActivitySources.MonitorName, revoke.Scope);
            Assert.Equal(0L, send.Attributes[TelemetryTags.Core]);
            Assert.Equal(1L, process.Attributes[TelemetryTags.Core]);
            Assert.Equal(1L, mark.Attributes[TelemetryTags.Core]);
            Assert.Equal("multikernel", process.Attributes[TelemetryTags.MessagingSystem]);
            Assert.Equal("process", process.Attributes[TelemetryTags.MessagingOperationType]);
            Assert.Equal("ping", process.Attributes[TelemetryTags.MessagingDestinationName]);
            Assert.Equal(10L, process.Attributes[TelemetryTags.MessageType]);
            Assert.True(send.Attributes.ContainsKey(TelemetryTags.RingDepth));

            // ---- metrics over OTLP/HTTP: ExportMetricsServiceRequest → resource_metrics(1) → scope_metrics(2) → metrics(2).name(1)
            var metricNames = receiver.Requests
                .Where(r => r.Path == "/v1/metrics")
                .SelectMany(r => ProtoMessage.Parse(r.Body).Messages(1))
                .SelectMany(rm => rm.Messages(2))
                .SelectMany(sm => sm.Messages(2))
                .Select(m => m.First(1)?.String)
                .ToHashSet();
            Assert.Contains("multikernel.urpc.messages.sent", metricNames);
            Assert.Contains("multikernel.channel.messages.sent", metricNames);
            Assert.Contains("multikernel.core.time", metricNames);
            Assert.Contains("multikernel.monitor.operations", metricNames);
            Assert.Contains("multikernel.capability.operations", metricNames);

            // ---- the trace file from the same run: one track per core, two flow arrows
            using JsonDocument document = JsonDocument.Parse(File.ReadAllBytes(traceFile));
            var events = document.RootElement.EnumerateArray().ToList();
            var tracks = events
                .Where(e => e.GetProperty("ph").GetString() == "M" && e.GetProperty("name").GetString() == "thread_name")
                .Select(e => (e.GetProperty("tid").GetInt32(), e.GetProperty("args").GetProperty("name").GetString()))
                .OrderBy(t => t.Item1)
                .ToList();
            Assert.Equal([(0, "core 0"), (1, "core 1")], tracks);
            Assert.Equal(2, events.Count(e => e.GetProperty("ph").GetString() == "s"));
            Assert.Equal(2, events.Count(e => e.GetProperty("ph").GetString() == "f"));
        }
        finally
        {
            File.Delete(traceFile);
        }
    }
}
