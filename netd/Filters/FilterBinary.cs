using System.Buffers.Binary;
using System.Globalization;

namespace Multikernel.Netd.Filters;

/// <summary>
/// The binary form of a filter program, for programs (a domain sends it to netd in a message).
/// Little-endian, fixed-size records, so a decoder checks lengths once and reads nothing it has
/// not checked:
/// <code>
/// header (8 bytes):  u32 magic "MKPF" | u8 version (1) | u8 reserved (0) | u16 atom count
/// atom (16 bytes):   u16 offset | u8 width | u8 flags (bit 0: shifted; others 0)
///                    u16 shift offset | u8 shift mask | u8 shift count   (all 0 unless shifted)
///                    u32 mask | u32 value
/// </code>
/// The total length must be exactly 8 + 16 × count. Decoding checks only the format; whether the
/// atoms are safe is <see cref="FilterVerifier"/>'s decision.
/// </summary>
public static class FilterBinary
{
    public const uint Magic = 0x46504B4D; // "MKPF" read little-endian
    public const byte Version = 1;
    public const int HeaderLength = 8;
    public const int AtomLength = 16;

    /// <summary>The most atoms a binary program can declare before its length is even looked at (the u16 count's range is refused above this).</summary>
    public const int MaxEncodedAtoms = 1024;

    private const byte ShiftedFlag = 1;

    public static byte[] Encode(FilterProgram program)
    {
        ArgumentNullException.ThrowIfNull(program);
        ReadOnlySpan<FilterAtom> atoms = program.Atoms;
        if (atoms.Length > MaxEncodedAtoms)
        {
            throw new ArgumentException($"A binary program holds at most {MaxEncodedAtoms} atoms (got {atoms.Length}).", nameof(program));
        }

        byte[] bytes = new byte[HeaderLength + (AtomLength * atoms.Length)];
        Span<byte> span = bytes;
        BinaryPrimitives.WriteUInt32LittleEndian(span, Magic);
        span[4] = Version;
        BinaryPrimitives.WriteUInt16LittleEndian(span[6..], (ushort)atoms.Length);
        for (int i = 0; i < atoms.Length; i++)
        {
            FilterAtom a = atoms[i];
            Span<byte> r = span.Slice(HeaderLength + (i * AtomLength), AtomLength);
            BinaryPrimitives.WriteUInt16LittleEndian(r, a.Offset);
            r[2] = a.Width;
            if (a.Shift is { } s)
            {
                r[3] = ShiftedFlag;
                BinaryPrimitives.WriteUInt16LittleEndian(r[4..], s.ShiftOffset);
                r[6] = s.ShiftMask;
                r[7] = s.ShiftLeft;
            }

            BinaryPrimitives.WriteUInt32LittleEndian(r[8..], a.Mask);
            BinaryPrimitives.WriteUInt32LittleEndian(r[12..], a.Value);
        }

        return bytes;
    }

    /// <summary>Decodes a binary program, or says precisely (with the byte offset) why it is malformed.</summary>
    public static bool TryDecode(ReadOnlySpan<byte> bytes, out FilterProgram? program, out FilterProblem problem)
    {
        program = null;
        if (bytes.Length < HeaderLength)
        {
            problem = Malformed($"{bytes.Length} bytes is shorter than the {HeaderLength}-byte header");
            return false;
        }

        uint magic = BinaryPrimitives.ReadUInt32LittleEndian(bytes);
        if (magic != Magic)
        {
            problem = Malformed($"bad magic 0x{magic:X8} at byte 0 (expected 0x{Magic:X8}, \"MKPF\")");
            return false;
        }

        if (bytes[4] != Version)
        {
            problem = Malformed($"unknown version {bytes[4]} at byte 4 (this netd reads version {Version})");
            return false;
        }

        if (bytes[5] != 0)
        {
            problem = Malformed($"reserved byte 5 is 0x{bytes[5]:X2}, not 0");
            return false;
        }

        int count = BinaryPrimitives.ReadUInt16LittleEndian(bytes[6..]);
        if (count > MaxEncodedAtoms)
        {
            problem = Malformed($"atom count {count} at byte 6 is above {MaxEncodedAtoms}");
            return false;
        }

        int expected = HeaderLength + (count * AtomLength);
        if (bytes.Length != expected)
        {
            problem = Malformed($"{count} atoms need exactly {expected} bytes, got {bytes.Length}");
            return false;
        }

        var atoms = new FilterAtom[count];
        for (int i = 0; i < count; i++)
        {
            int at = HeaderLength + (i * AtomLength);
            ReadOnlySpan<byte> r = bytes.Slice(at, AtomLength);
            byte flags = r[3];
            if ((flags & ~ShiftedFlag) != 0)
            {
                problem = Malformed($"atom {i + 1}: unknown flag bits 0x{flags & ~ShiftedFlag:X2} at byte {at + 3}");
                return false;
            }

            FilterShift? shift = null;
            if ((flags & ShiftedFlag) != 0)
            {
                shift = new FilterShift(BinaryPrimitives.ReadUInt16LittleEndian(r[4..]), r[6], r[7]);
            }
            else if (BinaryPrimitives.ReadUInt32LittleEndian(r[4..]) != 0)
            {
                problem = Malformed($"atom {i + 1}: shift bytes {at + 4}..{at + 7} are set but the atom is not shifted");
                return false;
            }

            atoms[i] = new FilterAtom(
                BinaryPrimitives.ReadUInt16LittleEndian(r),
                r[2],
                BinaryPrimitives.ReadUInt32LittleEndian(r[8..]),
                BinaryPrimitives.ReadUInt32LittleEndian(r[12..]),
                shift);
        }

        program = FilterProgram.Own(atoms, source: null);
        problem = default;
        return true;
    }

    private static FilterProblem Malformed(FormattableString message) =>
        new(FilterRejection.Malformed, message.ToString(CultureInfo.InvariantCulture));
}
