using System.Diagnostics.CodeAnalysis;
using System.Globalization;

namespace Multikernel.Netd.Filters;

/// <summary>A parse error: the 1-based column where it was found and what was wrong.</summary>
public readonly record struct FilterSyntaxError(int Column, string Message)
{
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"column {Column}: {Message}");
}

/// <summary>
/// The filter syntax for people, compiled to atoms:
/// <code>
/// filter := clause ('&amp;&amp;' clause)*
/// clause := field '==' value
///         | 'frame' '[' offset ':' width ']' ['&amp;' mask] '==' number      (constant offset)
///         | 'l4' '[' offset ':' width ']' ['&amp;' mask] '==' number         (after the IPv4 header)
/// field  := eth.dst | eth.src (MAC aa:bb:cc:dd:ee:ff) | eth.type | arp.op
///         | ip.proto (number, tcp, udp or icmp) | ip.src | ip.dst (a.b.c.d or a.b.c.d/prefix)
///         | tcp.sport | tcp.dport | udp.sport | udp.dport
/// </code>
/// Numbers are decimal or 0x-hex. A field implies the headers it lives in, as tcpdump's do:
/// <c>ip.*</c> adds <c>eth.type == 0x0800</c>, <c>arp.op</c> adds <c>eth.type == 0x0806</c>,
/// <c>tcp.*</c>/<c>udp.*</c> add <c>ip.proto == 6/17</c> and "first fragment"
/// (<c>frame[20:2] &amp; 0x1FFF == 0</c>, so a later fragment's payload is never taken for ports),
/// and their ports sit after the variable-length IPv4 header
/// (<c>14 + ((frame[14] &amp; 0x0F) &lt;&lt; 2)</c>). Only <c>==</c> and <c>&amp;&amp;</c>: DPF filters are
/// conjunctions of masked equalities; alternatives are separate filters.
/// </summary>
public static class FilterSyntax
{
    /// <summary>The longest filter text accepted (a bound for hostile input).</summary>
    public const int MaxLength = 4096;

    private const string KnownFields = "eth.dst, eth.src, eth.type, arp.op, ip.proto, ip.src, ip.dst, tcp.sport, tcp.dport, udp.sport, udp.dport, frame[off:len], l4[off:len]";

    /// <summary>Parses <paramref name="text"/> or throws <see cref="FormatException"/> with the column and the problem.</summary>
    public static FilterProgram Parse(string text) =>
        TryParse(text, out FilterProgram? program, out FilterSyntaxError error) ? program : throw new FormatException(error.ToString());

    public static bool TryParse(string text, [NotNullWhen(true)] out FilterProgram? program, out FilterSyntaxError error)
    {
        ArgumentNullException.ThrowIfNull(text);
        program = null;
        if (text.Length > MaxLength)
        {
            error = new(MaxLength + 1, $"the filter is {text.Length} characters long; the limit is {MaxLength}");
            return false;
        }

        var parser = new Parser(text);
        if (!parser.Run(out error))
        {
            return false;
        }

        program = FilterProgram.Own([.. parser.Atoms.Select(a => a.Atom)], text.Trim());
        return true;
    }

    private readonly record struct SourcedAtom(FilterAtom Atom, int Column, string Clause, bool Implied);

    private sealed class Parser(string text)
    {
        private int _pos;

        public List<SourcedAtom> Atoms { get; } = [];

        public bool Run(out FilterSyntaxError error)
        {
            SkipSpace();
            if (_pos == text.Length)
            {
                error = new(1, "the filter is empty; a filter must test at least one field");
                return false;
            }

            while (true)
            {
                if (!Clause(out error))
                {
                    return false;
                }

                SkipSpace();
                if (_pos == text.Length)
                {
                    break;
                }

                if (Peek("&&"))
                {
                    _pos += 2;
                    SkipSpace();
                    if (_pos == text.Length)
                    {
                        error = Error("expected a clause after '&&' but the filter ended");
                        return false;
                    }

                    continue;
                }

                error = Peek("||")
                    ? Error("'||' is not supported: a filter is a conjunction; install one filter per alternative")
                    : Error($"expected '&&' or the end of the filter, found '{Rest()}'");
                return false;
            }

            return CheckContradictions(out error);
        }

