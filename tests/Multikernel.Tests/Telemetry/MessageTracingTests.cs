using System.Diagnostics;
using FsCheck;
using FsCheck.Fluent;
using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Diagnostics;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.Tests.Telemetry;

[Collection(TelemetryCollection.Name)]
public sealed class MessageTracingTests
{
    [Fact]
    public void Inject_TryExtract_RoundTripsAnyContext()
    {
        Prop.ForAll<ulong, ulong, ulong>((high, low, span) =>
        {
            bool sampled = (high & 1) != 0;
            if ((high | low) == 0 || span == 0)
            {
                return true; // not a valid W3C context
            }

            var bytes = new byte[16];
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(bytes, high);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(bytes.AsSpan(8), low);
            var traceId = ActivityTraceId.CreateFromBytes(bytes);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(bytes, span);
            var spanId = ActivitySpanId.CreateFromBytes(bytes.AsSpan(0, 8));
            var context = new ActivityContext(traceId, spanId, sampled ? ActivityTraceFlags.Recorded : ActivityTraceFlags.None);

            Message message = Message.Create(3, 1, 2, 3);
            MessageTracing.Inject(ref message, context);
            bool ok = MessageTracing.TryExtract(in message, out ActivityContext back);
            return ok
                && back.TraceId == traceId
                && back.SpanId == spanId
                && back.TraceFlags == context.TraceFlags
                && back.IsRemote
                && message.TraceIdHigh == high && message.TraceIdLow == low && message.SpanId == span
                && message.Word0 == 1 && message.Word2 == 3 && message.Type == 3; // payload untouched
        }).QuickCheckThrowOnFailure();
    }

    [Fact]
    public void Inject_TraceIdHex_IsHighThenLowWord()
    {
        var context = new ActivityContext(
            ActivityTraceId.CreateFromString("0102030405060708090a0b0c0d0e0f10"),
            ActivitySpanId.CreateFromString("a1a2a3a4a5a6a7a8"),
            ActivityTraceFlags.Recorded);
        Message message = default;

        MessageTracing.Inject(ref message, context);

        Assert.Equal(0x0102030405060708UL, message.TraceIdHigh);
        Assert.Equal(0x090a0b0c0d0e0f10UL, message.TraceIdLow);
        Assert.Equal(0xa1a2a3a4a5a6a7a8UL, message.SpanId);
        Assert.Equal(MessageFlags.HasTraceContext | MessageFlags.TraceSampled, message.Flags);
    }

    [Fact]
    public void Inject_DefaultContext_ClearsTheFieldsAndFlags()
    {
        Message message = default;
        MessageTracing.Inject(ref message, new ActivityContext(ActivityTraceId.CreateRandom(), ActivitySpanId.CreateRandom(), ActivityTraceFlags.Recorded));
        message.Flags |= MessageFlags.Control;

        MessageTracing.Inject(ref message, default);

        Assert.False(MessageTracing.TryExtract(in message, out _));
        Assert.Equal(MessageFlags.Control, message.Flags); // other flags survive
        Assert.Equal(0UL, message.TraceIdHigh | message.TraceIdLow | message.SpanId);
    }

    [Fact]
    public void TryExtract_FlagWithoutIds_IsNoContext()
    {
        Message message = default;
        message.Flags = MessageFlags.HasTraceContext;
        Assert.False(MessageTracing.TryExtract(in message, out _));
    }

    [Fact]
    public void StartSend_NoListener_ReturnsNullAndLeavesTheMessageAlone()
    {
        Message message = Message.Create(9, 7);
        Message before = message;

        Activity? send = MessageTracing.StartSend(ref message, 0, 1, "ping", 0);

        Assert.Null(send);
        Assert.Equal(before, message);
        Assert.Null(MessageTracing.StartProcess(in message, 0, 1, "ping"));
        Assert.Null(MessageTracing.StartProtocol(ProtocolSpanNames.Revoke, 0));
    }

    [Fact]
    public void StartSendAndProcess_NoListener_AllocateNothing()
    {
        Assert.False(ActivitySources.Urpc.HasListeners());
        Assert.False(ActivitySources.Monitor.HasListeners());
        Message traced = Message.Create(1);
        MessageTracing.Inject(ref traced, new ActivityContext(ActivityTraceId.CreateRandom(), ActivitySpanId.CreateRandom(), ActivityTraceFlags.Recorded));

        long Measure(int iterations)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < iterations; i++)
            {
                Message m = Message.Create(1, (ulong)i);
                MessageTracing.StartSend(ref m, 0, 1, "ping", i & 15)?.Dispose();
                MessageTracing.StartProcess(in m, 0, 1, "ping")?.Dispose();
                MessageTracing.StartProcess(in traced, 0, 1, "ping")?.Dispose();
                MessageTracing.StartProtocol(ProtocolSpanNames.Revoke, 0)?.Dispose();
                MessageTracing.StartProtocol(ProtocolSpanNames.RevokeMark, 1, in traced)?.Dispose();
            }

