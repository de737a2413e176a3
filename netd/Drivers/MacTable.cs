using System.Numerics;
using Multikernel.Netd.Wire;

namespace Multikernel.Netd.Drivers;

/// <summary>
/// The switch's learned station table: a fixed-size open-addressed hash table that every
/// sender thread reads and updates without a lock. Bounded: when the probe window of an address
/// holds only live entries, the address is not learned (counted) and frames to it are flooded.
/// </summary>
/// <remarks>
/// <para>Each entry is two words. The key word packs the address and the port
/// (<c>mac &lt;&lt; 16 | port + 1</c>; 0 = empty), so "which port is this station on" is read
/// and replaced atomically with one compare-and-swap. The second word is the last-seen time in
/// milliseconds, written with a plain release store: two senders racing to refresh it both write
/// a current time, and a reader that sees a new key with an old time merely floods once.</para>
/// <para>Slots are never emptied, only taken over when expired, so a lookup stops at the first
/// empty slot. Aging is lazy: an entry older than the aging time is ignored by lookups and
/// reclaimable by learning; nothing sweeps the table. A sender rewrites the time only when it is
/// older than a quarter of the aging time, so steady traffic does not bounce the line.</para>
/// </remarks>
internal sealed class MacTable
{
    private const int ProbeWindow = 8;

    private readonly long[] _keys;
    private readonly long[] _seen;
    private readonly int _mask;
    private readonly long _agingMs;
    private readonly long _refreshMs;
    private long _learnFailures;

    public MacTable(int capacity, TimeSpan agingTime)
    {
        int slots = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(ProbeWindow, capacity));
        _keys = new long[slots];
        _seen = new long[slots];
        _mask = slots - 1;
        _agingMs = Math.Max(1, (long)agingTime.TotalMilliseconds);
        _refreshMs = Math.Max(1, _agingMs / 4);
    }

    /// <summary>Slots in the table (the capacity rounded up to a power of two).</summary>
    public int Slots => _keys.Length;

    /// <summary>Addresses that could not be learned because their probe window was full of live entries.</summary>
    public long LearnFailures => Volatile.Read(ref _learnFailures);

    /// <summary>The port <paramref name="mac"/> was last seen on, or -1 when unknown or aged out.</summary>
    public int Lookup(MacAddress mac, long nowMs)
    {
        int home = Home(mac);
        for (int i = 0; i < ProbeWindow; i++)
        {
            int slot = (home + i) & _mask;
            long key = Volatile.Read(ref _keys[slot]);
            if (key == 0)
            {
                return -1;
            }

            if ((ulong)key >> 16 == mac.Value)
            {
                return nowMs - Volatile.Read(ref _seen[slot]) > _agingMs ? -1 : (int)(key & 0xFFFF) - 1;
            }
        }

        return -1;
    }

    /// <summary>Records that <paramref name="mac"/> sent from <paramref name="port"/> at <paramref name="nowMs"/>.</summary>
    public void Learn(MacAddress mac, int port, long nowMs)
    {
        long wanted = (long)((mac.Value << 16) | (uint)(port + 1));
        int home = Home(mac);
        int expired = -1;
        long expiredKey = 0;
        for (int i = 0; i < ProbeWindow; i++)
        {
            int slot = (home + i) & _mask;
            long key = Volatile.Read(ref _keys[slot]);
            if (key == 0)
            {
                long won = Interlocked.CompareExchange(ref _keys[slot], wanted, 0);
                if (won == 0)
                {
                    Volatile.Write(ref _seen[slot], nowMs);
                    return;
                }

                key = won; // another sender took the slot first; maybe for this very address
            }

            if ((ulong)key >> 16 == mac.Value)
            {
                if (key != wanted)
                {
                    // The station moved to another port.
                    Interlocked.CompareExchange(ref _keys[slot], wanted, key);
                    Volatile.Write(ref _seen[slot], nowMs);
                }
                else if (nowMs - Volatile.Read(ref _seen[slot]) >= _refreshMs)
                {
                    Volatile.Write(ref _seen[slot], nowMs);
                }

                return;
            }

            if (expired < 0 && nowMs - Volatile.Read(ref _seen[slot]) > _agingMs)
            {
                expired = slot;
                expiredKey = key;
            }
        }

        if (expired >= 0 && Interlocked.CompareExchange(ref _keys[expired], wanted, expiredKey) == expiredKey)
        {
            Volatile.Write(ref _seen[expired], nowMs);
            return;
        }

        Interlocked.Increment(ref _learnFailures);
    }

    /// <summary>Live entries (a full scan: diagnostics only).</summary>
    public int CountLive(long nowMs)
    {
        int live = 0;
        for (int i = 0; i < _keys.Length; i++)
        {
            if (Volatile.Read(ref _keys[i]) != 0 && nowMs - Volatile.Read(ref _seen[i]) <= _agingMs)
            {
                live++;
            }
        }

        return live;
    }

    private int Home(MacAddress mac) => (int)((mac.Value * 0x9E37_79B9_7F4A_7C15UL) >> 40) & _mask;
}
