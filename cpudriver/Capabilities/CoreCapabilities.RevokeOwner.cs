using System.Diagnostics;
using System.Numerics;
using Multikernel.CpuDriver.Diagnostics;

namespace Multikernel.CpuDriver.Capabilities;

// Revoke, owner side: the owner marks its own copies and the subtree's objects, streams MARK
// (unicast: per core; multicast: to the relays of a tree, which forward down), collects one
// MARK-ACK from every target core, streams COMMIT the same way, collects one COMMIT-ACK from
// every target, then frees the subtree bottom-up and answers the requester.
//
// Acknowledgements always travel straight from the participant to the owner, never up the
// relay tree: an AddRef a participant sent before it marked is then ahead of its MARK-ACK on the
// same participant -> owner link (FIFO), so the owner has counted the copy before it subtracts
// the marked copies. (Relayed acks let the AddRef arrive after the subtraction, and the owner
// freed a root its revoker still held: issue 7, item 1.)
public sealed partial class CoreCapabilities
{
    private enum OpPhase : byte
    {
        Mark = 1,
        Commit = 2,
    }

    private enum StreamState : byte
    {
        None = 0,
        Mark = 1,
        Commit = 2,
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
        public uint KeepRefGeneration;
        public uint KeepRequest;
        public int RequesterCore;
        public uint RequestId;
        public RevokeMode Mode;
        public int Fanout;
        public OpPhase Phase;
        public int ListHead;
        public int ListTail;
        public ulong Targets;
        public int ChunkCount;
        public int PendingAcks;
        public long SumMarked;
        public ulong AckMask;
        public int LocalMarkedHead;
        public int LastNodeAny;
        public StreamState Streaming;

        // Stream cursors. Unicast MARK: (core, next object of the tree list); multicast MARK:
        // (object, relay group); COMMIT: the next core (unicast) or relay group (multicast).
        public int CursorCore;
        public int CursorNode;
        public int CursorGroup;

        public ushort OpId => (ushort)(Index | (Sequence << 8));

        public OperationTag Tag(int owner) => new(OpId, owner, Fanout);
    }

    private OwnerOperation[] _ops = [];
    private int _streamingOps;

    private void InitializeRevoke()
    {
        int ops = _options.MaxOperations;
        _ops = new OwnerOperation[ops];
        for (int i = 0; i < ops; i++)
        {
            _ops[i] = new OwnerOperation(i);
        }

        _participations = new Participation[CoreCount * ops];
    }

    /// <summary>A domain revokes the capability in its slot: needs the Revoke right.</summary>
    internal ValueTask Revoke(CSpace cs, int slot, RevokeMode mode)
    {
        CheckThread();
        // The initiator's span: the MARK/COMMIT messages queued below carry it to every core.
        using Activity? span = MessageTracing.StartProtocol(ProtocolSpanNames.Revoke, Core, ActivityKind.Client);
        span?.SetTag("multikernel.revoke.mode", mode == RevokeMode.Unicast ? "unicast" : "multicast");
        if (mode is not (RevokeMode.Unicast or RevokeMode.Multicast))
        {
            throw new ArgumentOutOfRangeException(nameof(mode), mode, "Unknown revoke mode.");
        }

        int r = LookUpUsable(cs, slot, "revoke");
        ref RefRecord rec = ref _refs[r];
        CheckRight(cs, slot, in rec, CapabilityRights.Revoke, "revoke it (revoking needs the Revoke right: the original, or a copy minted with it)");
        EnsureOutbox(cs, "revoke");
        PendingOperation p = AllocatePending(cs, "revoke");
        p.IsMove = false;
        p.RefIndex = r;
        p.RefGeneration = _refGenerations[r];
        if (rec.Owner == Core)
        {
            Status status = StartRevoke(rec.Object, Core, r, _refGenerations[r], 0, mode, deleteRoot: false, requesterCore: Core, requestId: p.RequestId);
            if (status != Status.Ok)
            {
                ReleasePendingUnused(p);
                throw StatusException(status, $"revoke of slot {slot} of {cs}");
            }

            // Completed already when no other core holds a copy; otherwise when the acks are in.
            return new ValueTask(p, p.Version);
        }

        Send(rec.Owner, new RevokeRequestMessage(p.RequestId, rec.Object, rec.ObjectGeneration, mode).Encode(), cs);
        return new ValueTask(p, p.Version);
    }

