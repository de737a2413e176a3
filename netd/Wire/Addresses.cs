using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;

namespace Multikernel.Netd.Wire;

/// <summary>An Ethernet (EUI-48) address, held in the low 48 bits of a <see cref="ulong"/> so it is compared and hashed as one word.</summary>
public readonly record struct MacAddress
{
    /// <summary>The size of an address on the wire.</summary>
    public const int Length = 6;

    private readonly ulong _value;

    private MacAddress(ulong value) => _value = value & 0xFFFF_FFFF_FFFFUL;

    /// <summary>ff:ff:ff:ff:ff:ff.</summary>
    public static MacAddress Broadcast => new(0xFFFF_FFFF_FFFFUL);

    /// <summary>00:00:00:00:00:00 (an ARP request's unknown target).</summary>
    public static MacAddress Zero => default;

    /// <summary>True for the broadcast address.</summary>
    public bool IsBroadcast => _value == 0xFFFF_FFFF_FFFFUL;

    /// <summary>True for group addresses (the I/G bit of the first octet), broadcast included.</summary>
    public bool IsMulticast => (_value & 0x0100_0000_0000UL) != 0;

    /// <summary>The address from its 48-bit value (the first octet is the most significant).</summary>
    public static MacAddress FromUInt64(ulong value) => new(value);

    /// <summary>The 48-bit value (the first octet is the most significant).</summary>
    public ulong ToUInt64() => _value;

    /// <summary>The 48-bit value, as a property (hashing and table keys).</summary>
    public ulong Value => _value;

    /// <summary>Reads an address from the first six bytes of <paramref name="source"/>.</summary>
    public static MacAddress Read(ReadOnlySpan<byte> source)
    {
        ReadOnlySpan<byte> s = source[..Length];
        return new(((ulong)BinaryPrimitives.ReadUInt16BigEndian(s) << 32) | BinaryPrimitives.ReadUInt32BigEndian(s[2..]));
    }

    /// <summary>Writes the address into the first six bytes of <paramref name="destination"/>.</summary>
    public void Write(Span<byte> destination)
    {
        Span<byte> d = destination[..Length];
        BinaryPrimitives.WriteUInt16BigEndian(d, (ushort)(_value >> 32));
        BinaryPrimitives.WriteUInt32BigEndian(d[2..], (uint)_value);
    }

    /// <summary>Parses <c>aa:bb:cc:dd:ee:ff</c> (or with dashes).</summary>
    public static MacAddress Parse(string text) =>
        TryParse(text, out MacAddress mac) ? mac : throw new FormatException($"'{text}' is not a MAC address (expected six hex octets such as 02:00:00:00:00:01).");

    /// <summary>Parses <c>aa:bb:cc:dd:ee:ff</c> (or with dashes).</summary>
    public static bool TryParse([NotNullWhen(true)] string? text, out MacAddress mac)
    {
        mac = default;
        if (text is null || text.Length != 17)
        {
            return false;
        }

        ulong value = 0;
        for (int i = 0; i < 6; i++)
        {
            if (i > 0 && text[(i * 3) - 1] is not (':' or '-'))
            {
                return false;
            }

            if (!byte.TryParse(text.AsSpan(i * 3, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out byte b))
            {
                return false;
            }

            value = (value << 8) | b;
        }

        mac = new MacAddress(value);
        return true;
    }

    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{(byte)(_value >> 40):x2}:{(byte)(_value >> 32):x2}:{(byte)(_value >> 24):x2}:{(byte)(_value >> 16):x2}:{(byte)(_value >> 8):x2}:{(byte)_value:x2}");
}

/// <summary>An IPv4 address held as its big-endian value in a <see cref="uint"/> (10.0.0.1 is 0x0A000001).</summary>
public readonly record struct Ipv4Address : IComparable<Ipv4Address>
{
    /// <summary>The size of an address on the wire.</summary>
    public const int Length = 4;

    /// <summary>The address as a number, first octet most significant.</summary>
    public uint Value { get; }

    /// <summary>The address with the given numeric value.</summary>
    public Ipv4Address(uint value) => Value = value;

    /// <summary>The address a.b.c.d.</summary>
    public Ipv4Address(byte a, byte b, byte c, byte d) => Value = ((uint)a << 24) | ((uint)b << 16) | ((uint)c << 8) | d;

    /// <summary>0.0.0.0.</summary>
    public static Ipv4Address Any => default;

    /// <summary>255.255.255.255.</summary>
    public static Ipv4Address Broadcast => new(0xFFFF_FFFFu);

    /// <summary>True for 0.0.0.0.</summary>
    public bool IsAny => Value == 0;

    /// <summary>True for 255.255.255.255.</summary>
    public bool IsBroadcast => Value == 0xFFFF_FFFFu;

    /// <summary>True for 224.0.0.0/4.</summary>
    public bool IsMulticast => (Value & 0xF000_0000u) == 0xE000_0000u;

    /// <summary>Reads an address from the first four bytes of <paramref name="source"/>.</summary>
    public static Ipv4Address Read(ReadOnlySpan<byte> source) => new(BinaryPrimitives.ReadUInt32BigEndian(source));

    /// <summary>Writes the address into the first four bytes of <paramref name="destination"/>.</summary>
    public void Write(Span<byte> destination) => BinaryPrimitives.WriteUInt32BigEndian(destination, Value);

    /// <summary>True when this address and <paramref name="other"/> share the first <paramref name="prefixLength"/> bits.</summary>
    public bool SameSubnet(Ipv4Address other, int prefixLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(prefixLength);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(prefixLength, 32);
        uint mask = prefixLength == 0 ? 0 : uint.MaxValue << (32 - prefixLength);
        return (Value & mask) == (other.Value & mask);
    }

    /// <summary>Parses dotted-quad notation.</summary>
    public static Ipv4Address Parse(string text) =>
        TryParse(text, out Ipv4Address a) ? a : throw new FormatException($"'{text}' is not an IPv4 address (expected a dotted quad such as 10.0.0.1).");

    /// <summary>Parses dotted-quad notation (exactly four decimal octets).</summary>
    public static bool TryParse([NotNullWhen(true)] string? text, out Ipv4Address address)
    {
        address = default;
        if (text is null)
        {
            return false;
        }

        ReadOnlySpan<char> s = text;
        uint value = 0;
        for (int i = 0; i < 4; i++)
        {
            int dot = s.IndexOf('.');
            ReadOnlySpan<char> part = i < 3 ? (dot < 0 ? [] : s[..dot]) : s;
            if (i < 3 && dot < 0)
            {
                return false;
            }

            if (part.Length is 0 or > 3 || !byte.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out byte b))
            {
                return false;
            }

            value = (value << 8) | b;
            s = i < 3 ? s[(dot + 1)..] : [];
        }

        address = new Ipv4Address(value);
        return true;
    }

    /// <inheritdoc/>
    public int CompareTo(Ipv4Address other) => Value.CompareTo(other.Value);

    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Value >> 24}.{(Value >> 16) & 0xFF}.{(Value >> 8) & 0xFF}.{Value & 0xFF}");
}
