using System.Buffers.Binary;
using System.Globalization;

namespace Multikernel.Netd.Drivers;

/// <summary>
/// A 48-bit Ethernet (EUI-48) address held in the low bits of a <see cref="ulong"/>, so it is
/// copied, compared and hashed as one machine word on the switch's forwarding path.
/// </summary>
public readonly struct MacAddress : IEquatable<MacAddress>
{
    /// <summary>Bytes on the wire.</summary>
    public const int Length = 6;

    private const ulong Mask = 0xFFFF_FFFF_FFFFUL;

    private readonly ulong _value;

    /// <summary>Wraps the low 48 bits of <paramref name="value"/> (the first wire byte is the most significant).</summary>
    public MacAddress(ulong value) => _value = value & Mask;

    /// <summary>ff:ff:ff:ff:ff:ff.</summary>
    public static MacAddress Broadcast => new(Mask);

    /// <summary>The address as a 48-bit number (first wire byte most significant).</summary>
    public ulong Value => _value;

    /// <summary>All ones.</summary>
    public bool IsBroadcast => _value == Mask;

    /// <summary>The group bit (least significant bit of the first byte): broadcast and multicast.</summary>
    public bool IsMulticast => (_value & 0x0100_0000_0000UL) != 0;

    /// <summary>The locally-administered bit (second bit of the first byte).</summary>
    public bool IsLocallyAdministered => (_value & 0x0200_0000_0000UL) != 0;

    /// <summary>Reads six bytes; throws when fewer are given.</summary>
    public static MacAddress Read(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length < Length)
        {
            throw new ArgumentException($"A MAC address is {Length} bytes; got {bytes.Length}.", nameof(bytes));
        }

        return new MacAddress(((ulong)BinaryPrimitives.ReadUInt16BigEndian(bytes) << 32) | BinaryPrimitives.ReadUInt32BigEndian(bytes[2..]));
    }

    /// <summary>Writes the six wire bytes into <paramref name="destination"/>.</summary>
    public void Write(Span<byte> destination)
    {
        if (destination.Length < Length)
        {
            throw new ArgumentException($"A MAC address needs {Length} bytes; got {destination.Length}.", nameof(destination));
        }

        BinaryPrimitives.WriteUInt16BigEndian(destination, (ushort)(_value >> 32));
        BinaryPrimitives.WriteUInt32BigEndian(destination[2..], (uint)_value);
    }

    /// <summary>Parses <c>aa:bb:cc:dd:ee:ff</c> (or with '-' separators).</summary>
    public static MacAddress Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (!TryParse(text, out MacAddress mac))
        {
            throw new FormatException($"'{text}' is not a MAC address (expected six hex pairs such as 02:00:00:00:00:01).");
        }

        return mac;
    }

    /// <summary>Parses <c>aa:bb:cc:dd:ee:ff</c> (or with '-' separators) without throwing.</summary>
    public static bool TryParse(ReadOnlySpan<char> text, out MacAddress mac)
    {
        mac = default;
        if (text.Length != 17)
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

            if (!byte.TryParse(text.Slice(i * 3, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out byte b))
            {
                return false;
            }

            value = (value << 8) | b;
        }

        mac = new MacAddress(value);
        return true;
    }

    public bool Equals(MacAddress other) => _value == other._value;

    public override bool Equals(object? obj) => obj is MacAddress other && Equals(other);

    public override int GetHashCode() => _value.GetHashCode();

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{(byte)(_value >> 40):x2}:{(byte)(_value >> 32):x2}:{(byte)(_value >> 24):x2}:{(byte)(_value >> 16):x2}:{(byte)(_value >> 8):x2}:{(byte)_value:x2}");

    public static bool operator ==(MacAddress left, MacAddress right) => left.Equals(right);

    public static bool operator !=(MacAddress left, MacAddress right) => !left.Equals(right);
}