    private void OnRevokeRequest(int from, RevokeRequestMessage m)
    {
        Status status;
        if ((uint)m.Object >= (uint)_objects.Length || _objects[m.Object].State == ObjectState.Free || _objects[m.Object].Generation != m.Generation)
        {
            status = Status.Revoked;
        }
        else if (m.Mode is not (RevokeMode.Unicast or RevokeMode.Multicast))
        {
            status = Status.Limit;
        }
        else
        {
            // The kept copy is on the requester core; it names it by its pending operation there.
            status = StartRevoke(m.Object, from, -1, 0, m.RequestId, m.Mode, deleteRoot: false, from, m.RequestId);
        }

        if (status != Status.Ok)
        {
            Send(from, new DoneMessage(MsgRevokeDone, m.RequestId, status).Encode());
        }
    }

    /// <summary>
    /// Starts a revoke (delete every copy of <paramref name="root"/> but the kept one, and every
    /// object derived from it) or, with <paramref name="deleteRoot"/>, a cascading delete.
    /// The kept copy is (<paramref name="keepRef"/>, its generation) when it is on this core, or
    /// the copy that pending operation <paramref name="keepRequest"/> names on <paramref name="keepCore"/>.
    /// Returns Ok when started (it may already have finished), Busy when another operation
    /// covers part of the tree (refused at once, never queued), Limit when the operation table is full.
    /// </summary>
    private Status StartRevoke(int root, int keepCore, int keepRef, uint keepRefGeneration, uint keepRequest, RevokeMode mode, bool deleteRoot, int requesterCore, uint requestId)
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

        if (!CollectTree(op, root))
        {
            return Status.Busy;
        }

        op.Active = true;
        op.Sequence++;
        op.Root = root;
        op.DeleteRoot = deleteRoot;
        op.KeepCore = keepCore;
        op.KeepRef = keepRef;
        op.KeepRefGeneration = keepRefGeneration;
        op.KeepRequest = keepRequest;
        op.RequesterCore = requesterCore;
        op.RequestId = requestId;
        op.Mode = mode;
        op.Fanout = _options.MulticastFanout;
        op.Phase = OpPhase.Mark;
        op.SumMarked = 0;
        op.AckMask = 0;
        op.LocalMarkedHead = -1;
        op.Targets = 0;
        op.LastNodeAny = -1;
        Array.Fill(op.LastNodeForCore, -1);

        // Mark this core's own copies directly and work out who else must hear of the tree.
        ulong self = Bit(Core);
        bool ownRootLeft = false;
        int ownKeep = keepCore == Core ? keepRef : -1;
        for (int n = op.ListHead; n != -1; n = _objects[n].OpNext)
        {
            bool isRoot = n == root;
            ownRootLeft |= MarkCopies(Core, n, _objects[n].Generation, isRoot, ownKeep, keepRefGeneration, ref op.LocalMarkedHead, ref op.SumMarked);
            ulong others = _objects[n].Mask & ~self;
            _objects[n].OpMask = others;
            if (others != 0)
            {
                op.Targets |= others;
                op.LastNodeAny = n;
                for (ulong bits = others; bits != 0; bits &= bits - 1)
                {
                    op.LastNodeForCore[BitOperations.TrailingZeroCount(bits)] = n;
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
                    op.Mode = RevokeMode.Unicast;
                    break;
                }
            }
        }

        if (op.Mode == RevokeMode.Multicast)
        {
            op.ChunkCount = SplitTree(op.Targets, op.Fanout, op.Chunks);
        }

