using System.Globalization;
using Multikernel.Netd.Filters;

namespace Multikernel.Tests.Netd.Filters;

/// <summary>
/// Seeded generators of filter texts, atom programs and frames. Values come from small pools so
/// that random filters and random frames collide often (most pairs would never meet otherwise),
/// and <see cref="HitFrame"/> builds frames that satisfy a chosen filter.
/// </summary>
internal sealed class FilterFuzz(int seed)
{
    private static readonly int[] s_ports = [53, 80, 443, 8080, 5000, 5001];
    private static readonly string[] s_ips = ["10.0.0.1", "10.0.0.2", "10.1.2.3", "192.168.1.1"];
    private static readonly string[] s_cidrs = ["10.0.0.0/8", "10.0.0.0/16", "10.1.2.0/24", "0.0.0.0/0", "10.0.0.2/32", "192.168.0.0/16"];
    private static readonly string[] s_macs = ["02:00:00:00:00:01", "02:00:00:00:00:02", "ff:ff:ff:ff:ff:ff"];
    private static readonly int[] s_types = [0x0800, 0x0800, 0x0806, 0x86DD];
    private static readonly string[] s_protos = ["6", "17", "1", "tcp", "udp", "0x11"];

    public Random Random { get; } = new(seed);

    public int Seed => seed;

    public string Text()
    {
        int clauses = 1 + Random.Next(3);
        return string.Join(" && ", Enumerable.Range(0, clauses).Select(_ => Clause()));
    }

    public string Clause()
    {
        Random r = Random;
        switch (r.Next(13))
        {
            case 0: return $"eth.type == 0x{Pick(s_types):X4}";
            case 1: return $"eth.{(r.Next(2) == 0 ? "dst" : "src")} == {Pick(s_macs)}";
            case 2: return $"ip.proto == {Pick(s_protos)}";
            case 3: return $"ip.{(r.Next(2) == 0 ? "src" : "dst")} == {Pick(s_ips)}";
            case 4: return $"ip.{(r.Next(2) == 0 ? "src" : "dst")} == {Pick(s_cidrs)}";
            case 5 or 6: return $"tcp.{(r.Next(2) == 0 ? "sport" : "dport")} == {Pick(s_ports)}";
            case 7 or 8: return $"udp.{(r.Next(2) == 0 ? "sport" : "dport")} == {Pick(s_ports)}";
            case 9: return $"arp.op == {1 + r.Next(2)}";
            case 10 or 11:
                {
                    string where = r.Next(4) == 0 ? "l4" : "frame";
                    int width = r.Next(3) switch { 0 => 1, 1 => 2, _ => 4 };
                    int offset = where == "l4" ? r.Next(8) : r.Next(40);
                    uint full = width == 4 ? uint.MaxValue : (1u << (8 * width)) - 1;
                    uint mask = r.Next(2) == 0 ? full : (uint)r.NextInt64(1, (long)full + 1);
                    // Values from a plausible frame, so raw clauses hit now and then.
                    uint value = (uint)(RawValue(offset, width, where == "l4") & mask);
                    string m = mask == full && r.Next(2) == 0 ? string.Empty : $" & 0x{mask:X}";
                    return $"{where}[{offset}:{width}]{m} == {(r.Next(2) == 0 ? value.ToString(CultureInfo.InvariantCulture) : $"0x{value:X}")}";
                }

            default: return $"tcp.dport == {Pick(s_ports)} && ip.dst == {Pick(s_ips)}";
        }
    }

    /// <summary>A random verified-looking atom program (constant and IPv4-shifted atoms), as programs would send.</summary>
    public FilterAtom[] Atoms()
    {
        Random r = Random;
        int n = 1 + r.Next(4);
        var atoms = new List<FilterAtom>();
        byte[] template = Frame();
        for (int i = 0; i < n; i++)
        {
            int width = r.Next(3) switch { 0 => 1, 1 => 2, _ => 4 };
            bool shifted = r.Next(3) == 0;
            int offset = shifted ? 14 + r.Next(8) : r.Next(44);
            uint full = width == 4 ? uint.MaxValue : (1u << (8 * width)) - 1;
            uint mask = r.Next(2) == 0 ? full : (uint)r.NextInt64(1, (long)full + 1);
            FilterShift? shift = shifted ? FilterShift.Ipv4HeaderLength : null;
            int at = shifted ? offset + ((template.Length > 14 ? template[14] & 0x0F : 5) << 2) : offset;
            uint value = 0;
            for (int k = 0; k < width; k++)
            {
                value = (value << 8) | (at + k < template.Length ? template[at + k] : (byte)r.Next(256));
            }

            atoms.Add(new FilterAtom((ushort)offset, (byte)width, mask, value & mask, shift));
        }

        return [.. atoms];
    }

