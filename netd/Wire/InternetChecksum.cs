using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

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
        if (data.Length >= 64)
        {
            // Wide, in the machine's byte order: a one's-complement sum does not depend on byte
            // order (RFC 1071 §2(B)), so the even part is summed as native 16-bit words, 32 bytes
            // at a time, folded to 16 bits and byte-swapped into network order. It checks or
            // computes every TCP segment's checksum, the stack's largest cost per byte after the copy.
            int even = data.Length & ~1;
            ushort folded = Fold(NativeSum(data[..even]));
            sum += BitConverter.IsLittleEndian ? BinaryPrimitives.ReverseEndianness(folded) : folded;
            i = even;
        }

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

    // The sum of the 32-bit native-order words of an even-length span (two 16-bit words each; the
    // carries between them stay in the upper bits, which Fold adds back). 64-bit lanes cannot
    // overflow below 2^31 vectors, far beyond any packet.
    private static ulong NativeSum(ReadOnlySpan<byte> data)
    {
        ulong sum = 0;
        int i = 0;
        ref byte start = ref MemoryMarshal.GetReference(data);
        if (Vector256.IsHardwareAccelerated)
        {
            Vector256<ulong> acc = Vector256<ulong>.Zero;
            for (; i + 32 <= data.Length; i += 32)
            {
                (Vector256<ulong> lo, Vector256<ulong> hi) = Vector256.Widen(Vector256.LoadUnsafe(ref start, (nuint)i).AsUInt32());
                acc += lo + hi;
            }

            sum = Vector256.Sum(acc);
        }

        for (; i + 8 <= data.Length; i += 8)
        {
            ulong x = MemoryMarshal.Read<ulong>(data[i..]);
            sum += (x & 0xFFFF_FFFF) + (x >> 32);
        }

        for (; i + 2 <= data.Length; i += 2)
        {
            sum += MemoryMarshal.Read<ushort>(data[i..]);
        }

        return sum;
    }

    private static ushort Fold(ulong sum)
    {
        while ((sum >> 16) != 0)
        {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }

        return (ushort)sum;
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
