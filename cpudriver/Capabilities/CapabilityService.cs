using System.Diagnostics;
using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Diagnostics;
using Multikernel.CpuDriver.Kernel;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.CpuDriver.Capabilities;

/// <summary>
/// Runs one core's capability protocol inside its kernel loop, between domain run steps (the
/// revoke safety argument relies on that): reads protocol messages from the per-pair capability
/// links, hands them to <see cref="CoreCapabilities"/>, and flushes its outbox back onto the
/// links. A message the protocol cannot take yet (its outbox lacks room for the replies) stays
/// at the head of its link, so per-pair FIFO order holds.
/// </summary>
public sealed class CapabilityService : IKernelService, ICapabilityTransport
{
    private readonly CoreCapabilities _capabilities;
    private readonly Endpoint?[] _links;
    private long _malformed;

    /// <summary>Creates the service for <paramref name="capabilities"/> over <paramref name="links"/> (index = peer core; null for the own core).</summary>
    public CapabilityService(CoreCapabilities capabilities, Endpoint?[] links)
    {
        ArgumentNullException.ThrowIfNull(capabilities);
        ArgumentNullException.ThrowIfNull(links);
        _capabilities = capabilities;
        _links = links;
    }

    /// <summary>Called on this core for every protocol step it handles (core, step name): the runtime counts them in its meter.</summary>
    public Action<int, string>? StepHandled { get; set; }

    /// <summary>The core's capability tables.</summary>
    public CoreCapabilities Capabilities => _capabilities;

    /// <summary>Messages on a capability link that were not protocol messages (dropped and counted).</summary>
    public long Malformed => Volatile.Read(ref _malformed);

    /// <inheritdoc />
    public bool HasWork
    {
        get
        {
            if (_capabilities.OutboxCount > 0)
            {
                return true;
            }

            foreach (Endpoint? link in _links)
            {
                if (link is not null && link.QueuedCount > 0)
                {
                    return true;
                }
            }

            return false;
        }
    }

    /// <inheritdoc />
    public int Poll()
    {
        int work = 0;
        for (int peer = 0; peer < _links.Length; peer++)
        {
            Endpoint? link = _links[peer];
            if (link is null)
            {
                continue;
            }

            while (link.TryPeek(out Message message))
            {
                if (!CoreCapabilities.IsProtocolMessage(message.Type))
                {
                    link.DropHead();
                    _malformed++;
                    continue;
                }

                if (!Handle(peer, in message))
                {
                    break; // outbox full: flush below, retry next iteration
                }

                link.DropHead();
                work++;
            }
        }

        if (_capabilities.OutboxCount > 0)
        {
            work += _capabilities.Flush(this);
        }

        return work;
    }

    private bool Handle(int peer, in Message message)
    {
        bool handled;
        if (!MessageTracing.HasTraceContext(in message))
        {
            handled = _capabilities.TryHandle(peer, in message);
        }
        else
        {
            // The message carries the trace of the operation that caused it: its step on this
            // core is a span in that trace, and what the step sends carries this span on.
            using Activity? span = MessageTracing.StartProtocol(StepName(message.Type), _capabilities.Core, in message);
            handled = _capabilities.TryHandle(peer, in message);
        }

        if (handled)
        {
            StepHandled?.Invoke(_capabilities.Core, StepName(message.Type));
        }

        return handled;
    }

    /// <inheritdoc />
    public bool TrySend(int core, in Message message) => _links[core]!.TryWriteUntraced(in message);

    private static string StepName(ushort type) => type switch
    {
        CoreCapabilities.MsgMark => ProtocolSpanNames.RevokeMark,
        CoreCapabilities.MsgMarkAck => "revoke mark ack",
        CoreCapabilities.MsgCommit => ProtocolSpanNames.RevokeCommit,
        CoreCapabilities.MsgCommitAck => "revoke commit ack",
        CoreCapabilities.MsgRevokeRequest => ProtocolSpanNames.Revoke,
        CoreCapabilities.MsgRevokeDone => "revoke done",
        CoreCapabilities.MsgCopyRequest => "transfer",
        CoreCapabilities.MsgInstall => "transfer install",
        CoreCapabilities.MsgInstallResult => "transfer installed",
        CoreCapabilities.MsgTransferDone => "transfer done",
        CoreCapabilities.MsgRelease => ProtocolSpanNames.Delete,
        _ => "capability",
    };
}
