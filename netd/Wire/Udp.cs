using System.Buffers.Binary;

namespace Multikernel.Netd.Wire;

/// <summary>
/// A UDP datagram: a checked view (RFC 768). <see cref="TryParse"/> checks the 8-byte header and
/// that the length field covers the header and lies inside the buffer; <see cref="Payload"/>
/// ends where the length field says. The checksum needs the IP addresses: <see cref="IsChecksumValid"/>.
/// </summary>
public readonly ref struct UdpDatagram
{
    public const int HeaderLength = 8;

    private readonly ReadOnlySpan<byte> _bytes;

    private UdpDatagram(ReadOnlySpan<byte> bytes) => _bytes = bytes;

    public static WireError TryParse(ReadOnlySpan<byte> bytes, out UdpDatagram datagram)
    {
        datagram = default;
        if (bytes.Length < HeaderLength)
        {
            return WireError.Truncated;
        }

        int length = BinaryPrimitives.ReadUInt16BigEndian(bytes[4..]);
        if (length < HeaderLength)
        {
            return WireError.BadLength;
        }

        if (length > bytes.Length)
        {
            return WireError.Truncated;
        }

        datagram = new UdpDatagram(bytes[..length]);
        return WireError.None;
    }

    public ushort SourcePort => BinaryPrimitives.ReadUInt16BigEndian(_bytes);

    public ushort DestinationPort => BinaryPrimitives.ReadUInt16BigEndian(_bytes[2..]);

    public int Length => _bytes.Length;

    public ushort Checksum => BinaryPrimitives.ReadUInt16BigEndian(_bytes[6..]);

    public ReadOnlySpan<byte> Payload => _bytes[HeaderLength..];

    /// <summary>True when the checksum matches, or is zero (the sender computed none, which IPv4 allows).</summary>
    public bool IsChecksumValid(Ipv4Address source, Ipv4Address destination) =>
        Checksum == 0 || InternetChecksum.Finish(InternetChecksum.Add(InternetChecksum.PseudoHeader(source, destination, (byte)IpProtocol.Udp, _bytes.Length), _bytes)) == 0;

    /// <summary>
    /// Writes the header for <paramref name="payloadLength"/> bytes already in place after it,
    /// with the checksum (a computed zero is sent as 0xFFFF, as RFC 768 says). Returns the datagram length.
    /// </summary>
    public static int Write(Span<byte> destination, Ipv4Address source, Ipv4Address to, ushort sourcePort, ushort destinationPort, int payloadLength)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(payloadLength, ushort.MaxValue - HeaderLength);
        Span<byte> d = destination[..(HeaderLength + payloadLength)];
        BinaryPrimitives.WriteUInt16BigEndian(d, sourcePort);
        BinaryPrimitives.WriteUInt16BigEndian(d[2..], destinationPort);
        BinaryPrimitives.WriteUInt16BigEndian(d[4..], (ushort)d.Length);
        d[6] = 0;
        d[7] = 0;
        ushort sum = InternetChecksum.Finish(InternetChecksum.Add(InternetChecksum.PseudoHeader(source, to, (byte)IpProtocol.Udp, d.Length), d));
        BinaryPrimitives.WriteUInt16BigEndian(d[6..], sum == 0 ? (ushort)0xFFFF : sum);
        return d.Length;
    }
}
