using Multikernel.CpuDriver.Memory;

namespace Multikernel.CpuDriver.Capabilities;

// Domain operations that stay on this core: inspect, copy, mint, move, swap, frame access,
// retype, delete, pins. Every one checks the calling thread first (issue 7, item 3).
public sealed partial class CoreCapabilities
{
    internal bool IsEmpty(CSpace cs, int slot)
    {
        CheckThread();
        CheckDomain(cs);
        CheckSlotNumber(cs, slot);
        int r = cs.Slots[slot] - 1;
        return r < 0 || _refs[r].InTransit;
    }

    internal CapabilityInfo Inspect(CSpace cs, int slot)
    {
        CheckThread();
        int r = LookUp(cs, slot);
        ref RefRecord rec = ref _refs[r];
        return new CapabilityInfo(rec.Type, rec.Rights, rec.FrameCount, rec.Owner, rec.ObjectId);
    }

    internal int Copy(CSpace source, int slot, CSpace target, CapabilityRights rights, bool requireGrant)
    {
        CheckThread();
        int r = LookUpUsable(source, slot, "copy");
        CheckDomain(target);
        ref RefRecord rec = ref _refs[r];
        CheckPassable(source, slot, in rec, rights, TransferMode.Copy, requireGrant);
        int targetSlot = FindFreeSlot(target);
        EnsureTables(target, 0, 1);
        if (rec.Owner != Core)
        {
            EnsureOutbox(source, "copy");
        }

        int copy = CreateRef(target, targetSlot, rec.Owner, rec.Object, rec.ObjectGeneration, rec.Type, rights, rec.BaseFrame, rec.FrameCount, rec.ObjectId);
        AddReference(_refs[copy].Owner, _refs[copy].Object, _refs[copy].ObjectGeneration, source);
        return targetSlot;
    }

    internal int Mint(CSpace cs, int slot, CapabilityRights rights)
    {
        CheckThread();
        int r = LookUpUsable(cs, slot, "mint");
        ref RefRecord rec = ref _refs[r];
        CheckPassable(cs, slot, in rec, rights, TransferMode.Copy, requireGrant: false);
        if (rec.Type is CapabilityType.Ram or CapabilityType.Nic or CapabilityType.Kernel)
        {
            throw new CapabilityTypeException($"A {rec.Type} capability cannot be minted: it has exactly one holder.");
        }

        if (rec.Owner != Core)
        {
            throw new CapabilityException($"The {rec.Type} capability in slot {slot} of {cs} is owned by core {rec.Owner}; minting runs on the owner core (the sub-copy is a node of its derivation tree).");
        }

        ref ObjectRecord parent = ref _objects[rec.Object];
        if (parent.State != ObjectState.Live)
        {
            throw new CapabilityBusyException($"The capability in slot {slot} of {cs} is being revoked; mint after the revoke completes.");
        }

        int targetSlot = FindFreeSlot(cs);
        EnsureTables(cs, 1, 1);
        // An alias: the same frames (or kernel object), no frames of its own, so freeing it
        // returns nothing to the parent and bumps no frame generation (the parent's handles
        // live on; the sub-copy's handles die with their copies' generations).
        int obj = AllocateObject(rec.Type, rights, rec.BaseFrame, rec.FrameCount, rec.ObjectId, rec.Object);
        _objects[obj].Alias = true;
        InsertChild(rec.Object, obj);
        _objects[obj].Total = 1;
        _objects[obj].Mask = Bit(Core);
        CreateRef(cs, targetSlot, Core, obj, in _objects[obj], rights | CapabilityRights.Revoke);
        return targetSlot;
    }

    internal int Move(CSpace source, int slot, CSpace target)
    {
        CheckThread();
        int r = LookUpUsable(source, slot, "move");
        CheckDomain(target);
        ref RefRecord rec = ref _refs[r];
        CheckPassable(source, slot, in rec, CapabilityRights.All, TransferMode.Move, requireGrant: true);
        CheckUnpinned(source, slot, in rec, "moved");
        if (ReferenceEquals(source, target))
        {
            return slot;
        }

        int targetSlot = FindFreeSlot(target);
        EnsureShare(target);
        source.Vacate(slot);
        source.References--;
        target.References++;
        rec.Domain = target.Id;
        rec.DomainGeneration = target.Generation;
        rec.Slot = targetSlot;
        rec.Posted = false;
        target.Slots[targetSlot] = r + 1;
        // The sender's handles die with the move; the reference record itself is reused.
        _refGenerations[r]++;
        return targetSlot;
    }

    internal void PostFrame(CSpace cs, int slot)
    {
        CheckThread();
        int r = LookUpUsable(cs, slot, "offer for a swap");
        ref RefRecord rec = ref _refs[r];
        if (!IsFrameType(rec.Type))
        {
            throw new CapabilityTypeException($"Only frames are swapped: slot {slot} of {cs} holds {rec.Type}.");
        }

        CheckRight(cs, slot, in rec, CapabilityRights.Grant, "offer it for a swap");
        rec.Posted = true;
    }

