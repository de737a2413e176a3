using Multikernel.CpuDriver.Urpc;

namespace Multikernel.CpuDriver.Capabilities;

// The protocol's messages, one typed struct each. A struct's Encode and Decode sit side by side,
// so the bit layout of every message is written exactly once; handlers never shift bits.
// Field widths: objects fit 24 bits (MaxObjectsPerCore <= 2^24), operations and transfers
// 8 bits (MaxOperations <= 256), cores 8 bits (at most 64), rights 8 bits.
public sealed partial class CoreCapabilities
{
    /// <summary>C -> A: copy (or move) the object to the domain behind <see cref="Channel"/> on <see cref="Destination"/>.</summary>
    private readonly record struct CopyRequestMessage(uint RequestId, int Object, uint Generation, CapabilityRights Rights, int Destination, TransferMode Mode, uint Channel)
    {
        public Message Encode() => Message.Create(MsgCopyRequest,
            RequestId | ((ulong)Generation << 32),
            (uint)Object | ((ulong)(byte)Rights << 24) | ((ulong)(byte)Destination << 32) | ((ulong)(byte)Mode << 40),
            Channel);

        public static CopyRequestMessage Decode(in Message m) => new(
            (uint)m.Word0, (int)(m.Word1 & 0xFFFFFF), (uint)(m.Word0 >> 32), (CapabilityRights)(byte)(m.Word1 >> 24),
            (byte)(m.Word1 >> 32), (TransferMode)(byte)(m.Word1 >> 40), (uint)m.Word2);
    }

    /// <summary>A -> D: install a reference to the object for the domain behind <see cref="Channel"/>.</summary>
    private readonly record struct InstallMessage(int Transfer, ushort Version, CapabilityRights Rights, int Object, uint Generation, CapabilityType Type, uint Channel, ulong Payload)
    {
        public Message Encode() => Message.Create(MsgInstall,
            (uint)(byte)Transfer | ((uint)Version << 8) | ((ulong)(byte)Rights << 24) | ((ulong)Generation << 32),
            (uint)Object | ((ulong)(byte)Type << 24) | ((ulong)Channel << 32),
            Payload);

        public static InstallMessage Decode(in Message m) => new(
            (byte)m.Word0, (ushort)(m.Word0 >> 8), (CapabilityRights)(byte)(m.Word0 >> 24), (int)(m.Word1 & 0xFFFFFF),
            (uint)(m.Word0 >> 32), (CapabilityType)(byte)(m.Word1 >> 24), (uint)(m.Word1 >> 32), m.Word2);

        /// <summary>Memory types carry (base frame, frame count), others their kernel object id.</summary>
        public static ulong PayloadOf(in ObjectRecord o) => IsMemoryType(o.Type) ? (uint)o.BaseFrame | ((ulong)(uint)o.FrameCount << 32) : o.ObjectId;
    }

    /// <summary>D -> A: how the install went. Carries no slot: only the receiver's own kernel tells the receiver where it landed.</summary>
    private readonly record struct InstallResultMessage(int Transfer, ushort Version, Status Status)
    {
        public Message Encode() => Message.Create(MsgInstallResult, (uint)(byte)Transfer | ((uint)Version << 8) | ((ulong)(byte)Status << 24));

        public static InstallResultMessage Decode(in Message m) => new((byte)m.Word0, (ushort)(m.Word0 >> 8), (Status)(byte)(m.Word0 >> 24));
    }

    /// <summary>A -> C: the transfer (or revoke) request ended with <see cref="Status"/>.</summary>
    private readonly record struct DoneMessage(ushort Type, uint RequestId, Status Status)
    {
        public Message Encode() => Message.Create(Type, RequestId | ((ulong)(byte)Status << 32));

        public static DoneMessage Decode(in Message m) => new(m.Type, (uint)m.Word0, (Status)(byte)(m.Word0 >> 32));
    }