        private bool Clause(out FilterSyntaxError error)
        {
            int column = _pos + 1;
            int start = _pos;
            while (_pos < text.Length && (char.IsAsciiLetterOrDigit(text[_pos]) || text[_pos] is '.' or '_'))
            {
                _pos++;
            }

            string name = text[start.._pos];
            if (name.Length == 0)
            {
                error = Error($"expected a field ({KnownFields}), found '{Rest()}'");
                return false;
            }

            if (name is "frame" or "l4")
            {
                return Raw(name, column, out error);
            }

            if (!IsKnown(name))
            {
                error = new(column, $"unknown field '{name}'; known: {KnownFields}");
                return false;
            }

            if (!ExpectEquals(out error))
            {
                return false;
            }

            int valueColumn = _pos + 1;
            string value = Word();
            if (value.Length == 0)
            {
                error = Error($"expected a value for {name}");
                return false;
            }

            string clause = $"{name} == {value}";
            return Field(name, value, column, valueColumn, clause, out error);
        }

        private static bool IsKnown(string name) => name is "eth.dst" or "eth.src" or "eth.type" or "arp.op" or "ip.proto" or "ip.src" or "ip.dst"
            or "tcp.sport" or "tcp.dport" or "udp.sport" or "udp.dport";

        private bool Field(string name, string value, int column, int valueColumn, string clause, out FilterSyntaxError error)
        {
            switch (name)
            {
                case "eth.dst" or "eth.src":
                    if (!TryMac(value, out ulong mac))
                    {
                        error = new(valueColumn, $"'{value}' is not a MAC address (six hex bytes like 02:00:00:00:00:01)");
                        return false;
                    }

                    int at = name == "eth.dst" ? 0 : 6;
                    Add(FilterAtom.At(at, 4, 0xFFFFFFFF, (uint)(mac >> 16)), column, clause);
                    Add(FilterAtom.At(at + 4, 2, 0xFFFF, (uint)(mac & 0xFFFF)), column, clause);
                    break;
                case "eth.type":
                    if (!Number(value, valueColumn, 16, name, out uint type, out error))
                    {
                        return false;
                    }

                    Add(FilterAtom.At(12, 2, 0xFFFF, type), column, clause);
                    break;
                case "arp.op":
                    if (!Number(value, valueColumn, 16, name, out uint op, out error))
                    {
                        return false;
                    }

                    Implied(FilterAtom.At(12, 2, 0xFFFF, 0x0806), column, clause);
                    Add(FilterAtom.At(20, 2, 0xFFFF, op), column, clause);
                    break;
                case "ip.proto":
                    uint proto = value switch { "tcp" => 6, "udp" => 17, "icmp" => 1, _ => 0 };
                    if (proto == 0 && !Number(value, valueColumn, 8, name, out proto, out error))
                    {
                        return false;
                    }

                    Implied(FilterAtom.At(12, 2, 0xFFFF, 0x0800), column, clause);
                    Add(FilterAtom.At(23, 1, 0xFF, proto), column, clause);
                    break;
                case "ip.src" or "ip.dst":
                    if (!Cidr(value, valueColumn, out uint address, out uint mask, out error))
                    {
                        return false;
                    }

                    Implied(FilterAtom.At(12, 2, 0xFFFF, 0x0800), column, clause);
                    if (mask != 0)
                    {
                        // A /0 prefix constrains nothing beyond "IPv4": no atom, just the implied type.
                        Add(FilterAtom.At(name == "ip.src" ? 26 : 30, 4, mask, address), column, clause);
                    }

                    break;
                default: // tcp.* / udp.*
                    if (!Number(value, valueColumn, 16, name, out uint port, out error))
                    {
                        return false;
                    }

                    Implied(FilterAtom.At(12, 2, 0xFFFF, 0x0800), column, clause);
                    Implied(FilterAtom.At(20, 2, 0x1FFF, 0), column, clause);
                    Implied(FilterAtom.At(23, 1, 0xFF, name.StartsWith("tcp", StringComparison.Ordinal) ? 6u : 17u), column, clause);
                    Add(FilterAtom.AfterIpv4(name.EndsWith("sport", StringComparison.Ordinal) ? 0 : 2, 2, 0xFFFF, port), column, clause);
                    break;
            }

            error = default;
            return true;
        }

