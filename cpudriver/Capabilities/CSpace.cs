using Multikernel.CpuDriver.Memory;

namespace Multikernel.CpuDriver.Capabilities;

/// <summary>
/// A domain's capability space: a bounded array of slots. The domain names capabilities only by
/// slot number; slots of other domains cannot be named, and no operation takes a kernel object
/// id from a domain. Every method runs on the domain's core (single-threaded, no locks).
/// </summary>
public sealed partial class CSpace
{
    private readonly CoreCapabilities _core;
    internal readonly int[] Slots;

    // Every slot below this index is occupied, so a search for a free slot starts here
    // (amortised O(1) for the usual take-lowest-free pattern instead of a scan per retype).
    private int _freeHint;

    // Grants received and not yet taken: (channel, slot, reference generation), a bounded FIFO
    // ring. The receiving kernel queues them; the domain takes them by channel.
    private readonly uint[] _grantChannels;
    private readonly int[] _grantSlots;
    private readonly uint[] _grantGenerations;
    private int _grantHead;

    internal CSpace(CoreCapabilities core, int id, uint generation, string name, int slots, int grants)
    {
        _core = core;
        Id = id;
        Generation = generation;
        Name = name;
        Slots = new int[slots];
        _grantChannels = new uint[grants];
        _grantSlots = new int[grants];
        _grantGenerations = new uint[grants];
        _revocations = new CapabilityRevocation[slots];
    }

    /// <summary>Domain id on its core (an index into the core's domain table; reused after the domain is destroyed).</summary>
    public int Id { get; }

    /// <summary>How many domains have had this id before (so a reused id is told apart from its predecessor).</summary>
    public uint Generation { get; }

    /// <summary>References this domain holds in the core's table (its share is bounded).</summary>
    internal int References { get; set; }

    /// <summary>Protocol messages this domain's operations have in the core's outbox (its share is bounded).</summary>
    internal int OutboxUsed { get; set; }

    /// <summary>Frames this domain has pinned.</summary>
    internal int Pins { get; set; }

    /// <summary>Grants received and not taken yet.</summary>
    internal int GrantsQueued { get; private set; }

    /// <summary>Called (on the core's thread, inside the protocol) when a grant was queued: a channel's reader wakes up.</summary>
    internal Action<uint>? GrantQueued { get; set; }

    internal bool TryQueueGrant(uint channel, int slot, uint generation)
    {
        if (GrantsQueued == _grantSlots.Length)
        {
            return false;
        }

        int i = (_grantHead + GrantsQueued) % _grantSlots.Length;
        _grantChannels[i] = channel;
        _grantSlots[i] = slot;
        _grantGenerations[i] = generation;
        GrantsQueued++;
        GrantQueued?.Invoke(channel);
        return true;
    }

    /// <summary>Removes the oldest grant queued for <paramref name="channel"/>, keeping the order of the others.</summary>
    internal bool TryDequeueGrant(uint channel, out int slot, out uint generation)
    {
        int n = _grantSlots.Length;
        for (int k = 0; k < GrantsQueued; k++)
        {
            int i = (_grantHead + k) % n;
            if (_grantChannels[i] != channel)
            {
                continue;
            }

            slot = _grantSlots[i];
            generation = _grantGenerations[i];
            // Close the gap: shift the older entries one place towards the tail.
            for (int j = k; j > 0; j--)
            {
                int to = (_grantHead + j) % n;
                int from = (_grantHead + j - 1) % n;
                _grantChannels[to] = _grantChannels[from];
                _grantSlots[to] = _grantSlots[from];
                _grantGenerations[to] = _grantGenerations[from];
            }

            _grantHead = (_grantHead + 1) % n;
            GrantsQueued--;
            return true;
        }

        slot = -1;
        generation = 0;
        return false;
    }

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

    /// <summary>Copies a capability into a free slot of this CSpace with the same or fewer rights (a copy never carries Revoke unless asked for and held).</summary>
    public int Copy(int slot, CapabilityRights rights = CapabilityRights.Read | CapabilityRights.Write | CapabilityRights.Grant) => _core.Copy(this, slot, this, rights, requireGrant: false);

