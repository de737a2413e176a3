using System.Buffers.Binary;
using System.Collections.Immutable;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.CpuDriver.Diagnostics;

/// <summary>
/// Spans for cross-core messages and monitor protocols, with the W3C trace context carried in the
/// message header itself (never through shared state). Follows the OpenTelemetry messaging
/// conventions: <c>send core/B</c> is a producer span on the sending core; <c>process core/B</c>
/// is a consumer span on the receiving core whose parent is the context the message carried and
/// which also links to it (the creation context).
/// </summary>
/// <remarks>
/// Cost when nobody listens: every entry point checks <see cref="ActivitySource.HasListeners"/>
/// first and returns <see langword="null"/> without touching the message, so the hot URPC path
/// pays one volatile read and allocates nothing. The span-building code sits in separate
/// non-inlined methods so the check inlines into the caller and the rest stays out of its way.
/// Every span gets the tag <see cref="TelemetryTags.Core"/> (the core it ran on), which the Chrome
/// trace exporter uses to put it on that core's track.
/// </remarks>
public static class MessageTracing
{
    private const int CachedCores = 256;

    // Span names and boxed tag values for the usual range of cores, built once: a traced send
    // then allocates only what the Activity itself needs. Immutable, so no mutable static state.
    private static readonly ImmutableArray<string> SendNames = BuildNames("send core/");
    private static readonly ImmutableArray<string> ProcessNames = BuildNames("process core/");
    private static readonly ImmutableArray<object> BoxedInts = BuildBoxes();

    // ------------------------------------------------------------------ context in the header

    /// <summary>
    /// Writes <paramref name="context"/> into the message's trace fields and sets
    /// <see cref="MessageFlags.HasTraceContext"/> and, when sampled, <see cref="MessageFlags.TraceSampled"/>.
    /// An invalid (default) context clears the fields instead. Allocation-free.
    /// </summary>
    public static void Inject(ref Message message, in ActivityContext context)
    {
        if (context.TraceId == default || context.SpanId == default)
        {
            ClearTraceContext(ref message);
            return;
        }

        Span<byte> bytes = stackalloc byte[16];
        context.TraceId.CopyTo(bytes);
        message.TraceIdHigh = BinaryPrimitives.ReadUInt64BigEndian(bytes);
        message.TraceIdLow = BinaryPrimitives.ReadUInt64BigEndian(bytes[8..]);
        context.SpanId.CopyTo(bytes[..8]);
        message.SpanId = BinaryPrimitives.ReadUInt64BigEndian(bytes);
        MessageFlags flags = (message.Flags & ~MessageFlags.TraceSampled) | MessageFlags.HasTraceContext;
        if ((context.TraceFlags & ActivityTraceFlags.Recorded) != 0)
        {
            flags |= MessageFlags.TraceSampled;
        }

        message.Flags = flags;
    }

    /// <summary>
    /// Writes the context of <see cref="Activity.Current"/> into the message (for a monitor that
    /// builds a protocol message inside a protocol span). False, and the fields cleared, when there
    /// is no current activity.
    /// </summary>
    public static bool InjectCurrent(ref Message message)
    {
        Activity? current = Activity.Current;
        if (current is null)
        {
            ClearTraceContext(ref message);
            return false;
        }

        Inject(ref message, current.Context);
        return true;
    }

    /// <summary>Removes any trace context from the message.</summary>
    public static void ClearTraceContext(ref Message message)
    {
        message.TraceIdHigh = 0;
        message.TraceIdLow = 0;
        message.SpanId = 0;
        message.Flags &= ~(MessageFlags.HasTraceContext | MessageFlags.TraceSampled);
    }

    /// <summary>True when the message carries a trace context (cheap: flags and ids only, no allocation).</summary>
    public static bool HasTraceContext(in Message message) =>
        (message.Flags & MessageFlags.HasTraceContext) != 0
        && (message.TraceIdHigh | message.TraceIdLow) != 0
        && message.SpanId != 0;

