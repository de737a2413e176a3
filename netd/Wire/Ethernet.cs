using System.Buffers.Binary;

namespace Multikernel.Netd.Wire;

/// <summary>EtherType values the stacks speak.</summary>
public enum EtherType : ushort
{
    Ipv4 = 0x0800,
    Arp = 0x0806,
    Ipv6 = 0x86DD,
}

/// <summary>
/// An Ethernet II frame: a view over the bytes (no copy). Built only through
/// <see cref="TryParse"/>, which checks the length once, so no accessor can read out of bounds.
/// </summary>
public readonly ref struct EthernetFrame
{
    /// <summary>Destination, source and EtherType.</summary>
    public const int HeaderLength = 14;

    private readonly ReadOnlySpan<byte> _bytes;

    private EthernetFrame(ReadOnlySpan<byte> bytes) => _bytes = bytes;

    /// <summary>Views <paramref name="bytes"/> as a frame if it holds at least a header.</summary>
    public static WireError TryParse(ReadOnlySpan<byte> bytes, out EthernetFrame frame)
    {
        frame = default;
        if (bytes.Length < HeaderLength)
        {
            return WireError.Truncated;
        }

        frame = new EthernetFrame(bytes);
        return WireError.None;
    }

    public MacAddress Destination => MacAddress.Read(_bytes);

    public MacAddress Source => MacAddress.Read(_bytes[6..]);

    public EtherType EtherType => (EtherType)BinaryPrimitives.ReadUInt16BigEndian(_bytes[12..]);

    /// <summary>Everything after the header (may include the padding short frames carry).</summary>
    public ReadOnlySpan<byte> Payload => _bytes[HeaderLength..];

    /// <summary>Writes a header into the first <see cref="HeaderLength"/> bytes of <paramref name="destination"/>.</summary>
    public static void WriteHeader(Span<byte> destination, MacAddress to, MacAddress from, EtherType type)
    {
        Span<byte> d = destination[..HeaderLength];
        to.Write(d);
        from.Write(d[6..]);
        BinaryPrimitives.WriteUInt16BigEndian(d[12..], (ushort)type);
    }
}