    /// <summary>
    /// Mints a revocable sub-copy: a new object derived from the capability in <paramref name="slot"/>
    /// (same memory or kernel object, rights diminished to <paramref name="rights"/>), placed in a free
    /// slot of this CSpace with the Revoke right. Copies of it can be passed on; revoking it removes
    /// them all and leaves the original and its other sub-copies alone (netd: one per application).
    /// Runs on the object's owner core.
    /// </summary>
    public int Mint(int slot, CapabilityRights rights = CapabilityRights.All) => _core.Mint(this, slot, rights);

    /// <summary>Copies a capability into another domain's CSpace on the same core (needs Grant). Kernel and monitor only.</summary>
    internal int CopyTo(int slot, CSpace target, CapabilityRights rights = CapabilityRights.Read | CapabilityRights.Write | CapabilityRights.Grant) => _core.Copy(this, slot, target, rights, requireGrant: true);

    /// <summary>Moves a capability to another domain's CSpace on the same core (needs Grant). The slot is empty afterwards. Kernel and monitor only.</summary>
    internal int MoveTo(int slot, CSpace target) => _core.Move(this, slot, target);

    /// <summary>Retypes part of a RAM capability into a new object of <paramref name="frames"/> frames; returns its slot.</summary>
    public int Retype(int ramSlot, CapabilityType type, int frames = 1) => _core.Retype(this, ramSlot, type, frames);

    /// <summary>Deletes the capability in the slot. Deleting the last copy of an object deletes the object and everything derived from it.</summary>
    public void Delete(int slot) => _core.Delete(this, slot);

    /// <summary>Revokes (needs the Revoke right): deletes every other copy of the capability and every object derived from it, on every core. The slot keeps the capability.</summary>
    public ValueTask RevokeAsync(int slot, RevokeMode mode = RevokeMode.Unicast) => _core.Revoke(this, slot, mode);

    /// <summary>
    /// Passes the capability to the domain behind <paramref name="channel"/> (the receiving core's end
    /// of a channel, resolved there) on core <paramref name="toCore"/> (needs Grant). Kernel and
    /// monitor only: a domain passes capabilities through its <c>DomainChannel</c>, so it can reach
    /// only domains it is bound to. The receiver takes it with <see cref="TakeGrant(uint)"/>.
    /// </summary>
    internal ValueTask TransferAsync(int slot, int toCore, uint channel, TransferMode mode, CapabilityRights rights = CapabilityRights.All) =>
        _core.Transfer(this, slot, toCore, channel, mode, rights);

    /// <summary>The slot of the oldest capability received on <paramref name="channel"/> that is still there, or -1. Learned from this core's kernel, never from a peer.</summary>
    internal int TakeGrant(uint channel) => _core.TakeGrant(this, channel, out _);

    /// <summary>
    /// As <see cref="TakeGrant(uint)"/>, and how many grants left the queue (the one taken and any
    /// revoked before it was taken): each was one grant credit of the channel's sender.
    /// </summary>
    internal int TakeGrant(uint channel, out int dequeued) => _core.TakeGrant(this, channel, out dequeued);

    /// <summary>Offers the frame in <paramref name="slot"/> for one page swap: until then no swap can take it.</summary>
    public void PostFrame(int slot) => _core.PostFrame(this, slot);

    /// <summary>A generation-checked view of a Frame or DevFrame capability.</summary>
    public FrameHandle GetFrame(int slot) => _core.GetFrame(this, slot);

    /// <summary>
    /// Page swap ("become"): this domain's frame in <paramref name="slot"/> and <paramref name="other"/>'s frame in
    /// <paramref name="otherSlot"/> change holders; no byte is copied. Handles taken before from either slot fail afterwards.
    /// The other side must have offered its frame with <see cref="PostFrame"/> (the offer is used up).
    /// </summary>
    public void SwapFrames(int slot, CSpace other, int otherSlot) => _core.SwapFrames(this, slot, other, otherSlot);

    /// <summary>Free frames in the RAM capabilities this domain holds (its remaining budget).</summary>
    public long FreeRamFrames => _core.FreeRamFrames(this);

    public override string ToString() => $"domain '{Name}' (core {Core}, id {Id})";
}
