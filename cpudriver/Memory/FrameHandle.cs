using System.Buffers;
using System.Runtime.CompilerServices;
using Multikernel.CpuDriver.Capabilities;

namespace Multikernel.CpuDriver.Memory;

/// <summary>
/// Access to the bytes of a Frame (or DevFrame) capability a domain holds. Taken from the
/// capability with <see cref="CSpace.GetFrame"/>; every access checks the frames' generation
/// and throws <see cref="CapabilityRevokedException"/> once the capability was revoked,
/// deleted, moved away or swapped — the handle never reaches stale or reused memory.
/// </summary>
/// <remarks>
/// <para>A <see cref="Span"/> is a view for the current synchronous run step only (it cannot cross an
/// await). The capability protocol reuses a frame only after every core has acknowledged the
/// generation bump from its kernel loop, i.e. between run steps, so no span taken before a revoke
/// survives into the frame's next life. <see cref="Memory"/> views check on every
/// <c>Memory.Span</c>, and can therefore be kept across awaits.</para>
/// <para>Every access also checks that it runs on the holding core's kernel thread: a handle is
/// as local as the capability it came from.</para>
/// <para>A Read-only copy gives <see cref="ReadOnlySpan"/> and <see cref="CopyTo"/> only, never a
/// <see cref="Memory{T}"/>-style view: a <see cref="MemoryManager{T}"/> can only hand out writable
/// spans (<c>MemoryMarshal.AsMemory</c> turns any <see cref="ReadOnlyMemory{T}"/> back into them),
/// so building one for a Read-only copy would amplify its rights.</para>
/// <para>Pinning (<c>Memory.Pin()</c>) is accounted for: the pin is billed to the holding domain
/// and held on the frame's object, and if the object is revoked or deleted while pinned its
/// frames are kept out of circulation until the pin goes (they are never handed to someone else
/// while a raw pointer may still reach them). See <c>CoreCapabilities.Pin</c>.</para>
/// </remarks>
public readonly struct FrameHandle : IEquatable<FrameHandle>
{
    private readonly PhysicalMemory? _memory;
    private readonly int _baseFrame;
    private readonly int _frameCount;
    private readonly uint _generation;
    private readonly CapabilityRights _rights;
    private readonly CapabilityType _type;
    private readonly int _ownerCore;
    private readonly int _objectIndex;
    private readonly CoreCapabilities? _capabilities;
    private readonly int _refIndex;
    private readonly uint _refGeneration;

    internal FrameHandle(PhysicalMemory memory, int baseFrame, int frameCount, uint generation, CapabilityRights rights, CapabilityType type, int ownerCore, int objectIndex, CoreCapabilities? capabilities = null, int refIndex = 0, uint refGeneration = 0)
    {
        _capabilities = capabilities;
        _refIndex = refIndex;
        _refGeneration = refGeneration;
        _memory = memory;
        _baseFrame = baseFrame;
        _frameCount = frameCount;
        _generation = generation;
        _rights = rights;
        _type = type;
        _ownerCore = ownerCore;
        _objectIndex = objectIndex;
    }

    /// <summary>Length in bytes (frames x 4096).</summary>
    public int Length => _frameCount << PhysicalMemory.FrameShift;

    /// <summary>Number of frames covered.</summary>
    public int FrameCount => _frameCount;

    /// <summary>First frame (diagnostics; the domain cannot use it to reach memory).</summary>
    public int BaseFrame => _baseFrame;

    /// <summary>Rights of the capability the handle was taken from.</summary>
    public CapabilityRights Rights => _rights;

    /// <summary>True while the capability the handle came from still grants access.</summary>
    public bool IsValid
    {
        get
        {
            _capabilities?.CheckThread();
            return _memory is not null && !_memory.IsDisposed && _memory.Generation(_baseFrame) == _generation && RefAlive;
        }
    }

    // Two generations guard a handle: the frame's (bumped when the memory is freed for reuse)
    // and the capability copy's (bumped when this copy is deleted, moved or swapped away, so one
    // holder's delete does not disturb other holders' handles). The copy's generation lives in
    // the holding core's table and is read only by that core's domains.
    private bool RefAlive => _capabilities is null || _capabilities.RefGeneration(_refIndex) == _refGeneration;

    /// <summary>Writable view (needs the Write right). Checks the generation.</summary>
    public Span<byte> Span
    {
        get
        {
            Check(CapabilityRights.Write);
            return _memory!.Frames(_baseFrame, _frameCount);
        }
    }

    /// <summary>Read-only view (needs the Read right). Checks the generation.</summary>
    public ReadOnlySpan<byte> ReadOnlySpan
    {
        get
        {
            Check(CapabilityRights.Read);
            return _memory!.Frames(_baseFrame, _frameCount);
        }
    }

    /// <summary>
    /// A writable <see cref="Memory{T}"/> whose every <c>Span</c> re-checks the generation.
    /// Allocates one small object per call: use <see cref="Span"/> on hot paths.
    /// </summary>
    public Memory<byte> Memory
    {
        get
        {
            Check(CapabilityRights.Write);
            return new FrameMemoryManager(this).Memory;
        }
    }

    /// <summary>
    /// A <see cref="ReadOnlyMemory{T}"/> that re-checks the generation on every access. Needs the
    /// Write right as well as Read (see the remarks: a memory manager cannot stay read-only); a
    /// Read-only copy uses <see cref="ReadOnlySpan"/> within a run step or <see cref="CopyTo"/>.
    /// </summary>
    public ReadOnlyMemory<byte> ReadOnlyMemory
    {
        get
        {
            Check(CapabilityRights.Read);
            if ((_rights & CapabilityRights.Write) == 0)
            {
                throw new InsufficientRightsException($"{Describe()} grants {_rights}: a memory view of it could be turned writable (MemoryMarshal.AsMemory), so a Read-only copy offers ReadOnlySpan and CopyTo only.");
            }

            return new FrameMemoryManager(this).Memory;
        }
    }

    /// <summary>Copies <paramref name="destination"/>.Length bytes from <paramref name="offset"/> (needs Read). Works for Read-only copies across awaits.</summary>
    public void CopyTo(int offset, Span<byte> destination)
    {
        Check(CapabilityRights.Read);
        if (offset < 0 || (long)offset + destination.Length > Length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), offset, $"Bytes {offset}..{(long)offset + destination.Length - 1} are outside the {Length}-byte frame.");
        }

        _memory!.Frames(_baseFrame, _frameCount).Slice(offset, destination.Length).CopyTo(destination);
    }

    /// <summary>Throws unless the handle still grants <paramref name="needed"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Check(CapabilityRights needed)
    {
        _capabilities?.CheckThread();
        PhysicalMemory? memory = _memory;
        if (memory is null || (_rights & needed) != needed || memory.Generation(_baseFrame) != _generation || !RefAlive || memory.IsDisposed)
        {
            ThrowCheckFailed(needed);
        }
    }

    internal unsafe byte* Pointer => _memory!.Pointer(_baseFrame);

    private void ThrowCheckFailed(CapabilityRights needed)
    {
        if (_memory is null)
        {
            throw new InvalidOperationException("This FrameHandle is default-initialized; take handles from a Frame capability with CSpace.GetFrame.");
        }

        if ((_rights & needed) != needed)
        {
            throw new InsufficientRightsException($"{Describe()} grants {_rights}; this access needs {needed}.");
        }

        if (_memory.IsDisposed)
        {
            throw new CapabilityRevokedException($"{Describe()} is gone: the physical memory arena has been released.");
        }

        throw new CapabilityRevokedException($"{Describe()} was revoked, deleted, moved or swapped away; handles taken from it no longer give access. Take a new handle from a capability you still hold.");
    }

    private string Describe() =>
        $"{_type} capability (owner core {_ownerCore}, object {_objectIndex}, frames {_baseFrame}..{_baseFrame + _frameCount - 1}, generation {_generation})";

    public bool Equals(FrameHandle other) =>
        ReferenceEquals(_memory, other._memory) && _baseFrame == other._baseFrame && _frameCount == other._frameCount && _generation == other._generation && _rights == other._rights;

    public override bool Equals(object? obj) => obj is FrameHandle other && Equals(other);

    public override int GetHashCode() => HashCode.Combine(_baseFrame, _frameCount, _generation, _rights);

    public static bool operator ==(FrameHandle left, FrameHandle right) => left.Equals(right);

    public static bool operator !=(FrameHandle left, FrameHandle right) => !left.Equals(right);

    public override string ToString() => Describe();

    /// <summary>
    /// A memory manager whose spans are generation-checked on every access. Only for copies with
    /// Read and Write (its spans are writable whatever view it is wrapped in).
    /// </summary>
    private sealed unsafe class FrameMemoryManager(FrameHandle handle) : MemoryManager<byte>
    {
        public override Span<byte> GetSpan()
        {
            handle.Check(CapabilityRights.Read | CapabilityRights.Write);
            return handle._memory!.Frames(handle._baseFrame, handle._frameCount);
        }

        // Pinning hands out a raw pointer that no later check can revoke, so the kernel accounts
        // for it: billed to the holder, held on the object (revoke frees the capability but keeps
        // the frames out of circulation until unpinned). Each Pin needs its Unpin.
        public override MemoryHandle Pin(int elementIndex = 0)
        {
            handle.Check(CapabilityRights.Read | CapabilityRights.Write);
            if ((uint)elementIndex > (uint)handle.Length)
            {
                throw new ArgumentOutOfRangeException(nameof(elementIndex));
            }

            CoreCapabilities capabilities = handle._capabilities ?? throw new InvalidOperationException("Only handles taken from a capability (CSpace.GetFrame) can be pinned.");
            capabilities.Pin(handle._refIndex, handle._refGeneration);
            return new MemoryHandle(handle.Pointer + elementIndex, default, this);
        }

        public override void Unpin() => handle._capabilities?.Unpin(handle._refIndex, handle._refGeneration, handle._objectIndex);

        protected override void Dispose(bool disposing)
        {
        }
    }
}