            return GC.GetAllocatedBytesForCurrentThread() - before;
        }

        Measure(1_000); // JIT and static initialisation
        Assert.Equal(0, Measure(10_000));

        // The same loop with a listener does allocate (spans), so the measurement can see allocation.
        using var capture = new ActivityCapture();
        Assert.True(Measure(10) > 0);
    }

    [Fact]
    public void SendThenProcess_AreLinkedProducerAndConsumerWithTheConventionAttributes()
    {
        using var capture = new ActivityCapture();
        Activity? send;
        Activity? process;
        Message message = Message.Create(42, 5);
        using (send = MessageTracing.StartSend(ref message, 2, 3, "echo", 5))
        {
        }

        using (process = MessageTracing.StartProcess(in message, 2, 3, "echo"))
        {
        }

        Assert.NotNull(send);
        Assert.NotNull(process);
        Assert.Equal("send core/3", send.DisplayName);
        Assert.Equal(ActivityKind.Producer, send.Kind);
        Assert.Equal("process core/3", process.DisplayName);
        Assert.Equal(ActivityKind.Consumer, process.Kind);

        Assert.Equal(send.TraceId, process.TraceId);
        Assert.Equal(send.SpanId, process.ParentSpanId);
        ActivityLink link = Assert.Single(process.Links);
        Assert.Equal(send.SpanId, link.Context.SpanId);
        Assert.Equal(send.TraceId, link.Context.TraceId);

        Assert.True(MessageTracing.TryExtract(in message, out ActivityContext carried));
        Assert.Equal(send.SpanId, carried.SpanId);
        Assert.True(carried.TraceFlags.HasFlag(ActivityTraceFlags.Recorded));

        Assert.Equal("multikernel", send.GetTagItem(TelemetryTags.MessagingSystem));
        Assert.Equal("send", send.GetTagItem(TelemetryTags.MessagingOperationType));
        Assert.Equal("echo", send.GetTagItem(TelemetryTags.MessagingDestinationName));
        Assert.Equal(2, send.GetTagItem(TelemetryTags.Core));
        Assert.Equal(2, send.GetTagItem(TelemetryTags.CoreSource));
        Assert.Equal(3, send.GetTagItem(TelemetryTags.CoreDestination));
        Assert.Equal(42, send.GetTagItem(TelemetryTags.MessageType));
        Assert.Equal(5, send.GetTagItem(TelemetryTags.RingDepth));

        Assert.Equal("multikernel", process.GetTagItem(TelemetryTags.MessagingSystem));
        Assert.Equal("process", process.GetTagItem(TelemetryTags.MessagingOperationType));
        Assert.Equal("echo", process.GetTagItem(TelemetryTags.MessagingDestinationName));
        Assert.Equal(3, process.GetTagItem(TelemetryTags.Core));
        Assert.Equal(2, process.GetTagItem(TelemetryTags.CoreSource));
        Assert.Equal(3, process.GetTagItem(TelemetryTags.CoreDestination));
        Assert.Equal(42, process.GetTagItem(TelemetryTags.MessageType));
    }

    [Fact]
    public void StartSend_IsChildOfTheCurrentSpan_AndTheHandlersSendsJoinTheTrace()
    {
        using var capture = new ActivityCapture();
        Message request = Message.Create(1);
        Message reply = Message.Create(2);
        Activity? protocol;
        Activity? send;
        Activity? process;
        Activity? replySend;
        using (protocol = MessageTracing.StartProtocol(ProtocolSpanNames.Revoke, 0))
        {
            send = MessageTracing.StartSend(ref request, 0, 1, "monitor", 0);
            send?.Dispose();
        }

        using (process = MessageTracing.StartProcess(in request, 0, 1, "monitor"))
        {
            replySend = MessageTracing.StartSend(ref reply, 1, 0, "monitor", 0);
            replySend?.Dispose();
        }

        Assert.NotNull(protocol);
        Assert.NotNull(send);
        Assert.NotNull(process);
        Assert.NotNull(replySend);
        Assert.Equal(protocol.SpanId, send.ParentSpanId);
        Assert.Equal(send.SpanId, process.ParentSpanId);
        Assert.Equal(process.SpanId, replySend.ParentSpanId);
        Assert.All([send, process, replySend], a => Assert.Equal(protocol.TraceId, a.TraceId));
        Assert.Equal(ActivityKind.Internal, protocol.Kind);
        Assert.Equal(ProtocolSpanNames.Revoke, protocol.GetTagItem(TelemetryTags.MonitorOperation));
        Assert.Equal(0, protocol.GetTagItem(TelemetryTags.Core));
    }

    [Fact]
    public void Detach_RestoresTheCallersCurrentSpan_AndLeavesTheSendOpen()
    {
        using var capture = new ActivityCapture();
        using Activity? outer = MessageTracing.StartProtocol(ProtocolSpanNames.Spawn, 0);
        Message first = Message.Create(1);
        Message second = Message.Create(2);

        Activity? stalled = MessageTracing.StartSend(ref first, 0, 1, "ping", 16);
        Assert.Same(stalled, Activity.Current);
        MessageTracing.Detach(stalled);
        Assert.Same(outer, Activity.Current);
        Activity? next = MessageTracing.StartSend(ref second, 0, 1, "ping", 16);
        next?.Dispose();
        stalled?.Dispose(); // the kernel wrote the stalled message later

        Assert.NotNull(stalled);
        Assert.NotNull(next);
        Assert.Equal(outer!.SpanId, next.ParentSpanId); // a sibling, not a child of the stalled send
        Assert.Equal(outer.SpanId, stalled.ParentSpanId);
        Assert.True(stalled.IsStopped);
        Assert.Same(outer, Activity.Current);
        MessageTracing.Detach(null);
    }

    [Fact]
    public void StartProtocol_FromAMessage_IsChildOfTheCarriedContext()
    {
        using var capture = new ActivityCapture();
        Message mark = Message.Create(1);
        Activity? revoke;
        Activity? step;
        using (revoke = MessageTracing.StartProtocol(ProtocolSpanNames.Revoke, 0))
        {
            Assert.True(MessageTracing.InjectCurrent(ref mark));
        }

        using (step = MessageTracing.StartProtocol(ProtocolSpanNames.RevokeMark, 3, in mark))
        {
        }

        Assert.NotNull(revoke);
        Assert.NotNull(step);
        Assert.Equal(revoke.TraceId, step.TraceId);
        Assert.Equal(revoke.SpanId, step.ParentSpanId);
        Assert.Equal(ActivityKind.Server, step.Kind);
        Assert.Equal(3, step.GetTagItem(TelemetryTags.Core));
        Assert.False(MessageTracing.InjectCurrent(ref mark));
        Assert.False(MessageTracing.HasTraceContext(in mark));
    }

    [Fact]
    public void StartProcessBatch_LinksEveryCarriedContext()
    {
        using var capture = new ActivityCapture();
        var messages = new Message[3];
        var sends = new List<Activity>();
        for (int i = 0; i < messages.Length; i++)
        {
            messages[i] = Message.Create((ushort)i);
            Activity? send = MessageTracing.StartSend(ref messages[i], 0, 1, "batch", i);
            Assert.NotNull(send);
            send.Dispose();
            sends.Add(send);
        }

        using Activity? batch = MessageTracing.StartProcessBatch(messages, 0, 1, "batch");

        Assert.NotNull(batch);
        Assert.Equal(sends.Select(s => s.SpanId), batch.Links.Select(l => l.Context.SpanId));
        Assert.Equal(3, batch.GetTagItem(TelemetryTags.MessagingBatchMessageCount));
        Assert.Equal(default, batch.ParentSpanId);
    }

    [Fact]
    public void StartSend_PropagationOnly_CarriesAnUnsampledContext()
    {
        using var capture = new ActivityCapture(ActivitySamplingResult.PropagationData);
        Message message = Message.Create(1);

        using Activity? send = MessageTracing.StartSend(ref message, 0, 1, "ping", 0);

        Assert.NotNull(send);
        Assert.False(send.Recorded);
        Assert.True(MessageTracing.TryExtract(in message, out ActivityContext carried));
        Assert.Equal(send.SpanId, carried.SpanId);
        Assert.Equal(ActivityTraceFlags.None, carried.TraceFlags);
        Assert.Null(send.GetTagItem(TelemetryTags.Core)); // no attribute work for unrecorded spans
    }

    [Fact]
    public async Task CrossCoreMessage_ProducesLinkedSendAndProcessSpansOnTheRightCores()
    {
        using var capture = new ActivityCapture();
        using var rig = new TwoCoreRig();
        int core0Thread = 0;
        int core1Thread = 0;

        Task receiver = TwoCoreRig.RunOn(rig.Core1, async () =>
        {
            // The endpoint traces by itself: the consumer span marks the hand-over and is not
            // left current for whatever the domain does next.
            Message received = await rig.Receiver.ReadAsync();
            Assert.True(rig.Core1.IsCurrentThread);
            core1Thread = Environment.CurrentManagedThreadId;
            Assert.Null(Activity.Current);
            Assert.Equal(77UL, received.Word0);
        });
        Task sender = TwoCoreRig.RunOn(rig.Core0, async () =>
        {
            Assert.True(rig.Core0.IsCurrentThread);
            core0Thread = Environment.CurrentManagedThreadId;
            Message message = Message.Create(5, 77);
            await rig.Sender.WriteAsync(message);
            Assert.Null(Activity.Current); // the send span ended with the send
        });
        await Task.WhenAll(sender, receiver).WaitAsync(TimeSpan.FromSeconds(30));

        Activity send = capture.Single("send core/1");
        Activity process = capture.Single("process core/1");
        Assert.Equal(send.SpanId, process.ParentSpanId);
        Assert.Equal(send.TraceId, process.TraceId);
        Assert.Equal(send.SpanId, Assert.Single(process.Links).Context.SpanId);
        Assert.Equal(0, send.GetTagItem(TelemetryTags.Core));
        Assert.Equal(1, process.GetTagItem(TelemetryTags.Core));
        Assert.Equal("ping", process.GetTagItem(TelemetryTags.MessagingDestinationName));
        Assert.Equal(5, process.GetTagItem(TelemetryTags.MessageType));

        // The spans really ran on the cores their tags name.
        Assert.Equal(core0Thread, capture.StartThread(send));
        Assert.Equal(core1Thread, capture.StartThread(process));
        Assert.True(rig.Core0.Counters.Sent(1) >= 1);
        Assert.True(rig.Core1.Counters.Received(0) >= 1);
    }

    [Fact]
    public void StartProcess_ForASampledOutTrace_CreatesNothing_ButASampledOneIsTraced()
    {
        using var capture = new ActivityCapture();
        var unsampled = new ActivityContext(ActivityTraceId.CreateRandom(), ActivitySpanId.CreateRandom(), ActivityTraceFlags.None);
        var sampled = new ActivityContext(ActivityTraceId.CreateRandom(), ActivitySpanId.CreateRandom(), ActivityTraceFlags.Recorded);
        Message dropped = Message.Create(1);
        MessageTracing.Inject(ref dropped, in unsampled);
        Message kept = Message.Create(1);
        MessageTracing.Inject(ref kept, in sampled);

        Assert.Null(MessageTracing.StartProcess(in dropped, 0, 1, "ping"));
        using Activity? process = MessageTracing.StartProcess(in kept, 0, 1, "ping");
        Assert.NotNull(process);
        Assert.Equal(sampled.TraceId, process!.TraceId);
        Assert.Equal(sampled.SpanId, process.ParentSpanId);
    }

    [Fact]
    public async Task TypedHandler_SendsOutsideAnySpan_JoinTheTraceOfTheValueItRead_AndOnlyThatOne()
    {
        using var capture = new ActivityCapture();
        using var rig = new TwoCoreRig();
        var reader1 = UrpcChannelReader<long>.Of(rig.Receiver);
        var writer1 = UrpcChannelWriter<long>.Of(rig.Receiver);
        var reader0 = UrpcChannelReader<long>.Of(rig.Sender);
        var writer0 = UrpcChannelWriter<long>.Of(rig.Sender);
        ActivityTraceId requestTrace = default;

        Task handler = TwoCoreRig.RunOn(rig.Core1, async () =>
        {
            // The first value through a read that waits, the second through TryRead.
            long value = await reader1.ReadAsync();
            Assert.Null(Activity.Current); // nothing ambient: the reader remembers the trace instead
            await writer1.WriteAsync(value + 1);
            Assert.True(await reader1.WaitToReadAsync());
            Assert.True(reader1.TryRead(out value));
            await writer1.WriteAsync(value + 1);
        });
        Task client = TwoCoreRig.RunOn(rig.Core0, async () =>
        {
            using (Activity? request = TestSources.Test.StartActivity("request"))
            {
                requestTrace = request!.TraceId;
                await writer0.WriteAsync(41);
            }

            Assert.Equal(42, await reader0.ReadAsync());
            await writer0.WriteAsync(99); // outside any span: a trace of its own
            Assert.Equal(100, await reader0.ReadAsync());
        });
        await Task.WhenAll(handler, client).WaitAsync(TimeSpan.FromSeconds(30));

        Activity process1 = Assert.Single(capture.All("process core/1"), a => a.TraceId == requestTrace);
        Activity reply1 = Assert.Single(capture.All("send core/0"), a => a.TraceId == requestTrace);
        Assert.Equal(process1.SpanId, reply1.ParentSpanId);
        Assert.Single(capture.All("process core/0"), a => a.TraceId == requestTrace && a.ParentSpanId == reply1.SpanId);

        // The second value came in another trace: its reply follows that one, not the first.
        Activity process2 = Assert.Single(capture.All("process core/1"), a => a.TraceId != requestTrace);
        Activity reply2 = Assert.Single(capture.All("send core/0"), a => a.TraceId != requestTrace);
        Assert.Equal(process2.TraceId, reply2.TraceId);
        Assert.Equal(process2.SpanId, reply2.ParentSpanId);
    }
}
