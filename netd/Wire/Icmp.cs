using System.Buffers.Binary;

namespace Multikernel.Netd.Wire;

/// <summary>ICMP message types the stacks handle (RFC 792).</summary>
public enum IcmpType : byte
{
    EchoReply = 0,
    DestinationUnreachable = 3,
    EchoRequest = 8,
    TimeExceeded = 11,
}

/// <summary>An ICMPv4 message: a checked view. <see cref="TryParse"/> checks the 8-byte header and the checksum over the whole message.</summary>
public readonly ref struct IcmpPacket
{
    public const int HeaderLength = 8;

    private readonly ReadOnlySpan<byte> _bytes;

    private IcmpPacket(ReadOnlySpan<byte> bytes) => _bytes = bytes;

    public static WireError TryParse(ReadOnlySpan<byte> bytes, out IcmpPacket packet)
    {
        packet = default;
        if (bytes.Length < HeaderLength)
        {
            return WireError.Truncated;
        }

        if (!InternetChecksum.IsValid(bytes))
        {
            return WireError.BadChecksum;
        }

        packet = new IcmpPacket(bytes);
        return WireError.None;
    }

    public IcmpType Type => (IcmpType)_bytes[0];

    public byte Code => _bytes[1];

    public ushort Checksum => BinaryPrimitives.ReadUInt16BigEndian(_bytes[2..]);

    /// <summary>The echo identifier (meaningful for echo request/reply).</summary>
    public ushort Identifier => BinaryPrimitives.ReadUInt16BigEndian(_bytes[4..]);

    /// <summary>The echo sequence number (meaningful for echo request/reply).</summary>
    public ushort SequenceNumber => BinaryPrimitives.ReadUInt16BigEndian(_bytes[6..]);

    /// <summary>Everything after the 8-byte header.</summary>
    public ReadOnlySpan<byte> Data => _bytes[HeaderLength..];

    public int Length => _bytes.Length;

    /// <summary>
    /// Writes an echo message header for <paramref name="dataLength"/> bytes of data that are already
    /// in place after it, then the checksum over header and data. Returns the message length.
    /// </summary>
    public static int WriteEcho(Span<byte> destination, IcmpType type, ushort identifier, ushort sequence, int dataLength)
    {
        Span<byte> d = destination[..(HeaderLength + dataLength)];
        d[0] = (byte)type;
        d[1] = 0;
        d[2] = 0;
        d[3] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(d[4..], identifier);
        BinaryPrimitives.WriteUInt16BigEndian(d[6..], sequence);
        BinaryPrimitives.WriteUInt16BigEndian(d[2..], InternetChecksum.Compute(d));
        return d.Length;
    }
}
