namespace Multikernel.CpuDriver.Capabilities;

// Transfers: requester C -> owner A (reserve: count+1, destination in the mask) -> destination D
// (install, queue a grant for the receiving channel) -> A -> C. The receiver learns the slot only
// from its own kernel's grant queue; nothing a peer sends names a slot. Also the requester's
// pending operations (per-domain shares of the awaitable pool).
public sealed partial class CoreCapabilities
{
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
    private OwnerTransfer[] _transfers = [];

    private void InitializeTransfers()
    {
        int perDomain = _options.OperationsPerDomain;
        _pending = new PendingOperation[_options.MaxDomainsPerCore * perDomain];
        for (int i = 0; i < _pending.Length; i++)
        {
            _pending[i] = new PendingOperation(this, i);
        }

        _transfers = new OwnerTransfer[_options.MaxOperations];
    }

    // ---------------------------------------------------------------- requester

    /// <summary>
    /// Passes the capability to the domain behind <paramref name="channel"/> on <paramref name="toCore"/>.
    /// Kernel and monitor only (a domain reaches this through its <c>DomainChannel</c>, whose ends the
    /// monitor connected): the channel is resolved on the receiving core by <see cref="ChannelOwner"/>.
    /// </summary>
    internal ValueTask Transfer(CSpace cs, int slot, int toCore, uint channel, TransferMode mode, CapabilityRights rights)
    {
        CheckThread();
        int r = LookUpUsable(cs, slot, "transfer");
        ref RefRecord rec = ref _refs[r];
        if ((uint)toCore >= (uint)CoreCount)
        {
            throw new ArgumentOutOfRangeException(nameof(toCore), toCore, $"No core {toCore} among {CoreCount}.");
        }

        CapabilityRights granted = CheckPassable(cs, slot, in rec, rights, mode);
        if (toCore == Core)
        {
            CSpace target = ResolveChannel(channel) ?? throw new CapabilityException($"Core {Core} has no domain behind channel {channel:x}; the transfer is refused.");
            if (target.GrantsQueued >= _options.GrantsPerDomain)
            {
                throw StatusException(Status.GrantsFull, "transfer");
            }

            int installed = mode == TransferMode.Copy ? Copy(cs, slot, target, granted, requireGrant: true) : Move(cs, slot, target);
            bool queued = target.TryQueueGrant(channel, installed, _refGenerations[target.Slots[installed] - 1]);
            Invariant(queued, "a grant queue with room refused a grant");
            return ValueTask.CompletedTask;
        }

        if (rec.Type == CapabilityType.Ram)
        {
            throw new CapabilityTypeException("RAM capabilities stay on their owner core (retype runs there); move RAM between domains of the same core.");
        }

        EnsureOutbox(cs, "transfer");
        PendingOperation p = AllocatePending(cs, "transfer");
        p.IsMove = mode == TransferMode.Move;
        p.RefIndex = r;
        if (p.IsMove)
        {
            // The slot stays reserved but unusable until the receiver has the capability; the
            // sender's handles die now.
            rec.InTransit = true;
            _refGenerations[r]++;
        }

        p.RefGeneration = _refGenerations[r];
        Send(rec.Owner, new CopyRequestMessage(p.RequestId, rec.Object, rec.ObjectGeneration, granted, toCore, mode, channel).Encode(), cs);
        return new ValueTask(p, p.Version);
    }

    private PendingOperation AllocatePending(CSpace cs, string operation)
    {
        int perDomain = _options.OperationsPerDomain;
        int first = cs.Id * perDomain;
        for (int i = first; i < first + perDomain; i++)
        {
            PendingOperation p = _pending[i];
            if (p.InUse && p.Orphaned && p.IsCompleted)
            {
                // Left by a destroyed domain that had this id, and never awaited: reclaim it.
                p.Recycle();
            }

            if (!p.InUse)
            {
                p.InUse = true;
                p.Orphaned = false;
                return p;
            }
        }

        throw new CapabilityLimitException($"{cs} has {perDomain} capability operations in progress (OperationsPerDomain, its share of core {Core}'s operations); the {operation} cannot start now. Await one first.");
    }

    internal void ReleasePending(PendingOperation p) => p.InUse = false;

    private void ReleasePendingUnused(PendingOperation p) => p.InUse = false;

    /// <summary>
    /// A destroyed domain's operations: they finish without it (a move in flight still settles
    /// the source copy), and the next domain with its id reclaims any that nobody awaited.
    /// </summary>
    private void OrphanPending(CSpace cs)
    {
        int perDomain = _options.OperationsPerDomain;
        for (int i = cs.Id * perDomain; i < (cs.Id + 1) * perDomain; i++)
        {
            _pending[i].Orphaned |= _pending[i].InUse;
        }
    }