    internal void SwapFrames(CSpace a, int slotA, CSpace b, int slotB)
    {
        CheckThread();
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

        CheckRight(a, slotA, in x, CapabilityRights.Grant, "swap it away");
        CheckRight(b, slotB, in y, CapabilityRights.Grant, "swap it away");
        if (ra == rb)
        {
            return;
        }

        if (!ReferenceEquals(a, b) && !y.Posted)
        {
            throw new InsufficientRightsException($"Slot {slotB} of {b} was not offered for a swap (PostFrame): a swap takes another domain's frame only when that domain posted it.");
        }

        CheckUnpinned(a, slotA, in x, "swapped");
        CheckUnpinned(b, slotB, in y, "swapped");

        // Exchange the holders: no byte moves. Both copies' generations are bumped so neither
        // side keeps a handle into the frame it gave away. The offer is used up.
        a.Slots[slotA] = rb + 1;
        b.Slots[slotB] = ra + 1;
        (x.Domain, x.Slot, y.Domain, y.Slot) = (b.Id, slotB, a.Id, slotA);
        (x.DomainGeneration, y.DomainGeneration) = (b.Generation, a.Generation);

        x.Posted = false;
        y.Posted = false;
        _refGenerations[ra]++;
        _refGenerations[rb]++;
    }

    internal FrameHandle GetFrame(CSpace cs, int slot)
    {
        CheckThread();
        int r = LookUpUsable(cs, slot, "access");
        ref RefRecord rec = ref _refs[r];
        if (!IsFrameType(rec.Type))
        {
            throw new CapabilityTypeException($"Slot {slot} of {cs} holds a {rec.Type} capability; only Frame and DevFrame capabilities give access to memory.");
        }

        return new FrameHandle(_memory, rec.BaseFrame, rec.FrameCount, _memory.Generation(rec.BaseFrame), rec.Rights, rec.Type, rec.Owner, rec.Object, this, r, _refGenerations[r]);
    }

    internal int Retype(CSpace cs, int sourceSlot, CapabilityType type, int frames)
    {
        CheckThread();
        int r = LookUpUsable(cs, sourceSlot, "retype");
        ref RefRecord rec = ref _refs[r];
        // RAM retypes into every memory-backed object and into PacketFilters (billed to the
        // installer); the Nic's device region retypes only into DevFrames.
        bool fromNic = rec.Type == CapabilityType.Nic;
        if (rec.Type != CapabilityType.Ram && !fromNic)
        {
            throw new CapabilityTypeException($"Retype needs a RAM (or, for DevFrames, the Nic) capability; slot {sourceSlot} of {cs} holds {rec.Type}.");
        }

        CheckRight(cs, sourceSlot, in rec, CapabilityRights.Write, "retype it");
        if (fromNic != (type == CapabilityType.DevFrame))
        {
            throw new CapabilityTypeException(fromNic
                ? $"The Nic's device region is retyped only into DevFrames (asked for {type})."
                : "DevFrames are retyped from the Nic capability (its device region), so only the Nic holder obtains them.");
        }

        switch (type)
        {
            case CapabilityType.Ram:
            case CapabilityType.Frame:
            case CapabilityType.DevFrame:
            case CapabilityType.CNode:
                if (frames < 1 || (IsFrameType(type) && frames > PhysicalMemory.MaxFramesPerHandle))
                {
                    throw new ArgumentOutOfRangeException(nameof(frames), frames, $"A {type} needs between 1 and {(IsFrameType(type) ? PhysicalMemory.MaxFramesPerHandle : int.MaxValue)} frames.");
                }

                break;
            case CapabilityType.Endpoint:
            case CapabilityType.Dispatcher:
            case CapabilityType.PacketFilter:
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
            throw new CapabilityException($"The {rec.Type} capability in slot {sourceSlot} of {cs} is owned by core {rec.Owner}; retype runs on the owner core.");
        }

        ref ObjectRecord source = ref _objects[rec.Object];
        Invariant(source.Generation == rec.ObjectGeneration && source.State != ObjectState.Free, "a usable copy of a dead object");
        if (source.State != ObjectState.Live)
        {
            throw new CapabilityBusyException($"The {rec.Type} capability in slot {sourceSlot} of {cs} is being revoked; retype after the revoke completes.");
        }

        int targetSlot = FindFreeSlot(cs);
        EnsureTables(cs, 1, 1);
        int baseFrame = FindGap(rec.Object, frames);
        if (baseFrame < 0)
        {
            throw new OutOfRamException($"{cs} has used up the {rec.Type} capability in slot {sourceSlot}: retype of a {frames}-frame {type} needs {frames} contiguous free frame(s), but only {source.FrameCount - source.UsedFrames} of {source.FrameCount} frames are free. Delete capabilities derived from it, or get more RAM.");
        }

        int obj = AllocateObject(type, rec.Rights, baseFrame, frames, 0, rec.Object);
        InsertChild(rec.Object, obj);
        _objects[obj].Total = 1;
        _objects[obj].Mask = Bit(Core);
        if (type == CapabilityType.PacketFilter)
        {
            // The filter's id names the object (owner core, index, generation): unique machine-wide.
            _objects[obj].ObjectId = ((ulong)(byte)Core << 56) | ((ulong)_objects[obj].Generation << 24) | (uint)obj;
        }

        if (type != CapabilityType.Ram)
        {
            // Fresh objects never show a previous holder's bytes.
            _memory.Clear(baseFrame, frames);
        }

        CreateRef(cs, targetSlot, Core, obj, in _objects[obj], rec.Rights | CapabilityRights.Revoke);
        return targetSlot;
    }

