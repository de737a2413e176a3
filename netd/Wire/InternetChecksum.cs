using System.Buffers.Binary;

namespace Multikernel.Netd.Wire;

/// <summary>
/// The Internet checksum (RFC 1071): the ones'-complement sum of 16-bit big-endian words. Sums
/// are accumulated in a <see cref="ulong"/> and folded once at the end, so a sum over a whole
/// 64 KiB datagram cannot overflow. A span of odd length may only be the last one added: its
/// final byte is padded with a zero, as the RFC says.
/// </summary>
public static class InternetChecksum
{
    /// <summary>Adds the 16-bit words of <paramref name="data"/> to <paramref name="sum"/>.</summary>
    public static ulong Add(ulong sum, ReadOnlySpan<byte> data)
    {
        int i = 0;
        // Four words at a time: a big-endian 32-bit read sums two words with the carry between
        // them kept in the upper half, which the final fold adds back.
        for (; i + 4 <= data.Length; i += 4)
        {
            sum += BinaryPrimitives.ReadUInt32BigEndian(data[i..]);
        }

        for (; i + 2 <= data.Length; i += 2)
        {
            sum += BinaryPrimitives.ReadUInt16BigEndian(data[i..]);
        }

        if (i < data.Length)
        {
            sum += (uint)data[i] << 8;
        }

        return sum;
    }

    /// <summary>Adds one 16-bit value.</summary>
    public static ulong Add(ulong sum, ushort word) => sum + word;

    /// <summary>The sum of the IPv4 pseudo-header (RFC 793 / RFC 768) for a TCP or UDP checksum.</summary>
    public static ulong PseudoHeader(Ipv4Address source, Ipv4Address destination, byte protocol, int length) =>
        (ulong)(source.Value >> 16) + (source.Value & 0xFFFF) + (destination.Value >> 16) + (destination.Value & 0xFFFF) + protocol + (uint)(ushort)length;

    /// <summary>Folds a sum to 16 bits and complements it: the value to put in a checksum field.</summary>
    public static ushort Finish(ulong sum)
    {
        while ((sum >> 16) != 0)
        {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }

        return (ushort)~sum;
    }

    /// <summary>The checksum of <paramref name="data"/> alone.</summary>
    public static ushort Compute(ReadOnlySpan<byte> data) => Finish(Add(0, data));

    /// <summary>True when <paramref name="data"/> (checksum field included) sums to all ones.</summary>
    public static bool IsValid(ReadOnlySpan<byte> data) => Compute(data) == 0;
}
