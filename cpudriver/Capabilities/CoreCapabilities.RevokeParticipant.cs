using System.Numerics;

namespace Multikernel.CpuDriver.Capabilities;

// Revoke, participant side: mark this core's copies of every object a MARK names, forward MARK
// and COMMIT down the multicast tree when this core is a relay, and acknowledge the owner
// directly (see CoreCapabilities.RevokeOwner.cs for why acks are never relayed).
public sealed partial class CoreCapabilities
{
    /// <summary>This core's part in another owner's revoke (as target and, in multicast, as relay).</summary>
    private struct Participation
    {
        public bool Active;
        public ushort OpId;
        public long RootMarked;
        public bool RootKept;
        public int MarkedHead;
    }

    private Participation[] _participations = [];

    private ref Participation ParticipationFor(OperationTag op) => ref _participations[(op.Owner * _ops.Length) + op.Slot];

    /// <summary>Forwards a MARK or COMMIT to this relay's share of <paramref name="subtree"/> (the one place the fan-out is written).</summary>
    private void ForwardDown(in Urpc.Message message, ulong subtree, int fanout)
    {
        ulong rest = subtree & ~Bit(Core);
        if (rest == 0)
        {
            return;
        }

        Span<ulong> chunks = stackalloc ulong[8];
        int groups = SplitTree(rest, fanout, chunks);
        for (int g = 0; g < groups; g++)
        {
            Urpc.Message forward = message;
            forward.Word2 = chunks[g];
            Send(BitOperations.TrailingZeroCount(chunks[g]), in forward);
        }
    }

    private void OnMark(MarkMessage m)
    {
        Invariant(m.Op.Owner != Core, "a MARK for this core's own operation came back to it");
        ref Participation p = ref ParticipationFor(m.Op);
        if (!p.Active || p.OpId != m.Op.OpId)
        {
            Invariant(!p.Active, "a participation slot was reused before its operation finished");
            p = default;
            p.Active = true;
            p.OpId = m.Op.OpId;
            p.MarkedHead = -1;
        }

        // Forward down the multicast tree first, so the subtree works in parallel with us.
        ForwardDown(m.Encode(), m.Subtree, m.Op.Fanout);

        bool isRoot = (m.Flags & FlagRoot) != 0;
        int keepRef = -1;
        uint keepGeneration = 0;
        if (isRoot && m.KeepCore == Core)
        {
            // The revoker is a domain of this core: its pending revoke names the copy it keeps.
            int index = (int)(m.KeepRequest & 0xFFFF);
            if (index < _pending.Length)
            {
                PendingOperation keeper = _pending[index];
                if (keeper.InUse && !keeper.IsMove && (ushort)keeper.Version == (ushort)(m.KeepRequest >> 16))
                {
                    keepRef = keeper.RefIndex;
                    keepGeneration = keeper.RefGeneration;
                }
            }
        }

        p.RootKept |= MarkCopies(m.Op.Owner, m.Object, m.Generation, isRoot, keepRef, keepGeneration, ref p.MarkedHead, ref p.RootMarked);
        if ((m.Flags & FlagLast) != 0)
        {
            // Straight to the owner, behind every AddRef/Release this core sent it before.
            Send(m.Op.Owner, new MarkAckMessage(m.Op, p.RootMarked, p.RootKept).Encode());
        }
    }

    private void OnCommit(CommitMessage m)
    {
        ref Participation p = ref ParticipationFor(m.Op);
        Invariant(p.Active && p.OpId == m.Op.OpId, "a COMMIT for an operation this core never marked");
        ForwardDown(m.Encode(), m.Subtree, m.Op.Fanout);
        DeleteMarkedList(p.MarkedHead);
        p = default;
        Send(m.Op.Owner, new CommitMessage(MsgCommitAck, m.Op, 0).Encode());
    }
}
