using System.Diagnostics;
using System.Numerics;
using Multikernel.CpuDriver.Diagnostics;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.CpuDriver.Capabilities;

public sealed partial class CoreCapabilities
{
    /// <summary>First message type of the capability protocol (the range 0x0200-0x02FF is reserved for it).</summary>
    public const ushort FirstMessageType = 0x0200;

    /// <summary>Last message type of the capability protocol.</summary>
    public const ushort LastMessageType = 0x02FF;

    // Message catalogue. Requester C, owner A, destination D, participant P.
    internal const ushort MsgCopyRequest = 0x0201;   // C->A  W0 req|obj<<32  W1 gen|rights<<32|dest<<40|domain<<48  W2 mode
    internal const ushort MsgInstall = 0x0202;       // A->D  W0 xfer|obj<<32 W1 gen|type<<32|rights<<40|domain<<48  W2 payload
    internal const ushort MsgInstallResult = 0x0203; // D->A  W0 xfer|status<<32  W1 slot
    internal const ushort MsgTransferDone = 0x0204;  // A->C  W0 req|status<<32  W1 slot
    internal const ushort MsgRelease = 0x0205;       // C->A  W0 obj|gen<<32
    internal const ushort MsgAddRef = 0x0206;        // C->A  W0 obj|gen<<32
    internal const ushort MsgRevokeRequest = 0x0207; // C->A  W0 req|obj<<32  W1 gen|keepRef<<32  W2 mode
    internal const ushort MsgRevokeDone = 0x0208;    // A->C  W0 req|status<<32
    internal const ushort MsgMark = 0x0210;          // A/P->P W0 obj|gen<<32  W1 op|owner<<16|flags<<24|keepCore<<32|keepRef+1<<40  W2 subtree mask
    internal const ushort MsgMarkAck = 0x0211;       // P->parent W0 marked root copies  W1 op|owner<<16  W2 cores still holding root copies
    internal const ushort MsgCommit = 0x0212;        // A/P->P W1 op|owner<<16|flags<<24  W2 subtree mask
    internal const ushort MsgCommitAck = 0x0213;     // P->parent W1 op|owner<<16

    private const int FlagLast = 1;
    private const int FlagRoot = 2;

    private enum Status : uint
    {
        Ok = 0,
        Busy = 1,
        Revoked = 2,
        SlotsFull = 3,
        TableFull = 4,
        NoSuchDomain = 5,
        Limit = 6,
    }

    /// <summary>A revoke or cascading delete this core sequences as owner.</summary>
    private sealed class OwnerOperation(int index)
    {
        public readonly int Index = index;
        public readonly int[] LastNodeForCore = new int[64];
        public readonly ulong[] Chunks = new ulong[8];
        public bool Active;
        public byte Sequence;
        public int Root;
        public bool DeleteRoot;
        public int KeepCore;
        public int KeepRef;
        public int RequesterCore;
        public uint RequestId;
        public RevokeMode Mode;
        public int Fanout;
        public int Phase;
        public int ListHead;
        public int ListTail;
        public ulong Targets;
        public int ChunkCount;
        public int PendingAcks;
        public long SumMarked;
        public ulong AckMask;
        public int LocalMarkedHead;
        public int LastNodeAny;
        public int Streaming; // 0 none, 1 mark, 2 commit
        public int CursorA;
        public int CursorB;

        public ushort OpId => (ushort)(Index | (Sequence << 8));
    }

    /// <summary>This core's part in another owner's revoke (as target and, in multicast, as relay).</summary>
    private struct Participation
    {
        public bool Active;
        public ushort OpId;
        public int Parent;
        public ulong Mask;
        public int Fanout;
        public int Children;
        public int PendingAcks;
        public bool LocalDone;
        public long Sum;
        public ulong AckMask;
        public bool RootHasUnmarked;
        public int MarkedHead;
    }

    /// <summary>A transfer this core (as owner) reserved and awaits the destination's answer for.</summary>
    private struct OwnerTransfer
    {
        public bool Active;
        public ushort Version;
        public int RequesterCore;
        public int Destination;
        public uint RequestId;
        public int Object;
        public uint ObjectGeneration;
    }

    private PendingOperation[] _pending = [];
    private int[] _freePending = [];
    private int _freePendingCount;
    private OwnerOperation[] _ops = [];
    private int _streamingOps;
    private Participation[] _participations = [];
    private OwnerTransfer[] _transfers = [];
    private int[] _outCore = [];
    private Message[] _outMessages = [];
    private int _outHead;
    private int _outCount;
    private ulong[] _deferred = [];
    private int _deferredHead;
    private int _deferredCount;
    private int _reserve;

    private void InitializeProtocol()
    {
        int ops = _options.MaxOperations;
        _pending = new PendingOperation[ops];
        _freePending = new int[ops];
        _ops = new OwnerOperation[ops];
        _transfers = new OwnerTransfer[ops];
        for (int i = 0; i < ops; i++)
        {
            _pending[i] = new PendingOperation(this, i);
            _freePending[i] = ops - 1 - i;
            _ops[i] = new OwnerOperation(i);
        }

        _freePendingCount = ops;
        _participations = new Participation[CoreCount * ops];
        _outCore = new int[_options.OutboxCapacity];
        _outMessages = new Message[_options.OutboxCapacity];
        _deferred = new ulong[_options.MaxObjectsPerCore];
        // The most messages one handled message or one domain operation can queue at once.
        _reserve = _options.MulticastFanout + 4;
    }

    /// <summary>True when <paramref name="type"/> belongs to the capability protocol.</summary>
    public static bool IsProtocolMessage(ushort type) => type is >= FirstMessageType and <= LastMessageType;