    /// <summary>C -> A: one reference more (AddRef) or less (Release) to the object.</summary>
    private readonly record struct CountMessage(ushort Type, int Object, uint Generation)
    {
        public Message Encode() => Message.Create(Type, (uint)Object | ((ulong)Generation << 32));

        public static CountMessage Decode(in Message m) => new(m.Type, (int)(uint)m.Word0, (uint)(m.Word0 >> 32));
    }

    /// <summary>C -> A: revoke the object, keeping the requester's copy (the pending operation <see cref="RequestId"/> names it on C).</summary>
    private readonly record struct RevokeRequestMessage(uint RequestId, int Object, uint Generation, RevokeMode Mode)
    {
        public Message Encode() => Message.Create(MsgRevokeRequest, RequestId | ((ulong)Generation << 32), (uint)Object | ((ulong)(byte)Mode << 32));

        public static RevokeRequestMessage Decode(in Message m) => new((uint)m.Word0, (int)(uint)m.Word1, (uint)(m.Word0 >> 32), (RevokeMode)(byte)(m.Word1 >> 32));
    }

    /// <summary>Identifies one revoke or cascading delete: the owner core and its operation id (slot | sequence &lt;&lt; 8).</summary>
    private readonly record struct OperationTag(ushort OpId, int Owner, int Fanout)
    {
        public int Slot => OpId & 0xFF;

        public ulong Encode(int flags) => OpId | ((ulong)(byte)Owner << 16) | ((ulong)(byte)(flags | ((Fanout - 1) << 4)) << 24);

        public static OperationTag Decode(ulong word, out int flags)
        {
            int bits = (byte)(word >> 24);
            flags = bits & 0xF;
            return new OperationTag((ushort)word, (byte)(word >> 16), ((bits >> 4) & 0x7) + 1);
        }
    }

    /// <summary>
    /// A -> P (or relay -> P): mark your copies of the object. <see cref="KeepCore"/> is the core of
    /// the revoker's kept copy (-1 for none) and <see cref="KeepRequest"/> its pending operation there.
    /// </summary>
    private readonly record struct MarkMessage(int Object, uint Generation, OperationTag Op, int Flags, int KeepCore, uint KeepRequest, ulong Subtree)
    {
        public Message Encode() => Message.Create(MsgMark,
            (uint)Object | ((ulong)(byte)(KeepCore + 1) << 24) | ((ulong)Generation << 32),
            Op.Encode(Flags) | ((ulong)KeepRequest << 32),
            Subtree);

        public static MarkMessage Decode(in Message m)
        {
            OperationTag op = OperationTag.Decode(m.Word1, out int flags);
            return new MarkMessage((int)(m.Word0 & 0xFFFFFF), (uint)(m.Word0 >> 32), op, flags, (byte)(m.Word0 >> 24) - 1, (uint)(m.Word1 >> 32), m.Word2);
        }
    }

    /// <summary>P -> A directly (never relayed): this core marked <see cref="RootMarked"/> copies of the root and still holds copies (<see cref="Holds"/>).</summary>
    private readonly record struct MarkAckMessage(OperationTag Op, long RootMarked, bool Holds)
    {
        public Message Encode() => Message.Create(MsgMarkAck, (ulong)RootMarked, Op.Encode(0), Holds ? 1UL : 0UL);

        public static MarkAckMessage Decode(in Message m) => new(OperationTag.Decode(m.Word1, out _), (long)m.Word0, m.Word2 != 0);
    }

    /// <summary>A -> P (or relay -> P): delete your marked copies. P -> A directly: done (<see cref="MsgCommitAck"/>).</summary>
    private readonly record struct CommitMessage(ushort Type, OperationTag Op, ulong Subtree)
    {
        public Message Encode() => Message.Create(Type, 0, Op.Encode(0), Subtree);

        public static CommitMessage Decode(in Message m) => new(m.Type, OperationTag.Decode(m.Word1, out _), m.Word2);
    }
}
