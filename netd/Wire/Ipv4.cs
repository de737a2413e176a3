using System.Buffers.Binary;

namespace Multikernel.Netd.Wire;

/// <summary>IP protocol numbers the stacks speak.</summary>
public enum IpProtocol : byte
{
    Icmp = 1,
    Tcp = 6,
    Udp = 17,
}

/// <summary>
/// An IPv4 datagram: a checked view (RFC 791). <see cref="TryParse"/> checks the version, that
/// the header length (IHL) is at least 20 bytes and inside the buffer, that the total length
/// covers the header and is inside the buffer, and the header checksum; after that
/// <see cref="Payload"/> is exactly the datagram's payload (Ethernet padding trimmed) and no
/// accessor reads out of bounds.
/// </summary>
public readonly ref struct Ipv4Packet
{
    /// <summary>A header without options.</summary>
    public const int MinHeaderLength = 20;

    /// <summary>IHL's largest value times four.</summary>
    public const int MaxHeaderLength = 60;

    private readonly ReadOnlySpan<byte> _bytes;

    private Ipv4Packet(ReadOnlySpan<byte> bytes) => _bytes = bytes;

    /// <summary>Views <paramref name="bytes"/> as a datagram; the view ends where its total length says.</summary>
    public static WireError TryParse(ReadOnlySpan<byte> bytes, out Ipv4Packet packet)
    {
        packet = default;
        if (bytes.Length < MinHeaderLength)
        {
            return WireError.Truncated;
        }

        if (bytes[0] >> 4 != 4)
        {
            return WireError.Unsupported;
        }

        int headerLength = (bytes[0] & 0xF) * 4;
        if (headerLength < MinHeaderLength)
        {
            return WireError.BadHeaderLength;
        }

        if (headerLength > bytes.Length)
        {
            return WireError.Truncated;
        }

        int total = BinaryPrimitives.ReadUInt16BigEndian(bytes[2..]);
        if (total < headerLength)
        {
            return WireError.BadLength;
        }

        if (total > bytes.Length)
        {
            return WireError.Truncated;
        }

        if (!InternetChecksum.IsValid(bytes[..headerLength]))
        {
            return WireError.BadChecksum;
        }

        packet = new Ipv4Packet(bytes[..total]);
        return WireError.None;
    }

    public int HeaderLength => (_bytes[0] & 0xF) * 4;

    public byte DifferentiatedServices => _bytes[1];

    public int TotalLength => _bytes.Length;

    public ushort Identification => BinaryPrimitives.ReadUInt16BigEndian(_bytes[4..]);

    public bool DontFragment => (_bytes[6] & 0x40) != 0;

    public bool MoreFragments => (_bytes[6] & 0x20) != 0;

    /// <summary>The fragment's offset in bytes (the field counts 8-byte units).</summary>
    public int FragmentOffset => (BinaryPrimitives.ReadUInt16BigEndian(_bytes[6..]) & 0x1FFF) * 8;

    /// <summary>True when this datagram is a fragment of a larger one.</summary>
    public bool IsFragment => MoreFragments || FragmentOffset != 0;

    public byte TimeToLive => _bytes[8];

    public IpProtocol Protocol => (IpProtocol)_bytes[9];

    public ushort HeaderChecksum => BinaryPrimitives.ReadUInt16BigEndian(_bytes[10..]);

    public Ipv4Address Source => Ipv4Address.Read(_bytes[12..]);

    public Ipv4Address Destination => Ipv4Address.Read(_bytes[16..]);

    /// <summary>The option bytes (not interpreted: a host that does not forward may ignore them).</summary>
    public ReadOnlySpan<byte> Options => _bytes[MinHeaderLength..HeaderLength];

    public ReadOnlySpan<byte> Payload => _bytes[HeaderLength..];

    /// <summary>
    /// Writes a 20-byte header (no options) with its checksum into <paramref name="destination"/>.
    /// <paramref name="fragmentOffset"/> is in bytes and must be a multiple of 8.
    /// </summary>
    public static void WriteHeader(Span<byte> destination, Ipv4Address source, Ipv4Address to, IpProtocol protocol, int payloadLength,
        ushort identification, byte ttl, bool dontFragment = false, int fragmentOffset = 0, bool moreFragments = false)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(payloadLength);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(payloadLength, ushort.MaxValue - MinHeaderLength);
        if (fragmentOffset < 0 || fragmentOffset % 8 != 0 || fragmentOffset / 8 > 0x1FFF)
        {
            throw new ArgumentOutOfRangeException(nameof(fragmentOffset), fragmentOffset, "A fragment offset is a multiple of 8 below 65536.");
        }

        Span<byte> d = destination[..MinHeaderLength];
        d[0] = 0x45;
        d[1] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(d[2..], (ushort)(MinHeaderLength + payloadLength));
        BinaryPrimitives.WriteUInt16BigEndian(d[4..], identification);
        ushort flags = (ushort)((dontFragment ? 0x4000 : 0) | (moreFragments ? 0x2000 : 0) | (fragmentOffset / 8));
        BinaryPrimitives.WriteUInt16BigEndian(d[6..], flags);
        d[8] = ttl;
        d[9] = (byte)protocol;
        d[10] = 0;
        d[11] = 0;
        source.Write(d[12..]);
        to.Write(d[16..]);
        BinaryPrimitives.WriteUInt16BigEndian(d[10..], InternetChecksum.Compute(d));
    }
}