        private bool Raw(string name, int column, out FilterSyntaxError error)
        {
            SkipSpace();
            if (!Expect('[', out error))
            {
                return false;
            }

            if (!NumberHere("an offset", 16, out uint offset, out error) || !Expect(':', out error))
            {
                return false;
            }

            int widthColumn = _pos + 1;
            if (!NumberHere("a width", 8, out uint width, out error) || !Expect(']', out error))
            {
                return false;
            }

            if (width is not (1 or 2 or 4))
            {
                error = new(widthColumn, $"width {width} is not 1, 2 or 4 bytes");
                return false;
            }

            uint fieldMask = width == 4 ? uint.MaxValue : (1u << (int)(8 * width)) - 1;
            uint mask = fieldMask;
            SkipSpace();
            int maskColumn = _pos + 1;
            if (_pos < text.Length && text[_pos] == '&' && !Peek("&&"))
            {
                _pos++;
                if (!NumberHere("a mask", (int)(8 * width), out mask, out error))
                {
                    return false;
                }

                if (mask == 0)
                {
                    error = new(maskColumn, "mask 0 tests nothing");
                    return false;
                }
            }

            if (!ExpectEquals(out error))
            {
                return false;
            }

            int valueColumn = _pos + 1;
            if (!NumberHere("a value", (int)(8 * width), out uint value, out error))
            {
                return false;
            }

            if ((value & ~mask) != 0)
            {
                error = new(valueColumn, $"value 0x{value:X} has bits outside mask 0x{mask:X}, so it can never match");
                return false;
            }

            string clause = text[(column - 1).._pos].Trim();
            if (name == "frame")
            {
                Add(FilterAtom.At((int)offset, (int)width, mask, value), column, clause);
            }
            else
            {
                if (offset > 65535 - 14)
                {
                    error = new(column, $"l4 offset {offset} is too large");
                    return false;
                }

                Implied(FilterAtom.At(12, 2, 0xFFFF, 0x0800), column, clause);
                Add(FilterAtom.AfterIpv4((int)offset, (int)width, mask, value), column, clause);
            }

            return true;
        }

        private void Add(FilterAtom atom, int column, string clause) => Push(atom, column, clause, implied: false);

        private void Implied(FilterAtom atom, int column, string clause) => Push(atom, column, clause, implied: true);

        private void Push(FilterAtom atom, int column, string clause, bool implied)
        {
            if (!Atoms.Exists(a => a.Atom == atom))
            {
                Atoms.Add(new SourcedAtom(atom, column, clause, implied));
            }
        }

        private bool CheckContradictions(out FilterSyntaxError error)
        {
            for (int i = 0; i < Atoms.Count; i++)
            {
                for (int j = i + 1; j < Atoms.Count; j++)
                {
                    if (FilterAlgebra.Contradict(Atoms[i].Atom, Atoms[j].Atom, out _))
                    {
                        SourcedAtom first = Atoms[i];
                        SourcedAtom second = Atoms[j];
                        string because = first.Implied ? $" (which implies {first.Atom})" : string.Empty;
                        error = new(second.Column, $"'{second.Clause}' contradicts '{first.Clause}' at column {first.Column}{because}: the filter can never match");
                        return false;
                    }
                }
            }

            error = default;
            return true;
        }

        private bool ExpectEquals(out FilterSyntaxError error)
        {
            SkipSpace();
            if (Peek("=="))
            {
                _pos += 2;
                SkipSpace();
                error = default;
                return true;
            }

            error = Peek("!=") || Peek("<") || Peek(">")
                ? Error("only '==' is supported: a filter is a conjunction of equalities")
                : Error(_pos == text.Length ? "expected '==' but the filter ended" : $"expected '==', found '{Rest()}'");
            return false;
        }

        private bool Expect(char c, out FilterSyntaxError error)
        {
            SkipSpace();
            if (_pos < text.Length && text[_pos] == c)
            {
                _pos++;
                SkipSpace();
                error = default;
                return true;
            }

            error = Error(_pos == text.Length ? $"expected '{c}' but the filter ended" : $"expected '{c}', found '{Rest()}'");
            return false;
        }

        private bool NumberHere(string what, int bits, out uint value, out FilterSyntaxError error)
        {
            SkipSpace();
            int column = _pos + 1;
            int start = _pos;
            while (_pos < text.Length && (char.IsAsciiLetterOrDigit(text[_pos])))
            {
                _pos++;
            }

            string word = text[start.._pos];
            if (word.Length == 0)
            {
                value = 0;
                error = Error(_pos == text.Length ? $"expected {what} but the filter ended" : $"expected {what}, found '{Rest()}'");
                return false;
            }

            return Number(word, column, bits, what, out value, out error);
        }

