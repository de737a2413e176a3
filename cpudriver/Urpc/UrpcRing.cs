using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Multikernel.CpuDriver.Urpc;

/// <summary>
/// A bounded single-producer/single-consumer ring of 64-byte slots: the only memory two cores
/// share. Each slot is one cache line holding an 8-byte sequence stamp and a 56-byte
/// <see cref="Message"/>.
/// </summary>
/// <remarks>
/// <para>Why it is fast: the consumer never reads a producer index. It polls the stamp of the
/// slot it expects next; the producer writes the message body first and the stamp last with
/// release semantics, so a matching stamp means the body is complete (Barrelfish UMP uses an
/// epoch bit the same way). The producer keeps a cached copy of the consumer's position and
/// re-reads the shared one only when the ring looks full; the consumer publishes its position
/// in batches (every quarter ring, or whenever it finds the ring empty). Producer state,
/// consumer state and the published position each sit on a cache line of their own, so the
/// fast path moves exactly one line per message between the cores.</para>
/// <para>Bounded: a full ring refuses the write (<see cref="TryWrite"/> returns false). The
/// kernel then stalls the sending domain; nothing ever grows.</para>
/// <para>All memory is one aligned native block allocated when the ring is created.</para>
/// </remarks>
public sealed unsafe class UrpcRing : IDisposable
{
    private const int CacheLine = 64;

    // Index lines are padded to 128 bytes: with adjacent-line prefetch the CPU pulls cache lines
    // in pairs, so two 64-byte lines written by different cores would still bounce together.
    private const int IndexLine = 128;

    [StructLayout(LayoutKind.Explicit, Size = IndexLine)]
    private struct ProducerLine
    {
        [FieldOffset(0)] public long Tail;
        [FieldOffset(8)] public long CachedHead;
    }

    [StructLayout(LayoutKind.Explicit, Size = IndexLine)]
    private struct ConsumerLine
    {
        [FieldOffset(0)] public long Head;
        [FieldOffset(8)] public long LastPublished;
    }

    [StructLayout(LayoutKind.Explicit, Size = IndexLine)]
    private struct SharedLine
    {
        // Written only by the consumer, read by the producer when the ring looks full.
        [FieldOffset(0)] public long PublishedHead;
    }

    [StructLayout(LayoutKind.Explicit, Size = IndexLine)]
    private struct StallLine
    {
        // Set by the producer when it found the ring full and is waiting; cleared by the consumer
        // that frees room and rings the producer. Untouched while nobody stalls.
        [FieldOffset(0)] public int ProducerStalled;
    }

    [StructLayout(LayoutKind.Explicit, Size = CacheLine)]
    private struct Slot
    {
        [FieldOffset(0)] public long Sequence;
        [FieldOffset(8)] public Message Body;
    }

    private readonly byte* _block;
    private readonly ProducerLine* _producer;
    private readonly ConsumerLine* _consumer;
    private readonly SharedLine* _shared;
    private readonly StallLine* _stall;
    private readonly Slot* _slots;
    private readonly long _mask;
    private readonly long _publishBatch;
    private int _disposed;

    /// <summary>Creates a ring of <paramref name="slots"/> 64-byte slots (a power of two, at least 2).</summary>
    public UrpcRing(int slots)
    {
        if (slots < 2 || !BitOperations.IsPow2(slots))
        {
            throw new ArgumentOutOfRangeException(nameof(slots), slots, "A URPC ring has a power-of-two number of slots, at least 2.");
        }

        Capacity = slots;
        _mask = slots - 1;
        _publishBatch = Math.Max(1, slots / 4);
        nuint bytes = (nuint)((IndexLines * IndexLine) + (slots * CacheLine));
        _block = (byte*)NativeMemory.AlignedAlloc(bytes, IndexLine);
        NativeMemory.Clear(_block, bytes);
        _producer = (ProducerLine*)_block;
        _consumer = (ConsumerLine*)(_block + IndexLine);
        _shared = (SharedLine*)(_block + (2 * IndexLine));
        _stall = (StallLine*)(_block + (3 * IndexLine));
        _slots = (Slot*)(_block + (IndexLines * IndexLine));
        GC.AddMemoryPressure((long)bytes);
        SizeInBytes = (long)bytes;
    }

