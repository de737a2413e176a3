using System.Diagnostics;
using Multikernel.CpuDriver.Diagnostics;
using Multikernel.Monitor;
using Multikernel.Monitor.Hosting;

namespace Multikernel.Tests.Telemetry;

/// <summary>Spans from a real machine: monitors binding, domains messaging across cores.</summary>
[Collection(TelemetryCollection.Name)]
public sealed class RuntimeTracingTests
{
    [Fact]
    public async Task BindAndCrossCoreMessage_ProduceMonitorSpans_AndLinkedSendProcessSpansOnTheRightCores()
    {
        using var capture = new ActivityCapture();
        var done = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        string? ambientAtStart = null;
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.AddProgram("traced-server", async ctx =>
            {
                using ServiceListener listener = await ctx.ExportAsync("traced");
                DomainChannel channel = await listener.AcceptAsync(ctx.Stopping);
                CpuDriver.Urpc.Message m = await channel.Endpoint.ReadAsync();
                // The consumer span marked the hand-over; the handler continues the sender's trace.
                Assert.Null(Activity.Current);
                using (MessageTracing.StartHandler(in m, "handle request"))
                {
                    await channel.Endpoint.WriteAsync(CpuDriver.Urpc.Message.Create(2, m.Word0 + 1));
                }
            });
            o.AddProgram("traced-client", async ctx =>
            {
                ambientAtStart = Activity.Current?.DisplayName ?? "none";
                DomainChannel channel = await ctx.BindAsync("traced", TestMachine.Patience);
                using (ActivitySources.Apps.StartActivity("client request"))
                {
                    await channel.Endpoint.WriteAsync(CpuDriver.Urpc.Message.Create(1, 41));
                    CpuDriver.Urpc.Message reply = await channel.Endpoint.ReadAsync();
                    done.SetResult((int)reply.Word0);
                }
            });
            o.SpawnAtBoot("traced-server", core: 1);
            o.SpawnAtBoot("traced-client", core: 0);
        });
        try
        {
            Assert.Equal(42, await done.Task.WaitAsync(TestMachine.Patience));
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }

        // A domain starts outside any trace: not inside the boot or spawn spans of its monitor.
        Assert.Equal("none", ambientAtStart);
        Activity request = capture.Single("client request");
        Assert.Equal(default, request.ParentSpanId);
        Activity send = Assert.Single(capture.All("send core/1"), a => a.ParentSpanId == request.SpanId);
        Activity process = Assert.Single(capture.All("process core/1"), a => a.ParentSpanId == send.SpanId);
        Assert.Equal(send.SpanId, Assert.Single(process.Links).Context.SpanId);
        Activity handler = capture.Single("handle request");
        Assert.Equal(send.SpanId, handler.ParentSpanId);
        Assert.Equal(1, capture.StartThread(handler) == capture.StartThread(process) ? 1 : 0); // on core 1's thread
        Activity reply = Assert.Single(capture.All("send core/0"), a => a.ParentSpanId == handler.SpanId);
        Activity replyProcess = Assert.Single(capture.All("process core/0"), a => a.ParentSpanId == reply.SpanId);
        Assert.All([send, process, handler, reply, replyProcess], a => Assert.Equal(request.TraceId, a.TraceId));
        Assert.Equal(0, send.GetTagItem(TelemetryTags.Core));
        Assert.Equal(1, process.GetTagItem(TelemetryTags.Core));
        Assert.Equal(0, process.GetTagItem(TelemetryTags.CoreSource));
        Assert.Equal(1, process.GetTagItem(TelemetryTags.CoreDestination));
        Assert.Equal("multikernel", send.GetTagItem(TelemetryTags.MessagingSystem));
        Assert.Equal("send", send.GetTagItem(TelemetryTags.MessagingOperationType));
        Assert.NotNull(send.GetTagItem(TelemetryTags.RingDepth));
        // One channel, one destination name, on the send and on its process span, both ways.
        Assert.Equal("traced", send.GetTagItem(TelemetryTags.MessagingDestinationName));
        Assert.Equal("traced", process.GetTagItem(TelemetryTags.MessagingDestinationName));
        Assert.Equal(reply.GetTagItem(TelemetryTags.MessagingDestinationName), replyProcess.GetTagItem(TelemetryTags.MessagingDestinationName));
        Assert.All(capture.All("send core/1").Where(a => a.ParentSpanId != request.SpanId), s =>
            Assert.Contains(capture.All("process core/1"), p => p.ParentSpanId == s.SpanId && Equals(p.GetTagItem(TelemetryTags.MessagingDestinationName), s.GetTagItem(TelemetryTags.MessagingDestinationName))));

        // The monitors' bind: the client's span on core 0, the server monitor's on core 1, one trace.
        Activity clientBind = Assert.Single(capture.All("bind"), a => a.Kind == ActivityKind.Client && a.Status != ActivityStatusCode.Error);
        Activity serverBind = Assert.Single(capture.All("bind"), a => a.Kind == ActivityKind.Server && a.TraceId == clientBind.TraceId);
        Assert.Equal(0, clientBind.GetTagItem(TelemetryTags.Core));
        Assert.Equal(1, serverBind.GetTagItem(TelemetryTags.Core));
    }

    [Fact]
    public async Task ForwardingAReceivedMessage_DoesNotForwardItsTraceContext()
    {
        using var capture = new ActivityCapture();
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.AddProgram("bouncer", async ctx =>
            {
                using ServiceListener listener = await ctx.ExportAsync("bounce");
                DomainChannel channel = await listener.AcceptAsync(ctx.Stopping);
                CpuDriver.Urpc.Message m = await channel.Endpoint.ReadAsync();
                await channel.Endpoint.WriteAsync(in m); // sent back as is, outside any span
            });
            o.AddProgram("thrower", async ctx =>
            {
                DomainChannel channel = await ctx.BindAsync("bounce", TimeSpan.FromSeconds(30));
                using (ActivitySources.Apps.StartActivity("throw"))
                {
                    await channel.Endpoint.WriteAsync(CpuDriver.Urpc.Message.Create(3, 1));
                }

                _ = await channel.Endpoint.ReadAsync();
                done.SetResult();
            });
            o.SpawnAtBoot("bouncer", core: 1);
            o.SpawnAtBoot("thrower", core: 0);
        }, messageTraceRatio: 0); // cores head-sample roots and keep none: only explicit traces travel
        try
        {
            await done.Task.WaitAsync(TestMachine.Patience);
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }

        Activity thrown = capture.Single("throw");
        Activity sent = Assert.Single(capture.All("send core/1"), a => a.ParentSpanId == thrown.SpanId);
        Assert.Single(capture.All("process core/1"), a => a.ParentSpanId == sent.SpanId);
        // The bounce was sent outside any trace and sampled out by its core: it must not carry the
        // context it came in with, or the thrower would see a delivery in the old trace.
        Assert.DoesNotContain(capture.All("process core/0"), a => a.TraceId == thrown.TraceId);
        Assert.DoesNotContain(capture.All("send core/0"), a => Equals(a.GetTagItem(TelemetryTags.MessageType), 3));
    }
}