        // Every target acknowledges the owner itself, in either mode.
        op.PendingAcks = BitOperations.PopCount(op.Targets);
        BeginStream(op, StreamState.Mark);
        return Status.Ok;
    }

    /// <summary>Collects the tree under <paramref name="root"/> in pre-order into the operation's list and marks its objects; false (nothing changed) when part of it is busy.</summary>
    private bool CollectTree(OwnerOperation op, int root)
    {
        op.ListHead = root;
        op.ListTail = root;
        _objects[root].OpPrev = -1;
        _objects[root].OpNext = -1;
        _objects[root].State = ObjectState.Revoking;
        int node = _objects[root].FirstChild;
        while (node != -1 && node != root)
        {
            if (_objects[node].State != ObjectState.Live)
            {
                for (int n = op.ListHead; n != -1; n = _objects[n].OpNext)
                {
                    _objects[n].State = ObjectState.Live;
                }

                return false;
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

        return true;
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

    private void BeginStream(OwnerOperation op, StreamState state)
    {
        op.Streaming = state;
        op.CursorCore = BitOperations.TrailingZeroCount(op.Targets);
        op.CursorNode = op.ListHead;
        op.CursorGroup = 0;
        _streamingOps++;
        Stream(op);
    }

    private void EndStream(OwnerOperation op)
    {
        op.Streaming = StreamState.None;
        _streamingOps--;
    }

    /// <summary>The next target core after <paramref name="core"/>, or 64 when none.</summary>
    private static int NextCore(ulong targets, int core)
    {
        ulong rest = core >= 63 ? 0 : targets & ~((Bit(core) << 1) - 1);
        return rest == 0 ? 64 : BitOperations.TrailingZeroCount(rest);
    }

    /// <summary>Sends as much of an operation's MARK or COMMIT stream as the outbox allows (keeping half of it for replies and domains).</summary>
    private void Stream(OwnerOperation op)
    {
        int keepFree = Math.Max(_reserve, _outCore.Length / 2);
        OperationTag tag = op.Tag(Core);
        while (op.Streaming != StreamState.None && OutboxFree > keepFree)
        {
            bool multicast = op.Mode == RevokeMode.Multicast;
            if (op.Streaming == StreamState.Mark && !multicast)
            {
                // Core-major: every object a core holds copies of, the last one flagged.
                int c = op.CursorCore;
                if (c >= 64)
                {
                    EndStream(op);
                    break;
                }

                int n = op.CursorNode;
                while (n != -1 && (_objects[n].OpMask & Bit(c)) == 0)
                {
                    n = _objects[n].OpNext;
                }

                if (n == -1)
                {
                    op.CursorCore = NextCore(op.Targets, c);
                    op.CursorNode = op.ListHead;
                    continue;
                }

                SendMark(op, tag, n, c, Bit(c), n == op.LastNodeForCore[c]);
                op.CursorNode = _objects[n].OpNext;
            }
            else if (op.Streaming == StreamState.Mark)
            {
                // Multicast: every object with remote copies goes to every relay of the tree.
                int n = op.CursorNode;
                while (n != -1 && _objects[n].OpMask == 0)
                {
                    n = _objects[n].OpNext;
                }

                if (n == -1)
                {
                    EndStream(op);
                    break;
                }

                ulong chunk = op.Chunks[op.CursorGroup];
                SendMark(op, tag, n, BitOperations.TrailingZeroCount(chunk), chunk, n == op.LastNodeAny);
                if (++op.CursorGroup == op.ChunkCount)
                {
                    op.CursorNode = _objects[n].OpNext;
                    op.CursorGroup = 0;
                }
                else
                {
                    op.CursorNode = n;
                }
            }
            else if (multicast)
            {
                // COMMIT: one message per relay; the relays forward down the same tree.
                if (op.CursorGroup >= op.ChunkCount)
                {
                    EndStream(op);
                    break;
                }

                ulong chunk = op.Chunks[op.CursorGroup++];
                Send(BitOperations.TrailingZeroCount(chunk), new CommitMessage(MsgCommit, tag, chunk).Encode());
            }
            else
            {
                // COMMIT: one message per target core.
                int c = op.CursorCore;
                if (c >= 64)
                {
                    EndStream(op);
                    break;
                }

                Send(c, new CommitMessage(MsgCommit, tag, Bit(c)).Encode());
                op.CursorCore = NextCore(op.Targets, c);
            }
        }
    }

    private void SendMark(OwnerOperation op, OperationTag tag, int n, int core, ulong subtree, bool last)
    {
        bool root = n == op.Root;
        int flags = (last ? FlagLast : 0) | (root ? FlagRoot : 0);
        // Only the root has a kept copy, and only a remote requester's needs naming.
        int keepCore = root && op.KeepCore >= 0 && op.KeepCore != Core ? op.KeepCore : -1;
        Send(core, new MarkMessage(n, _objects[n].Generation, tag, flags, keepCore, keepCore >= 0 ? op.KeepRequest : 0, subtree).Encode());
    }

    private OwnerOperation RunningOperation(OperationTag tag)
    {
        OwnerOperation op = _ops[tag.Slot];
        Invariant(op.Active && op.OpId == tag.OpId, "an acknowledgement for an operation that is not running");
        return op;
    }

    private void OnMarkAck(int from, MarkAckMessage m)
    {
        OwnerOperation op = RunningOperation(m.Op);
        Invariant(op.Phase == OpPhase.Mark && (op.Targets & Bit(from)) != 0, "a MARK-ACK out of phase or from a core that was not a target");
        op.SumMarked += m.RootMarked;
        op.AckMask |= m.Holds ? Bit(from) : 0;
        if (--op.PendingAcks == 0)
        {
            FinishMark(op);
        }
    }

    private void OnCommitAck(CommitMessage m)
    {
        OwnerOperation op = RunningOperation(m.Op);
        Invariant(op.Phase == OpPhase.Commit, "a COMMIT-ACK out of phase");
        if (--op.PendingAcks == 0)
        {
            FinishCommit(op);
        }
    }

    private void FinishMark(OwnerOperation op)
    {
        // Every core holding a copy has marked it and will not use or pass it on; now delete.
        op.Phase = OpPhase.Commit;
        DeleteMarkedList(op.LocalMarkedHead);
        op.LocalMarkedHead = -1;
        if (op.Targets == 0)
        {
            FinishCommit(op);
            return;
        }

        op.PendingAcks = BitOperations.PopCount(op.Targets);
        BeginStream(op, StreamState.Commit);
    }

    private void FinishCommit(OwnerOperation op)
    {
        // Every core has deleted its marked copies (and acknowledged from its loop, so none of its
        // domains still holds a span of these frames): free the tree bottom-up, which bumps the
        // frames' generations and returns the memory to the parent RAM.
        int root = op.Root;
        ref ObjectRecord r = ref _objects[root];
        r.Total -= (int)op.SumMarked;
        Invariant(r.Total >= 0, "a revoke subtracted more copies than the owner counted");
        r.Mask |= op.AckMask;
        for (int n = op.ListTail; n != root;)
        {
            int prev = _objects[n].OpPrev;
            FreeObject(n);
            n = prev;
        }

        r.State = ObjectState.Live;
        r.OpNext = -1;
        r.OpPrev = -1;
        op.Active = false;
        // A revoke keeps its requester's copy, so the root lives on unless it was a delete.
        Invariant(op.DeleteRoot || op.KeepCore < 0 || r.Total > 0 || KeptCopyGone(op), "a revoke freed the root its revoker keeps");
        if (op.DeleteRoot || r.Total == 0)
        {
            FreeObject(root);
        }

        if (op.RequesterCore == Core)
        {
            CompletePending(op.RequestId, Status.Ok, "revoke");
        }
        else if (op.RequesterCore >= 0)
        {
            Send(op.RequesterCore, new DoneMessage(MsgRevokeDone, op.RequestId, Status.Ok).Encode());
        }
    }

    // The kept copy may have been deleted by its holder meanwhile (then the count may reach 0).
    private bool KeptCopyGone(OwnerOperation op) => op.KeepCore != Core || !_refs[op.KeepRef].Live || _refGenerations[op.KeepRef] != op.KeepRefGeneration;

    private void DeleteMarkedList(int head)
    {
        for (int r = head; r != -1;)
        {
            int next = _refs[r].NextMarked;
            ref RefRecord rec = ref _refs[r];
            if (rec.InTransit && !rec.Detached)
            {
                // A move in flight: the sender's pending transfer finds the copy gone.
                rec.InTransit = false;
            }

            if (!rec.Detached && HolderOf(in rec) is { } holder)
            {
                // The holder did not delete it: tell it (netd removes a revoked filter, a stack
                // sees its queues' region go), through its own CSpace and the core's hook.
                var notice = new CapabilityRevocation(rec.Domain, rec.Slot, rec.Type, rec.ObjectId);
                holder.QueueRevocation(in notice);
                CopyRevoked?.Invoke(notice);
            }

            FreeRef(r);
            r = next;
        }
    }

    /// <summary>
    /// Marks this core's copies of object (<paramref name="owner"/>, <paramref name="obj"/>,
    /// <paramref name="generation"/>) for a revoke, except the kept one (<paramref name="keepRef"/>
    /// with <paramref name="keepGeneration"/>: index and generation, so a recycled index is not
    /// mistaken for it). Root copies are counted. Returns true when a kept root copy remains.
    /// The one place copies are marked, for the owner and for participants.
    /// </summary>
    private bool MarkCopies(int owner, int obj, uint generation, bool isRoot, int keepRef, uint keepGeneration, ref int markedHead, ref long rootMarked)
    {
        bool kept = false;
        for (int r = _refMap.Get(owner, obj); r != -1; r = _refs[r].NextSame)
        {
            ref RefRecord rec = ref _refs[r];
            if (rec.ObjectGeneration != generation || rec.Marked)
            {
                continue;
            }

            if (isRoot && r == keepRef && _refGenerations[r] == keepGeneration)
            {
                kept = true;
                continue;
            }

            rec.Marked = true;
            rec.NextMarked = markedHead;
            markedHead = r;
            if (isRoot)
            {
                rootMarked++;
            }
        }

        return kept;
    }
}