    internal void Delete(CSpace cs, int slot)
    {
        CheckThread();
        CheckDomain(cs);
        CheckSlotNumber(cs, slot);
        int r = cs.Slots[slot] - 1;
        if (r < 0)
        {
            throw new EmptySlotException($"Slot {slot} of {cs} is empty; nothing to delete.");
        }

        if (_refs[r].Owner != Core && !_refs[r].Marked && !_refs[r].InTransit)
        {
            EnsureOutbox(cs, "delete");
        }

        DeleteRef(r, cs);
    }

    internal long FreeRamFrames(CSpace cs)
    {
        CheckThread();
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

    // ---------------------------------------------------------------- pins

    /// <summary>
    /// Pins the frames behind reference (<paramref name="r"/>, <paramref name="generation"/>) for
    /// raw-pointer I/O. The pin is billed to the holding domain (PinsPerDomain) and held on the
    /// object: while pinned, the holder cannot move or swap that copy away, and if the object is
    /// revoked or deleted meanwhile its frames stay out of circulation (not returned to the
    /// parent RAM) until the last pin goes, so the pointer never reaches memory given to someone
    /// else. Pins are released by <see cref="Unpin"/>, or all at once when the domain is destroyed.
    /// </summary>
    internal void Pin(int r, uint generation)
    {
        CheckThread();
        ref RefRecord rec = ref _refs[r];
        if (!rec.Live || _refGenerations[r] != generation || rec.Marked || rec.Detached)
        {
            throw new CapabilityRevokedException("The frame capability was revoked, deleted, moved or swapped away; it cannot be pinned.");
        }

        if (rec.Owner != Core)
        {
            throw new CapabilityException($"Frames owned by core {rec.Owner} are pinned on their owner core only; use the Span of one run step here, or copy the bytes.");
        }

        CSpace cs = _domains[rec.Domain]!;
        if (cs.Pins >= _options.PinsPerDomain)
        {
            throw new CapabilityLimitException($"{cs} has {cs.Pins} frames pinned (PinsPerDomain = {_options.PinsPerDomain}); unpin one first.");
        }

        cs.Pins++;
        _objects[rec.Object].Pins++;
        _pinRecords.Add((cs.Id, cs.Generation, rec.Object, _objects[rec.Object].Generation, r, generation));
    }

    /// <summary>Releases a pin taken by <see cref="Pin"/>.</summary>
    internal void Unpin(int r, uint generation, int obj)
    {
        CheckThread();
        for (int i = _pinRecords.Count - 1; i >= 0; i--)
        {
            var pin = _pinRecords[i];
            if (pin.Ref == r && pin.RefGeneration == generation && pin.Object == obj)
            {
                _pinRecords.RemoveAt(i);
                ReleasePin(pin);
                return;
            }
        }
    }

    private void ReleasePins(CSpace cs)
    {
        for (int i = _pinRecords.Count - 1; i >= 0; i--)
        {
            var pin = _pinRecords[i];
            if (pin.Domain == cs.Id && pin.DomainGeneration == cs.Generation)
            {
                _pinRecords.RemoveAt(i);
                ReleasePin(pin);
            }
        }
    }

    private void ReleasePin((int Domain, uint DomainGeneration, int Object, uint ObjectGeneration, int Ref, uint RefGeneration) pin)
    {
        if (_domains[pin.Domain] is { } cs && cs.Generation == pin.DomainGeneration)
        {
            cs.Pins--;
        }

        ref ObjectRecord o = ref _objects[pin.Object];
        Invariant(o.Generation == pin.ObjectGeneration && o.Pins > 0, "a pin outlived its object");
        if (--o.Pins == 0 && o.State == ObjectState.Zombie)
        {
            // Revoked or deleted while pinned: now its frames can go back to the parent RAM.
            _zombies--;
            o.State = ObjectState.Live;
            FreeObject(pin.Object);
        }
    }

    private void CheckUnpinned(CSpace cs, int slot, in RefRecord rec, string what)
    {
        if (rec.Owner == Core && _objects[rec.Object].Pins > 0)
        {
            foreach (var pin in _pinRecords)
            {
                if (pin.Domain == cs.Id && pin.Ref == cs.Slots[slot] - 1)
                {
                    throw new CapabilityBusyException($"The frame in slot {slot} of {cs} is pinned; it cannot be {what} until it is unpinned.");
                }
            }
        }
    }
}