    private void CompletePending(uint requestId, Status status, string what)
    {
        int index = (int)(requestId & 0xFFFF);
        if (index >= _pending.Length)
        {
            return;
        }

        PendingOperation p = _pending[index];
        if (!p.InUse || (ushort)p.Version != (ushort)(requestId >> 16) || p.IsCompleted)
        {
            return;
        }

        if (status == Status.Ok)
        {
            p.Complete(0);
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
        Status.SlotsFull => new CapabilityLimitException($"The {what} failed: the receiving domain's CSpace (or its share of its core's capability table) is full."),
        Status.TableFull => new CapabilityLimitException($"The {what} failed: the receiving core's capability table is full."),
        Status.NoSuchDomain => new CapabilityException($"The {what} failed: no domain receives capabilities on that channel on the receiving core."),
        Status.GrantsFull => new CapabilityLimitException($"The {what} failed: the receiving domain has {_options.GrantsPerDomain} grants it has not taken yet (GrantsPerDomain)."),
        _ => new CapabilityLimitException($"The {what} failed: the owner core has too many operations in progress. Retry later."),
    };

    private void OnTransferDone(DoneMessage m)
    {
        int index = (int)(m.RequestId & 0xFFFF);
        if (index < _pending.Length)
        {
            PendingOperation p = _pending[index];
            if (p.InUse && (ushort)p.Version == (ushort)(m.RequestId >> 16) && p.IsMove)
            {
                int r = p.RefIndex;
                if (_refGenerations[r] == p.RefGeneration && _refs[r].Live && _refs[r].InTransit)
                {
                    ref RefRecord rec = ref _refs[r];
                    rec.InTransit = false;
                    if (m.Status == Status.Ok || rec.Detached)
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

        CompletePending(m.RequestId, m.Status, "transfer");
    }

    // ---------------------------------------------------------------- owner

    private void OnCopyRequest(int from, CopyRequestMessage m)
    {
        Status status = Status.Ok;
        int xfer = -1;
        if ((uint)m.Object >= (uint)_objects.Length || _objects[m.Object].State == ObjectState.Free || _objects[m.Object].Generation != m.Generation)
        {
            status = Status.Revoked;
        }
        else if (_objects[m.Object].State != ObjectState.Live)
        {
            status = Status.Busy;
        }
        else if (m.Destination >= CoreCount)
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
            Send(from, new DoneMessage(MsgTransferDone, m.RequestId, status).Encode());
            return;
        }

        // Reserve the copy before it exists: the count never undercounts, and the destination
        // is in the mask before any later MARK is sent, so FIFO order makes it see the INSTALL first.
        ref ObjectRecord o = ref _objects[m.Object];
        o.Total++;
        o.Mask |= Bit(m.Destination);
        ref OwnerTransfer t = ref _transfers[xfer];
        t.Active = true;
        t.Version++;
        t.RequesterCore = from;
        t.Destination = m.Destination;
        t.RequestId = m.RequestId;
        t.Object = m.Object;
        t.ObjectGeneration = m.Generation;
        var install = new InstallMessage(xfer, t.Version, m.Rights & o.Rights, m.Object, m.Generation, o.Type, m.Channel, InstallMessage.PayloadOf(in o));
        if (m.Destination != Core)
        {
            Send(m.Destination, install.Encode());
            return;
        }

        // Installing on the owner core itself happens now, not through the outbox: a revoke
        // started meanwhile marks the owner's own copies directly, so a copy still queued to
        // ourselves would escape it (remote destinations are safe by FIFO order).
        OnInstallResult(new InstallResultMessage(xfer, t.Version, Install(Core, install)));
    }

    private void OnInstallResult(InstallResultMessage m)
    {
        ref OwnerTransfer t = ref _transfers[m.Transfer];
        Invariant(t.Active && t.Version == m.Version, "an install result for a transfer that is not running");
        t.Active = false;
        if (m.Status != Status.Ok)
        {
            // Undo the reservation.
            OnRelease(t.Object, t.ObjectGeneration);
        }

        Send(t.RequesterCore, new DoneMessage(MsgTransferDone, t.RequestId, m.Status).Encode());
    }

    // ---------------------------------------------------------------- destination

    private void OnInstall(int from, InstallMessage m) =>
        Send(from, new InstallResultMessage(m.Transfer, m.Version, Install(from, m)).Encode());

    private Status Install(int owner, InstallMessage m)
    {
        CSpace? cs = ResolveChannel(m.Channel);
        if (cs is null)
        {
            return Status.NoSuchDomain;
        }

        if (_freeRefCount == 0)
        {
            return Status.TableFull;
        }

        if (cs.References >= _referenceShare)
        {
            return Status.SlotsFull;
        }

        if (cs.GrantsQueued >= _options.GrantsPerDomain)
        {
            return Status.GrantsFull;
        }

        int slot = cs.FindFree();
        if (slot < 0)
        {
            return Status.SlotsFull;
        }

        bool memory = IsMemoryType(m.Type);
        int r = CreateRef(cs, slot, owner, m.Object, m.Generation, m.Type, m.Rights,
            memory ? (int)(uint)m.Payload : 0, memory ? (int)(uint)(m.Payload >> 32) : 0, memory ? 0 : m.Payload);
        bool queued = cs.TryQueueGrant(m.Channel, slot, _refGenerations[r]);
        Invariant(queued, "a grant queue with room refused a grant");
        return Status.Ok;
    }

    /// <summary>The domain that receives capabilities sent on <paramref name="channel"/> (this core's end of it), or null.</summary>
    private CSpace? ResolveChannel(uint channel)
    {
        CSpace? cs = ChannelOwner?.Invoke(channel);
        return cs is not null && ReferenceEquals(cs.Capabilities, this) && !cs.IsDestroyed ? cs : null;
    }

    /// <summary>
    /// Takes the oldest grant queued for <paramref name="channel"/> in <paramref name="cs"/> whose
    /// capability is still there (a grant revoked before it was taken is skipped); -1 when none.
    /// </summary>
    internal int TakeGrant(CSpace cs, uint channel, out int dequeued)
    {
        CheckDomain(cs);
        dequeued = 0;
        while (cs.TryDequeueGrant(channel, out int slot, out uint generation))
        {
            dequeued++;
            int r = cs.Slots[slot] - 1;
            if (r >= 0 && _refGenerations[r] == generation && _refs[r].Live && !_refs[r].Marked && !_refs[r].InTransit)
            {
                return slot;
            }
        }

        return -1;
    }
}
