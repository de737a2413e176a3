using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Multikernel.Netd.Drivers;

/// <summary>
/// A bounded single-producer/single-consumer ring of variable-length frames: the queue between
/// one sending switch port and one receiving switch port. Bytes, not slots, bound it, so small
/// frames pack densely and the memory is proportional to what is in flight.
/// </summary>
/// <remarks>
/// <para>Record layout (16-byte aligned): a 16-byte header — frame length (or -1: padding to the
/// end of the buffer, the record continues at offset 0), 4 reserved bytes and the producer's
/// enqueue timestamp (for injected delay) — then the frame, padded to 16 bytes.</para>
/// <para>Ordering: the producer writes a record, then publishes its tail with a release store;
/// the consumer reads the tail with an acquire load before reading records. Symmetrically the
/// consumer publishes its head (release) after it is done with a record and the producer reads it
/// (acquire) before reusing the space. The producer re-reads the head only when its cached copy
/// says the ring is full, and the consumer re-reads the tail only when its cached copy says it is
/// empty, so a steady stream moves few cache lines. Each side's fields sit on their own line.</para>
/// </remarks>
internal sealed class FrameRing
{
    internal const int HeaderBytes = 16;
    private const int Padding = -1;

    [StructLayout(LayoutKind.Explicit, Size = 128)]
    private struct Line
    {
        [FieldOffset(64)] public long Value;
        [FieldOffset(72)] public long Cached;
        [FieldOffset(80)] public long Count;
    }

    private readonly byte[] _buffer;
    private readonly int _mask;
    private Line _producer;   // Value = tail (private), Cached = last head seen, Count = drops (QueueFull)
    private Line _consumer;   // Value = head (private), Cached = last tail seen
    private Line _publishedTail;
    private Line _publishedHead;

    public FrameRing(int capacityBytes)
    {
        if (capacityBytes < 4096 || !BitOperations.IsPow2(capacityBytes))
        {
            throw new ArgumentOutOfRangeException(nameof(capacityBytes), capacityBytes, "A frame ring holds a power-of-two number of bytes, at least 4096.");
        }

        _buffer = GC.AllocateArray<byte>(capacityBytes, pinned: false);
        _mask = capacityBytes - 1;
    }

    public int Capacity => _buffer.Length;

    /// <summary>Frames the producer could not enqueue because the ring was full (written by the producer only).</summary>
    public long Dropped => Volatile.Read(ref _producer.Count);

    /// <summary>Bytes a frame of <paramref name="length"/> occupies.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int RecordBytes(int length) => (HeaderBytes + length + 15) & ~15;

    /// <summary>Producer: enqueue a copy of <paramref name="frame"/>; false (and counted) when the ring is full.</summary>
    public bool TryWrite(ReadOnlySpan<byte> frame, long timestamp)
    {
        int need = RecordBytes(frame.Length);
        long tail = _producer.Value;
        int pos = (int)(tail & _mask);
        int contiguous = _buffer.Length - pos;
        int total = contiguous < need ? contiguous + need : need;
        if (_buffer.Length - (tail - _producer.Cached) < total)
        {
            // Looks full: refresh the consumer's position (acquire: its reads of the space are done).
            _producer.Cached = Volatile.Read(ref _publishedHead.Value);
            if (_buffer.Length - (tail - _producer.Cached) < total)
            {
                _producer.Count++;
                return false;
            }
        }

        ref byte start = ref MemoryMarshal.GetArrayDataReference(_buffer);
        if (contiguous < need)
        {
            Unsafe.WriteUnaligned(ref Unsafe.Add(ref start, pos), Padding);
            pos = 0;
        }

        Unsafe.WriteUnaligned(ref Unsafe.Add(ref start, pos), frame.Length);
        Unsafe.WriteUnaligned(ref Unsafe.Add(ref start, pos + 8), timestamp);
        frame.CopyTo(_buffer.AsSpan(pos + HeaderBytes, frame.Length));
        tail += total;
        _producer.Value = tail;
        // Release: the record's bytes are visible before the new tail.
        Volatile.Write(ref _publishedTail.Value, tail);
        return true;
    }

    /// <summary>Consumer: the frame at the head without removing it; false when the ring is empty.</summary>
    public bool TryPeek(out ReadOnlySpan<byte> frame, out long timestamp)
    {
        long head = _consumer.Value;
        if (head == _consumer.Cached)
        {
            // Looks empty: refresh the producer's position (acquire: its record bytes are visible).
            _consumer.Cached = Volatile.Read(ref _publishedTail.Value);
            if (head == _consumer.Cached)
            {
                frame = default;
                timestamp = 0;
                return false;
            }
        }

        ref byte start = ref MemoryMarshal.GetArrayDataReference(_buffer);
        int pos = (int)(head & _mask);
        int length = Unsafe.ReadUnaligned<int>(ref Unsafe.Add(ref start, pos));
        if (length == Padding)
        {
            head += _buffer.Length - pos;
            _consumer.Value = head;
            pos = 0;
            length = Unsafe.ReadUnaligned<int>(ref Unsafe.Add(ref start, 0));
        }

        timestamp = Unsafe.ReadUnaligned<long>(ref Unsafe.Add(ref start, pos + 8));
        frame = _buffer.AsSpan(pos + HeaderBytes, length);
        return true;
    }

    /// <summary>Consumer: remove the frame <see cref="TryPeek"/> returned (of <paramref name="length"/> bytes).</summary>
    public void Advance(int length)
    {
        long head = _consumer.Value + RecordBytes(length);
        _consumer.Value = head;
        // Release: we are done reading the record before the producer may overwrite it.
        Volatile.Write(ref _publishedHead.Value, head);
    }

    /// <summary>Consumer: true when a frame is queued (reads the producer's published tail).</summary>
    public bool HasFrames => _consumer.Value != Volatile.Read(ref _publishedTail.Value);
}
