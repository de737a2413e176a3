using System.Runtime.InteropServices;

namespace Multikernel.CpuDriver.Capabilities;

/// <summary>
/// The shared-memory baseline for the shootdown benchmark (multikernel paper, figures 6-7): what
/// a conventional kernel does instead of messages. One mapping table shared by every core under a
/// lock; a revoke removes the entry under the lock, publishes a new epoch, and spins until every
/// core that had the entry mapped has seen the epoch (in its own loop, <see cref="Poll"/>) and
/// written its acknowledgement into a shared ack array.
/// </summary>
/// <remarks>
/// Deliberately built on shared mutable memory: it is the thing the message-based protocol is
/// measured against, never used by a kernel. Each core's ack and cached mapping word sit on their
/// own cache line so the comparison measures the protocol, not false sharing.
/// </remarks>
internal sealed class SharedMemoryShootdown
{
    [StructLayout(LayoutKind.Explicit, Size = 128)]
    private struct PaddedLong
    {
        [FieldOffset(64)] public long Value;
    }

    private readonly Lock _lock = new();
    private readonly ulong[] _table;
    private readonly PaddedLong[] _acks;
    private readonly PaddedLong[] _seen;
    private readonly PaddedLong[] _cachedEntry;
    private PaddedLong _epoch;
    private PaddedLong _revokedEntry;

    public SharedMemoryShootdown(int cores, int entries)
    {
        if (cores < 1 || cores > 64)
        {
            throw new ArgumentOutOfRangeException(nameof(cores), cores, "Between 1 and 64 cores.");
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(entries, 1);
        Cores = cores;
        _table = new ulong[entries];
        _acks = new PaddedLong[cores];
        _seen = new PaddedLong[cores];
        _cachedEntry = new PaddedLong[cores];
        for (int i = 0; i < cores; i++)
        {
            _cachedEntry[i].Value = -1;
        }
    }

    public int Cores { get; }

    /// <summary>Core <paramref name="core"/> maps <paramref name="entry"/> (takes a copy, caches the translation).</summary>
    public void Map(int core, int entry)
    {
        lock (_lock)
        {
            _table[entry] |= 1UL << core;
        }

        Volatile.Write(ref _cachedEntry[core].Value, entry);
    }

    /// <summary>True when <paramref name="core"/> still has <paramref name="entry"/> in its local cache.</summary>
    public bool IsCached(int core, int entry) => Volatile.Read(ref _cachedEntry[core].Value) == entry;

    /// <summary>
    /// Revokes <paramref name="entry"/> from every core: remove under the lock, publish, spin on the
    /// ack array until every holder acknowledged. Returns the number of cores that acknowledged.
    /// </summary>
    public int Revoke(int entry, int initiator)
    {
        ulong holders;
        long epoch;
        lock (_lock)
        {
            holders = _table[entry];
            _table[entry] = 0;
            Volatile.Write(ref _revokedEntry.Value, entry);
            epoch = Interlocked.Increment(ref _epoch.Value);
        }

        Poll(initiator);
        int acked = 0;
        for (int c = 0; c < Cores; c++)
        {
            if ((holders & (1UL << c)) == 0)
            {
                continue;
            }

            var spin = default(SpinWait);
            while (Volatile.Read(ref _acks[c].Value) < epoch)
            {
                spin.SpinOnce(sleep1Threshold: -1);
            }

            acked++;
        }

        return acked;
    }

    /// <summary>Core <paramref name="core"/>'s loop checks for a shootdown, drops the entry from its cache and acknowledges.</summary>
    public bool Poll(int core)
    {
        long epoch = Volatile.Read(ref _epoch.Value);
        if (epoch == _seen[core].Value)
        {
            return false;
        }

        long entry = Volatile.Read(ref _revokedEntry.Value);
        if (Volatile.Read(ref _cachedEntry[core].Value) == entry)
        {
            Volatile.Write(ref _cachedEntry[core].Value, -1);
        }

        _seen[core].Value = epoch;
        Volatile.Write(ref _acks[core].Value, epoch);
        return true;
    }
}