    /// <summary>
    /// Reads the context the message carries, marked remote. False when it carries none.
    /// Building the <see cref="ActivityContext"/> allocates its id strings, so call it only when
    /// somebody listens (the Start methods do).
    /// </summary>
    public static bool TryExtract(in Message message, out ActivityContext context)
    {
        if (!HasTraceContext(in message))
        {
            context = default;
            return false;
        }

        Span<byte> bytes = stackalloc byte[16];
        BinaryPrimitives.WriteUInt64BigEndian(bytes, message.TraceIdHigh);
        BinaryPrimitives.WriteUInt64BigEndian(bytes[8..], message.TraceIdLow);
        ActivityTraceId traceId = ActivityTraceId.CreateFromBytes(bytes);
        BinaryPrimitives.WriteUInt64BigEndian(bytes, message.SpanId);
        ActivitySpanId spanId = ActivitySpanId.CreateFromBytes(bytes[..8]);
        ActivityTraceFlags flags = (message.Flags & MessageFlags.TraceSampled) != 0 ? ActivityTraceFlags.Recorded : ActivityTraceFlags.None;
        context = new ActivityContext(traceId, spanId, flags, traceState: null, isRemote: true);
        return true;
    }

    // ------------------------------------------------------------------ send / process

    /// <summary>
    /// Starts the producer span <c>send core/{destinationCore}</c> on <see cref="ActivitySources.Urpc"/>
    /// (child of <see cref="Activity.Current"/>) and writes its context into <paramref name="message"/>.
    /// Returns <see langword="null"/> and leaves the message untouched when nobody listens.
    /// Dispose the span once the message is in the ring (or the stalled write completed).
    /// </summary>
    /// <param name="message">The message about to be sent; its trace fields are overwritten.</param>
    /// <param name="sourceCore">The sending core (this core).</param>
    /// <param name="destinationCore">The receiving core.</param>
    /// <param name="destinationName">The channel's name (<c>messaging.destination.name</c>), e.g. the endpoint's name.</param>
    /// <param name="ringDepth">Depth of the outbound ring to <paramref name="destinationCore"/> before this send.</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Activity? StartSend(ref Message message, int sourceCore, int destinationCore, string destinationName, int ringDepth) =>
        ActivitySources.Urpc.HasListeners() ? StartSendSlow(ActivitySources.Urpc, ref message, sourceCore, destinationCore, destinationName, ringDepth) : null;

    /// <summary>
    /// Starts the producer span <c>send core/{destinationCore}</c> as a child of
    /// <paramref name="parent"/> (not of <see cref="Activity.Current"/>): a send made while a domain
    /// handles a value a typed reader handed it (<see cref="HandlingContext"/>). Sampled out, the
    /// message still carries the parent's context, so the receiver stays in that trace.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static Activity? StartSend(ref Message message, in ActivityContext parent, int sourceCore, int destinationCore, string destinationName, int ringDepth)
    {
        Activity? activity = ActivitySources.Urpc.StartActivity(ActivityKind.Producer, parent, tags: null, links: null, name: SendName(destinationCore));
        if (activity is null)
        {
            Inject(ref message, in parent);
        }
        else
        {
            activity = CompleteSend(activity, ref message, sourceCore, destinationCore, destinationName, ringDepth);
        }

        message.Flags |= MessageFlags.ContinuedTrace; // one hop: the receiver's handler does not continue it
        return activity;
    }

    /// <summary>
    /// What a handler's sends should join while it handles <paramref name="message"/> (read by a
    /// typed reader): the <c>process</c> span its endpoint made for it
    /// (<paramref name="lastProcess"/>, when that is in the message's trace), else the send span
    /// the message carries; <see langword="default"/> when the message carries no sampled trace or
    /// was itself sent into a handled message's trace (<see cref="MessageFlags.ContinuedTrace"/>:
    /// one hop, so the reply that joined a request's trace does not pull the client's next request
    /// into it, and so on forever).
    /// </summary>
    public static ActivityContext HandlingContext(in Message message, in ActivityContext lastProcess)
    {
        if ((message.Flags & (MessageFlags.HasTraceContext | MessageFlags.TraceSampled | MessageFlags.ContinuedTrace)) != (MessageFlags.HasTraceContext | MessageFlags.TraceSampled)
            || !TryExtract(in message, out ActivityContext creation))
        {
            return default;
        }

        return lastProcess.TraceId == creation.TraceId ? lastProcess : creation;
    }

