using System.Collections.Immutable;
using System.Diagnostics;

namespace Multikernel.CpuDriver.Diagnostics;

/// <summary>
/// The one catalogue of trace sources. Every component traces through the source named here so
/// that a host enables all of them with <see cref="Wildcard"/> and nothing has to know the others'
/// names. The sources are created once and are immutable; starting a span on a source nobody
/// listens to costs one volatile read (<see cref="ActivitySource.HasListeners"/>).
/// </summary>
/// <remarks>
/// How a packet's journey will look once netd and the stacks exist: <c>receive nic</c> (Netd,
/// on netd's core) → <c>send core/B</c> (Urpc, producer) → <c>process core/B</c> (Urpc, consumer,
/// on the application's core) → the stack's own spans (Net) → and back the same way. Each hop is
/// a URPC message, so the context rides in the message header with no further plumbing.
/// </remarks>
public static class ActivitySources
{
    /// <summary>Version reported by every source.</summary>
    public const string Version = "1.0.0";

    /// <summary>Prefix wildcard that enables every Multikernel source (OpenTelemetry <c>AddSource</c> accepts it).</summary>
    public const string Wildcard = "Multikernel.*";

    /// <summary>Cross-core messages: <c>send core/N</c> and <c>process core/N</c> spans.</summary>
    public const string UrpcName = "Multikernel.Urpc";

    /// <summary>Per-core kernel events that are not messages (domain start/stop, faults).</summary>
    public const string KernelName = "Multikernel.Kernel";

    /// <summary>Monitor protocols: boot, bind, spawn, distributed capability operations (revoke mark/commit).</summary>
    public const string MonitorName = "Multikernel.Monitor";

    /// <summary>The network daemon: NIC receive/transmit, classification, filter install.</summary>
    public const string NetdName = "Multikernel.Netd";

    /// <summary>The library-OS network stacks in applications (TCP/IP processing).</summary>
    public const string NetName = "Multikernel.Net";

    /// <summary>Applications running on the stacks (echo, HTTP, KV).</summary>
    public const string AppsName = "Multikernel.Apps";

    /// <summary>The source for <see cref="UrpcName"/>.</summary>
    public static readonly ActivitySource Urpc = new(UrpcName, Version);

    /// <summary>The source for <see cref="KernelName"/>.</summary>
    public static readonly ActivitySource Kernel = new(KernelName, Version);

    /// <summary>The source for <see cref="MonitorName"/>.</summary>
    public static readonly ActivitySource Monitor = new(MonitorName, Version);

    /// <summary>The source for <see cref="NetdName"/>.</summary>
    public static readonly ActivitySource Netd = new(NetdName, Version);

    /// <summary>The source for <see cref="NetName"/>.</summary>
    public static readonly ActivitySource Net = new(NetName, Version);

    /// <summary>The source for <see cref="AppsName"/>.</summary>
    public static readonly ActivitySource Apps = new(AppsName, Version);

    /// <summary>Every source name in the catalogue.</summary>
    public static ImmutableArray<string> AllNames { get; } = [UrpcName, KernelName, MonitorName, NetdName, NetName, AppsName];
}

/// <summary>Attribute (tag) names used by Multikernel spans and metrics.</summary>
public static class TelemetryTags
{
    /// <summary>OpenTelemetry messaging convention: the messaging system (<see cref="MessagingSystemValue"/>).</summary>
    public const string MessagingSystem = "messaging.system";

    /// <summary>OpenTelemetry messaging convention: <c>send</c>, <c>process</c>, ...</summary>
    public const string MessagingOperationType = "messaging.operation.type";

    /// <summary>OpenTelemetry messaging convention: the system-specific operation name.</summary>
    public const string MessagingOperationName = "messaging.operation.name";

    /// <summary>OpenTelemetry messaging convention: the destination (here the channel's name).</summary>
    public const string MessagingDestinationName = "messaging.destination.name";

    /// <summary>OpenTelemetry messaging convention: number of messages in a batch operation.</summary>
    public const string MessagingBatchMessageCount = "messaging.batch.message_count";

    /// <summary>Value of <see cref="MessagingSystem"/> for URPC.</summary>
    public const string MessagingSystemValue = "multikernel";

    /// <summary>The core the span ran on (the Chrome trace exporter puts the span on this core's track).</summary>
    public const string Core = "multikernel.core";

    /// <summary>The sending core of a message.</summary>
    public const string CoreSource = "multikernel.core.source";

    /// <summary>The receiving core of a message.</summary>
    public const string CoreDestination = "multikernel.core.destination";

    /// <summary>The message's <c>Type</c> field.</summary>
    public const string MessageType = "multikernel.message.type";

    /// <summary>Depth of the outbound ring when the message was sent.</summary>
    public const string RingDepth = "multikernel.ring.depth";

    /// <summary>A monitor protocol's operation (bind, spawn, revoke, ...).</summary>
    public const string MonitorOperation = "multikernel.monitor.operation";

    /// <summary>A capability operation (copy, retype, delete, revoke).</summary>
    public const string CapabilityOperation = "multikernel.capability.operation";

    /// <summary>The outcome of an operation (ok, error, ...).</summary>
    public const string Outcome = "multikernel.outcome";

    /// <summary>A channel's name (metrics of registered channels).</summary>
    public const string Channel = "multikernel.channel";

    /// <summary>A domain's name.</summary>
    public const string Domain = "multikernel.domain";

    /// <summary>Busy or idle (core time metric), per the OpenTelemetry <c>cpu.mode</c>-style state attribute.</summary>
    public const string CoreState = "multikernel.core.state";
}

/// <summary>Span names of the monitor protocols, so every core names the same step the same way.</summary>
public static class ProtocolSpanNames
{
    /// <summary>Booting the cores (core 0's monitor).</summary>
    public const string Boot = "boot";

    /// <summary>Exporting a service name.</summary>
    public const string Export = "export";

    /// <summary>Binding to a service: a fresh channel between two domains.</summary>
    public const string Bind = "bind";

    /// <summary>Starting a domain on a core.</summary>
    public const string Spawn = "spawn";

    /// <summary>Revoke, on the initiating core: the whole two-phase operation.</summary>
    public const string Revoke = "revoke";

    /// <summary>Revoke phase 1 on a participant core: mark descendants.</summary>
    public const string RevokeMark = "revoke mark";

    /// <summary>Revoke phase 2 on a participant core: delete the marked descendants.</summary>
    public const string RevokeCommit = "revoke commit";

    /// <summary>Delete of a capability with remote copies.</summary>
    public const string Delete = "delete";

    /// <summary>Clean shutdown that drains channels in order.</summary>
    public const string Shutdown = "shutdown";
}