    /// <summary>The 128-byte index lines before the slots: producer, consumer, published head, stall flag.</summary>
    public const int IndexLines = 4;

    /// <summary>Number of slots.</summary>
    public int Capacity { get; }

    /// <summary>Bytes of native memory the ring occupies (slots and index lines).</summary>
    public long SizeInBytes { get; }

    /// <summary>Messages written and not yet consumed, as seen by the producer (approximate from other threads).</summary>
    public int Depth => (int)(Volatile.Read(ref _producer->Tail) - Volatile.Read(ref _shared->PublishedHead));

    /// <summary>Total messages ever written (producer's count).</summary>
    public long Written => Volatile.Read(ref _producer->Tail);

    /// <summary>True when the producer would find no free slot right now. Producer side only.</summary>
    public bool IsFullForProducer
    {
        get
        {
            long tail = _producer->Tail;
            if (tail - _producer->CachedHead < Capacity)
            {
                return false;
            }

            _producer->CachedHead = Volatile.Read(ref _shared->PublishedHead);
            return tail - _producer->CachedHead >= Capacity;
        }
    }

    /// <summary>Writes one message, or returns false when the ring is full. Producer side only.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryWrite(in Message message)
    {
        ProducerLine* p = _producer;
        long tail = p->Tail;
        if (tail - p->CachedHead >= Capacity)
        {
            p->CachedHead = Volatile.Read(ref _shared->PublishedHead);
            if (tail - p->CachedHead >= Capacity)
            {
                return false;
            }
        }

        Slot* slot = _slots + (tail & _mask);
        slot->Body = message;
        // Release: the body above is visible before the stamp that announces it.
        Volatile.Write(ref slot->Sequence, tail + 1);
        p->Tail = tail + 1;
        return true;
    }

    /// <summary>
    /// Writes as many of <paramref name="messages"/> as fit, checking for space once, and
    /// returns how many were written. Producer side only.
    /// </summary>
    public int TryWriteBatch(ReadOnlySpan<Message> messages)
    {
        ProducerLine* p = _producer;
        long tail = p->Tail;
        long free = Capacity - (tail - p->CachedHead);
        if (free < messages.Length)
        {
            p->CachedHead = Volatile.Read(ref _shared->PublishedHead);
            free = Capacity - (tail - p->CachedHead);
        }

        int n = (int)Math.Min(free, messages.Length);
        for (int i = 0; i < n; i++)
        {
            Slot* slot = _slots + ((tail + i) & _mask);
            slot->Body = messages[i];
            Volatile.Write(ref slot->Sequence, tail + i + 1);
        }

        p->Tail = tail + n;
        return n;
    }

    /// <summary>
    /// As <see cref="TryWriteBatch"/>, addressing each message to <paramref name="endpoint"/> and
    /// clearing its control and trace flags as it is copied into its slot (a channel's batch send).
    /// </summary>
    public int TryWriteBatchAddressed(ReadOnlySpan<Message> messages, uint endpoint)
    {
        const MessageFlags Cleared = MessageFlags.Control | MessageFlags.HasTraceContext | MessageFlags.TraceSampled;
        ProducerLine* p = _producer;
        long tail = p->Tail;
        long free = Capacity - (tail - p->CachedHead);
        if (free < messages.Length)
        {
            p->CachedHead = Volatile.Read(ref _shared->PublishedHead);
            free = Capacity - (tail - p->CachedHead);
        }

        int n = (int)Math.Min(free, messages.Length);
        for (int i = 0; i < n; i++)
        {
            Slot* slot = _slots + ((tail + i) & _mask);
            slot->Body = messages[i];
            slot->Body.Endpoint = endpoint;
            slot->Body.Flags &= ~Cleared;
            Volatile.Write(ref slot->Sequence, tail + i + 1);
        }

        p->Tail = tail + n;
        return n;
    }

