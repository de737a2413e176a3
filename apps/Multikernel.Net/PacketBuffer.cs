using System.Diagnostics;

namespace Multikernel.Net;

/// <summary>
/// A received frame's storage, counted by reference so received data can stay in the page it
/// arrived in until the application reads it (mbuf-style; netd's pages later back it). The
/// stack holds one reference for every slice it keeps (queued TCP data, out-of-order segments,
/// UDP datagrams); when the last is released, <see cref="OnReleased"/> returns the storage to
/// its owner (a pool, or netd's descriptor queue). Used only on the stack's own thread.
/// </summary>
public abstract class PacketBuffer
{
    private int _references;

    /// <summary>The whole buffer.</summary>
    public abstract Memory<byte> Memory { get; }

    /// <summary>Live references (for tests and assertions).</summary>
    public int References => _references;

    /// <summary>Takes the first reference when the buffer is handed out.</summary>
    protected internal void Activate()
    {
        Debug.Assert(_references == 0, "a buffer is handed out only when nobody holds it");
        _references = 1;
    }

    /// <summary>Adds a reference for a slice the stack keeps.</summary>
    public void Retain()
    {
        if (_references <= 0)
        {
            throw new InvalidOperationException("A released packet buffer cannot be retained again.");
        }

        _references++;
    }

    /// <summary>Drops a reference; the last one gives the storage back.</summary>
    public void Release()
    {
        if (_references <= 0)
        {
            throw new InvalidOperationException("A packet buffer was released more often than it was retained.");
        }

        if (--_references == 0)
        {
            OnReleased();
        }
    }

    /// <summary>Called once when the last reference is dropped.</summary>
    protected abstract void OnReleased();
}

/// <summary>A slice of a <see cref="PacketBuffer"/>: where some bytes of it live. Holding one means holding one reference.</summary>
internal readonly record struct BufferSlice(PacketBuffer Buffer, int Offset, int Length)
{
    public ReadOnlySpan<byte> Span => Buffer.Memory.Span.Slice(Offset, Length);

    public BufferSlice Skip(int n) => new(Buffer, Offset + n, Length - n);

    public BufferSlice Take(int n) => new(Buffer, Offset, n);
}

/// <summary>
/// A bounded pool of equal-sized managed buffers: the stack's own storage for frames that arrive
/// as spans, pending ARP resolutions and reassembly. Renting from an empty pool fails (the
/// caller drops and counts): the pool never grows, so a flood costs drops, not memory.
/// </summary>
internal sealed class BufferPool
{
    private readonly Stack<PooledBuffer> _free;

    public BufferPool(int count, int size)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(size);
        BufferSize = size;
        Capacity = count;
        _free = new Stack<PooledBuffer>(count);
        for (int i = 0; i < count; i++)
        {
            _free.Push(new PooledBuffer(this, new byte[size]));
        }
    }

    public int BufferSize { get; }

    public int Capacity { get; }

    public int Available => _free.Count;

    /// <summary>A buffer with one reference, or null when every buffer is in use.</summary>
    public PooledBuffer? TryRent()
    {
        if (!_free.TryPop(out PooledBuffer? buffer))
        {
            return null;
        }

        buffer.Activate();
        return buffer;
    }

    internal void Return(PooledBuffer buffer) => _free.Push(buffer);

    internal sealed class PooledBuffer : PacketBuffer
    {
        private readonly BufferPool _pool;

        public PooledBuffer(BufferPool pool, byte[] array)
        {
            _pool = pool;
            Array = array;
        }

        public byte[] Array { get; }

        public override Memory<byte> Memory => Array;

        protected override void OnReleased() => _pool.Return(this);
    }
}
