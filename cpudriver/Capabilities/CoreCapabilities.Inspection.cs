namespace Multikernel.CpuDriver.Capabilities;

/// <summary>A kernel object as the owner core sees it (tests and diagnostics).</summary>
internal readonly record struct ObjectView(int Index, uint Generation, CapabilityType Type, int BaseFrame, int FrameCount, int Parent, int Total, ulong Mask, int UsedFrames, bool Live, bool Alias = false, int Pins = 0);

/// <summary>A capability reference held on a core (tests and diagnostics).</summary>
internal readonly record struct ReferenceView(int Index, uint Generation, int Owner, int Object, uint ObjectGeneration, CapabilityType Type, CapabilityRights Rights, int Domain, int Slot, bool Marked, bool InTransit, bool Detached);

public sealed partial class CoreCapabilities
{
    // Allocating views for tests and diagnostics only; never called on a hot path.
    internal List<ObjectView> InspectObjects()
    {
        var list = new List<ObjectView>();
        for (int i = 0; i < _objects.Length; i++)
        {
            ref ObjectRecord o = ref _objects[i];
            if (o.State != ObjectState.Free)
            {
                list.Add(new ObjectView(i, o.Generation, o.Type, o.BaseFrame, o.FrameCount, o.Parent, o.Total, o.Mask, o.UsedFrames, o.State == ObjectState.Live, o.Alias, o.Pins));
            }
        }

        return list;
    }

    internal List<ReferenceView> InspectReferences()
    {
        var list = new List<ReferenceView>();
        for (int i = 0; i < _refs.Length; i++)
        {
            ref RefRecord r = ref _refs[i];
            if (r.Live)
            {
                list.Add(new ReferenceView(i, _refGenerations[i], r.Owner, r.Object, r.ObjectGeneration, r.Type, r.Rights, r.Domain, r.Slot, r.Marked, r.InTransit, r.Detached));
            }
        }

        return list;
    }

    /// <summary>The reference in a slot (index and generation), or (-1, 0).</summary>
    internal (int Index, uint Generation) InspectSlot(CSpace cs, int slot)
    {
        int r = cs.Slots[slot] - 1;
        return r < 0 ? (-1, 0) : (r, _refGenerations[r]);
    }

    internal bool ReferenceAlive(int index, uint generation) => _refs[index].Live && _refGenerations[index] == generation;

    internal (int Owner, int Object) InspectTarget(CSpace cs, int slot)
    {
        int r = cs.Slots[slot] - 1;
        return r < 0 ? (-1, -1) : (_refs[r].Owner, _refs[r].Object);
    }
}
