using System.Diagnostics.CodeAnalysis;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.CpuDriver.Capabilities;

// The distributed protocol's entry points: message catalogue, the kernel loop's TryHandle and
// Flush, dispatch, validation of what a peer sent, and the always-on invariant checks. The roles
// live in their own files: Outbox, Transfer, RevokeOwner, RevokeParticipant, Pump.
public sealed partial class CoreCapabilities
{
    /// <summary>First message type of the capability protocol (the range 0x0200-0x02FF is reserved for it).</summary>
    public const ushort FirstMessageType = 0x0200;

    /// <summary>Last message type of the capability protocol.</summary>
    public const ushort LastMessageType = 0x02FF;

    // Message catalogue (layouts in CoreCapabilities.Messages.cs). Requester C, owner A,
    // destination D, participant P.
    internal const ushort MsgCopyRequest = 0x0201;   // C->A
    internal const ushort MsgInstall = 0x0202;       // A->D
    internal const ushort MsgInstallResult = 0x0203; // D->A
    internal const ushort MsgTransferDone = 0x0204;  // A->C
    internal const ushort MsgRelease = 0x0205;       // C->A
    internal const ushort MsgAddRef = 0x0206;        // C->A
    internal const ushort MsgRevokeRequest = 0x0207; // C->A
    internal const ushort MsgRevokeDone = 0x0208;    // A->C
    internal const ushort MsgMark = 0x0210;          // A->P, or relay->P (multicast fan-out)
    internal const ushort MsgMarkAck = 0x0211;       // P->A, always direct
    internal const ushort MsgCommit = 0x0212;        // A->P, or relay->P
    internal const ushort MsgCommitAck = 0x0213;     // P->A, always direct

    private const int FlagLast = 1;
    private const int FlagRoot = 2;

    private enum Status : byte
    {
        Ok = 0,
        Busy = 1,
        Revoked = 2,
        SlotsFull = 3,
        TableFull = 4,
        NoSuchDomain = 5,
        Limit = 6,
        GrantsFull = 7,
    }

    private void InitializeProtocol()
    {
        InitializeOutbox();
        InitializeTransfers();
        InitializeRevoke();
        _deferred = new ulong[_options.MaxObjectsPerCore];
    }

    /// <summary>True when <paramref name="type"/> belongs to the capability protocol.</summary>
    public static bool IsProtocolMessage(ushort type) => type is >= FirstMessageType and <= LastMessageType;

    /// <summary>Operations (revokes, transfers, participations, deferred deletes) still in progress on this core.</summary>
    public int OperationsInProgress
    {
        get
        {
            int n = 0;
            foreach (PendingOperation p in _pending)
            {
                n += p.InUse ? 1 : 0;
            }

            foreach (OwnerOperation op in _ops)
            {
                n += op.Active ? 1 : 0;
            }

            foreach (ref readonly OwnerTransfer t in _transfers.AsSpan())
            {
                n += t.Active ? 1 : 0;
            }

            foreach (ref readonly Participation p in _participations.AsSpan())
            {
                n += p.Active ? 1 : 0;
            }

            return n + _deferredCount + _zombies;
        }
    }

    // ---------------------------------------------------------------- entry points for the kernel loop

    /// <summary>
    /// Handles one protocol message from <paramref name="fromCore"/>. Returns false (message not
    /// consumed; leave it in the ring and retry after <see cref="Flush"/>) when the outbox lacks
    /// room for the replies. Call only from the kernel loop, between domain run steps.
    /// </summary>
    public bool TryHandle(int fromCore, in Message message)
    {
        CheckThread();
        if ((uint)fromCore >= (uint)CoreCount)
        {
            throw new ArgumentOutOfRangeException(nameof(fromCore), fromCore, $"No core {fromCore} among {CoreCount}.");
        }

        if (!IsProtocolMessage(message.Type))
        {
            throw new ArgumentException($"Message type 0x{message.Type:X4} is not a capability protocol message (0x{FirstMessageType:X4}-0x{LastMessageType:X4}).", nameof(message));
        }

        if (OutboxFree < _reserve)
        {
            return false;
        }

        Dispatch(fromCore, in message);
        Pump();
        return true;
    }

