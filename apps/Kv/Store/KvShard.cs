using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Multikernel.Apps.Kv.Store;

/// <summary>Outcome of a shard operation.</summary>
public enum KvStatus
{
    /// <summary>Done.</summary>
    Ok,

    /// <summary>The key does not exist (or has expired).</summary>
    NotFound,

    /// <summary>A condition (NX, XX, GT, LT) was not met; nothing changed.</summary>
    NotApplied,

    /// <summary>The key holds a value of another type.</summary>
    WrongType,

    /// <summary>The stored value is not a 64-bit decimal integer.</summary>
    NotInteger,

    /// <summary>The arithmetic would overflow 64 bits.</summary>
    Overflow,

    /// <summary>The write would pass the shard's key or memory limit; nothing changed.</summary>
    OutOfMemory,
}

/// <summary>Type of the value under a key.</summary>
public enum KvType
{
    /// <summary>No such key.</summary>
    None,

    /// <summary>A byte string.</summary>
    String,

    /// <summary>A list of byte strings.</summary>
    List,
}

/// <summary>Condition of a SET.</summary>
public enum SetCondition
{
    /// <summary>Always set.</summary>
    Always,

    /// <summary>Only if the key does not exist (NX).</summary>
    IfMissing,

    /// <summary>Only if the key exists (XX).</summary>
    IfExists,
}

/// <summary>Condition of an EXPIRE (redis 7's NX, XX, GT, LT).</summary>
public enum ExpireCondition
{
    /// <summary>Always.</summary>
    Always,

    /// <summary>Only if the key has no time to live.</summary>
    IfNone,

    /// <summary>Only if the key has a time to live.</summary>
    IfSome,

    /// <summary>Only if the new expiry is later than the current one (no expiry counts as infinitely late).</summary>
    IfGreater,

    /// <summary>Only if the new expiry is earlier than the current one.</summary>
    IfLess,
}

/// <summary>
/// The data of one shard: keys to strings or lists, with expiry. Single-threaded by contract —
/// only the core that owns the shard calls it (others forward through an
/// <see cref="IShardInvoker"/>), so it takes no locks.
/// </summary>
/// <remarks>
/// <para>Keys are looked up by span (an alternate-key lookup on the dictionary), so reads and
/// overwrites allocate nothing; a new key is copied once. Stored strings are never mutated in
/// place: a GET hands the stored array to a connection on another core, which serializes it
/// after the call returns, so a later SET must install a new array instead of writing over the
/// one being read.</para>
/// <para>Expiry is lazy (an expired key is removed when touched) plus a bounded active step:
/// keys with a time to live sit in a dense array that a cursor walks a few entries at a time,
/// every <see cref="ShardLimits.ExpireSweepEveryOperations"/> writes and whenever the host calls
/// <see cref="SweepExpired"/>.</para>
/// <para>Memory is accounted as key + value bytes + a fixed per-entry overhead and checked
/// before each write that grows the shard.</para>
/// </remarks>
public sealed class KvShard
{
    /// <summary>Bytes charged per key besides its key and value (dictionary entry, array headers).</summary>
    public const int EntryOverhead = 64;

    /// <summary>Bytes charged per list element besides its payload.</summary>
    public const int ListElementOverhead = 24;

    private readonly Dictionary<byte[], Entry> _map;
    private readonly Dictionary<byte[], Entry>.AlternateLookup<ReadOnlySpan<byte>> _lookup;
    private readonly TimeProvider _time;
    private readonly ShardLimits _limits;
    private byte[][] _volatile = new byte[16][];
    private int _volatileCount;
    private int _sweepCursor;
    private int _writesSinceSweep;

