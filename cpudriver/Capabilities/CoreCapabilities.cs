using System.Diagnostics;
using Multikernel.CpuDriver.Memory;

namespace Multikernel.CpuDriver.Capabilities;

/// <summary>
/// One core's capability system: the kernel objects this core owns (its share of the mapping
/// database: type, memory range, derivation tree, where copies live), the capability references
/// its domains hold (copies of local or remote objects), the domains' CSpaces, and the
/// distributed protocol that keeps the derivation tree exact across cores.
/// </summary>
/// <remarks>
/// <para>Single-threaded: every method runs on this core's kernel thread. Nothing here is shared
/// with another core; other cores are reached only through protocol messages
/// (<see cref="TryHandle"/> in, <see cref="Flush"/> out). All tables are preallocated from
/// <see cref="CapabilityOptions"/>; after construction no operation allocates, except the
/// <see cref="FrameHandle.Memory"/> wrapper a caller asks for.</para>
/// <para>Identity: an object is (owner core, index, generation). Every object derived from a core's
/// RAM is owned by that core for its whole life, so the derivation tree of any object lives on
/// one core and the owner sequences every operation on it (Barrelfish capops: owner as
/// sequencer). A copy on another core is a reference record naming the owner's object; the owner
/// counts references exactly and keeps a (superset) mask of the cores holding some.</para>
/// <para>Revoke/delete of a tree with remote copies is two-phase: MARK (each core marks its
/// copies of every object in the tree, refuses to use or pass them, acknowledges) then COMMIT
/// (each core deletes the marked copies, acknowledges); only then are the objects freed and their
/// frames' generations bumped and the memory returned to the parent RAM. A core processes
/// protocol messages only between domain run steps, so once it has acknowledged COMMIT none of its
/// domains holds a span of the freed frames.</para>
/// </remarks>
public sealed partial class CoreCapabilities
{
    private enum ObjectState : byte
    {
        Free = 0,
        Live = 1,
        Marked = 2,
        Revoking = 3,
    }

    private struct ObjectRecord
    {
        public ObjectState State;
        public CapabilityType Type;
        public CapabilityRights Rights;
        public bool Deferred;
        public uint Generation;
        public int BaseFrame;
        public int FrameCount;
        public ulong ObjectId;
        public int Parent;
        public int FirstChild;
        public int NextSibling;
        public int PrevSibling;
        public int UsedFrames;
        public int Total;
        public ulong Mask;
        public int OpNext;
        public int OpPrev;
        public ulong OpMask;
    }

    private struct RefRecord
    {
        public bool Live;
        public bool Marked;
        public bool InTransit;
        public bool Detached;
        public CapabilityType Type;
        public CapabilityRights Rights;
        public int Owner;
        public int Object;
        public uint ObjectGeneration;
        public int BaseFrame;
        public int FrameCount;
        public ulong ObjectId;
        public int Domain;
        public int Slot;
        public int NextSame;
        public int PrevSame;
        public int NextMarked;
    }

    private readonly PhysicalMemory _memory;
    private readonly CapabilityOptions _options;
    private readonly FrameRange _share;
    private readonly ObjectRecord[] _objects;
    private readonly int[] _freeObjects;
    private int _freeObjectCount;
    private int _firstRoot = -1;

    private readonly RefRecord[] _refs;
    private readonly uint[] _refGenerations;
    private readonly int[] _freeRefs;
    private int _freeRefCount;
    private readonly ObjectRefMap _refMap;

    private readonly CSpace?[] _domains;

    /// <summary>Creates the capability system of core <paramref name="core"/> of <paramref name="coreCount"/>, owning <paramref name="share"/> of <paramref name="memory"/>.</summary>
    public CoreCapabilities(int core, int coreCount, PhysicalMemory memory, FrameRange share, CapabilityOptions options)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(options);
        if (coreCount < 1 || coreCount > 64)
        {
            throw new ArgumentOutOfRangeException(nameof(coreCount), coreCount, "The capability protocol supports 1 to 64 cores.");
        }

        if (core < 0 || core >= coreCount)
        {
            throw new ArgumentOutOfRangeException(nameof(core), core, $"Core must be in 0..{coreCount - 1}.");
        }

