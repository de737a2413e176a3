using System.Collections.Immutable;

namespace Multikernel.Apps.Kv.Store;

/// <summary>
/// The stable key → shard map. It is redis cluster's: CRC16 (XMODEM) of the key, or of its hash
/// tag (the bytes between the first <c>{</c> and the next <c>}</c>, when non-empty), modulo the
/// 16384 slots; the slot modulo the shard count picks the owner. Stable across processes and
/// runs (no per-process seed), so every core computes the same owner, and keys sharing a tag
/// (<c>{user1}.name</c>, <c>{user1}.mail</c>) live on one shard.
/// </summary>
public static class KeyHasher
{
    /// <summary>Redis cluster's slot count.</summary>
    public const int SlotCount = 16384;

    private static readonly ImmutableArray<ushort> Table = [.. BuildTable()];

    /// <summary>The slot of <paramref name="key"/> (0 … 16383), as redis's <c>CLUSTER KEYSLOT</c> computes it.</summary>
    public static int Slot(ReadOnlySpan<byte> key)
    {
        int open = key.IndexOf((byte)'{');
        if (open >= 0)
        {
            int close = key[(open + 1)..].IndexOf((byte)'}');
            if (close > 0)
            {
                key = key.Slice(open + 1, close);
            }
        }

        return Crc16(key) & (SlotCount - 1);
    }

    /// <summary>The shard (0 … <paramref name="shardCount"/>−1) that owns <paramref name="key"/>.</summary>
    public static int ShardOf(ReadOnlySpan<byte> key, int shardCount)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(shardCount, 1);
        return shardCount == 1 ? 0 : Slot(key) % shardCount;
    }

    /// <summary>CRC16-XMODEM (polynomial 0x1021, initial value 0), the checksum redis cluster uses.</summary>
    public static ushort Crc16(ReadOnlySpan<byte> data)
    {
        ushort crc = 0;
        foreach (byte b in data)
        {
            crc = (ushort)((crc << 8) ^ Table[((crc >> 8) ^ b) & 0xFF]);
        }

        return crc;
    }

    private static ushort[] BuildTable()
    {
        var table = new ushort[256];
        for (int i = 0; i < 256; i++)
        {
            ushort c = (ushort)(i << 8);
            for (int bit = 0; bit < 8; bit++)
            {
                c = (c & 0x8000) != 0 ? (ushort)((c << 1) ^ 0x1021) : (ushort)(c << 1);
            }

            table[i] = c;
        }

        return table;
    }
}