    /// <summary>Creates shard <paramref name="index"/> enforcing <paramref name="limits"/>, reading time from <paramref name="time"/>.</summary>
    public KvShard(int index, ShardLimits limits, TimeProvider time)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentNullException.ThrowIfNull(time);
        ArgumentOutOfRangeException.ThrowIfLessThan(limits.MaxKeys, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(limits.MaxMemoryBytes, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(limits.ExpireSweepKeys, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(limits.ExpireSweepEveryOperations, 1);
        Index = index;
        _limits = limits;
        _time = time;
        _map = new Dictionary<byte[], Entry>(ByteKeyComparer.Instance);
        _lookup = _map.GetAlternateLookup<ReadOnlySpan<byte>>();
    }

    /// <summary>This shard's number.</summary>
    public int Index { get; }

    /// <summary>Keys held, including expired ones not yet removed (as redis's DBSIZE counts them).</summary>
    public int Count => _map.Count;

    /// <summary>Accounted bytes (keys, values, overhead).</summary>
    public long UsedBytes { get; private set; }

    /// <summary>Keys that currently carry a time to live.</summary>
    public int VolatileCount => _volatileCount;

    /// <summary>Keys removed because they expired (lazily or by a sweep).</summary>
    public long ExpiredKeys { get; private set; }

    /// <summary>Writes refused at the key or memory limit.</summary>
    public long RefusedWrites { get; private set; }

    /// <summary>Current time in unix milliseconds, as this shard sees it.</summary>
    public long NowMs => _time.GetUtcNow().ToUnixTimeMilliseconds();

    // ---------------------------------------------------------------- strings

    /// <summary>The string under <paramref name="key"/>: the stored array itself, which is never mutated afterwards.</summary>
    public KvStatus TryGet(ReadOnlySpan<byte> key, out byte[]? value)
    {
        value = null;
        ref Entry entry = ref Find(key);
        if (Unsafe.IsNullRef(ref entry))
        {
            return KvStatus.NotFound;
        }

        if (entry.Value is not byte[] bytes)
        {
            return KvStatus.WrongType;
        }

        value = bytes;
        return KvStatus.Ok;
    }

    /// <summary>
    /// SET: stores <paramref name="value"/> under <paramref name="key"/> if <paramref name="condition"/> holds.
    /// <paramref name="expireAtMs"/> is a unix-ms deadline, 0 for none, or −1 to keep the current one (KEEPTTL).
    /// With <paramref name="returnOld"/> (SET … GET) the previous string comes back in <paramref name="previous"/>.
    /// </summary>
    public KvStatus Set(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, SetCondition condition, long expireAtMs, bool returnOld, out byte[]? previous)
    {
        previous = null;
        ref Entry entry = ref Find(key);
        bool exists = !Unsafe.IsNullRef(ref entry);
        if (exists && returnOld)
        {
            if (entry.Value is not byte[] old)
            {
                return KvStatus.WrongType;
            }

            previous = old;
        }

        if ((condition == SetCondition.IfMissing && exists) || (condition == SetCondition.IfExists && !exists))
        {
            return KvStatus.NotApplied;
        }

        if (exists)
        {
            long delta = value.Length - SizeOf(entry.Value);
            if (delta > 0 && UsedBytes + delta > _limits.MaxMemoryBytes)
            {
                RefusedWrites++;
                return KvStatus.OutOfMemory;
            }

            entry.Value = value.ToArray();
            UsedBytes += delta;
            if (expireAtMs >= 0)
            {
                ApplyExpiry(key, ref entry, expireAtMs);
            }
        }
        else
        {
            ref Entry added = ref TryAdd(key, value.ToArray(), value.Length);
            if (Unsafe.IsNullRef(ref added))
            {
                return KvStatus.OutOfMemory;
            }

            if (expireAtMs > 0)
            {
                ApplyExpiry(key, ref added, expireAtMs);
            }
        }

        AfterWrite();
        return KvStatus.Ok;
    }

    /// <summary>INCRBY/DECRBY: adds <paramref name="delta"/> to the decimal integer under <paramref name="key"/> (a missing key counts as 0).</summary>
    public KvStatus IncrementBy(ReadOnlySpan<byte> key, long delta, out long result)
    {
        result = 0;
        ref Entry entry = ref Find(key);
        long current = 0;
        bool exists = !Unsafe.IsNullRef(ref entry);
        if (exists)
        {
            if (entry.Value is not byte[] bytes)
            {
                return KvStatus.WrongType;
            }

            if (!Resp.RespParser.TryParseInt64(bytes, out current))
            {
                return KvStatus.NotInteger;
            }
        }

        if ((delta > 0 && current > long.MaxValue - delta) || (delta < 0 && current < long.MinValue - delta))
        {
            return KvStatus.Overflow;
        }

        result = current + delta;
        byte[] text = FormatInt64(result);
        if (exists)
        {
            long growth = text.Length - SizeOf(entry.Value);
            if (growth > 0 && UsedBytes + growth > _limits.MaxMemoryBytes)
            {
                RefusedWrites++;
                return KvStatus.OutOfMemory;
            }

            entry.Value = text;
            UsedBytes += growth;
        }
        else if (Unsafe.IsNullRef(ref TryAdd(key, text, text.Length)))
        {
            return KvStatus.OutOfMemory;
        }

        AfterWrite();
        return KvStatus.Ok;
    }

    /// <summary>APPEND: appends to the string under <paramref name="key"/> (creating it); the new length comes back.</summary>
    public KvStatus Append(ReadOnlySpan<byte> key, ReadOnlySpan<byte> suffix, out long length)
    {
        length = 0;
        ref Entry entry = ref Find(key);
        if (Unsafe.IsNullRef(ref entry))
        {
            if (Unsafe.IsNullRef(ref TryAdd(key, suffix.ToArray(), suffix.Length)))
            {
                return KvStatus.OutOfMemory;
            }

            length = suffix.Length;
        }
        else
        {
            if (entry.Value is not byte[] old)
            {
                return KvStatus.WrongType;
            }

            if (UsedBytes + suffix.Length > _limits.MaxMemoryBytes)
            {
                RefusedWrites++;
                return KvStatus.OutOfMemory;
            }

            byte[] joined = new byte[old.Length + suffix.Length];
            old.CopyTo(joined, 0);
            suffix.CopyTo(joined.AsSpan(old.Length));
            entry.Value = joined;
            UsedBytes += suffix.Length;
            length = joined.Length;
        }

        AfterWrite();
        return KvStatus.Ok;
    }

    // ---------------------------------------------------------------- keys

    /// <summary>DEL: removes <paramref name="key"/>; true if it existed.</summary>
    public bool Remove(ReadOnlySpan<byte> key)
    {
        ref Entry entry = ref Find(key);
        if (Unsafe.IsNullRef(ref entry))
        {
            return false;
        }

        RemoveExisting(key);
        return true;
    }

    /// <summary>EXISTS for one key.</summary>
    public bool ContainsKey(ReadOnlySpan<byte> key) => !Unsafe.IsNullRef(ref Find(key));

    /// <summary>TYPE.</summary>
    public KvType TypeOf(ReadOnlySpan<byte> key)
    {
        ref Entry entry = ref Find(key);
        if (Unsafe.IsNullRef(ref entry))
        {
            return KvType.None;
        }

        return entry.Value is byte[] ? KvType.String : KvType.List;
    }

    /// <summary>PTTL: −2 if the key does not exist, −1 if it has no time to live, else the milliseconds left.</summary>
    public long TimeToLiveMs(ReadOnlySpan<byte> key)
    {
        ref Entry entry = ref Find(key);
        if (Unsafe.IsNullRef(ref entry))
        {
            return -2;
        }

        return entry.ExpireAtMs == 0 ? -1 : Math.Max(0, entry.ExpireAtMs - NowMs);
    }

    /// <summary>
    /// EXPIRE/PEXPIRE/EXPIREAT: sets the deadline of <paramref name="key"/> to <paramref name="atMs"/> (unix ms) if
    /// <paramref name="condition"/> holds. A deadline not in the future deletes the key, as redis does.
    /// </summary>
    public KvStatus Expire(ReadOnlySpan<byte> key, long atMs, ExpireCondition condition)
    {
        ref Entry entry = ref Find(key);
        if (Unsafe.IsNullRef(ref entry))
        {
            return KvStatus.NotFound;
        }

        long current = entry.ExpireAtMs;
        bool applies = condition switch
        {
            ExpireCondition.IfNone => current == 0,
            ExpireCondition.IfSome => current != 0,
            ExpireCondition.IfGreater => current != 0 && atMs > current,
            ExpireCondition.IfLess => current == 0 || atMs < current,
            _ => true,
        };
        if (!applies)
        {
            return KvStatus.NotApplied;
        }

        if (atMs <= NowMs)
        {
            RemoveExisting(key);
        }
        else
        {
            ApplyExpiry(key, ref entry, atMs);
        }

        AfterWrite();
        return KvStatus.Ok;
    }

    /// <summary>PERSIST: drops the time to live; true if there was one.</summary>
    public bool Persist(ReadOnlySpan<byte> key)
    {
        ref Entry entry = ref Find(key);
        if (Unsafe.IsNullRef(ref entry) || entry.ExpireAtMs == 0)
        {
            return false;
        }

        ApplyExpiry(key, ref entry, 0);
        return true;
    }

    /// <summary>FLUSHALL/FLUSHDB for this shard; returns the keys removed.</summary>
    public int Clear()
    {
        int n = _map.Count;
        _map.Clear();
        Array.Clear(_volatile, 0, _volatileCount);
        _volatileCount = 0;
        _sweepCursor = 0;
        UsedBytes = 0;
        return n;
    }

    /// <summary>KEYS for this shard: appends the live keys matching <paramref name="pattern"/> (redis glob); returns how many.</summary>
    public int CollectKeys(ReadOnlySpan<byte> pattern, List<byte[]> into)
    {
        ArgumentNullException.ThrowIfNull(into);
        long now = NowMs;
        int n = 0;
        foreach (KeyValuePair<byte[], Entry> pair in _map)
        {
            if ((pair.Value.ExpireAtMs == 0 || pair.Value.ExpireAtMs > now) && Glob.Match(pattern, pair.Key, ignoreCase: false))
            {
                into.Add(pair.Key);
                n++;
            }
        }

        return n;
    }

    // ---------------------------------------------------------------- lists

    /// <summary>LPUSH/RPUSH of one element; the list's new length comes back.</summary>
    public KvStatus Push(ReadOnlySpan<byte> key, ReadOnlySpan<byte> element, bool left, out long length)
    {
        length = 0;
        ref Entry entry = ref Find(key);
        KvList list;
        if (Unsafe.IsNullRef(ref entry))
        {
            list = new KvList();
            if (Unsafe.IsNullRef(ref TryAdd(key, list, 0)))
            {
                return KvStatus.OutOfMemory;
            }
        }
        else if (entry.Value is KvList existing)
        {
            list = existing;
        }
        else
        {
            return KvStatus.WrongType;
        }

        long cost = element.Length + ListElementOverhead;
        if (UsedBytes + cost > _limits.MaxMemoryBytes)
        {
            RefusedWrites++;
            if (list.Count == 0)
            {
                RemoveExisting(key);
            }

            return KvStatus.OutOfMemory;
        }

        list.Push(element.ToArray(), left);
        UsedBytes += cost;
        length = list.Count;
        AfterWrite();
        return KvStatus.Ok;
    }

    /// <summary>LPOP/RPOP of one element (a list emptied by it is removed, as in redis).</summary>
    public KvStatus Pop(ReadOnlySpan<byte> key, bool left, out byte[]? element)
    {
        element = null;
        ref Entry entry = ref Find(key);
        if (Unsafe.IsNullRef(ref entry))
        {
            return KvStatus.NotFound;
        }

        if (entry.Value is not KvList list)
        {
            return KvStatus.WrongType;
        }

        element = list.Pop(left);
        UsedBytes -= element.Length + ListElementOverhead;
        if (list.Count == 0)
        {
            RemoveExisting(key);
        }

        return KvStatus.Ok;
    }

    /// <summary>LLEN.</summary>
    public KvStatus ListLength(ReadOnlySpan<byte> key, out long length)
    {
        length = 0;
        ref Entry entry = ref Find(key);
        if (Unsafe.IsNullRef(ref entry))
        {
            return KvStatus.Ok;
        }

        if (entry.Value is not KvList list)
        {
            return KvStatus.WrongType;
        }

        length = list.Count;
        return KvStatus.Ok;
    }

    /// <summary>LRANGE with redis's index rules (negative from the end, clamped); the elements are the stored arrays.</summary>
    public KvStatus ListRange(ReadOnlySpan<byte> key, long start, long stop, out byte[][] elements)
    {
        elements = [];
        ref Entry entry = ref Find(key);
        if (Unsafe.IsNullRef(ref entry))
        {
            return KvStatus.Ok;
        }

        if (entry.Value is not KvList list)
        {
            return KvStatus.WrongType;
        }

        long n = list.Count;
        if (start < 0)
        {
            start = Math.Max(0, n + start);
        }

        if (stop < 0)
        {
            stop = n + stop;
        }

        stop = Math.Min(stop, n - 1);
        if (start > stop || start >= n)
        {
            return KvStatus.Ok;
        }

        elements = new byte[stop - start + 1][];
        for (long i = start; i <= stop; i++)
        {
            elements[i - start] = list[(int)i];
        }

        return KvStatus.Ok;
    }

    // ---------------------------------------------------------------- expiry

    /// <summary>
    /// One bounded active-expiry step: examines at most <paramref name="maxKeys"/> keys that carry a
    /// time to live, removing the expired ones; returns how many it removed.
    /// </summary>
    public int SweepExpired(int maxKeys)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxKeys, 1);
        long now = NowMs;
        int removed = 0;
        for (int i = 0; i < maxKeys && _volatileCount > 0; i++)
        {
            if (_sweepCursor >= _volatileCount)
            {
                _sweepCursor = 0;
            }

            byte[] key = _volatile[_sweepCursor];
            ref Entry entry = ref CollectionsMarshal.GetValueRefOrNullRef(_map, key);
            if (!Unsafe.IsNullRef(ref entry) && entry.ExpireAtMs != 0 && entry.ExpireAtMs <= now)
            {
                // The swap-remove moves the last volatile key into the cursor's place: look at it next.
                RemoveExisting(key);
                ExpiredKeys++;
                removed++;
            }
            else
            {
                _sweepCursor++;
            }
        }

        return removed;
    }