    /// <summary>
    /// Sends queued protocol messages in order until the transport refuses one; messages to this
    /// core are handled directly. Returns how many were sent or handled. Call from the kernel loop
    /// between domain run steps (never from inside a domain): that is what bounds the life of a
    /// span taken from a frame that is being revoked.
    /// </summary>
    public int Flush(ICapabilityTransport transport)
    {
        ArgumentNullException.ThrowIfNull(transport);
        CheckThread();
        int done = 0;
        while (true)
        {
            Pump();
            if (_outCount == 0)
            {
                return done;
            }

            int core = _outCore[_outHead];
            if (core == Core)
            {
                if (OutboxFree + 1 < _reserve)
                {
                    return done;
                }

                Message local = _outMessages[_outHead];
                Dequeue();
                Dispatch(Core, in local);
            }
            else
            {
                if (!transport.TrySend(core, in _outMessages[_outHead]))
                {
                    return done;
                }

                Dequeue();
            }

            done++;
        }
    }

    // ---------------------------------------------------------------- dispatch

    private void Dispatch(int from, in Message m)
    {
        ValidateMessage(from, in m);
        switch (m.Type)
        {
            case MsgCopyRequest:
                OnCopyRequest(from, CopyRequestMessage.Decode(in m));
                break;
            case MsgInstall:
                OnInstall(from, InstallMessage.Decode(in m));
                break;
            case MsgInstallResult:
                OnInstallResult(InstallResultMessage.Decode(in m));
                break;
            case MsgTransferDone:
                OnTransferDone(DoneMessage.Decode(in m));
                break;
            case MsgRelease:
            {
                CountMessage c = CountMessage.Decode(in m);
                OnRelease(c.Object, c.Generation);
                break;
            }

            case MsgAddRef:
            {
                CountMessage c = CountMessage.Decode(in m);
                OnAddRef(from, c.Object, c.Generation);
                break;
            }

            case MsgRevokeRequest:
                OnRevokeRequest(from, RevokeRequestMessage.Decode(in m));
                break;
            case MsgRevokeDone:
            {
                DoneMessage d = DoneMessage.Decode(in m);
                CompletePending(d.RequestId, d.Status, "revoke");
                break;
            }

            case MsgMark:
                OnMark(MarkMessage.Decode(in m));
                break;
            case MsgCommit:
                OnCommit(CommitMessage.Decode(in m));
                break;
            case MsgMarkAck:
                OnMarkAck(from, MarkAckMessage.Decode(in m));
                break;
            case MsgCommitAck:
                OnCommitAck(CommitMessage.Decode(in m));
                break;
            default:
                throw new ArgumentException($"Unknown capability protocol message 0x{m.Type:X4}.", nameof(m));
        }
    }

    /// <summary>Rejects a malformed protocol message before it touches any table (a clear error, nothing corrupted).</summary>
    private void ValidateMessage(int from, in Message m)
    {
        string? problem = null;
        switch (m.Type)
        {
            case MsgMark or MsgCommit or MsgMarkAck or MsgCommitAck:
            {
                OperationTag op = OperationTag.Decode(m.Word1, out _);
                if (op.Slot >= _ops.Length)
                {
                    problem = $"operation slot {op.Slot} is beyond MaxOperations ({_ops.Length}); every core must use the same CapabilityOptions";
                }
                else if (op.Owner >= CoreCount)
                {
                    problem = $"owner core {op.Owner} does not exist";
                }
                else if (m.Type is MsgMarkAck or MsgCommitAck && op.Owner != Core)
                {
                    problem = $"an acknowledgement for core {op.Owner}'s operation reached core {Core}";
                }

                break;
            }

            case MsgRelease or MsgAddRef:
                if ((uint)m.Word0 >= (uint)_objects.Length)
                {
                    problem = $"object {(uint)m.Word0} is beyond MaxObjectsPerCore ({_objects.Length})";
                }

                break;
            case MsgInstallResult:
                if (InstallResultMessage.Decode(in m).Transfer >= _transfers.Length)
                {
                    problem = $"transfer {InstallResultMessage.Decode(in m).Transfer} does not exist";
                }

                break;
        }

        if (problem is not null)
        {
            throw new ArgumentException($"Malformed capability protocol message 0x{m.Type:X4} from core {from}: {problem}.", nameof(m));
        }
    }

    // ---------------------------------------------------------------- invariants

    /// <summary>
    /// An always-on protocol invariant (cheap: one branch). Release builds check them too, since
    /// that is what CI runs; a broken invariant is a kernel bug and fails fast rather than
    /// corrupting the mapping database.
    /// </summary>
    private void Invariant([DoesNotReturnIf(false)] bool condition, string what)
    {
        if (!condition)
        {
            ThrowInvariant(what);
        }
    }

    [DoesNotReturn]
    private void ThrowInvariant(string what) =>
        throw new CapabilityInvariantException($"Capability protocol invariant broken on core {Core}: {what}.");
}