    /// <summary>
    /// Returns a reference to the next unread message, or a null reference when the ring is
    /// empty. The reference is valid until <see cref="Advance"/>. Consumer side only.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref readonly Message Peek()
    {
        long head = _consumer->Head;
        Slot* slot = _slots + (head & _mask);
        // Acquire: the body is read only after the stamp says it is complete.
        if (Volatile.Read(ref slot->Sequence) != head + 1)
        {
            return ref Unsafe.NullRef<Message>();
        }

        return ref slot->Body;
    }

    /// <summary>Consumes the message returned by <see cref="Peek"/>. Consumer side only.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Advance()
    {
        ConsumerLine* c = _consumer;
        long head = ++c->Head;
        if (head - c->LastPublished >= _publishBatch)
        {
            Publish(c, head);
        }
    }

    /// <summary>Reads one message, or returns false when the ring is empty. Consumer side only.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryRead(out Message message)
    {
        ref readonly Message next = ref Peek();
        if (Unsafe.IsNullRef(in next))
        {
            PublishConsumed();
            message = default;
            return false;
        }

        message = next;
        Advance();
        return true;
    }

    /// <summary>Reads up to <paramref name="destination"/>.Length messages and returns how many. Consumer side only.</summary>
    public int TryReadBatch(Span<Message> destination)
    {
        ConsumerLine* c = _consumer;
        long head = c->Head;
        int n = 0;
        while (n < destination.Length)
        {
            Slot* slot = _slots + ((head + n) & _mask);
            if (Volatile.Read(ref slot->Sequence) != head + n + 1)
            {
                break;
            }

            destination[n] = slot->Body;
            n++;
        }

        c->Head = head + n;
        if (n == 0 || c->Head - c->LastPublished >= _publishBatch)
        {
            Publish(c, c->Head);
        }

        return n;
    }

    /// <summary>
    /// Makes every consumed slot available to the producer now (the consumer otherwise
    /// publishes in batches). Called when the consumer finds the ring empty or goes idle.
    /// </summary>
    public void PublishConsumed()
    {
        ConsumerLine* c = _consumer;
        if (c->Head != c->LastPublished)
        {
            Publish(c, c->Head);
        }
    }

    /// <summary>True when a message is waiting. Safe from any thread (a racy hint, used before parking).</summary>
    public bool HasPending
    {
        get
        {
            long head = Volatile.Read(ref _consumer->Head);
            return Volatile.Read(ref (_slots + (head & _mask))->Sequence) == head + 1;
        }
    }

    /// <summary>
    /// Producer: record that a sender waits for room, then look again (the Dekker half on this
    /// side: flag, full fence, re-read). True when there is room after all.
    /// </summary>
    public bool MarkProducerStalled()
    {
        Interlocked.Exchange(ref _stall->ProducerStalled, 1);
        return !IsFullForProducer;
    }

    /// <summary>
    /// Consumer, after publishing what it consumed: true (once) when the producer marked a stall,
    /// so only then does the consumer ring the producer's doorbell.
    /// </summary>
    public bool TakeProducerStall()
    {
        Interlocked.MemoryBarrier(); // the published head is visible before the flag is read
        return Volatile.Read(ref _stall->ProducerStalled) != 0 && Interlocked.Exchange(ref _stall->ProducerStalled, 0) != 0;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Publish(ConsumerLine* c, long head)
    {
        c->LastPublished = head;
        // Release: the slots up to head have been read before the producer may reuse them.
        Volatile.Write(ref _shared->PublishedHead, head);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            NativeMemory.AlignedFree(_block);
            GC.RemoveMemoryPressure(SizeInBytes);
            GC.SuppressFinalize(this);
        }
    }

    /// <summary>Frees the ring if it was not disposed.</summary>
    ~UrpcRing()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            NativeMemory.AlignedFree(_block);
        }
    }
}