    /// <summary>
    /// Starts the producer span of a message sent outside any trace, after the sending core's
    /// <see cref="MessageSampler"/> chose to trace it: the span carries the kernel-sampled tag so
    /// the SDK records it without drawing again.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static Activity? StartSendSampledRoot(ref Message message, int sourceCore, int destinationCore, string destinationName, int ringDepth)
    {
        Activity? activity = ActivitySources.Urpc.StartActivity(
            ActivityKind.Producer,
            parentContext: default,
            tags: [new(MessageSampler.KernelSampledTag, MessageSampler.KernelSampledValue)],
            name: SendName(destinationCore));
        return activity is null ? null : CompleteSend(activity, ref message, sourceCore, destinationCore, destinationName, ringDepth);
    }

    /// <summary>
    /// <see cref="StartSend(ref Message, int, int, string, int)"/> on another source of the catalogue
    /// (netd handing a packet to an application core uses <see cref="ActivitySources.Netd"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Activity? StartSend(ActivitySource source, ref Message message, int sourceCore, int destinationCore, string destinationName, int ringDepth) =>
        source.HasListeners() ? StartSendSlow(source, ref message, sourceCore, destinationCore, destinationName, ringDepth) : null;

    /// <summary>
    /// Starts the consumer span <c>process core/{destinationCore}</c> on <see cref="ActivitySources.Urpc"/>
    /// for a received message: its parent is the context the message carried (the send span) and
    /// it links to that context. Without a carried context the parent is <see cref="Activity.Current"/>
    /// and there is no link. Returns <see langword="null"/> when nobody listens. The span becomes
    /// <see cref="Activity.Current"/>: keep it open while the domain handles the message, so what the
    /// handler sends joins the same trace.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Activity? StartProcess(in Message message, int sourceCore, int destinationCore, string destinationName) =>
        ActivitySources.Urpc.HasListeners() ? StartProcessSlow(ActivitySources.Urpc, in message, sourceCore, destinationCore, destinationName) : null;

    /// <summary><see cref="StartProcess(in Message, int, int, string)"/> on another source of the catalogue.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Activity? StartProcess(ActivitySource source, in Message message, int sourceCore, int destinationCore, string destinationName) =>
        source.HasListeners() ? StartProcessSlow(source, in message, sourceCore, destinationCore, destinationName) : null;

    /// <summary>
    /// Starts a span for a domain's handling of <paramref name="message"/> on
    /// <see cref="ActivitySources.Apps"/>, as a child of the send span the message carries, so the
    /// handler's work and what it sends join the sender's trace. Returns null when nobody listens
    /// or the message carries no (or a sampled-out) trace. Dispose it when the handling is done.
    /// </summary>
    public static Activity? StartHandler(in Message message, string name)
    {
        if (!ActivitySources.Apps.HasListeners()
            || (message.Flags & (MessageFlags.HasTraceContext | MessageFlags.TraceSampled)) != (MessageFlags.HasTraceContext | MessageFlags.TraceSampled)
            || !TryExtract(in message, out ActivityContext parent))
        {
            return null;
        }

        return ActivitySources.Apps.StartActivity(name, ActivityKind.Internal, parent);
    }

    /// <summary>
    /// A consumer span for a batch of messages handled together: per the conventions it links to
    /// every carried context and its parent is <see cref="Activity.Current"/>.
    /// </summary>
    public static Activity? StartProcessBatch(ReadOnlySpan<Message> messages, int sourceCore, int destinationCore, string destinationName) =>
        ActivitySources.Urpc.HasListeners() ? StartProcessBatchSlow(messages, sourceCore, destinationCore, destinationName) : null;