    // ---------------------------------------------------------------- internals

    /// <summary>The live entry of <paramref name="key"/>, or a null ref; an expired entry is removed on the way.</summary>
    private ref Entry Find(ReadOnlySpan<byte> key)
    {
        ref Entry entry = ref CollectionsMarshal.GetValueRefOrNullRef(_lookup, key);
        if (!Unsafe.IsNullRef(ref entry) && entry.ExpireAtMs != 0 && entry.ExpireAtMs <= NowMs)
        {
            RemoveExisting(key);
            ExpiredKeys++;
            return ref Unsafe.NullRef<Entry>();
        }

        return ref entry;
    }

    /// <summary>Adds a new key, or returns a null ref (and counts a refusal) at the key or memory limit.</summary>
    private ref Entry TryAdd(ReadOnlySpan<byte> key, object value, long valueBytes)
    {
        long cost = key.Length + valueBytes + EntryOverhead;
        if (_map.Count >= _limits.MaxKeys || UsedBytes + cost > _limits.MaxMemoryBytes)
        {
            RefusedWrites++;
            return ref Unsafe.NullRef<Entry>();
        }

        ref Entry added = ref CollectionsMarshal.GetValueRefOrAddDefault(_lookup, key, out _);
        added.Value = value;
        added.ExpireAtMs = 0;
        added.VolatileIndex = -1;
        UsedBytes += cost;
        return ref added;
    }

