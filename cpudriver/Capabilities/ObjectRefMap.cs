using System.Numerics;

namespace Multikernel.CpuDriver.Capabilities;

/// <summary>
/// Fixed-capacity open-addressing map from an object identity (owner core, object index) to
/// the first of this core's references to it. A revoke message names an object; this is how a
/// core finds its copies of it without scanning its table. Linear probing with backward-shift
/// deletion, so there are no tombstones and the table never degrades.
/// </summary>
internal sealed class ObjectRefMap
{
    private readonly ulong[] _keys;
    private readonly int[] _values;
    private readonly int _mask;
    private int _count;

    public ObjectRefMap(int maxEntries)
    {
        int capacity = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(16, maxEntries * 2));
        _keys = new ulong[capacity];
        _values = new int[capacity];
        _mask = capacity - 1;
    }

    public int Count => _count;

    // Key 0 marks an empty bucket, so stored keys are offset by one.
    private static ulong Key(int owner, int index) => (((ulong)(uint)owner << 32) | (uint)index) + 1;

    private static int Hash(ulong key) => (int)((key * 0x9E3779B97F4A7C15UL) >> 40);

    public int Get(int owner, int index)
    {
        ulong key = Key(owner, index);
        int i = Hash(key) & _mask;
        while (true)
        {
            ulong k = _keys[i];
            if (k == key)
            {
                return _values[i];
            }

            if (k == 0)
            {
                return -1;
            }

            i = (i + 1) & _mask;
        }
    }

    public void Set(int owner, int index, int value)
    {
        ulong key = Key(owner, index);
        int i = Hash(key) & _mask;
        while (true)
        {
            ulong k = _keys[i];
            if (k == key)
            {
                _values[i] = value;
                return;
            }

            if (k == 0)
            {
                // Capacity is twice the number of references a core can hold, so this never fills.
                if (_count >= _keys.Length - 1)
                {
                    throw new CapabilityInvariantException("The object-to-reference map overflowed (its capacity is twice the reference table).");
                }

                _keys[i] = key;
                _values[i] = value;
                _count++;
                return;
            }

            i = (i + 1) & _mask;
        }
    }

    public void Remove(int owner, int index)
    {
        ulong key = Key(owner, index);
        int i = Hash(key) & _mask;
        while (true)
        {
            ulong k = _keys[i];
            if (k == 0)
            {
                return;
            }

            if (k == key)
            {
                break;
            }

            i = (i + 1) & _mask;
        }

        // Backward-shift: pull later entries of the probe run into the hole.
        _count--;
        int hole = i;
        int j = i;
        while (true)
        {
            j = (j + 1) & _mask;
            ulong k = _keys[j];
            if (k == 0)
            {
                break;
            }

            int home = Hash(k) & _mask;
            bool movable = hole <= j ? (home <= hole || home > j) : (home <= hole && home > j);
            if (movable)
            {
                _keys[hole] = k;
                _values[hole] = _values[j];
                hole = j;
            }
        }

        _keys[hole] = 0;
        _values[hole] = 0;
    }
}