        string? problem = options.Validate();
        if (problem is not null)
        {
            throw new ArgumentException(problem, nameof(options));
        }

        memory.CheckRange(share.BaseFrame, share.FrameCount);
        Core = core;
        CoreCount = coreCount;
        _memory = memory;
        _options = options;
        _share = share;

        _objects = new ObjectRecord[options.MaxObjectsPerCore];
        _freeObjects = new int[options.MaxObjectsPerCore];
        for (int i = 0; i < _freeObjects.Length; i++)
        {
            _freeObjects[i] = _freeObjects.Length - 1 - i;
        }

        _freeObjectCount = _freeObjects.Length;

        _refs = new RefRecord[options.MaxReferencesPerCore];
        _refGenerations = new uint[options.MaxReferencesPerCore];
        _freeRefs = new int[options.MaxReferencesPerCore];
        for (int i = 0; i < _freeRefs.Length; i++)
        {
            _freeRefs[i] = _freeRefs.Length - 1 - i;
        }

        _freeRefCount = _freeRefs.Length;
        _refMap = new ObjectRefMap(options.MaxReferencesPerCore);
        _domains = new CSpace?[options.MaxDomainsPerCore];

        InitializeProtocol();
    }

    /// <summary>This core.</summary>
    public int Core { get; }

    /// <summary>
    /// Called on this core when an object it owns is deleted (its last copy went, or it was revoked
    /// as a descendant): how the holder of the kernel resource behind a PacketFilter, Endpoint or
    /// Dispatcher learns to tear it down. Runs inside capability operations: it must not call back
    /// into this <see cref="CoreCapabilities"/>; queue the work instead.
    /// </summary>
    public Action<CapabilityObject>? ObjectDeleted { get; set; }

    /// <summary>Cores in the machine.</summary>
    public int CoreCount { get; }

    /// <summary>The physical memory arena.</summary>
    public PhysicalMemory Memory => _memory;

    /// <summary>The frames this core's boot RAM was carved from.</summary>
    public FrameRange Share => _share;

    /// <summary>Kernel objects this core owns.</summary>
    public int ObjectCount => _objects.Length - _freeObjectCount;

    /// <summary>Capability references held on this core.</summary>
    public int ReferenceCount => _refs.Length - _freeRefCount;

    /// <summary>Live domains.</summary>
    public int DomainCount
    {
        get
        {
            int n = 0;
            foreach (CSpace? d in _domains)
            {
                n += d is null ? 0 : 1;
            }

            return n;
        }
    }

    // ---------------------------------------------------------------- domains and roots

    /// <summary>Creates a domain's CSpace (bounded slots). Throws <see cref="CapabilityLimitException"/> when the core has no free domain.</summary>
    public CSpace CreateDomain(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        for (int i = 0; i < _domains.Length; i++)
        {
            if (_domains[i] is null)
            {
                var cs = new CSpace(this, i, name, _options.SlotsPerDomain);
                _domains[i] = cs;
                return cs;
            }
        }

        throw new CapabilityLimitException($"Core {Core} has no free domain (MaxDomainsPerCore = {_options.MaxDomainsPerCore}); cannot create '{name}'.");
    }

    /// <summary>
    /// Destroys a domain: deletes every capability in its CSpace (objects whose last copy goes are
    /// deleted with everything derived from them) and frees its domain id.
    /// </summary>
    public void DestroyDomain(CSpace domain)
    {
        CheckDomain(domain);
        int remote = 0;
        foreach (int s in domain.Slots)
        {
            remote += s != 0 && _refs[s - 1].Owner != Core ? 1 : 0;
        }

        if (OutboxFree < remote + _reserve)
        {
            throw new CapabilityBusyException($"Destroying {domain} releases {remote} remote capabilities but core {Core}'s protocol outbox has room for {OutboxFree - _reserve}; retry after the kernel loop has flushed it.");
        }

        for (int slot = 0; slot < domain.Slots.Length; slot++)
        {
            if (domain.Slots[slot] != 0)
            {
                DeleteRef(domain.Slots[slot] - 1);
            }
        }

        domain.IsDestroyed = true;
        _domains[domain.Id] = null;
    }

    /// <summary>The domain with this id on this core, or null.</summary>
    public CSpace? FindDomain(int id) => (uint)id < (uint)_domains.Length ? _domains[id] : null;

    /// <summary>
    /// Boot only: gives <paramref name="monitor"/> this core's Kernel capability, the authority to
    /// create root capabilities. Returns its slot. A core has at most one.
    /// </summary>
    public int CreateKernelCapability(CSpace monitor)
    {
        CheckDomain(monitor);
        for (int r = _firstRoot; r != -1; r = _objects[r].NextSibling)
        {
            if (_objects[r].Type == CapabilityType.Kernel)
            {
                throw new CapabilityException($"Core {Core} already has its Kernel capability; copy it instead.");
            }
        }

        return AddRoot(monitor, CapabilityType.Kernel, 0, 0, 0, CapabilityRights.All);
    }

    /// <summary>
    /// Creates an original capability that derives from nothing, on the authority of the Kernel
    /// capability in <paramref name="kernelSlot"/> of <paramref name="monitor"/>: this core's RAM,
    /// DevFrames for a driver, the Nic, a PacketFilter or Endpoint naming a kernel object. The new
    /// capability goes to a free slot of <paramref name="target"/>; its slot is returned. Memory
    /// roots must lie in this core's share and must not overlap other memory roots.
    /// </summary>
    public int CreateRoot(CSpace monitor, int kernelSlot, CSpace target, CapabilityType type, int baseFrame = 0, int frameCount = 0, ulong objectId = 0, CapabilityRights rights = CapabilityRights.All)
    {
        int k = LookUpUsable(monitor, kernelSlot, "create root capabilities");
        if (_refs[k].Type != CapabilityType.Kernel)
        {
            throw new CapabilityTypeException($"Creating root capabilities needs the Kernel capability; slot {kernelSlot} of {monitor} holds {_refs[k].Type}.");
        }

        if (_refs[k].Owner != Core)
        {
            throw new InsufficientRightsException($"Slot {kernelSlot} of {monitor} holds core {_refs[k].Owner}'s Kernel capability; roots on core {Core} need core {Core}'s.");
        }

        if (type == CapabilityType.Kernel)
        {
            throw new CapabilityTypeException("The Kernel capability is created once per core (CreateKernelCapability) and copied from there.");
        }

        CheckDomain(target);
        return AddRoot(target, type, baseFrame, frameCount, objectId, rights);
    }

    private int AddRoot(CSpace domain, CapabilityType type, int baseFrame, int frameCount, ulong objectId, CapabilityRights rights)
    {
        bool memoryType = IsMemoryType(type);
        if (type == CapabilityType.None)
        {
            throw new CapabilityTypeException("Cannot create a capability of type None.");
        }

        if (memoryType)
        {
            if (frameCount <= 0 || baseFrame < _share.BaseFrame || (long)baseFrame + frameCount > _share.EndFrame)
            {
                throw new ArgumentOutOfRangeException(nameof(baseFrame), $"A {type} root must cover frames inside core {Core}'s share {_share.BaseFrame}..{_share.EndFrame - 1} (asked {baseFrame}..{(long)baseFrame + frameCount - 1}).");
            }

            for (int r = _firstRoot; r != -1; r = _objects[r].NextSibling)
            {
                ref ObjectRecord o = ref _objects[r];
                if (IsMemoryType(o.Type) && baseFrame < o.BaseFrame + o.FrameCount && o.BaseFrame < baseFrame + frameCount)
                {
                    throw new CapabilityException($"Frames {baseFrame}..{baseFrame + frameCount - 1} overlap the {o.Type} root at {o.BaseFrame}..{o.BaseFrame + o.FrameCount - 1} on core {Core}.");
                }
            }

            if ((type == CapabilityType.Frame || type == CapabilityType.DevFrame) && frameCount > PhysicalMemory.MaxFramesPerHandle)
            {
                throw new ArgumentOutOfRangeException(nameof(frameCount), frameCount, $"A frame capability covers at most {PhysicalMemory.MaxFramesPerHandle} frames.");
            }
        }

        int slot = FindFreeSlot(domain);
        EnsureTables(1, 1);
        int obj = AllocateObject(type, rights, memoryType ? baseFrame : 0, memoryType ? frameCount : 0, objectId, parent: -1);
        _objects[obj].NextSibling = _firstRoot;
        _objects[obj].PrevSibling = -1;
        if (_firstRoot != -1)
        {
            _objects[_firstRoot].PrevSibling = obj;
        }

        _firstRoot = obj;
        _objects[obj].Total = 1;
        _objects[obj].Mask = Bit(Core);
        CreateRef(domain, slot, Core, obj, in _objects[obj], rights);
        return slot;
    }

    // ---------------------------------------------------------------- domain operations

    internal bool IsEmpty(CSpace cs, int slot)
    {
        CheckDomain(cs);
        CheckSlotNumber(cs, slot);
        int r = cs.Slots[slot] - 1;
        return r < 0 || _refs[r].InTransit;
    }

    internal CapabilityInfo Inspect(CSpace cs, int slot)
    {
        int r = LookUp(cs, slot);
        ref RefRecord rec = ref _refs[r];
        return new CapabilityInfo(rec.Type, rec.Rights, rec.FrameCount, rec.Owner, rec.ObjectId);
    }

    internal int Copy(CSpace source, int slot, CSpace target, CapabilityRights rights, bool requireGrant)
    {
        int r = LookUpUsable(source, slot, "copy");
        CheckDomain(target);
        ref RefRecord rec = ref _refs[r];
        CheckCopyable(source, slot, in rec, rights, requireGrant);
        int targetSlot = FindFreeSlot(target);
        EnsureTables(0, 1);
        if (rec.Owner != Core)
        {
            EnsureOutbox("copy");
        }

        int copy = CreateRef(target, targetSlot, rec.Owner, rec.Object, rec.ObjectGeneration, rec.Type, rights, rec.BaseFrame, rec.FrameCount, rec.ObjectId);
        AddReference(_refs[copy].Owner, _refs[copy].Object, _refs[copy].ObjectGeneration);
        return targetSlot;
    }

    internal int Move(CSpace source, int slot, CSpace target)
    {
        int r = LookUpUsable(source, slot, "move");
        CheckDomain(target);
        ref RefRecord rec = ref _refs[r];
        if ((rec.Rights & CapabilityRights.Grant) == 0)
        {
            throw new InsufficientRightsException($"Slot {slot} of {source} holds a {rec.Type} capability without the Grant right; it cannot be passed to another domain.");
        }

        if (ReferenceEquals(source, target))
        {
            return slot;
        }

        int targetSlot = FindFreeSlot(target);
        source.Vacate(slot);
        rec.Domain = target.Id;
        rec.Slot = targetSlot;
        target.Slots[targetSlot] = r + 1;
        // The sender's handles die with the move; the reference record itself is reused.
        _refGenerations[r]++;
        return targetSlot;
    }

    internal void SwapFrames(CSpace a, int slotA, CSpace b, int slotB)
    {
        int ra = LookUpUsable(a, slotA, "swap");
        int rb = LookUpUsable(b, slotB, "swap");
        ref RefRecord x = ref _refs[ra];
        ref RefRecord y = ref _refs[rb];
        if (!IsFrameType(x.Type) || !IsFrameType(y.Type))
        {
            throw new CapabilityTypeException($"Page swap exchanges two frames: slot {slotA} of {a} holds {x.Type}, slot {slotB} of {b} holds {y.Type}.");
        }

        if (x.FrameCount != y.FrameCount)
        {
            throw new CapabilityException($"Page swap needs frames of the same size: slot {slotA} of {a} has {x.FrameCount} frame(s), slot {slotB} of {b} has {y.FrameCount}.");
        }

        if ((x.Rights & CapabilityRights.Grant) == 0 || (y.Rights & CapabilityRights.Grant) == 0)
        {
            throw new InsufficientRightsException($"Page swap passes both frames on, so both need the Grant right (slot {slotA} of {a}: {x.Rights}; slot {slotB} of {b}: {y.Rights}).");
        }

        if (ra == rb)
        {
            return;
        }

        // Exchange the holders: no byte moves. Both copies' generations are bumped so neither
        // side keeps a handle into the frame it gave away.
        a.Slots[slotA] = rb + 1;
        b.Slots[slotB] = ra + 1;
        (x.Domain, x.Slot, y.Domain, y.Slot) = (b.Id, slotB, a.Id, slotA);
        _refGenerations[ra]++;
        _refGenerations[rb]++;
    }

    internal FrameHandle GetFrame(CSpace cs, int slot)
    {
        int r = LookUpUsable(cs, slot, "access");
        ref RefRecord rec = ref _refs[r];
        if (!IsFrameType(rec.Type))
        {
            throw new CapabilityTypeException($"Slot {slot} of {cs} holds a {rec.Type} capability; only Frame and DevFrame capabilities give access to memory.");
        }

        return new FrameHandle(_memory, rec.BaseFrame, rec.FrameCount, _memory.Generation(rec.BaseFrame), rec.Rights, rec.Type, rec.Owner, rec.Object, _refGenerations, r, _refGenerations[r]);
    }

    internal int Retype(CSpace cs, int ramSlot, CapabilityType type, int frames)
    {
        int r = LookUpUsable(cs, ramSlot, "retype");
        ref RefRecord rec = ref _refs[r];
        if (rec.Type != CapabilityType.Ram)
        {
            throw new CapabilityTypeException($"Retype needs a RAM capability; slot {ramSlot} of {cs} holds {rec.Type}.");
        }

        if ((rec.Rights & CapabilityRights.Write) == 0)
        {
            throw new InsufficientRightsException($"Retype needs the Write right on the RAM capability in slot {ramSlot} of {cs} (it has {rec.Rights}).");
        }

        switch (type)
        {
            case CapabilityType.Ram:
            case CapabilityType.Frame:
            case CapabilityType.CNode:
                if (frames < 1 || (type == CapabilityType.Frame && frames > PhysicalMemory.MaxFramesPerHandle))
                {
                    throw new ArgumentOutOfRangeException(nameof(frames), frames, $"A {type} needs between 1 and {(type == CapabilityType.Frame ? PhysicalMemory.MaxFramesPerHandle : int.MaxValue)} frames.");
                }

                break;
            case CapabilityType.Endpoint:
            case CapabilityType.Dispatcher:
                if (frames != 1)
                {
                    throw new ArgumentOutOfRangeException(nameof(frames), frames, $"A {type} object occupies exactly one frame.");
                }

                break;
            default:
                throw new CapabilityTypeException($"{type} capabilities are not retyped from RAM; the kernel creates them (CreateRoot).");
        }

        if (rec.Owner != Core)
        {
            throw new CapabilityException($"The RAM capability in slot {ramSlot} of {cs} is owned by core {rec.Owner}; retype runs on the owner core.");
        }

        ref ObjectRecord ram = ref _objects[rec.Object];
        Debug.Assert(ram.Generation == rec.ObjectGeneration && ram.State != ObjectState.Free);
        if (ram.State != ObjectState.Live)
        {
            throw new CapabilityBusyException($"The RAM capability in slot {ramSlot} of {cs} is being revoked; retype after the revoke completes.");
        }

        int targetSlot = FindFreeSlot(cs);
        EnsureTables(1, 1);
        int baseFrame = FindGap(rec.Object, frames);
        if (baseFrame < 0)
        {
            throw new OutOfRamException($"{cs} has used up the RAM capability in slot {ramSlot}: retype of a {frames}-frame {type} needs {frames} contiguous free frame(s), but only {ram.FrameCount - ram.UsedFrames} of {ram.FrameCount} frames are free. Delete capabilities derived from it, or get more RAM.");
        }

        int obj = AllocateObject(type, rec.Rights, baseFrame, frames, 0, rec.Object);
        InsertChild(rec.Object, obj);
        _objects[obj].Total = 1;
        _objects[obj].Mask = Bit(Core);
        if (type != CapabilityType.Ram)
        {
            // Fresh objects never show a previous holder's bytes.
            _memory.Clear(baseFrame, frames);
        }

        CreateRef(cs, targetSlot, Core, obj, in _objects[obj], rec.Rights);
        return targetSlot;
    }

    internal void Delete(CSpace cs, int slot)
    {
        CheckDomain(cs);
        CheckSlotNumber(cs, slot);
        int r = cs.Slots[slot] - 1;
        if (r < 0)
        {
            throw new EmptySlotException($"Slot {slot} of {cs} is empty; nothing to delete.");
        }

        if (_refs[r].Owner != Core && !_refs[r].Marked && !_refs[r].InTransit)
        {
            EnsureOutbox("delete");
        }

        DeleteRef(r);
    }

    internal long FreeRamFrames(CSpace cs)
    {
        CheckDomain(cs);
        long free = 0;
        foreach (int s in cs.Slots)
        {
            int r = s - 1;
            if (r >= 0 && _refs[r].Type == CapabilityType.Ram && _refs[r].Owner == Core && !_refs[r].InTransit && !_refs[r].Marked)
            {
                ref ObjectRecord o = ref _objects[_refs[r].Object];
                free += o.FrameCount - o.UsedFrames;
            }
        }

        return free;
    }

    // ---------------------------------------------------------------- references

    private int CreateRef(CSpace cs, int slot, int owner, int obj, in ObjectRecord o, CapabilityRights rights) =>
        CreateRef(cs, slot, owner, obj, o.Generation, o.Type, rights, o.BaseFrame, o.FrameCount, o.ObjectId);

    private int CreateRef(CSpace cs, int slot, int owner, int obj, uint objGeneration, CapabilityType type, CapabilityRights rights, int baseFrame, int frameCount, ulong objectId)
    {
        Debug.Assert(_freeRefCount > 0 && cs.Slots[slot] == 0);
        int r = _freeRefs[--_freeRefCount];
        ref RefRecord rec = ref _refs[r];
        rec = default;
        rec.Live = true;
        rec.Type = type;
        rec.Rights = rights;
        rec.Owner = owner;
        rec.Object = obj;
        rec.ObjectGeneration = objGeneration;
        rec.BaseFrame = baseFrame;
        rec.FrameCount = frameCount;
        rec.ObjectId = objectId;
        rec.Domain = cs.Id;
        rec.Slot = slot;
        rec.NextMarked = -1;
        rec.PrevSame = -1;
        int head = _refMap.Get(owner, obj);
        rec.NextSame = head;
        if (head >= 0)
        {
            _refs[head].PrevSame = r;
        }

        _refMap.Set(owner, obj, r);
        cs.Slots[slot] = r + 1;
        return r;
    }

    /// <summary>Unlinks and frees a reference record; its handles die. No accounting message.</summary>
    private void FreeRef(int r)
    {
        ref RefRecord rec = ref _refs[r];
        Debug.Assert(rec.Live);
        if (!rec.Detached && rec.Slot >= 0)
        {
            CSpace? cs = _domains[rec.Domain];
            if (cs is not null && cs.Slots[rec.Slot] == r + 1)
            {
                cs.Vacate(rec.Slot);
            }
        }

        if (rec.PrevSame >= 0)
        {
            _refs[rec.PrevSame].NextSame = rec.NextSame;
        }
        else if (rec.NextSame >= 0)
        {
            _refMap.Set(rec.Owner, rec.Object, rec.NextSame);
        }
        else
        {
            _refMap.Remove(rec.Owner, rec.Object);
        }

        if (rec.NextSame >= 0)
        {
            _refs[rec.NextSame].PrevSame = rec.PrevSame;
        }

        rec = default;
        _refGenerations[r]++;
        _freeRefs[_freeRefCount++] = r;
    }

    /// <summary>A domain (or domain destruction, or a completed move) deletes a reference.</summary>
    private void DeleteRef(int r)
    {
        ref RefRecord rec = ref _refs[r];
        if (rec.Marked || rec.InTransit)
        {
            // A marked copy belongs to a revoke in progress, which deletes it at COMMIT and
            // accounts for it; a copy in transit is finished by the transfer's reply. Either way
            // the domain loses the slot and every handle now.
            DetachRef(r);
            return;
        }

        int owner = rec.Owner;
        int obj = rec.Object;
        uint gen = rec.ObjectGeneration;
        FreeRef(r);
        ReleaseReference(owner, obj, gen);
    }

    private void DetachRef(int r)
    {
        ref RefRecord rec = ref _refs[r];
        if (!rec.Detached)
        {
            CSpace? cs = _domains[rec.Domain];
            if (cs is not null && cs.Slots[rec.Slot] == r + 1)
            {
                cs.Vacate(rec.Slot);
            }

            rec.Detached = true;
            if (!rec.InTransit)
            {
                // (A copy in transit lost its handles when the transfer started, and its pending
                // transfer identifies it by this generation.)
                _refGenerations[r]++;
            }
        }
    }

    // ---------------------------------------------------------------- objects

    private int AllocateObject(CapabilityType type, CapabilityRights rights, int baseFrame, int frameCount, ulong objectId, int parent)
    {
        Debug.Assert(_freeObjectCount > 0);
        int i = _freeObjects[--_freeObjectCount];
        ref ObjectRecord o = ref _objects[i];
        uint generation = o.Generation + 1;
        o = default;
        o.Generation = generation;
        o.State = ObjectState.Live;
        o.Type = type;
        o.Rights = rights;
        o.BaseFrame = baseFrame;
        o.FrameCount = frameCount;
        o.ObjectId = objectId;
        o.Parent = parent;
        o.FirstChild = -1;
        o.NextSibling = -1;
        o.PrevSibling = -1;
        o.OpNext = -1;
        o.OpPrev = -1;
        return i;
    }

    /// <summary>Frees an object with no children and no references: its frames go back to the parent RAM.</summary>
    private void FreeObject(int i)
    {
        ref ObjectRecord o = ref _objects[i];
        Debug.Assert(o.State != ObjectState.Free && o.FirstChild == -1);
        ObjectDeleted?.Invoke(new CapabilityObject(o.Type, o.ObjectId, o.BaseFrame, o.FrameCount));
        if (IsMemoryType(o.Type) && o.FrameCount > 0)
        {
            // Every handle to these frames dies before the frames can be retyped again.
            _memory.Invalidate(o.BaseFrame, o.FrameCount);
        }

        if (o.Parent >= 0)
        {
            ref ObjectRecord p = ref _objects[o.Parent];
            p.UsedFrames -= o.FrameCount;
            Debug.Assert(p.UsedFrames >= 0);
            if (o.PrevSibling >= 0)
            {
                _objects[o.PrevSibling].NextSibling = o.NextSibling;
            }
            else
            {
                p.FirstChild = o.NextSibling;
            }
        }
        else if (o.PrevSibling >= 0)
        {
            _objects[o.PrevSibling].NextSibling = o.NextSibling;
        }
        else
        {
            _firstRoot = o.NextSibling;
        }

        if (o.NextSibling >= 0)
        {
            _objects[o.NextSibling].PrevSibling = o.PrevSibling;
        }

        uint generation = o.Generation;
        o = default;
        o.Generation = generation + 1;
        _freeObjects[_freeObjectCount++] = i;
    }

    /// <summary>First-fit search of a RAM object's children (kept sorted by base frame) for a gap of <paramref name="frames"/>.</summary>
    private int FindGap(int ram, int frames)
    {
        ref ObjectRecord o = ref _objects[ram];
        if (o.FrameCount - o.UsedFrames < frames)
        {
            return -1;
        }

        long cursor = o.BaseFrame;
        for (int c = o.FirstChild; c != -1; c = _objects[c].NextSibling)
        {
            if (_objects[c].BaseFrame - cursor >= frames)
            {
                return (int)cursor;
            }

            cursor = _objects[c].BaseFrame + _objects[c].FrameCount;
        }

        return o.BaseFrame + o.FrameCount - cursor >= frames ? (int)cursor : -1;
    }

    private void InsertChild(int parent, int child)
    {
        ref ObjectRecord p = ref _objects[parent];
        ref ObjectRecord c = ref _objects[child];
        int prev = -1;
        int next = p.FirstChild;
        while (next != -1 && _objects[next].BaseFrame < c.BaseFrame)
        {
            prev = next;
            next = _objects[next].NextSibling;
        }

        c.PrevSibling = prev;
        c.NextSibling = next;
        if (prev == -1)
        {
            p.FirstChild = child;
        }
        else
        {
            _objects[prev].NextSibling = child;
        }

        if (next != -1)
        {
            _objects[next].PrevSibling = child;
        }

        p.UsedFrames += c.FrameCount;
    }

    // ---------------------------------------------------------------- checks

    private static bool IsMemoryType(CapabilityType type) => type is CapabilityType.Ram or CapabilityType.Frame or CapabilityType.DevFrame
        or CapabilityType.CNode or CapabilityType.Endpoint or CapabilityType.Dispatcher;

    private static bool IsFrameType(CapabilityType type) => type is CapabilityType.Frame or CapabilityType.DevFrame;

    private static ulong Bit(int core) => 1UL << core;

    private void CheckDomain(CSpace cs)
    {
        ArgumentNullException.ThrowIfNull(cs);
        if (!ReferenceEquals(cs.Capabilities, this))
        {
            throw new CapabilityException($"{cs} belongs to core {cs.Core}; this is core {Core}. A domain uses its capabilities on its own core.");
        }

        if (cs.IsDestroyed)
        {
            throw new CapabilityException($"{cs} has been destroyed.");
        }
    }

    private static void CheckSlotNumber(CSpace cs, int slot)
    {
        if ((uint)slot >= (uint)cs.Slots.Length)
        {
            throw new InvalidSlotException($"Slot {slot} does not exist in {cs}: its CSpace has slots 0..{cs.Slots.Length - 1}.");
        }
    }

    private int LookUp(CSpace cs, int slot)
    {
        CheckDomain(cs);
        CheckSlotNumber(cs, slot);
        int r = cs.Slots[slot] - 1;
        if (r < 0)
        {
            throw new EmptySlotException($"Slot {slot} of {cs} is empty.");
        }

        if (_refs[r].InTransit)
        {
            throw new EmptySlotException($"The capability in slot {slot} of {cs} is being moved to another domain.");
        }

        return r;
    }

    private int LookUpUsable(CSpace cs, int slot, string operation)
    {
        int r = LookUp(cs, slot);
        if (_refs[r].Marked)
        {
            throw new CapabilityRevokedException($"The {_refs[r].Type} capability in slot {slot} of {cs} is being revoked; it cannot be used to {operation}.");
        }

        return r;
    }

    private static void CheckCopyable(CSpace cs, int slot, in RefRecord rec, CapabilityRights rights, bool requireGrant)
    {
        if ((rights & ~CapabilityRights.All) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(rights), rights, "Unknown capability rights.");
        }

        if ((rights & ~rec.Rights) != 0)
        {
            throw new InsufficientRightsException($"Rights can only be diminished: the {rec.Type} capability in slot {slot} of {cs} has {rec.Rights}, the copy asked for {rights}.");
        }

        if (requireGrant && (rec.Rights & CapabilityRights.Grant) == 0)
        {
            throw new InsufficientRightsException($"Slot {slot} of {cs} holds a {rec.Type} capability without the Grant right; it cannot be passed to another domain.");
        }

        if (rec.Type == CapabilityType.Ram)
        {
            throw new CapabilityTypeException($"RAM capabilities are not copied (each frame of RAM is billed to exactly one holder); split it with Retype(.., CapabilityType.Ram, n) and move the part.");
        }

        if (rec.Type == CapabilityType.Nic)
        {
            throw new CapabilityTypeException("The Nic capability has one holder; it can be moved but not copied.");
        }
    }

    private int FindFreeSlot(CSpace cs)
    {
        CheckDomain(cs);
        int slot = cs.FindFree();
        if (slot < 0)
        {
            throw new CapabilityLimitException($"The CSpace of {cs} is full ({cs.Slots.Length} slots).");
        }

        return slot;
    }

    private void EnsureTables(int objects, int refs)
    {
        if (_freeObjectCount < objects)
        {
            throw new CapabilityLimitException($"Core {Core}'s object table is full (MaxObjectsPerCore = {_options.MaxObjectsPerCore}).");
        }

        if (_freeRefCount < refs)
        {
            throw new CapabilityLimitException($"Core {Core}'s capability table is full (MaxReferencesPerCore = {_options.MaxReferencesPerCore}).");
        }
    }
}
