using System.Globalization;
using Multikernel.Netd.Filters;

namespace Multikernel.Tests.Netd.Filters;

/// <summary>
/// Straightforward reference evaluators, written independently of netd's code: one for atoms
/// (byte by byte, no shared helpers) and one for the text syntax (field by field from the
/// frame's bytes, by what each field means, not through atoms). The classifier and the parser
/// are fuzzed against these.
/// </summary>
internal static class FilterReference
{
    /// <summary>A conjunction of atoms, each read byte by byte; anything outside the frame is false.</summary>
    public static bool AtomsMatch(ReadOnlySpan<FilterAtom> atoms, byte[] frame)
    {
        foreach (FilterAtom atom in atoms)
        {
            long offset = atom.Offset;
            if (atom.Shift is { } s)
            {
                if (s.ShiftOffset >= frame.Length)
                {
                    return false;
                }

                offset += (long)(frame[s.ShiftOffset] & s.ShiftMask) << s.ShiftLeft;
            }

            if (offset + atom.Width > frame.Length)
            {
                return false;
            }

            ulong field = 0;
            for (int k = 0; k < atom.Width; k++)
            {
                field = (field << 8) | frame[offset + k];
            }

            if ((field & atom.Mask) != atom.Value)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>The first (lowest id) of <paramref name="filters"/> matching, or 0.</summary>
    public static int FirstMatch(IReadOnlyList<(int Id, FilterAtom[] Atoms)> filters, byte[] frame)
    {
        foreach ((int id, FilterAtom[] atoms) in filters.OrderBy(f => f.Id))
        {
            if (AtomsMatch(atoms, frame))
            {
                return id;
            }
        }

        return 0;
    }

    /// <summary>Evaluates a filter text by the meaning of its fields. Assumes the text is well-formed (the generator's).</summary>
    public static bool TextMatches(string text, byte[] frame)
    {
        foreach (string raw in text.Split("&&"))
        {
            string clause = raw.Trim();
            if (!ClauseMatches(clause, frame))
            {
                return false;
            }
        }

        return true;
    }

    private static bool ClauseMatches(string clause, byte[] f)
    {
        if (clause.StartsWith("frame[", StringComparison.Ordinal) || clause.StartsWith("l4[", StringComparison.Ordinal))
        {
            bool l4 = clause.StartsWith("l4[", StringComparison.Ordinal);
            int open = clause.IndexOf('[', StringComparison.Ordinal);
            int colon = clause.IndexOf(':', StringComparison.Ordinal);
            int close = clause.IndexOf(']', StringComparison.Ordinal);
            int off = int.Parse(clause[(open + 1)..colon].Trim(), CultureInfo.InvariantCulture);
            int width = int.Parse(clause[(colon + 1)..close].Trim(), CultureInfo.InvariantCulture);
            string rest = clause[(close + 1)..].Trim();
            string[] sides = rest.Split("==");
            ulong mask = width == 4 ? 0xFFFFFFFF : (1UL << (8 * width)) - 1;
            if (sides[0].Trim().StartsWith('&'))
            {
                mask = Num(sides[0].Trim()[1..].Trim());
            }

            ulong value = Num(sides[1].Trim());
            if (l4)
            {
                if (U16(f, 12) != 0x0800 || f.Length < 15)
                {
                    return false;
                }

                off += 14 + ((f[14] & 0x0F) * 4);
            }

            return Read(f, off, width) is { } field && (field & mask) == value;
        }

        string[] parts = clause.Split("==");
        string name = parts[0].Trim();
        string v = parts[1].Trim();
        switch (name)
        {
            case "eth.type":
                return U16(f, 12) == Num(v);
            case "eth.dst" or "eth.src":
                ulong mac = Convert.ToUInt64(v.Replace(":", string.Empty, StringComparison.Ordinal), 16);
                return Read(f, name == "eth.dst" ? 0 : 6, 6) == mac;
            case "arp.op":
                return U16(f, 12) == 0x0806 && U16(f, 20) == Num(v);
            case "ip.proto":
                ulong proto = v switch { "tcp" => 6, "udp" => 17, "icmp" => 1, _ => Num(v) };
                return U16(f, 12) == 0x0800 && Read(f, 23, 1) == proto;
            case "ip.src" or "ip.dst":
                if (U16(f, 12) != 0x0800)
                {
                    return false;
                }

                string[] cidr = v.Split('/');
                int prefix = cidr.Length == 2 ? int.Parse(cidr[1], CultureInfo.InvariantCulture) : 32;
                ulong want = cidr[0].Split('.').Aggregate(0UL, (a, b) => (a << 8) | ulong.Parse(b, CultureInfo.InvariantCulture));
                ulong m = prefix == 0 ? 0 : 0xFFFFFFFFUL << (32 - prefix) & 0xFFFFFFFF;
                return prefix == 0 ? f.Length >= 14 : Read(f, name == "ip.src" ? 26 : 30, 4) is { } a && (a & m) == want;
            default: // tcp.sport tcp.dport udp.sport udp.dport
                ulong wantProto = name.StartsWith("tcp", StringComparison.Ordinal) ? 6UL : 17UL;
                if (U16(f, 12) != 0x0800 || Read(f, 23, 1) != wantProto || Read(f, 20, 2) is not { } frag || (frag & 0x1FFF) != 0)
                {
                    return false;
                }

                int transport = 14 + ((f[14] & 0x0F) * 4);
                return Read(f, transport + (name.EndsWith("sport", StringComparison.Ordinal) ? 0 : 2), 2) == Num(v);
        }
    }

    private static ulong Num(string s) => s.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
        ? Convert.ToUInt64(s[2..], 16)
        : ulong.Parse(s, CultureInfo.InvariantCulture);

    private static ulong? U16(byte[] f, int at) => Read(f, at, 2);

    private static ulong? Read(byte[] f, int at, int width)
    {
        if (at < 0 || at + width > f.Length)
        {
            return null;
        }

        ulong v = 0;
        for (int k = 0; k < width; k++)
        {
            v = (v << 8) | f[at + k];
        }

        return v;
    }
}
