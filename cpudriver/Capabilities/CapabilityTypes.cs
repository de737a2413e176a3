namespace Multikernel.CpuDriver.Capabilities;

/// <summary>Kinds of capability (KeyKOS/EROS/seL4 lineage, Barrelfish's set).</summary>
public enum CapabilityType : byte
{
    /// <summary>No capability (an empty slot).</summary>
    None = 0,

    /// <summary>Untyped memory: retyped into every other memory-backed object.</summary>
    Ram = 1,

    /// <summary>Page frames a domain may read/write through a <see cref="Memory.FrameHandle"/>.</summary>
    Frame = 2,

    /// <summary>Device buffer pages: retyped from the Nic capability (its device region, reserved from the arena at boot), so only the Nic holder obtains them.</summary>
    DevFrame = 3,

    /// <summary>Capability storage (one 4 KiB frame holds 256 slots), retyped from RAM.</summary>
    CNode = 4,

    /// <summary>A channel endpoint, retyped from RAM (one frame).</summary>
    Endpoint = 5,

    /// <summary>A dispatcher (domain on a core), retyped from RAM (one frame).</summary>
    Dispatcher = 6,

    /// <summary>The network interface: one root per machine, created at boot on <see cref="CapabilityOptions.NicCore"/>; moved, never copied. It covers the device region, retyped into DevFrames.</summary>
    Nic = 7,

    /// <summary>The right to receive packets matching one installed filter: retyped from the installer's RAM (one frame, billed to it).</summary>
    PacketFilter = 8,

    /// <summary>Kernel authority (held by the monitor).</summary>
    Kernel = 9,
}

/// <summary>Rights carried by a capability. Copies may only diminish them.</summary>
[Flags]
public enum CapabilityRights : byte
{
    /// <summary>No rights.</summary>
    None = 0,

    /// <summary>Read the object (frame bytes).</summary>
    Read = 1,

    /// <summary>Write the object; for RAM, retype it.</summary>
    Write = 2,

    /// <summary>Pass the capability on to another domain (copy or move over a channel).</summary>
    Grant = 4,

    /// <summary>
    /// Revoke the capability: delete every other copy and everything derived from it. Retype and
    /// CreateRoot give it to the original; a copy carries it only when minted with it, so a
    /// diminished copy cannot revoke the original it came from.
    /// </summary>
    Revoke = 8,

    /// <summary>Read, write, grant and revoke.</summary>
    All = Read | Write | Grant | Revoke,
}

/// <summary>How a capability is passed to another domain.</summary>
public enum TransferMode
{
    /// <summary>The receiver gets a copy (rights may be diminished); the sender keeps its own.</summary>
    Copy = 0,

    /// <summary>The capability leaves the sender's CSpace and arrives in the receiver's.</summary>
    Move = 1,
}

/// <summary>How the owner core reaches the cores holding copies during revoke or delete.</summary>
public enum RevokeMode
{
    /// <summary>The owner sends to each core itself and collects every acknowledgement.</summary>
    Unicast = 0,

    /// <summary>The owner sends to a few cores that forward to their subtree and aggregate acknowledgements.</summary>
    Multicast = 1,
}

/// <summary>What a slot holds, for inspection.</summary>
/// <param name="Type">Capability type.</param>
/// <param name="Rights">Rights of this copy.</param>
/// <param name="FrameCount">Frames covered (memory types), else 0.</param>
/// <param name="OwnerCore">Core that owns the object and sequences operations on it.</param>
/// <param name="ObjectId">Kernel object id for non-memory types (filter id, endpoint id), else 0.</param>
public readonly record struct CapabilityInfo(CapabilityType Type, CapabilityRights Rights, int FrameCount, int OwnerCore, ulong ObjectId);

/// <summary>A copy a revoke removed from a domain's CSpace (not one its holder deleted), reported on the holder's core.</summary>
/// <param name="Domain">The holding domain's id on this core.</param>
/// <param name="Slot">The slot it was in (empty now).</param>
/// <param name="Type">Its type.</param>
/// <param name="ObjectId">Kernel object id (a PacketFilter's filter id, ...), else 0.</param>
public readonly record struct CapabilityRevocation(int Domain, int Slot, CapabilityType Type, ulong ObjectId);

/// <summary>A kernel object, as reported when it is deleted.</summary>
/// <param name="Type">Its type.</param>
/// <param name="ObjectId">Kernel object id given to <c>CreateRoot</c> (filter id, ...), else 0.</param>
/// <param name="BaseFrame">First frame (memory-backed types), else 0.</param>
/// <param name="FrameCount">Frames (memory-backed types), else 0.</param>
public readonly record struct CapabilityObject(CapabilityType Type, ulong ObjectId, int BaseFrame, int FrameCount);