    /// <summary>
    /// Makes <paramref name="span"/> stop being <see cref="Activity.Current"/> without ending it,
    /// restoring the span that was current when it started. For a send that stalls on a full ring:
    /// the endpoint keeps the send span open until the kernel finally writes the message (so the
    /// stall shows as the span's length), but the domain that called <c>WriteAsync</c> must not keep
    /// it as its current span, or its next sends would nest under it. Stop the span later from any
    /// context with <see cref="Activity.Dispose()"/>.
    /// </summary>
    public static void Detach(Activity? span)
    {
        if (span is not null && ReferenceEquals(Activity.Current, span))
        {
            Activity.Current = span.Parent;
        }
    }

    // ------------------------------------------------------------------ monitor protocols

    /// <summary>
    /// Starts a span for a monitor protocol step (<see cref="ProtocolSpanNames"/>: bind, spawn, revoke,
    /// revoke mark, ...) on <see cref="ActivitySources.Monitor"/>, child of <see cref="Activity.Current"/>.
    /// The sends the step makes become its children, so one trace shows a revoke travel to every core
    /// and back. <see langword="null"/> when nobody listens.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Activity? StartProtocol(string name, int core, ActivityKind kind = ActivityKind.Internal) =>
        ActivitySources.Monitor.HasListeners() ? StartProtocolSlow(name, core, kind, hasCause: false, in Unsafe.NullRef<Message>()) : null;

    /// <summary>
    /// Starts a protocol step caused by a received protocol message (a participant's
    /// <c>revoke mark</c>): the parent is the context the message carries, else <see cref="Activity.Current"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Activity? StartProtocol(string name, int core, in Message cause, ActivityKind kind = ActivityKind.Server) =>
        ActivitySources.Monitor.HasListeners() ? StartProtocolSlow(name, core, kind, hasCause: true, in cause) : null;

    // ------------------------------------------------------------------ slow paths

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static Activity? StartSendSlow(ActivitySource source, ref Message message, int sourceCore, int destinationCore, string destinationName, int ringDepth)
    {
        Activity? activity = source.StartActivity(SendName(destinationCore), ActivityKind.Producer);
        if (activity is null)
        {
            // Sampled out without even propagation data: still hand the ambient context on, so the
            // receiver's spans stay in the caller's trace instead of starting new ones.
            InjectCurrent(ref message);
            return null;
        }

        return CompleteSend(activity, ref message, sourceCore, destinationCore, destinationName, ringDepth);
    }

