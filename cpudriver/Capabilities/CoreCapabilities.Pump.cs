namespace Multikernel.CpuDriver.Capabilities;

// Reference accounting (AddRef/Release to the owner), deleting objects whose last copy went,
// deletes deferred while another operation covers their tree, and the pump that advances
// streams and deferred work after every handled message and every flush.
public sealed partial class CoreCapabilities
{
    private ulong[] _deferred = [];
    private int _deferredHead;
    private int _deferredCount;

    private void AddReference(int owner, int obj, uint gen, CSpace? billed)
    {
        if (owner == Core)
        {
            ref ObjectRecord o = ref _objects[obj];
            Invariant(o.Generation == gen && o.State != ObjectState.Free, "a local copy of a dead object");
            o.Total++;
            o.Mask |= Bit(Core);
        }
        else
        {
            Send(owner, new CountMessage(MsgAddRef, obj, gen).Encode(), billed);
        }
    }

    private void ReleaseReference(int owner, int obj, uint gen, CSpace? billed = null)
    {
        if (owner == Core)
        {
            OnRelease(obj, gen);
        }
        else
        {
            Send(owner, new CountMessage(MsgRelease, obj, gen).Encode(), billed);
        }
    }

    private void OnAddRef(int from, int obj, uint gen)
    {
        ref ObjectRecord o = ref _objects[obj];
        // The AddRef of a copy is ahead of everything its holder later says about the object
        // (FIFO on the holder -> owner link, acks included), and the object lives while the
        // copy it was copied from is counted: so it always finds its object alive.
        Invariant(o.State != ObjectState.Free && o.Generation == gen, "an AddRef for a dead object (a copy outlived its object)");
        o.Total++;
        o.Mask |= Bit(from);
    }

    private void OnRelease(int obj, uint gen)
    {
        ref ObjectRecord o = ref _objects[obj];
        Invariant(o.State != ObjectState.Free && o.Generation == gen, "a Release for a dead object");
        o.Total--;
        Invariant(o.Total >= 0, "an object's reference count went negative");
        if (o.Total == 0 && o.State == ObjectState.Live)
        {
            DeleteObject(obj);
        }
    }

    /// <summary>The last copy of an object is gone: free it, and everything derived from it.</summary>
    private void DeleteObject(int obj)
    {
        if (_objects[obj].FirstChild == -1)
        {
            FreeObject(obj);
            return;
        }

        if (StartRevoke(obj, keepCore: -1, keepRef: -1, 0, 0, RevokeMode.Unicast, deleteRoot: true, requesterCore: -1, requestId: 0) is Status.Busy or Status.Limit)
        {
            // Another operation covers part of this tree, or the operation table is full:
            // retry from Pump until it can run. The object stays accounted to its parent.
            Defer(obj);
        }
    }

    private void Defer(int obj)
    {
        ref ObjectRecord o = ref _objects[obj];
        if (o.Deferred)
        {
            return;
        }

        o.Deferred = true;
        Invariant(_deferredCount < _deferred.Length, "the deferred-delete queue overflowed");
        _deferred[(_deferredHead + _deferredCount) % _deferred.Length] = (uint)obj | ((ulong)o.Generation << 32);
        _deferredCount++;
    }

    private void Pump()
    {
        if (_streamingOps > 0)
        {
            foreach (OwnerOperation op in _ops)
            {
                if (op.Active && op.Streaming != StreamState.None)
                {
                    Stream(op);
                }
            }
        }

        for (int i = _deferredCount; i > 0 && _deferredCount > 0; i--)
        {
            ulong entry = _deferred[_deferredHead];
            _deferredHead = (_deferredHead + 1) % _deferred.Length;
            _deferredCount--;
            int obj = (int)(uint)entry;
            ref ObjectRecord o = ref _objects[obj];
            if (o.State != ObjectState.Live || o.Generation != (uint)(entry >> 32) || o.Total != 0)
            {
                if (o.Generation == (uint)(entry >> 32))
                {
                    o.Deferred = false;
                }

                continue;
            }

            o.Deferred = false;
            DeleteObject(obj);
        }
    }
}
