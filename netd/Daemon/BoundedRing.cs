namespace Multikernel.Netd.Daemon;

/// <summary>
/// A bounded FIFO owned by netd's core (single-threaded): a consumer's posted buffers of one kind,
/// and the messages netd owes it. Its capacity is a configured limit; what happens at the limit
/// is the caller's design (refuse the post, pause reading the consumer).
/// </summary>
internal sealed class BoundedRing<T>(int capacity)
{
    private readonly T[] _items = new T[capacity];
    private int _head;
    private int _count;

    public int Count => _count;

    public int Capacity => _items.Length;

    public bool TryPush(in T item)
    {
        if (_count == _items.Length)
        {
            return false;
        }

        int tail = _head + _count;
        _items[tail >= _items.Length ? tail - _items.Length : tail] = item; // no division on the per-packet path
        _count++;
        return true;
    }

    public bool TryPeek(out T item)
    {
        if (_count == 0)
        {
            item = default!;
            return false;
        }

        item = _items[_head];
        return true;
    }

    public bool TryPop(out T item)
    {
        if (!TryPeek(out item))
        {
            return false;
        }

        if (System.Runtime.CompilerServices.RuntimeHelpers.IsReferenceOrContainsReferences<T>())
        {
            _items[_head] = default!;
        }

        _head = _head + 1 == _items.Length ? 0 : _head + 1;
        _count--;
        return true;
    }

    /// <summary>The item <paramref name="index"/> places behind the head (0 is the head); the caller checks <c>index &lt; Count</c>.</summary>
    public ref readonly T PeekAt(int index)
    {
        if ((uint)index >= (uint)_count)
        {
            throw new ArgumentOutOfRangeException(nameof(index), index, $"The ring holds {_count} items.");
        }

        int i = _head + index;
        return ref _items[i >= _items.Length ? i - _items.Length : i];
    }

    /// <summary>
    /// The items from the head up to the end of the storage or the tail, whichever comes first:
    /// what can be handed on as one span (the rest, after a wrap, follows once these are dropped).
    /// </summary>
    public ReadOnlySpan<T> FirstSegment => _items.AsSpan(_head, Math.Min(_count, _items.Length - _head));

    /// <summary>Removes the first <paramref name="n"/> items (at most <see cref="Count"/>).</summary>
    public void DropFirst(int n)
    {
        if ((uint)n > (uint)_count)
        {
            throw new ArgumentOutOfRangeException(nameof(n), n, $"The ring holds {_count} items.");
        }

        if (System.Runtime.CompilerServices.RuntimeHelpers.IsReferenceOrContainsReferences<T>())
        {
            // Let go of what the dropped items refer to; plain values (messages) need no clearing.
            for (int k = 0; k < n; k++)
            {
                _items[(_head + k) % _items.Length] = default!;
            }
        }

        _head += n;
        if (_head >= _items.Length)
        {
            _head -= _items.Length;
        }

        _count -= n;
    }

    /// <summary>Removes every item.</summary>
    public void Clear() => DropFirst(_count);

    /// <summary>Removes every item <paramref name="match"/> selects, keeping the others in order; returns how many.</summary>
    public int RemoveAll<TState>(Func<T, TState, bool> match, TState state)
    {
        int kept = 0;
        int n = _count;
        for (int i = 0; i < n; i++)
        {
            T item = _items[(_head + i) % _items.Length];
            if (!match(item, state))
            {
                _items[(_head + kept) % _items.Length] = item;
                kept++;
            }
        }

        for (int i = kept; i < n; i++)
        {
            _items[(_head + i) % _items.Length] = default!;
        }

        _count = kept;
        return n - kept;
    }
}
