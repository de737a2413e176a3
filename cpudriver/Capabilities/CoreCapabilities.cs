using Multikernel.CpuDriver.Kernel;
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

        // Freed as a capability (no copies, frames' generations bumped) but still pinned: its
        // frames stay out of the parent RAM until the last pin goes, so a raw pointer never
        // reaches memory someone else was given.
        Zombie = 4,
    }

    private struct ObjectRecord
    {
        public ObjectState State;
        public CapabilityType Type;
        public CapabilityRights Rights;
        public bool Deferred;
        public bool Alias;
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
        public int Pins;
    }

    private struct RefRecord
    {
        public bool Live;
        public bool Marked;
        public bool InTransit;
        public bool Detached;
        public bool Posted;
        public CapabilityType Type;
        public CapabilityRights Rights;
        public int Owner;
        public int Object;
        public uint ObjectGeneration;
        public int BaseFrame;
        public int FrameCount;
        public ulong ObjectId;
        public int Domain;
        public uint DomainGeneration;
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
    private readonly uint[] _domainGenerations;
    private readonly int _referenceShare;
    private readonly FrameRange _ramShare;
    private readonly FrameRange _deviceRange;
    private bool _nicCreated;
    private int _zombies;
    private readonly List<(int Domain, uint DomainGeneration, int Object, uint ObjectGeneration, int Ref, uint RefGeneration)> _pinRecords;

    // Who may call: the kernel's thread once a kernel is attached (and has started), else the
    // thread that constructed this object (pure unit tests and the simulation).
    private CoreKernel? _kernel;
    private int _ownerThread = Environment.CurrentManagedThreadId;

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
        _domainGenerations = new uint[options.MaxDomainsPerCore];
        _referenceShare = options.EffectiveReferencesPerDomain;
        _pinRecords = new(Math.Min(1 << 16, options.MaxDomainsPerCore * options.PinsPerDomain));

        // The device region: the last DeviceFrames frames of the Nic core's share, reserved at
        // boot (the Nic root covers them); the rest of the share is RAM.
        int device = core == options.NicCore ? options.DeviceFrames : 0;
        if (device >= share.FrameCount && device > 0)
        {
            throw new ArgumentException($"DeviceFrames ({device}) must leave RAM in core {core}'s share of {share.FrameCount} frames.", nameof(options));
        }

        _ramShare = new FrameRange(share.BaseFrame, share.FrameCount - device);
        _deviceRange = new FrameRange(share.EndFrame - device, device);

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

    /// <summary>The part of <see cref="Share"/> that is RAM (the share less the device region): what the monitor's RAM root covers.</summary>
    public FrameRange RamShare => _ramShare;

    /// <summary>The device region reserved at boot (empty unless this is <see cref="CapabilityOptions.NicCore"/> with DeviceFrames): what the Nic root covers.</summary>
    public FrameRange DeviceRegion => _deviceRange;

    /// <summary>
    /// Called on this core when a revoke removed a copy from one of its domains' CSpaces (the
    /// holder did not delete it): how netd learns that a PacketFilter it holds was revoked, or a
    /// region it was given is gone. Runs inside the protocol: it must not call back into this
    /// <see cref="CoreCapabilities"/>; queue the work instead.
    /// </summary>
    public Action<CapabilityRevocation>? CopyRevoked { get; set; }

    /// <summary>
    /// Resolves the receiving end of a channel (an endpoint id on this core) to the domain that
    /// receives capabilities on it; set by the monitor at boot. Without it no transfer can arrive.
    /// </summary>
    public Func<uint, CSpace?>? ChannelOwner { get; set; }

    /// <summary>
    /// Boot: binds these tables to <paramref name="kernel"/>, so every capability operation and
    /// frame access checks that it runs on that core's kernel thread (once the kernel has started).
    /// </summary>
    public void AttachKernel(CoreKernel kernel)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        if (kernel.Id != Core)
        {
            throw new ArgumentException($"Core {Core}'s capabilities cannot belong to core {kernel.Id}'s kernel.", nameof(kernel));
        }

        if (_kernel is not null && !ReferenceEquals(_kernel, kernel))
        {
            throw new InvalidOperationException($"Core {Core}'s capabilities already belong to a kernel.");
        }

        _kernel = kernel;
    }

    /// <summary>Throws (an <see cref="InvalidOperationException"/>) unless the caller runs on this core's kernel thread, or, without a kernel, on the constructing thread (<see cref="WrongCoreThreadException"/>).</summary>
    internal void CheckThread()
    {
        CoreKernel? kernel = _kernel;
        if (kernel is not null)
        {
            // The kernel's own check: its thread once started, any thread during boot.
            kernel.CheckThread();
        }
        else if (Environment.CurrentManagedThreadId != _ownerThread)
        {
            ThrowWrongThread();
        }
    }

    /// <summary>
    /// Test harnesses without a kernel: the calling thread becomes the owner (a harness that
    /// builds the tables on one thread and runs each core on its own). Refused once a kernel is attached.
    /// </summary>
    internal void BindToCurrentThread()
    {
        if (_kernel is not null)
        {
            throw new InvalidOperationException($"Core {Core}'s capabilities belong to its kernel's thread.");
        }

        Volatile.Write(ref _ownerThread, Environment.CurrentManagedThreadId);
    }

    private void ThrowWrongThread() =>
        throw new WrongCoreThreadException($"Core {Core}'s capabilities are used only from that core's kernel thread (a domain must not leave its core with ConfigureAwait(false), Task.Run or another thread).");

    /// <summary>The generation of reference <paramref name="index"/> (frame handles check it on every access).</summary>
    internal uint RefGeneration(int index) => _refGenerations[index];

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
        CheckThread();
        ArgumentException.ThrowIfNullOrEmpty(name);
        for (int i = 0; i < _domains.Length; i++)
        {
            if (_domains[i] is null)
            {
                var cs = new CSpace(this, i, ++_domainGenerations[i], name, _options.SlotsPerDomain, _options.GrantsPerDomain);
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
        CheckThread();
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

        // Its pins go with it (its code no longer runs), so pinned frames can be reused.
        ReleasePins(domain);
        for (int slot = 0; slot < domain.Slots.Length; slot++)
        {
            if (domain.Slots[slot] != 0)
            {
                DeleteRef(domain.Slots[slot] - 1);
            }
        }

        // Its operations in flight finish without it; its queued messages stop being billed to
        // its id, which the next domain may reuse.
        OrphanPending(domain);
        for (int i = 0; i < _outCount; i++)
        {
            int at = (_outHead + i) % _outDomain.Length;
            if (_outDomain[at] == domain.Id)
            {
                _outDomain[at] = -1;
            }
        }

        domain.OutboxUsed = 0;
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
        CheckThread();
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
        CheckThread();
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
        if (type == CapabilityType.Nic)
        {
            // One Nic per machine, made once at boot on the Nic core; it covers the device region.
            if (Core != _options.NicCore)
            {
                throw new CapabilityTypeException($"The Nic root lives on core {_options.NicCore} (CapabilityOptions.NicCore), not core {Core}.");
            }

            if (_nicCreated)
            {
                throw new CapabilityException($"Core {Core} already created the machine's one Nic root; a second is refused. Move the existing one.");
            }

            int slot = AddRoot(target, type, _deviceRange.BaseFrame, _deviceRange.FrameCount, objectId, rights, allowEmpty: true);
            _nicCreated = true;
            return slot;
        }

        if (type == CapabilityType.PacketFilter)
        {
            throw new CapabilityTypeException("PacketFilters are retyped from the installer's RAM (Retype(ramSlot, CapabilityType.PacketFilter)), so each filter is billed to its installer.");
        }

        if (type == CapabilityType.DevFrame)
        {
            throw new CapabilityTypeException("DevFrames are retyped from the Nic capability (its device region), so only the Nic holder obtains them.");
        }

        if (type == CapabilityType.Ram && baseFrame < _ramShare.EndFrame && baseFrame + frameCount > _ramShare.EndFrame)
        {
            throw new ArgumentOutOfRangeException(nameof(frameCount), $"A RAM root must not cover core {Core}'s device region {_deviceRange.BaseFrame}..{_deviceRange.EndFrame - 1}.");
        }

        return AddRoot(target, type, baseFrame, frameCount, objectId, rights);
    }

    private int AddRoot(CSpace domain, CapabilityType type, int baseFrame, int frameCount, ulong objectId, CapabilityRights rights, bool allowEmpty = false)
    {
        bool memoryType = IsMemoryType(type);
        if (type == CapabilityType.None)
        {
            throw new CapabilityTypeException("Cannot create a capability of type None.");
        }

        if (memoryType)
        {
            if ((frameCount <= 0 && !(allowEmpty && frameCount == 0)) || baseFrame < _share.BaseFrame || (long)baseFrame + frameCount > _share.EndFrame)
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
        EnsureTables(domain, 1, 1);
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

    // ---------------------------------------------------------------- references

    private int CreateRef(CSpace cs, int slot, int owner, int obj, in ObjectRecord o, CapabilityRights rights) =>
        CreateRef(cs, slot, owner, obj, o.Generation, o.Type, rights, o.BaseFrame, o.FrameCount, o.ObjectId);

    private int CreateRef(CSpace cs, int slot, int owner, int obj, uint objGeneration, CapabilityType type, CapabilityRights rights, int baseFrame, int frameCount, ulong objectId)
    {
        Invariant(_freeRefCount > 0 && cs.Slots[slot] == 0 && cs.References < _referenceShare, "a reference created without room for it");
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
        rec.ObjectId = type == CapabilityType.PacketFilter ? FilterId(owner, obj, objGeneration) : objectId;
        rec.Domain = cs.Id;
        rec.DomainGeneration = cs.Generation;
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
        cs.References++;
        return r;
    }

    /// <summary>Unlinks and frees a reference record; its handles die. No accounting message.</summary>
    private void FreeRef(int r)
    {
        ref RefRecord rec = ref _refs[r];
        Invariant(rec.Live, "a free reference freed again");
        CSpace? holder = HolderOf(in rec);
        if (holder is not null)
        {
            // The domain's share pays until the record is gone (detached copies included).
            holder.References--;
            if (!rec.Detached && holder.Slots[rec.Slot] == r + 1)
            {
                holder.Vacate(rec.Slot);
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

    /// <summary>The live domain holding the reference (null when it was destroyed: its id may name a successor).</summary>
    private CSpace? HolderOf(in RefRecord rec) =>
        _domains[rec.Domain] is { } cs && cs.Generation == rec.DomainGeneration ? cs : null;

    /// <summary>A domain (or domain destruction, or a completed move) deletes a reference.</summary>
    private void DeleteRef(int r, CSpace? billed = null)
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
        ReleaseReference(owner, obj, gen, billed);
    }

    private void DetachRef(int r)
    {
        ref RefRecord rec = ref _refs[r];
        if (!rec.Detached)
        {
            CSpace? cs = HolderOf(in rec);
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
        Invariant(_freeObjectCount > 0, "an object allocated without room for it");
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

    /// <summary>
    /// Frees an object with no live children and no references: its frames' generations are
    /// bumped (every handle dies) and its frames go back to the parent. An object still pinned,
    /// or with pinned (zombie) descendants, becomes a zombie instead: dead as a capability, its
    /// frames kept out of circulation until the last pin goes (then this runs again for it).
    /// </summary>
    private void FreeObject(int i)
    {
        ref ObjectRecord o = ref _objects[i];
        Invariant(o.State != ObjectState.Free, "an object freed twice");
        bool wasZombie = o.State == ObjectState.Zombie;
        if (!wasZombie)
        {
            ObjectDeleted?.Invoke(new CapabilityObject(o.Type, o.ObjectId, o.BaseFrame, o.FrameCount));
            if (IsMemoryType(o.Type) && o.FrameCount > 0 && !o.Alias)
            {
                // Every handle to these frames dies before the frames can be retyped again.
                _memory.Invalidate(o.BaseFrame, o.FrameCount);
            }
        }

        if (o.Pins > 0 || o.FirstChild != -1)
        {
            for (int c = o.FirstChild; c != -1; c = _objects[c].NextSibling)
            {
                Invariant(_objects[c].State == ObjectState.Zombie, "an object freed with live children");
            }

            if (!wasZombie)
            {
                o.State = ObjectState.Zombie;
                _zombies++;
            }

            return;
        }

        if (wasZombie)
        {
            _zombies--;
        }

        int parent = o.Parent;
        if (parent >= 0)
        {
            ref ObjectRecord p = ref _objects[parent];
            p.UsedFrames -= o.Alias ? 0 : o.FrameCount;
            Invariant(p.UsedFrames >= 0, "a parent's used frames went negative");
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
        if (parent >= 0 && _objects[parent].State == ObjectState.Zombie && _objects[parent].FirstChild == -1 && _objects[parent].Pins == 0)
        {
            // The last pinned descendant of a zombie went: the zombie can go now too.
            FreeObject(parent);
        }
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

        p.UsedFrames += c.Alias ? 0 : c.FrameCount;
    }

    // ---------------------------------------------------------------- checks

    // Types backed by frames of the arena (PacketFilters and Endpoints occupy one frame of
    // their installer's RAM; the Nic covers the device region).
    private static bool IsMemoryType(CapabilityType type) => type is CapabilityType.Ram or CapabilityType.Frame or CapabilityType.DevFrame
        or CapabilityType.CNode or CapabilityType.Endpoint or CapabilityType.Dispatcher or CapabilityType.PacketFilter or CapabilityType.Nic;

    private static bool IsFrameType(CapabilityType type) => type is CapabilityType.Frame or CapabilityType.DevFrame;

    private static ulong Bit(int core) => 1UL << core;

    /// <summary>A PacketFilter's id: its object's identity (owner core, index, generation), unique machine-wide and the same on every core holding a copy.</summary>
    private static ulong FilterId(int owner, int obj, uint generation) => ((ulong)(byte)owner << 56) | ((ulong)(generation & 0xFFFFFFFF) << 24) | (uint)(obj & 0xFFFFFF);

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

    private static void CheckRight(CSpace cs, int slot, in RefRecord rec, CapabilityRights needed, string what)
    {
        if ((rec.Rights & needed) != needed)
        {
            throw new InsufficientRightsException($"The {rec.Type} capability in slot {slot} of {cs} has {rec.Rights}; it needs {needed} to {what}.");
        }
    }

    /// <summary>
    /// The one grant/rights check of every way a capability is copied or passed on (copy, mint,
    /// move, transfer): rights only diminish, passing to another domain needs Grant, RAM and the
    /// Nic have one holder. Returns the rights the new copy gets.
    /// </summary>
    private static CapabilityRights CheckPassable(CSpace cs, int slot, in RefRecord rec, CapabilityRights rights, TransferMode mode, bool requireGrant = true)
    {
        if ((rights & ~CapabilityRights.All) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(rights), rights, "Unknown capability rights.");
        }

        if (requireGrant)
        {
            CheckRight(cs, slot, in rec, CapabilityRights.Grant, "be passed to another domain");
        }

        if (mode == TransferMode.Move)
        {
            // A move hands over the capability itself: All means "as it is"; anything else may only diminish.
            if (rights != CapabilityRights.All && (rights & ~rec.Rights) != 0)
            {
                throw new InsufficientRightsException($"Rights can only be diminished: the {rec.Type} capability in slot {slot} of {cs} has {rec.Rights}, the move asked for {rights}.");
            }

            return rec.Rights & rights;
        }

        if ((rights & ~rec.Rights) != 0)
        {
            throw new InsufficientRightsException($"Rights can only be diminished: the {rec.Type} capability in slot {slot} of {cs} has {rec.Rights}, the copy asked for {rights}.");
        }

        if (rec.Type == CapabilityType.Ram)
        {
            throw new CapabilityTypeException("RAM capabilities are not copied (each frame of RAM is billed to exactly one holder); split it with Retype(.., CapabilityType.Ram, n) and move the part.");
        }

        if (rec.Type == CapabilityType.Nic)
        {
            throw new CapabilityTypeException("The Nic capability has one holder; it can be moved but not copied.");
        }

        return rights;
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

    /// <summary>Throws unless <paramref name="cs"/> may hold one more reference (its share of the core's table).</summary>
    private void EnsureShare(CSpace cs)
    {
        if (cs.References >= _referenceShare)
        {
            throw new CapabilityLimitException($"{cs} holds {cs.References} capability references, its share of core {Core}'s table (ReferencesPerDomain = {_referenceShare}); delete some first.");
        }
    }

    private void EnsureTables(CSpace cs, int objects, int refs)
    {
        if (_freeObjectCount < objects)
        {
            throw new CapabilityLimitException($"Core {Core}'s object table is full (MaxObjectsPerCore = {_options.MaxObjectsPerCore}).");
        }

        if (refs > 0)
        {
            EnsureShare(cs);
        }

        if (_freeRefCount < refs)
        {
            throw new CapabilityLimitException($"Core {Core}'s capability table is full (MaxReferencesPerCore = {_options.MaxReferencesPerCore}).");
        }
    }
}