    /// <summary>Protocol messages waiting to be sent.</summary>
    public int OutboxCount => _outCount;

    /// <summary>Operations (revokes, transfers, participations) still in progress on this core.</summary>
    public int OperationsInProgress
    {
        get
        {
            int n = _pending.Length - _freePendingCount;
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

            return n + _deferredCount;
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
        if ((uint)fromCore >= (uint)CoreCount)
        {
            throw new ArgumentOutOfRangeException(nameof(fromCore), fromCore, $"No core {fromCore} among {CoreCount}.");
        }

        if (!IsProtocolMessage(message.Type))
        {
            throw new ArgumentException($"Message type 0x{message.Type:X4} is not a capability protocol message (0x{FirstMessageType:X4}-0x{LastMessageType:X4}).", nameof(message));
        }

        if (_options.OutboxCapacity - _outCount < _reserve)
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
                if (_options.OutboxCapacity - _outCount + 1 < _reserve)
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

    private void Dequeue()
    {
        _outHead = (_outHead + 1) % _outCore.Length;
        _outCount--;
    }

    private void Send(int core, ushort type, ulong w0, ulong w1, ulong w2)
    {
        if (_outCount == _outCore.Length)
        {
            // Every caller checked for room first; reaching this is a protocol bug, not load.
            throw new InvalidOperationException($"Core {Core}'s capability outbox overflowed ({_outCore.Length} messages).");
        }

        int tail = (_outHead + _outCount) % _outCore.Length;
        _outCore[tail] = core;
        _outMessages[tail] = Message.Create(type, w0, w1, w2);
        // Carry the trace of whatever caused this message (a domain's revoke, a protocol step on
        // this core), so one trace follows the operation to every core and back.
        MessageTracing.InjectCurrent(ref _outMessages[tail]);
        _outCount++;
    }

    private int OutboxFree => _outCore.Length - _outCount;

    private void EnsureOutbox(string operation)
    {
        if (OutboxFree < _reserve)
        {
            throw new CapabilityBusyException($"Core {Core}'s capability protocol outbox is full ({_outCore.Length} messages); {operation} cannot start now. Retry after the kernel loop has flushed it.");
        }
    }

    // ---------------------------------------------------------------- reference accounting

    private void AddReference(int owner, int obj, uint gen)
    {
        if (owner == Core)
        {
            ref ObjectRecord o = ref _objects[obj];
            Debug.Assert(o.Generation == gen && o.State != ObjectState.Free);
            o.Total++;
            o.Mask |= Bit(Core);
        }
        else
        {
            Send(owner, MsgAddRef, (uint)obj | ((ulong)gen << 32), 0, 0);
        }
    }

    private void ReleaseReference(int owner, int obj, uint gen)
    {
        if (owner == Core)
        {
            OnRelease(obj, gen);
        }
        else
        {
            Send(owner, MsgRelease, (uint)obj | ((ulong)gen << 32), 0, 0);
        }
    }

    private void OnAddRef(int from, int obj, uint gen)
    {
        ref ObjectRecord o = ref _objects[obj];
        if (o.State == ObjectState.Free || o.Generation != gen)
        {
            Debug.Fail("AddRef for a dead object: a copy outlived its object.");
            return;
        }

        o.Total++;
        o.Mask |= Bit(from);
    }

    private void OnRelease(int obj, uint gen)
    {
        ref ObjectRecord o = ref _objects[obj];
        if (o.State == ObjectState.Free || o.Generation != gen)
        {
            Debug.Fail("Release for a dead object.");
            return;
        }

        o.Total--;
        Debug.Assert(o.Total >= 0);
        if (o.Total == 0 && o.State == ObjectState.Live)
        {
            DeleteObject(obj);
        }
    }

    /// <summary>The last copy of an object is gone: free it, and everything derived from it.</summary>
    private void DeleteObject(int obj)
    {
        if (_objects[obj].FirstChild == -1)
        {
            FreeObject(obj);
            return;
        }

        if (StartRevoke(obj, keepCore: -1, keepRef: -1, RevokeMode.Unicast, deleteRoot: true, requesterCore: -1, requestId: 0) is Status.Busy or Status.Limit)
        {
            // Another operation covers part of this tree, or the operation table is full:
            // retry from Pump until it can run. The object stays accounted to its parent.
            Defer(obj);
        }
    }

    private void Defer(int obj)
    {
        ref ObjectRecord o = ref _objects[obj];
        if (o.Deferred)
        {
            return;
        }

        o.Deferred = true;
        Debug.Assert(_deferredCount < _deferred.Length);
        _deferred[(_deferredHead + _deferredCount) % _deferred.Length] = (uint)obj | ((ulong)o.Generation << 32);
        _deferredCount++;
    }

    // ---------------------------------------------------------------- domain operations that need the protocol

    internal ValueTask<int> Transfer(CSpace cs, int slot, int toCore, int toDomain, TransferMode mode, CapabilityRights rights)
    {
        int r = LookUpUsable(cs, slot, "transfer");
        ref RefRecord rec = ref _refs[r];
        if ((uint)toCore >= (uint)CoreCount)
        {
            throw new ArgumentOutOfRangeException(nameof(toCore), toCore, $"No core {toCore} among {CoreCount}.");
        }

        if (mode == TransferMode.Copy)
        {
            CheckCopyable(cs, slot, in rec, rights, requireGrant: true);
        }
        else if ((rec.Rights & CapabilityRights.Grant) == 0)
        {
            throw new InsufficientRightsException($"Slot {slot} of {cs} holds a {rec.Type} capability without the Grant right; it cannot be passed to another domain.");
        }
        else if (rights != CapabilityRights.All && (rights & ~rec.Rights) != 0)
        {
            throw new InsufficientRightsException($"Rights can only be diminished: the {rec.Type} capability in slot {slot} of {cs} has {rec.Rights}, the transfer asked for {rights}.");
        }

        if (toCore == Core)
        {
            CSpace target = FindDomain(toDomain) ?? throw new CapabilityException($"Core {Core} has no domain {toDomain}.");
            int result = mode == TransferMode.Copy ? Copy(cs, slot, target, rights, requireGrant: true) : Move(cs, slot, target);
            return new ValueTask<int>(result);
        }

        if (rec.Type == CapabilityType.Ram)
        {
            throw new CapabilityTypeException("RAM capabilities stay on their owner core (retype runs there); move RAM between domains of the same core.");
        }

        if ((uint)toDomain > ushort.MaxValue)
        {
            throw new ArgumentOutOfRangeException(nameof(toDomain), toDomain, "Domain ids are 16-bit.");
        }

        EnsureOutbox("transfer");
        PendingOperation p = AllocatePending("transfer");
        CapabilityRights granted = mode == TransferMode.Move && rights == CapabilityRights.All ? rec.Rights : rights;
        p.IsMove = mode == TransferMode.Move;
        p.RefIndex = r;
        p.RefGeneration = _refGenerations[r];
        if (p.IsMove)
        {
            // The slot stays reserved but unusable until the receiver has the capability; the
            // sender's handles die now.
            rec.InTransit = true;
            _refGenerations[r]++;
            p.RefGeneration = _refGenerations[r];
        }

        Send(rec.Owner, MsgCopyRequest,
            p.RequestId | ((ulong)(uint)rec.Object << 32),
            rec.ObjectGeneration | ((ulong)(byte)granted << 32) | ((ulong)(byte)toCore << 40) | ((ulong)(ushort)toDomain << 48),
            (ulong)mode);
        return new ValueTask<int>(p, p.Version);
    }

    internal ValueTask Revoke(CSpace cs, int slot, RevokeMode mode)
    {
        // The initiator's span: the MARK/COMMIT messages queued below carry it to every core.
        using Activity? span = MessageTracing.StartProtocol(ProtocolSpanNames.Revoke, Core, ActivityKind.Client);
        span?.SetTag("multikernel.revoke.mode", mode == RevokeMode.Unicast ? "unicast" : "multicast");
        int r = LookUpUsable(cs, slot, "revoke");
        ref RefRecord rec = ref _refs[r];
        EnsureOutbox("revoke");
        PendingOperation p = AllocatePending("revoke");
        p.IsMove = false;
        p.RefIndex = r;
        p.RefGeneration = _refGenerations[r];
        if (rec.Owner == Core)
        {
            Status status = StartRevoke(rec.Object, Core, r, mode, deleteRoot: false, requesterCore: Core, requestId: p.RequestId);
            if (status != Status.Ok)
            {
                ReleasePendingUnused(p);
                throw StatusException(status, $"revoke of slot {slot} of {cs}");
            }

            // Completed already when no other core holds a copy; otherwise when the acks are in.
            return new ValueTask(p, p.Version);
        }

        Send(rec.Owner, MsgRevokeRequest,
            p.RequestId | ((ulong)(uint)rec.Object << 32),
            rec.ObjectGeneration | ((ulong)(uint)r << 32),
            (ulong)mode);
        return new ValueTask(p, p.Version);
    }

    private PendingOperation AllocatePending(string operation)
    {
        if (_freePendingCount == 0)
        {
            throw new CapabilityLimitException($"Core {Core} has {_pending.Length} capability operations in progress (MaxOperations); the {operation} cannot start now.");
        }

        PendingOperation p = _pending[_freePending[--_freePendingCount]];
        p.InUse = true;
        return p;
    }

    internal void ReleasePending(PendingOperation p)
    {
        if (p.InUse)
        {
            p.InUse = false;
            _freePending[_freePendingCount++] = p.Index;
        }
    }

    private void ReleasePendingUnused(PendingOperation p)
    {
        // Never handed out as an awaitable: put it back without completing it.
        p.InUse = false;
        _freePending[_freePendingCount++] = p.Index;
    }

    private void CompletePending(uint requestId, Status status, int result, string what)
    {
        int index = (int)(requestId & 0xFFFF);
        if (index >= _pending.Length)
        {
            return;
        }

        PendingOperation p = _pending[index];
        if (!p.InUse || (ushort)p.Version != (ushort)(requestId >> 16))
        {
            return;
        }

        if (status == Status.Ok)
        {
            p.Complete(result);
        }
        else
        {
            p.Fail(StatusException(status, what));
        }
    }

    private Exception StatusException(Status status, string what) => status switch
    {
        Status.Busy => new CapabilityBusyException($"The {what} was refused: a revoke or delete covering this capability is in progress. Retry after it completes."),
        Status.Revoked => new CapabilityRevokedException($"The {what} failed: the capability was revoked or deleted meanwhile."),
        Status.SlotsFull => new CapabilityLimitException($"The {what} failed: the receiving domain's CSpace is full."),
        Status.TableFull => new CapabilityLimitException($"The {what} failed: the receiving core's capability table is full."),
        Status.NoSuchDomain => new CapabilityException($"The {what} failed: the receiving core has no such domain."),
        _ => new CapabilityLimitException($"The {what} failed: the owner core has too many operations in progress. Retry later."),
    };

    // ---------------------------------------------------------------- dispatch

    private void Dispatch(int from, in Message m)
    {
        ValidateMessage(from, in m);

        switch (m.Type)
        {
            case MsgCopyRequest:
                OnCopyRequest(from, in m);
                break;
            case MsgInstall:
                OnInstall(from, in m);
                break;
            case MsgInstallResult:
                OnInstallResult(in m);
                break;
            case MsgTransferDone:
                OnTransferDone(in m);
                break;
            case MsgRelease:
                OnRelease((int)(uint)m.Word0, (uint)(m.Word0 >> 32));
                break;
            case MsgAddRef:
                OnAddRef(from, (int)(uint)m.Word0, (uint)(m.Word0 >> 32));
                break;
            case MsgRevokeRequest:
                OnRevokeRequest(from, in m);
                break;
            case MsgRevokeDone:
                CompletePending((uint)m.Word0, (Status)(uint)(m.Word0 >> 32), 0, "revoke");
                break;
            case MsgMark:
                OnMark(from, in m);
                break;
            case MsgCommit:
                OnCommit(from, in m);
                break;
            case MsgMarkAck:
            case MsgCommitAck:
                OnAck(in m);
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
                if ((int)(m.Word1 & 0xFF) >= _ops.Length)
                {
                    problem = $"operation slot {(int)(m.Word1 & 0xFF)} is beyond MaxOperations ({_ops.Length}); every core must use the same CapabilityOptions";
                }
                else if ((byte)(m.Word1 >> 16) >= CoreCount)
                {
                    problem = $"owner core {(byte)(m.Word1 >> 16)} does not exist";
                }
                else if (m.Type == MsgMark && (uint)m.Word0 >= (uint)_objects.Length && (byte)(m.Word1 >> 16) == Core)
                {
                    problem = $"object {(uint)m.Word0} does not exist";
                }

                break;
            case MsgRelease or MsgAddRef:
                if ((uint)m.Word0 >= (uint)_objects.Length)
                {
                    problem = $"object {(uint)m.Word0} is beyond MaxObjectsPerCore ({_objects.Length})";
                }

                break;
            case MsgInstallResult:
                if ((int)(m.Word0 & 0xFFFF) >= _transfers.Length)
                {
                    problem = $"transfer {(int)(m.Word0 & 0xFFFF)} does not exist";
                }

                break;
        }

        if (problem is not null)
        {
            throw new ArgumentException($"Malformed capability protocol message 0x{m.Type:X4} from core {from}: {problem}.", nameof(m));
        }
    }

    // ---------------------------------------------------------------- transfers

    private void OnCopyRequest(int from, in Message m)
    {
        uint requestId = (uint)m.Word0;
        int obj = (int)(uint)(m.Word0 >> 32);
        uint gen = (uint)m.Word1;
        var rights = (CapabilityRights)(byte)(m.Word1 >> 32);
        int dest = (byte)(m.Word1 >> 40);
        int domain = (ushort)(m.Word1 >> 48);
        Status status = Status.Ok;
        int xfer = -1;
        if ((uint)obj >= (uint)_objects.Length || _objects[obj].State == ObjectState.Free || _objects[obj].Generation != gen)
        {
            status = Status.Revoked;
        }
        else if (_objects[obj].State != ObjectState.Live)
        {
            status = Status.Busy;
        }
        else if (dest >= CoreCount)
        {
            status = Status.NoSuchDomain;
        }
        else
        {
            for (int i = 0; i < _transfers.Length; i++)
            {
                if (!_transfers[i].Active)
                {
                    xfer = i;
                    break;
                }
            }

            if (xfer < 0)
            {
                status = Status.Limit;
            }
        }

        if (status != Status.Ok)
        {
            Send(from, MsgTransferDone, requestId | ((ulong)status << 32), 0, 0);
            return;
        }

        // Reserve the copy before it exists: the count never undercounts, and the destination
        // is in the mask before any later MARK is sent, so FIFO order makes it see the INSTALL first.
        ref ObjectRecord o = ref _objects[obj];
        o.Total++;
        o.Mask |= Bit(dest);
        ref OwnerTransfer t = ref _transfers[xfer];
        t.Active = true;
        t.Version++;
        t.RequesterCore = from;
        t.Destination = dest;
        t.RequestId = requestId;
        t.Object = obj;
        t.ObjectGeneration = gen;
        ulong payload = IsMemoryType(o.Type) ? (uint)o.BaseFrame | ((ulong)(uint)o.FrameCount << 32) : o.ObjectId;
        var install = Message.Create(MsgInstall,
            (uint)xfer | ((uint)t.Version << 16) | ((ulong)(uint)obj << 32),
            gen | ((ulong)(byte)o.Type << 32) | ((ulong)(byte)(rights & o.Rights) << 40) | ((ulong)(ushort)domain << 48),
            payload);
        if (dest != Core)
        {
            Send(dest, MsgInstall, install.Word0, install.Word1, install.Word2);
            return;
        }

        // Installing on the owner core itself happens now, not through the outbox: a revoke
        // started meanwhile marks the owner's own copies directly, so a copy still queued to
        // ourselves would escape it (remote destinations are safe by FIFO order).
        Status installed = Install(Core, in install, out int slot);
        var result = Message.Create(MsgInstallResult, (uint)install.Word0 | ((ulong)installed << 32), (ulong)(uint)slot);
        OnInstallResult(in result);
    }

    private void OnInstall(int from, in Message m)
    {
        Status status = Install(from, in m, out int slot);
        Send(from, MsgInstallResult, (uint)m.Word0 | ((ulong)status << 32), (ulong)(uint)slot, 0);
    }

    private Status Install(int owner, in Message m, out int slot)
    {
        int obj = (int)(uint)(m.Word0 >> 32);
        uint gen = (uint)m.Word1;
        var type = (CapabilityType)(byte)(m.Word1 >> 32);
        var rights = (CapabilityRights)(byte)(m.Word1 >> 40);
        int domain = (ushort)(m.Word1 >> 48);
        slot = -1;
        CSpace? cs = FindDomain(domain);
        if (cs is null)
        {
            return Status.NoSuchDomain;
        }

        if (_freeRefCount == 0)
        {
            return Status.TableFull;
        }

        slot = cs.FindFree();
        if (slot < 0)
        {
            return Status.SlotsFull;
        }

        bool memory = IsMemoryType(type);
        CreateRef(cs, slot, owner, obj, gen, type, rights,
            memory ? (int)(uint)m.Word2 : 0, memory ? (int)(uint)(m.Word2 >> 32) : 0, memory ? 0 : m.Word2);
        return Status.Ok;
    }

    private void OnInstallResult(in Message m)
    {
        int xfer = (int)(m.Word0 & 0xFFFF);
        ushort version = (ushort)((uint)m.Word0 >> 16);
        var status = (Status)(uint)(m.Word0 >> 32);
        ref OwnerTransfer t = ref _transfers[xfer];
        Debug.Assert(t.Active && t.Version == version);
        if (!t.Active || t.Version != version)
        {
            return;
        }

        t.Active = false;
        if (status != Status.Ok)
        {
            // Undo the reservation.
            OnRelease(t.Object, t.ObjectGeneration);
        }

        Send(t.RequesterCore, MsgTransferDone, t.RequestId | ((ulong)status << 32), m.Word1, 0);
    }

    private void OnTransferDone(in Message m)
    {
        uint requestId = (uint)m.Word0;
        var status = (Status)(uint)(m.Word0 >> 32);
        int index = (int)(requestId & 0xFFFF);
        if (index < _pending.Length)
        {
            PendingOperation p = _pending[index];
            if (p.InUse && (ushort)p.Version == (ushort)(requestId >> 16) && p.IsMove)
            {
                int r = p.RefIndex;
                if (_refGenerations[r] == p.RefGeneration && _refs[r].Live && _refs[r].InTransit)
                {
                    ref RefRecord rec = ref _refs[r];
                    rec.InTransit = false;
                    if (status == Status.Ok || rec.Detached)
                    {
                        // Moved (or the sender's domain was destroyed meanwhile): the source copy
                        // goes like any deleted copy, so the owner's count stays exact.
                        if (rec.Marked)
                        {
                            DetachRef(r);
                        }
                        else
                        {
                            int owner = rec.Owner;
                            int obj = rec.Object;
                            uint gen = rec.ObjectGeneration;
                            FreeRef(r);
                            ReleaseReference(owner, obj, gen);
                        }
                    }
                }
            }
        }

        CompletePending(requestId, status, (int)(uint)m.Word1, "transfer");
    }

    // ---------------------------------------------------------------- revoke: owner side

    private void OnRevokeRequest(int from, in Message m)
    {
        uint requestId = (uint)m.Word0;
        int obj = (int)(uint)(m.Word0 >> 32);
        uint gen = (uint)m.Word1;
        int keepRef = (int)(uint)(m.Word1 >> 32);
        var mode = (RevokeMode)(int)m.Word2;
        Status status;
        if ((uint)obj >= (uint)_objects.Length || _objects[obj].State == ObjectState.Free || _objects[obj].Generation != gen)
        {
            status = Status.Revoked;
        }
        else
        {
            status = StartRevoke(obj, from, keepRef, mode, deleteRoot: false, from, requestId);
        }

        if (status != Status.Ok)
        {
            Send(from, MsgRevokeDone, requestId | ((ulong)status << 32), 0, 0);
        }
    }

    /// <summary>
    /// Starts a revoke (delete every copy of <paramref name="root"/> but the kept one, and every
    /// object derived from it) or, with <paramref name="deleteRoot"/>, a cascading delete.
    /// Returns Ok when started (it may already have finished), Busy when another operation
    /// covers part of the tree, Limit when the operation table is full.
    /// </summary>
    private Status StartRevoke(int root, int keepCore, int keepRef, RevokeMode mode, bool deleteRoot, int requesterCore, uint requestId)
    {
        if (_objects[root].State != ObjectState.Live)
        {
            return Status.Busy;
        }

        for (int a = _objects[root].Parent; a != -1; a = _objects[a].Parent)
        {
            if (_objects[a].State != ObjectState.Live)
            {
                return Status.Busy;
            }
        }

        OwnerOperation? op = null;
        foreach (OwnerOperation candidate in _ops)
        {
            if (!candidate.Active)
            {
                op = candidate;
                break;
            }
        }

        if (op is null)
        {
            return Status.Limit;
        }

        // Collect the tree in pre-order (root first) and mark it; give up if any part is busy.
        op.ListHead = root;
        op.ListTail = root;
        _objects[root].OpPrev = -1;
        _objects[root].OpNext = -1;
        _objects[root].State = ObjectState.Revoking;
        int node = _objects[root].FirstChild;
        bool conflict = false;
        while (node != -1 && node != root)
        {
            if (_objects[node].State != ObjectState.Live)
            {
                conflict = true;
                break;
            }

            _objects[node].State = ObjectState.Marked;
            _objects[op.ListTail].OpNext = node;
            _objects[node].OpPrev = op.ListTail;
            _objects[node].OpNext = -1;
            op.ListTail = node;

            if (_objects[node].FirstChild != -1)
            {
                node = _objects[node].FirstChild;
                continue;
            }

            while (node != root && _objects[node].NextSibling == -1)
            {
                node = _objects[node].Parent;
            }

            node = node == root ? -1 : _objects[node].NextSibling;
        }

        if (conflict)
        {
            for (int n = op.ListHead; n != -1; n = _objects[n].OpNext)
            {
                _objects[n].State = ObjectState.Live;
            }

            return Status.Busy;
        }

        op.Active = true;
        op.Sequence++;
        op.Root = root;
        op.DeleteRoot = deleteRoot;
        op.KeepCore = keepCore;
        op.KeepRef = keepRef;
        op.RequesterCore = requesterCore;
        op.RequestId = requestId;
        op.Mode = mode;
        op.Fanout = _options.MulticastFanout;
        op.Phase = 1;
        op.SumMarked = 0;
        op.AckMask = 0;
        op.LocalMarkedHead = -1;
        op.Targets = 0;
        op.LastNodeAny = -1;
        Array.Fill(op.LastNodeForCore, -1);

        // Mark this core's own copies directly and work out who else must hear of the tree.
        ulong self = Bit(Core);
        bool ownRootLeft = false;
        for (int n = op.ListHead; n != -1; n = _objects[n].OpNext)
        {
            bool isRoot = n == root;
            for (int r = _refMap.Get(Core, n); r != -1; r = _refs[r].NextSame)
            {
                ref RefRecord rec = ref _refs[r];
                if (rec.ObjectGeneration != _objects[n].Generation || rec.Marked)
                {
                    continue;
                }

                if (isRoot && keepCore == Core && r == keepRef)
                {
                    ownRootLeft = true;
                    continue;
                }

                rec.Marked = true;
                rec.NextMarked = op.LocalMarkedHead;
                op.LocalMarkedHead = r;
                if (isRoot)
                {
                    op.SumMarked++;
                }
            }

            ulong others = _objects[n].Mask & ~self;
            _objects[n].OpMask = others;
            if (others != 0)
            {
                op.Targets |= others;
                op.LastNodeAny = n;
                ulong bits = others;
                while (bits != 0)
                {
                    int c = BitOperations.TrailingZeroCount(bits);
                    bits &= bits - 1;
                    op.LastNodeForCore[c] = n;
                }
            }
        }

        // The root's mask is rebuilt from the acknowledgements (each target says whether it still
        // holds unmarked copies); bits set by copies made meanwhile survive.
        ref ObjectRecord rootRecord = ref _objects[root];
        rootRecord.Mask &= ~op.Targets;
        rootRecord.Mask = ownRootLeft ? rootRecord.Mask | self : rootRecord.Mask & ~self;

        if (op.Targets == 0)
        {
            FinishMark(op);
            return Status.Ok;
        }

        if (mode == RevokeMode.Multicast)
        {
            // FIFO holds per pair of cores only. An INSTALL this core sent straight to a target
            // could be overtaken by a MARK relayed through another core, and the new copy would
            // escape the revoke. While any transfer to a target is in flight, send directly.
            foreach (ref readonly OwnerTransfer t in _transfers.AsSpan())
            {
                if (t.Active && (op.Targets & Bit(t.Destination)) != 0)
                {
                    op.Mode = mode = RevokeMode.Unicast;
                    break;
                }
            }
        }

        if (mode == RevokeMode.Multicast)
        {
            op.ChunkCount = SplitTree(op.Targets, op.Fanout, op.Chunks);
            op.PendingAcks = op.ChunkCount;
        }
        else
        {
            op.PendingAcks = BitOperations.PopCount(op.Targets);
        }

        op.Streaming = 1;
        op.CursorA = mode == RevokeMode.Multicast ? op.ListHead : BitOperations.TrailingZeroCount(op.Targets);
        op.CursorB = mode == RevokeMode.Multicast ? 0 : op.ListHead;
        _streamingOps++;
        Stream(op);
        return Status.Ok;
    }

    /// <summary>Splits a core mask into up to <paramref name="fanout"/> contiguous groups; the first core of each group is its relay.</summary>
    private static int SplitTree(ulong mask, int fanout, Span<ulong> chunks)
    {
        int count = BitOperations.PopCount(mask);
        int groups = Math.Min(fanout, count);
        int perGroup = count / groups;
        int extra = count % groups;
        ulong bits = mask;
        for (int g = 0; g < groups; g++)
        {
            int take = perGroup + (g < extra ? 1 : 0);
            ulong chunk = 0;
            for (int i = 0; i < take; i++)
            {
                ulong lowest = bits & (~bits + 1);
                chunk |= lowest;
                bits &= bits - 1;
            }

            chunks[g] = chunk;
        }

        return groups;
    }

    /// <summary>Sends as much of an operation's MARK or COMMIT stream as the outbox allows (keeping half of it for replies).</summary>
    private void Stream(OwnerOperation op)
    {
        int keepFree = Math.Max(_reserve, _outCore.Length / 2);
        ulong w1Base = op.OpId | ((ulong)(byte)Core << 16) | ((ulong)(op.Fanout << 4) << 24);
        while (op.Streaming != 0 && OutboxFree > keepFree)
        {
            if (op.Streaming == 1 && op.Mode == RevokeMode.Unicast)
            {
                // Core-major: every object a core holds copies of, the last one flagged.
                int c = op.CursorA;
                if (c >= 64)
                {
                    EndStream(op);
                    break;
                }

                int n = op.CursorB;
                while (n != -1 && (_objects[n].OpMask & Bit(c)) == 0)
                {
                    n = _objects[n].OpNext;
                }

                if (n == -1)
                {
                    ulong rest = op.Targets & ~((Bit(c) << 1) - 1);
                    op.CursorA = c == 63 || rest == 0 ? 64 : BitOperations.TrailingZeroCount(rest);
                    op.CursorB = op.ListHead;
                    continue;
                }

                SendMark(op, n, c, Bit(c), n == op.LastNodeForCore[c], w1Base);
                op.CursorB = _objects[n].OpNext;
            }
            else if (op.Streaming == 1)
            {
                // Multicast: every object with remote copies goes to every relay of the tree.
                int n = op.CursorA;
                while (n != -1 && _objects[n].OpMask == 0)
                {
                    n = _objects[n].OpNext;
                }

                if (n == -1)
                {
                    EndStream(op);
                    break;
                }

                int g = op.CursorB;
                ulong chunk = op.Chunks[g];
                SendMark(op, n, BitOperations.TrailingZeroCount(chunk), chunk, n == op.LastNodeAny, w1Base);
                if (++g == op.ChunkCount)
                {
                    op.CursorA = _objects[n].OpNext;
                    op.CursorB = 0;
                }
                else
                {
                    op.CursorA = n;
                    op.CursorB = g;
                }
            }
            else
            {
                // COMMIT: one message per target (unicast) or per relay (multicast).
                if (op.Mode == RevokeMode.Multicast)
                {
                    if (op.CursorA >= op.ChunkCount)
                    {
                        EndStream(op);
                        break;
                    }

                    ulong chunk = op.Chunks[op.CursorA++];
                    Send(BitOperations.TrailingZeroCount(chunk), MsgCommit, 0, w1Base, chunk);
                }
                else
                {
                    ulong rest = op.Targets & ~((Bit(op.CursorA) << 1) - 1);
                    if (op.CursorA < 0)
                    {
                        rest = op.Targets;
                    }

                    if (rest == 0 || op.CursorA >= 63)
                    {
                        EndStream(op);
                        break;
                    }

                    int c = BitOperations.TrailingZeroCount(rest);
                    op.CursorA = c;
                    Send(c, MsgCommit, 0, w1Base, Bit(c));
                }
            }
        }
    }

    private void EndStream(OwnerOperation op)
    {
        op.Streaming = 0;
        _streamingOps--;
    }

    private void SendMark(OwnerOperation op, int n, int core, ulong subtree, bool last, ulong w1Base)
    {
        int flags = (last ? FlagLast : 0) | (n == op.Root ? FlagRoot : 0);
        ulong keep = n == op.Root && op.KeepCore >= 0 ? ((ulong)(byte)op.KeepCore << 32) | ((ulong)(uint)(op.KeepRef + 1) << 40) : 0;
        Send(core, MsgMark, (uint)n | ((ulong)_objects[n].Generation << 32), w1Base | ((ulong)flags << 24) | keep, subtree);
    }

    private void OnAck(in Message m)
    {
        ushort opId = (ushort)m.Word1;
        int owner = (byte)(m.Word1 >> 16);
        if (owner == Core)
        {
            OwnerOperation op = _ops[opId & 0xFF];
            if (!op.Active || op.OpId != opId)
            {
                Debug.Fail("Acknowledgement for an operation that is not running.");
                return;
            }

            if (m.Type == MsgMarkAck)
            {
                Debug.Assert(op.Phase == 1);
                op.SumMarked += (long)m.Word0;
                op.AckMask |= m.Word2;
            }

            if (--op.PendingAcks == 0)
            {
                if (op.Phase == 1)
                {
                    FinishMark(op);
                }
                else
                {
                    FinishCommit(op);
                }
            }

            return;
        }

        // A relay aggregating its subtree's acknowledgements.
        ref Participation p = ref _participations[(owner * _ops.Length) + (opId & 0xFF)];
        if (!p.Active || p.OpId != opId)
        {
            Debug.Fail("Acknowledgement for a participation that is not running.");
            return;
        }

        if (m.Type == MsgMarkAck)
        {
            p.Sum += (long)m.Word0;
            p.AckMask |= m.Word2;
        }

        p.PendingAcks--;
        TryFinishParticipation(ref p, owner, m.Type == MsgMarkAck ? 1 : 2);
    }

    private void FinishMark(OwnerOperation op)
    {
        // Every core holding a copy has marked it and will not use or pass it on; now delete.
        op.Phase = 2;
        DeleteMarkedList(op.LocalMarkedHead);
        op.LocalMarkedHead = -1;
        if (op.Targets == 0)
        {
            FinishCommit(op);
            return;
        }

        op.PendingAcks = op.Mode == RevokeMode.Multicast ? op.ChunkCount : BitOperations.PopCount(op.Targets);
        op.Streaming = 2;
        op.CursorA = op.Mode == RevokeMode.Multicast ? 0 : -1;
        _streamingOps++;
        Stream(op);
    }

    private void FinishCommit(OwnerOperation op)
    {
        // Every core has deleted its marked copies (and acknowledged from its loop, so none of its
        // domains still holds a span of these frames): free the tree bottom-up, which bumps the
        // frames' generations and returns the memory to the parent RAM.
        int root = op.Root;
        ref ObjectRecord r = ref _objects[root];
        r.Total -= (int)op.SumMarked;
        Debug.Assert(r.Total >= 0);
        r.Mask |= op.AckMask;
        for (int n = op.ListTail; n != root; )
        {
            int prev = _objects[n].OpPrev;
            FreeObject(n);
            n = prev;
        }

        r.State = ObjectState.Live;
        r.OpNext = -1;
        r.OpPrev = -1;
        op.Active = false;
        if (op.DeleteRoot || r.Total == 0)
        {
            FreeObject(root);
        }

        if (op.RequesterCore == Core)
        {
            CompletePending(op.RequestId, Status.Ok, 0, "revoke");
        }
        else if (op.RequesterCore >= 0)
        {
            Send(op.RequesterCore, MsgRevokeDone, op.RequestId, 0, 0);
        }
    }

    private void DeleteMarkedList(int head)
    {
        for (int r = head; r != -1; )
        {
            int next = _refs[r].NextMarked;
            if (_refs[r].InTransit && !_refs[r].Detached)
            {
                // A move in flight: the sender's pending transfer finds the copy gone.
                _refs[r].InTransit = false;
            }

            FreeRef(r);
            r = next;
        }
    }

    // ---------------------------------------------------------------- revoke: participant side

    private void OnMark(int from, in Message m)
    {
        int obj = (int)(uint)m.Word0;
        uint gen = (uint)(m.Word0 >> 32);
        ushort opId = (ushort)m.Word1;
        int owner = (byte)(m.Word1 >> 16);
        int flags = (byte)(m.Word1 >> 24);
        int keepCore = (byte)(m.Word1 >> 32);
        int keepRef = (int)(uint)(m.Word1 >> 40) - 1;
        ulong mask = m.Word2;
        ref Participation p = ref _participations[(owner * _ops.Length) + (opId & 0xFF)];
        if (!p.Active || p.OpId != opId)
        {
            Debug.Assert(!p.Active, "A participation slot was reused before its operation finished.");
            p = default;
            p.Active = true;
            p.OpId = opId;
            p.Parent = from;
            p.Mask = mask;
            p.Fanout = Math.Max(1, (flags >> 4) & 0xF);
            p.MarkedHead = -1;
            ulong below = mask & ~Bit(Core);
            p.Children = below == 0 ? 0 : Math.Min(p.Fanout, BitOperations.PopCount(below));
            p.PendingAcks = p.Children;
        }

        // Forward down the multicast tree first, so the subtree works in parallel with us.
        ulong rest = p.Mask & ~Bit(Core);
        if (rest != 0)
        {
            Span<ulong> chunks = stackalloc ulong[8];
            int groups = SplitTree(rest, p.Fanout, chunks);
            for (int g = 0; g < groups; g++)
            {
                Send(BitOperations.TrailingZeroCount(chunks[g]), MsgMark, m.Word0, m.Word1, chunks[g]);
            }
        }

        bool isRoot = (flags & FlagRoot) != 0;
        for (int r = _refMap.Get(owner, obj); r != -1; r = _refs[r].NextSame)
        {
            ref RefRecord rec = ref _refs[r];
            if (rec.ObjectGeneration != gen || rec.Marked)
            {
                continue;
            }

            if (isRoot && keepCore == Core && r == keepRef)
            {
                p.RootHasUnmarked = true;
                continue;
            }

            rec.Marked = true;
            rec.NextMarked = p.MarkedHead;
            p.MarkedHead = r;
            if (isRoot)
            {
                p.Sum++;
            }
        }

        if ((flags & FlagLast) != 0)
        {
            p.LocalDone = true;
            TryFinishParticipation(ref p, owner, 1);
        }
    }

    private void OnCommit(int from, in Message m)
    {
        ushort opId = (ushort)m.Word1;
        int owner = (byte)(m.Word1 >> 16);
        ref Participation p = ref _participations[(owner * _ops.Length) + (opId & 0xFF)];
        if (!p.Active || p.OpId != opId)
        {
            Debug.Fail($"COMMIT from core {from} for an operation core {Core} never marked.");
            return;
        }

        ulong rest = p.Mask & ~Bit(Core);
        if (rest != 0)
        {
            Span<ulong> chunks = stackalloc ulong[8];
            int groups = SplitTree(rest, p.Fanout, chunks);
            for (int g = 0; g < groups; g++)
            {
                Send(BitOperations.TrailingZeroCount(chunks[g]), MsgCommit, 0, m.Word1, chunks[g]);
            }
        }

        DeleteMarkedList(p.MarkedHead);
        p.MarkedHead = -1;
        p.LocalDone = true;
        TryFinishParticipation(ref p, owner, 2);
    }

    private void TryFinishParticipation(ref Participation p, int owner, int phase)
    {
        if (!p.LocalDone || p.PendingAcks != 0)
        {
            return;
        }

        ulong w1 = p.OpId | ((ulong)(byte)owner << 16);
        if (phase == 1)
        {
            ulong holds = p.RootHasUnmarked ? Bit(Core) : 0;
            Send(p.Parent, MsgMarkAck, (ulong)p.Sum, w1, p.AckMask | holds);
            p.LocalDone = false;
            p.PendingAcks = p.Children;
        }
        else
        {
            Send(p.Parent, MsgCommitAck, 0, w1, 0);
            p = default;
        }
    }

    // ---------------------------------------------------------------- pump

    private void Pump()
    {
        if (_streamingOps > 0)
        {
            foreach (OwnerOperation op in _ops)
            {
                if (op.Active && op.Streaming != 0)
                {
                    Stream(op);
                }
            }
        }

        for (int i = _deferredCount; i > 0 && _deferredCount > 0; i--)
        {
            ulong entry = _deferred[_deferredHead];
            _deferredHead = (_deferredHead + 1) % _deferred.Length;
            _deferredCount--;
            int obj = (int)(uint)entry;
            ref ObjectRecord o = ref _objects[obj];
            if (o.State != ObjectState.Live || o.Generation != (uint)(entry >> 32) || o.Total != 0)
            {
                if (o.Generation == (uint)(entry >> 32))
                {
                    o.Deferred = false;
                }

                continue;
            }

            o.Deferred = false;
            DeleteObject(obj);
        }
    }
}
