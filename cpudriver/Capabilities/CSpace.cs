using Multikernel.CpuDriver.Memory;

namespace Multikernel.CpuDriver.Capabilities;

/// <summary>
/// A domain's capability space: a bounded array of slots. The domain names capabilities only by
/// slot number; slots of other domains cannot be named, and no operation takes a kernel object
/// id from a domain. Every method runs on the domain's core (single-threaded, no locks).
/// </summary>
public sealed class CSpace
{
    private readonly CoreCapabilities _core;
    internal readonly int[] Slots;

    // Every slot below this index is occupied, so a search for a free slot starts here
    // (amortised O(1) for the usual take-lowest-free pattern instead of a scan per retype).
    private int _freeHint;

    internal CSpace(CoreCapabilities core, int id, string name, int slots)
    {
        _core = core;
        Id = id;
        Name = name;
        Slots = new int[slots];
    }

    /// <summary>Domain id on its core (what a transfer names as destination).</summary>
    public int Id { get; }

    /// <summary>Domain name (diagnostics and error messages).</summary>
    public string Name { get; }

    /// <summary>The core this CSpace lives on.</summary>
    public int Core => _core.Core;

    // Internal on purpose: a domain gets its CSpace, and must not reach the core's privileged
    // surface (CreateRoot, other domains' CSpaces) through it.
    internal CoreCapabilities Capabilities => _core;

    /// <summary>Number of slots.</summary>
    public int SlotCount => Slots.Length;

    /// <summary>True once the domain was destroyed.</summary>
    public bool IsDestroyed { get; internal set; }

    /// <summary>Slots holding a capability.</summary>
    public int UsedSlots
    {
        get
        {
            int n = 0;
            foreach (int s in Slots)
            {
                n += s != 0 ? 1 : 0;
            }

            return n;
        }
    }

    /// <summary>The lowest free slot, or -1 when the CSpace is full.</summary>
    internal int FindFree()
    {
        int[] slots = Slots;
        for (int i = _freeHint; i < slots.Length; i++)
        {
            if (slots[i] == 0)
            {
                _freeHint = i;
                return i;
            }
        }

        _freeHint = slots.Length;
        return -1;
    }

    /// <summary>Empties a slot.</summary>
    internal void Vacate(int slot)
    {
        Slots[slot] = 0;
        if (slot < _freeHint)
        {
            _freeHint = slot;
        }
    }

    /// <summary>True when the slot holds no usable capability.</summary>
    public bool IsEmpty(int slot) => _core.IsEmpty(this, slot);

    /// <summary>What the slot holds.</summary>
    public CapabilityInfo Inspect(int slot) => _core.Inspect(this, slot);

    /// <summary>Copies (mints) a capability into a free slot of this CSpace with the same or fewer rights.</summary>
    public int Copy(int slot, CapabilityRights rights = CapabilityRights.All) => _core.Copy(this, slot, this, rights, requireGrant: false);

    /// <summary>Copies a capability into another domain's CSpace on the same core (needs Grant).</summary>
    public int CopyTo(int slot, CSpace target, CapabilityRights rights = CapabilityRights.All) => _core.Copy(this, slot, target, rights, requireGrant: true);

    /// <summary>Moves a capability to another domain's CSpace on the same core (needs Grant). The slot is empty afterwards.</summary>
    public int MoveTo(int slot, CSpace target) => _core.Move(this, slot, target);

    /// <summary>Retypes part of a RAM capability into a new object of <paramref name="frames"/> frames; returns its slot.</summary>
    public int Retype(int ramSlot, CapabilityType type, int frames = 1) => _core.Retype(this, ramSlot, type, frames);

    /// <summary>Deletes the capability in the slot. Deleting the last copy of an object deletes the object and everything derived from it.</summary>
    public void Delete(int slot) => _core.Delete(this, slot);

    /// <summary>Revokes: deletes every other copy of the capability and every object derived from it, on every core. The slot keeps the capability.</summary>
    public ValueTask RevokeAsync(int slot, RevokeMode mode = RevokeMode.Unicast) => _core.Revoke(this, slot, mode);

    /// <summary>Passes the capability to domain <paramref name="toDomain"/> on core <paramref name="toCore"/> (needs Grant); completes with the receiver's slot.</summary>
    public ValueTask<int> TransferAsync(int slot, int toCore, int toDomain, TransferMode mode, CapabilityRights rights = CapabilityRights.All) =>
        _core.Transfer(this, slot, toCore, toDomain, mode, rights);

    /// <summary>A generation-checked view of a Frame or DevFrame capability.</summary>
    public FrameHandle GetFrame(int slot) => _core.GetFrame(this, slot);

    /// <summary>
    /// Page swap ("become"): this domain's frame in <paramref name="slot"/> and <paramref name="other"/>'s frame in
    /// <paramref name="otherSlot"/> change holders; no byte is copied. Handles taken before from either slot fail afterwards.
    /// </summary>
    public void SwapFrames(int slot, CSpace other, int otherSlot) => _core.SwapFrames(this, slot, other, otherSlot);

    /// <summary>Free frames in the RAM capabilities this domain holds (its remaining budget).</summary>
    public long FreeRamFrames => _core.FreeRamFrames(this);

    public override string ToString() => $"domain '{Name}' (core {Core}, id {Id})";
}