    /// <summary>A random frame: mostly IPv4 TCP/UDP with pool values and random header lengths, some ARP, some junk, some truncated.</summary>
    public byte[] Frame()
    {
        Random r = Random;
        int kind = r.Next(10);
        if (kind == 0)
        {
            byte[] junk = new byte[r.Next(0, 80)];
            r.NextBytes(junk);
            return junk;
        }

        int ihl = r.Next(4) == 0 ? r.Next(0, 16) : 5;
        byte[] f = new byte[Math.Max(60, 14 + (ihl * 4) + 8 + r.Next(40))];
        r.NextBytes(f);
        WriteMac(f, 0, Pick(s_macs));
        WriteMac(f, 6, Pick(s_macs));
        if (kind == 1)
        {
            Put(f, 12, 0x0806, 2);
            Put(f, 20, (uint)(1 + r.Next(2)), 2);
        }
        else
        {
            Put(f, 12, (uint)Pick(s_types), 2);
            f[14] = (byte)(0x40 | ihl);
            Put(f, 20, r.Next(4) == 0 ? (uint)r.Next(0x10000) : 0x4000, 2);
            f[23] = (byte)(r.Next(5) switch { 0 => 1, 1 or 2 => 6, _ => 17 });
            Put(f, 26, Ip(Pick(s_ips)), 4);
            Put(f, 30, Ip(Pick(s_ips)), 4);
            int t = 14 + (ihl * 4);
            Put(f, t, (uint)Pick(s_ports), 2);
            Put(f, t + 2, (uint)Pick(s_ports), 2);
        }

        if (r.Next(6) == 0)
        {
            Array.Resize(ref f, r.Next(f.Length)); // truncated: fields past the end must not match, nor throw
        }

        return f;
    }

    /// <summary>A frame built to satisfy <paramref name="atoms"/> (constant atoms first, then shifted ones), starting from a random frame.</summary>
    public byte[] HitFrame(ReadOnlySpan<FilterAtom> atoms)
    {
        byte[] f = Frame();
        if (f.Length < 15)
        {
            Array.Resize(ref f, 60);
        }

        foreach (FilterAtom a in atoms)
        {
            if (a.Shift is null)
            {
                Write(ref f, a.Offset, a);
            }
        }

        foreach (FilterAtom a in atoms)
        {
            if (a.Shift is { } s)
            {
                Write(ref f, a.Offset + ((f[s.ShiftOffset] & s.ShiftMask) << s.ShiftLeft), a);
            }
        }

        return f;
    }

    private static void Write(ref byte[] f, int at, FilterAtom a)
    {
        if (at + a.Width > f.Length)
        {
            Array.Resize(ref f, at + a.Width);
        }

        for (int k = 0; k < a.Width; k++)
        {
            int shift = 8 * (a.Width - 1 - k);
            byte m = (byte)(a.Mask >> shift);
            byte v = (byte)(a.Value >> shift);
            f[at + k] = (byte)((f[at + k] & ~m) | v);
        }
    }

    private long RawValue(int offset, int width, bool l4)
    {
        byte[] f = Frame();
        int at = offset + (l4 && f.Length > 14 ? 14 + ((f[14] & 0x0F) * 4) : 0);
        long v = 0;
        for (int k = 0; k < width; k++)
        {
            v = (v << 8) | (long)(at + k < f.Length ? f[at + k] : 0u);
        }

        return v;
    }

    private T Pick<T>(T[] pool) => pool[Random.Next(pool.Length)];

    private static uint Ip(string s) => s.Split('.').Aggregate(0u, (a, b) => (a << 8) | uint.Parse(b, CultureInfo.InvariantCulture));

    private static void WriteMac(byte[] f, int at, string mac)
    {
        string[] parts = mac.Split(':');
        for (int i = 0; i < 6; i++)
        {
            f[at + i] = byte.Parse(parts[i], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        }
    }

    private static void Put(byte[] f, int at, uint value, int width)
    {
        for (int k = 0; k < width; k++)
        {
            f[at + k] = (byte)(value >> (8 * (width - 1 - k)));
        }
    }

    /// <summary>Seeds for a fuzz test: a fixed list (reproducible runs) plus one fresh seed per run, logged.</summary>
    public static IEnumerable<int> Seeds(int fixedCount)
    {
        for (int i = 1; i <= fixedCount; i++)
        {
            yield return i * 7919;
        }

        string? forced = Environment.GetEnvironmentVariable("MULTIKERNEL_FILTER_SEED");
        yield return forced is not null ? int.Parse(forced, CultureInfo.InvariantCulture) : Environment.TickCount & 0x7FFFFFFF;
    }
}
