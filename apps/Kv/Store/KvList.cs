namespace Multikernel.Apps.Kv.Store;

/// <summary>A list value: a growable ring of byte strings, O(1) push and pop at both ends.</summary>
internal sealed class KvList
{
    private byte[][] _items = new byte[4][];
    private int _head;

    public int Count { get; private set; }

    public long PayloadBytes { get; private set; }

    public byte[] this[int index] => _items[(_head + index) & (_items.Length - 1)];

    public void Push(byte[] element, bool left)
    {
        if (Count == _items.Length)
        {
            var bigger = new byte[_items.Length * 2][];
            for (int i = 0; i < Count; i++)
            {
                bigger[i] = this[i];
            }

            _items = bigger;
            _head = 0;
        }

        int mask = _items.Length - 1;
        if (left)
        {
            _head = (_head - 1) & mask;
            _items[_head] = element;
        }
        else
        {
            _items[(_head + Count) & mask] = element;
        }

        Count++;
        PayloadBytes += element.Length;
    }

    public byte[] Pop(bool left)
    {
        int mask = _items.Length - 1;
        int slot = left ? _head : (_head + Count - 1) & mask;
        byte[] element = _items[slot];
        _items[slot] = null!;
        if (left)
        {
            _head = (_head + 1) & mask;
        }

        Count--;
        PayloadBytes -= element.Length;
        return element;
    }
}
