using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.CompilerServices;

namespace Multikernel.Netd.Filters;

/// <summary>
/// Where an atom's field starts: a constant offset, optionally plus a length read from the frame
/// (DPF's "shift" for variable-length headers). With a shift the field starts at
/// <c>Offset + ((frame[ShiftOffset] &amp; ShiftMask) &lt;&lt; ShiftLeft)</c>; the IPv4 transport
/// header is <c>14 + ((frame[14] &amp; 0x0F) &lt;&lt; 2)</c>. One level only: the length byte itself
/// is at a constant offset, so a filter is straight-line code with no loops.
/// </summary>
public readonly record struct FilterShift(ushort ShiftOffset, byte ShiftMask, byte ShiftLeft)
{
    /// <summary>The IPv4 header length: the low nibble of the byte after the Ethernet header, in 32-bit words.</summary>
    public static FilterShift Ipv4HeaderLength => new(14, 0x0F, 2);

    /// <summary>The largest value the shift can add to the offset.</summary>
    public int MaxAdd => ShiftLeft > 16 ? int.MaxValue : ShiftMask << ShiftLeft;

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"((frame[{ShiftOffset}] & 0x{ShiftMask:X2}) << {ShiftLeft})");
}

/// <summary>
/// One DPF atom: <c>(field &amp; Mask) == Value</c>, where the field is the big-endian (network
/// order) 1-, 2- or 4-byte integer at <see cref="Offset"/> (plus the <see cref="Shift"/> if
/// present). A filter is a conjunction of atoms. Any field can be built here, including nonsense
/// (width 3, a mask wider than the field, a value outside its mask): programs arrive from other
/// domains, and <see cref="FilterVerifier"/> is the one place that decides what is acceptable.
/// Evaluation is total: a field that lies (partly) outside the frame makes the atom false, never
/// an exception.
/// </summary>
public readonly record struct FilterAtom(ushort Offset, byte Width, uint Mask, uint Value, FilterShift? Shift = null)
{
    /// <summary>An atom on a constant offset.</summary>
    public static FilterAtom At(int offset, int width, uint mask, uint value) =>
        new(checked((ushort)offset), checked((byte)width), mask, value);

    /// <summary>An atom relative to the IPv4 transport header (after a variable-length IPv4 header).</summary>
    public static FilterAtom AfterIpv4(int relativeOffset, int width, uint mask, uint value) =>
        new(checked((ushort)(14 + relativeOffset)), checked((byte)width), mask, value, FilterShift.Ipv4HeaderLength);

    /// <summary>True if the field lies inside <paramref name="frame"/> and its masked value equals <see cref="Value"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Matches(ReadOnlySpan<byte> frame) => TryRead(frame, Offset, Width, Shift, out uint field) && (field & Mask) == Value;

    /// <summary>
    /// Reads a big-endian field, or returns false if any byte of it (or of the shift's length
    /// byte) is outside the frame. Unknown widths read nothing (the verifier refuses them first).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool TryRead(ReadOnlySpan<byte> frame, int offset, int width, FilterShift? shift, out uint field)
    {
        if (shift is { } s)
        {
            if ((uint)s.ShiftOffset >= (uint)frame.Length || s.ShiftLeft > 16)
            {
                field = 0;
                return false;
            }

            offset += (frame[s.ShiftOffset] & s.ShiftMask) << s.ShiftLeft;
        }

        return TryReadAt(frame, offset, width, out field);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool TryReadAt(ReadOnlySpan<byte> frame, int offset, int width, out uint field)
    {
        // (uint) casts: one unsigned compare covers both a negative and a too-large offset.
        if ((uint)offset > (uint)frame.Length || (uint)width > (uint)(frame.Length - offset))
        {
            field = 0;
            return false;
        }

        switch (width)
        {
            case 1:
                field = frame[offset];
                return true;
            case 2:
                field = BinaryPrimitives.ReadUInt16BigEndian(frame.Slice(offset, 2));
                return true;
            case 4:
                field = BinaryPrimitives.ReadUInt32BigEndian(frame.Slice(offset, 4));
                return true;
            default:
                field = 0;
                return false;
        }
    }

    /// <summary>Two atoms read the same bytes the same way (offset, width and shift), whatever their masks.</summary>
    public bool SameField(FilterAtom other) => Offset == other.Offset && Width == other.Width && Shift == other.Shift;

    public override string ToString()
    {
        string where = Shift is { } s
            ? string.Create(CultureInfo.InvariantCulture, $"{Offset} + {s}")
            : Offset.ToString(CultureInfo.InvariantCulture);
        int digits = Math.Clamp((int)Width, 1, 4) * 2;
        return string.Create(CultureInfo.InvariantCulture, $"frame[{where}:{Width}] & 0x{Mask.ToString("X" + digits.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture)} == 0x{Value.ToString("X" + digits.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture)}");
    }
}