    private void RemoveExisting(ReadOnlySpan<byte> key)
    {
        if (_lookup.Remove(key, out byte[]? stored, out Entry entry))
        {
            if (entry.VolatileIndex >= 0)
            {
                RemoveVolatile(entry.VolatileIndex);
            }

            UsedBytes -= stored.Length + SizeOf(entry.Value) + EntryOverhead;
        }
    }

    private void ApplyExpiry(ReadOnlySpan<byte> key, ref Entry entry, long atMs)
    {
        if (atMs == 0)
        {
            if (entry.VolatileIndex >= 0)
            {
                RemoveVolatile(entry.VolatileIndex);
                entry.VolatileIndex = -1;
            }
        }
        else if (entry.VolatileIndex < 0)
        {
            if (_volatileCount == _volatile.Length)
            {
                Array.Resize(ref _volatile, _volatile.Length * 2);
            }

            // The dictionary's own key array is shared, not copied.
            _lookup.TryGetValue(key, out byte[]? stored, out _);
            entry.VolatileIndex = _volatileCount;
            _volatile[_volatileCount++] = stored!;
        }

        entry.ExpireAtMs = atMs;
    }

    private void RemoveVolatile(int index)
    {
        int last = --_volatileCount;
        if (index != last)
        {
            byte[] moved = _volatile[last];
            _volatile[index] = moved;
            ref Entry movedEntry = ref CollectionsMarshal.GetValueRefOrNullRef(_map, moved);
            movedEntry.VolatileIndex = index;
        }

        _volatile[last] = null!;
    }

    private void AfterWrite()
    {
        if (++_writesSinceSweep >= _limits.ExpireSweepEveryOperations)
        {
            _writesSinceSweep = 0;
            if (_volatileCount > 0)
            {
                SweepExpired(_limits.ExpireSweepKeys);
            }
        }
    }

    private static long SizeOf(object value) => value switch
    {
        byte[] bytes => bytes.Length,
        KvList list => list.PayloadBytes + ((long)list.Count * ListElementOverhead),
        _ => 0,
    };

    private static byte[] FormatInt64(long value)
    {
        Span<byte> digits = stackalloc byte[20];
        System.Buffers.Text.Utf8Formatter.TryFormat(value, digits, out int n);
        return digits[..n].ToArray();
    }

    private struct Entry
    {
        public object Value;
        public long ExpireAtMs;
        public int VolatileIndex;
    }
}