        private static bool Number(string word, int column, int bits, string what, out uint value, out FilterSyntaxError error)
        {
            value = 0;
            bool hex = word.StartsWith("0x", StringComparison.OrdinalIgnoreCase);
            bool ok = hex
                ? word.Length > 2 && ulong.TryParse(word.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong n) && Fits(n, bits, out value)
                : ulong.TryParse(word, NumberStyles.None, CultureInfo.InvariantCulture, out n) && Fits(n, bits, out value);
            if (!ok)
            {
                value = 0;
                error = word.Length > 0 && (char.IsAsciiDigit(word[0]) || word.StartsWith("0x", StringComparison.OrdinalIgnoreCase)) && IsNumberShaped(word)
                    ? new(column, $"{word} does not fit in {what} ({bits} bits)")
                    : new(column, $"'{word}' is not a number (decimal or 0x-hex) for {what}");
                return false;
            }

            error = default;
            return true;
        }

        private static bool IsNumberShaped(string word) =>
            word.StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? word.Length > 2 && word[2..].All(char.IsAsciiHexDigit) : word.All(char.IsAsciiDigit);

        private static bool Fits(ulong n, int bits, out uint value)
        {
            value = (uint)n;
            return bits >= 64 || n >> bits == 0;
        }

        private static bool Cidr(string word, int column, out uint address, out uint mask, out FilterSyntaxError error)
        {
            address = 0;
            mask = uint.MaxValue;
            string ip = word;
            int prefix = 32;
            int slash = word.IndexOf('/', StringComparison.Ordinal);
            if (slash >= 0)
            {
                ip = word[..slash];
                if (!int.TryParse(word.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out prefix) || prefix > 32)
                {
                    error = new(column + slash + 1, $"'{word[(slash + 1)..]}' is not a prefix length between 0 and 32");
                    return false;
                }

                mask = prefix == 0 ? 0 : uint.MaxValue << (32 - prefix);
            }

            string[] parts = ip.Split('.');
            if (parts.Length != 4)
            {
                error = new(column, $"'{word}' is not an IPv4 address (a.b.c.d or a.b.c.d/prefix)");
                return false;
            }

            foreach (string part in parts)
            {
                if (part.Length is 0 or > 3 || !byte.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out byte b))
                {
                    error = new(column, $"'{word}' is not an IPv4 address (each part 0..255)");
                    return false;
                }

                address = (address << 8) | b;
            }

            if ((address & ~mask) != 0)
            {
                error = new(column, $"'{word}' has host bits set outside the /{prefix} prefix (did you mean {Dotted(address & mask)}/{prefix}?)");
                return false;
            }

            error = default;
            return true;
        }

        private static string Dotted(uint a) => string.Create(CultureInfo.InvariantCulture, $"{a >> 24}.{(a >> 16) & 0xFF}.{(a >> 8) & 0xFF}.{a & 0xFF}");

        private static bool TryMac(string word, out ulong mac)
        {
            mac = 0;
            string[] parts = word.Split(':');
            if (parts.Length != 6)
            {
                return false;
            }

            foreach (string part in parts)
            {
                if (part.Length != 2 || !byte.TryParse(part, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out byte b))
                {
                    return false;
                }

                mac = (mac << 8) | b;
            }

            return true;
        }

        private string Word()
        {
            int start = _pos;
            while (_pos < text.Length && (char.IsAsciiLetterOrDigit(text[_pos]) || text[_pos] is '.' or ':' or '/'))
            {
                _pos++;
            }

            return text[start.._pos];
        }

        private void SkipSpace()
        {
            while (_pos < text.Length && char.IsWhiteSpace(text[_pos]))
            {
                _pos++;
            }
        }

        private bool Peek(string s) => string.CompareOrdinal(text, _pos, s, 0, s.Length) == 0;

        private string Rest()
        {
            string rest = text[_pos..];
            return rest.Length > 20 ? rest[..20] + "..." : rest;
        }

        private FilterSyntaxError Error(string message) => new(_pos + 1, message);
    }
}
