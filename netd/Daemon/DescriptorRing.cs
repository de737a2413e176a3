namespace Multikernel.Netd.Daemon;

/// <summary>
/// A bounded FIFO of descriptors, owned by netd's core (single-threaded). Its capacity is the
/// most buffers of one kind a consumer may hand netd at once; a post beyond it is refused.
/// </summary>
internal sealed class DescriptorRing(int capacity)
{
    private readonly Descriptor[] _items = new Descriptor[capacity];
    private int _head;
    private int _count;

    public int Count => _count;

    public int Capacity => _items.Length;

    public bool TryPush(in Descriptor d)
    {
        if (_count == _items.Length)
        {
            return false;
        }

        _items[(_head + _count) % _items.Length] = d;
        _count++;
        return true;
    }

    /// <summary>Puts <paramref name="d"/> back at the front (a delivery that could not be completed).</summary>
    public void PushFront(in Descriptor d)
    {
        if (_count == _items.Length)
        {
            throw new InvalidOperationException("A descriptor ring was full when a taken descriptor came back: a buffer was counted twice.");
        }

        _head = (_head + _items.Length - 1) % _items.Length;
        _items[_head] = d;
        _count++;
    }

    public bool TryPeek(out Descriptor d)
    {
        if (_count == 0)
        {
            d = default;
            return false;
        }

        d = _items[_head];
        return true;
    }

    public bool TryPop(out Descriptor d)
    {
        if (!TryPeek(out d))
        {
            return false;
        }

        _items[_head] = default;
        _head = (_head + 1) % _items.Length;
        _count--;
        return true;
    }

    /// <summary>Removes every descriptor of <paramref name="region"/> (keeping the others in order); returns how many.</summary>
    public int RemoveRegion(ushort region)
    {
        int kept = 0;
        int removed = 0;
        int n = _count;
        for (int i = 0; i < n; i++)
        {
            Descriptor d = _items[(_head + i) % _items.Length];
            if (d.Region == region)
            {
                removed++;
                continue;
            }

            _items[(_head + kept) % _items.Length] = d;
            kept++;
        }

        for (int i = kept; i < n; i++)
        {
            _items[(_head + i) % _items.Length] = default;
        }

        _count = kept;
        return removed;
    }
}