    private static Activity CompleteSend(Activity activity, ref Message message, int sourceCore, int destinationCore, string destinationName, int ringDepth)
    {
        Inject(ref message, activity.Context);
        if (activity.IsAllDataRequested)
        {
            activity.SetTag(TelemetryTags.MessagingSystem, TelemetryTags.MessagingSystemValue);
            activity.SetTag(TelemetryTags.MessagingOperationType, "send");
            activity.SetTag(TelemetryTags.MessagingOperationName, "send");
            activity.SetTag(TelemetryTags.MessagingDestinationName, destinationName);
            activity.SetTag(TelemetryTags.Core, Box(sourceCore));
            activity.SetTag(TelemetryTags.CoreSource, Box(sourceCore));
            activity.SetTag(TelemetryTags.CoreDestination, Box(destinationCore));
            activity.SetTag(TelemetryTags.MessageType, Box(message.Type));
            activity.SetTag(TelemetryTags.RingDepth, Box(ringDepth));
        }

        return activity;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static Activity? StartProcessSlow(ActivitySource source, in Message message, int sourceCore, int destinationCore, string destinationName)
    {
        if ((message.Flags & (MessageFlags.HasTraceContext | MessageFlags.TraceSampled)) == MessageFlags.HasTraceContext)
        {
            // The sender's trace was sampled out. Every standard sampler drops its children too
            // (parent-based by flag, ratio-based by the same trace id), so skip the work outright:
            // no id strings, no propagation-only Activity, no ExecutionContext copy. This is what
            // keeps 1% sampling cheap on the other 99% of messages.
            return null;
        }

        Activity? activity;
        if (TryExtract(in message, out ActivityContext creation))
        {
            // One message: the creation context is both the parent and the link (conventions:
            // the consumer span links to the creation context and may be its child).
            activity = source.StartActivity(ActivityKind.Consumer, creation, tags: null, links: [new ActivityLink(creation)], name: ProcessName(destinationCore));
        }
        else
        {
            activity = source.StartActivity(ProcessName(destinationCore), ActivityKind.Consumer);
        }

        if (activity is not null && activity.IsAllDataRequested)
        {
            SetProcessTags(activity, sourceCore, destinationCore, destinationName);
            activity.SetTag(TelemetryTags.MessageType, Box(message.Type));
        }

        return activity;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static Activity? StartProcessBatchSlow(ReadOnlySpan<Message> messages, int sourceCore, int destinationCore, string destinationName)
    {
        var links = new List<ActivityLink>(messages.Length);
        foreach (ref readonly Message message in messages)
        {
            if (TryExtract(in message, out ActivityContext creation))
            {
                links.Add(new ActivityLink(creation));
            }
        }

        Activity? activity = ActivitySources.Urpc.StartActivity(ActivityKind.Consumer, parentContext: default, tags: null, links: links, name: ProcessName(destinationCore));
        if (activity is not null && activity.IsAllDataRequested)
        {
            SetProcessTags(activity, sourceCore, destinationCore, destinationName);
            activity.SetTag(TelemetryTags.MessagingBatchMessageCount, Box(messages.Length));
        }

        return activity;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static Activity? StartProtocolSlow(string name, int core, ActivityKind kind, bool hasCause, in Message cause)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ActivityContext parent = default;
        if (hasCause)
        {
            TryExtract(in cause, out parent);
        }

        Activity? activity = ActivitySources.Monitor.StartActivity(kind, parent, tags: null, links: null, name: name);
        if (activity is not null && activity.IsAllDataRequested)
        {
            activity.SetTag(TelemetryTags.Core, Box(core));
            activity.SetTag(TelemetryTags.MonitorOperation, name);
        }

        return activity;
    }

    private static void SetProcessTags(Activity activity, int sourceCore, int destinationCore, string destinationName)
    {
        activity.SetTag(TelemetryTags.MessagingSystem, TelemetryTags.MessagingSystemValue);
        activity.SetTag(TelemetryTags.MessagingOperationType, "process");
        activity.SetTag(TelemetryTags.MessagingOperationName, "process");
        activity.SetTag(TelemetryTags.MessagingDestinationName, destinationName);
        activity.SetTag(TelemetryTags.Core, Box(destinationCore));
        activity.SetTag(TelemetryTags.CoreSource, Box(sourceCore));
        activity.SetTag(TelemetryTags.CoreDestination, Box(destinationCore));
    }

    /// <summary>The producer span name for a destination core (<c>send core/3</c>).</summary>
    public static string SendName(int destinationCore) =>
        (uint)destinationCore < CachedCores ? SendNames[destinationCore] : "send core/" + destinationCore.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The consumer span name for a destination core (<c>process core/3</c>).</summary>
    public static string ProcessName(int destinationCore) =>
        (uint)destinationCore < CachedCores ? ProcessNames[destinationCore] : "process core/" + destinationCore.ToString(System.Globalization.CultureInfo.InvariantCulture);

    private static object Box(int value) => (uint)value < CachedCores ? BoxedInts[value] : value;

    private static ImmutableArray<string> BuildNames(string prefix)
    {
        var builder = ImmutableArray.CreateBuilder<string>(CachedCores);
        for (int i = 0; i < CachedCores; i++)
        {
            builder.Add(prefix + i.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        return builder.MoveToImmutable();
    }

    private static ImmutableArray<object> BuildBoxes()
    {
        var builder = ImmutableArray.CreateBuilder<object>(CachedCores);
        for (int i = 0; i < CachedCores; i++)
        {
            builder.Add(i);
        }

        return builder.MoveToImmutable();
    }
}
