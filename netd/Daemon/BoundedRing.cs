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

        _items[(_head + _count) % _items.Length] = item;
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

        _items[_head] = default!;
        _head = (_head + 1) % _items.Length;
        _count--;
        return true;
    }

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
