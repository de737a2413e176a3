using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Multikernel.CpuDriver.Memory;

/// <summary>A contiguous range of frames of the arena.</summary>
/// <param name="BaseFrame">First frame.</param>
/// <param name="FrameCount">Number of frames.</param>
public readonly record struct FrameRange(int BaseFrame, int FrameCount)
{
    /// <summary>One past the last frame.</summary>
    public int EndFrame => BaseFrame + FrameCount;
}

/// <summary>
/// The machine's physical memory: one block allocated at boot, 4096-aligned and cut into 4 KiB
/// frames, plus one generation word per frame. After boot nothing here allocates.
/// </summary>
/// <remarks>
/// The generation word is part of a frame, like a page-table entry: it is the only frame
/// metadata two cores may touch (a handle on one core reads it, the core that revokes or
/// deletes the frame's capability bumps it). Bumps use <see cref="Interlocked"/> so several
/// cores may invalidate the same frame; reads are volatile. Bumping is what invalidates every
/// <see cref="FrameHandle"/> taken before, so a revoked or reused frame is never reachable
/// through an old handle. The bytes of a frame are reused only after the capability protocol
/// has made every core acknowledge the bump (see <c>CoreCapabilities</c>).
/// </remarks>
public sealed unsafe class PhysicalMemory : IDisposable
{
    /// <summary>Bytes per frame.</summary>
    public const int FrameSize = 4096;

    /// <summary>log2 of <see cref="FrameSize"/>.</summary>
    public const int FrameShift = 12;

    /// <summary>The most frames one handle can cover (a span is at most 2 GiB).</summary>
    public const int MaxFramesPerHandle = int.MaxValue / FrameSize;

    private readonly uint[] _generations;
    private byte* _base;

    /// <summary>Allocates the arena: <paramref name="bytes"/> must be a positive multiple of 4096.</summary>
    public PhysicalMemory(long bytes)
    {
        if (bytes <= 0 || bytes % FrameSize != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes, $"Physical memory must be a positive multiple of the {FrameSize}-byte frame size.");
        }

        long frames = bytes / FrameSize;
        if (frames > int.MaxValue / 2)
        {
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes, $"Physical memory of {frames} frames exceeds the supported {int.MaxValue / 2} frames.");
        }

        FrameCount = (int)frames;
        Bytes = bytes;
        _generations = new uint[FrameCount];
        _base = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, FrameSize);
        NativeMemory.Clear(_base, (nuint)bytes);
    }

    /// <summary>Number of frames in the arena.</summary>
    public int FrameCount { get; }

    /// <summary>Size of the arena in bytes.</summary>
    public long Bytes { get; }

    /// <summary>True once the arena has been released.</summary>
    public bool IsDisposed => _base == null;

    /// <summary>
    /// Splits the arena into <paramref name="parts"/> contiguous ranges of (nearly) equal size,
    /// one per core; the first ranges get the remainder frames.
    /// </summary>
    public FrameRange[] Split(int parts)
    {
        if (parts <= 0 || parts > FrameCount)
        {
            throw new ArgumentOutOfRangeException(nameof(parts), parts, $"Cannot split {FrameCount} frames into {parts} parts.");
        }

        var ranges = new FrameRange[parts];
        int each = FrameCount / parts;
        int extra = FrameCount % parts;
        int next = 0;
        for (int i = 0; i < parts; i++)
        {
            int count = each + (i < extra ? 1 : 0);
            ranges[i] = new FrameRange(next, count);
            next += count;
        }

        return ranges;
    }

    /// <summary>The current generation of a frame.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal uint Generation(int frame) => Volatile.Read(ref _generations[frame]);

    /// <summary>Bumps the generation of every frame in the range: all handles taken before fail from now on.</summary>
    internal void Invalidate(int baseFrame, int frameCount)
    {
        CheckRange(baseFrame, frameCount);
        for (int i = baseFrame; i < baseFrame + frameCount; i++)
        {
            Interlocked.Increment(ref _generations[i]);
        }
    }

    /// <summary>The bytes of a frame range (no generation check: kernel use only).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Span<byte> Frames(int baseFrame, int frameCount)
    {
        byte* b = _base;
        if (b == null)
        {
            ThrowDisposed();
        }

        return new Span<byte>(b + ((long)baseFrame << FrameShift), frameCount << FrameShift);
    }

    /// <summary>Pointer to the first byte of a frame (kernel use only; for pinning).</summary>
    internal byte* Pointer(int frame) => _base + ((long)frame << FrameShift);

    /// <summary>Zeroes a frame range (retype gives a domain clean frames).</summary>
    internal void Clear(int baseFrame, int frameCount)
    {
        CheckRange(baseFrame, frameCount);
        NativeMemory.Clear(Pointer(baseFrame), (nuint)((long)frameCount << FrameShift));
    }

    internal void CheckRange(int baseFrame, int frameCount)
    {
        if (baseFrame < 0 || frameCount < 0 || (long)baseFrame + frameCount > FrameCount)
        {
            throw new ArgumentOutOfRangeException(nameof(baseFrame), $"Frames {baseFrame}..{(long)baseFrame + frameCount - 1} are outside the arena of {FrameCount} frames.");
        }
    }

    /// <summary>Releases the arena. Every handle fails afterwards.</summary>
    public void Dispose()
    {
        byte* b = _base;
        if (b == null)
        {
            return;
        }

        // Invalidate first so that no handle passes its check once the block is gone.
        for (int i = 0; i < _generations.Length; i++)
        {
            Interlocked.Increment(ref _generations[i]);
        }

        _base = null;
        NativeMemory.AlignedFree(b);
    }

    private static void ThrowDisposed() => throw new ObjectDisposedException(nameof(PhysicalMemory), "The physical memory arena has been released.");
}
