using System.Buffers.Binary;

namespace Multikernel.Netd.Wire;

/// <summary>ARP operations (RFC 826).</summary>
public enum ArpOperation : ushort
{
    Request = 1,
    Reply = 2,
}

/// <summary>An ARP packet for IPv4 over Ethernet: a checked view (RFC 826). Other hardware or protocol types are refused as <see cref="WireError.Unsupported"/>.</summary>
public readonly ref struct ArpPacket
{
    /// <summary>The size of an Ethernet/IPv4 ARP packet.</summary>
    public const int Length = 28;

    private readonly ReadOnlySpan<byte> _bytes;

    private ArpPacket(ReadOnlySpan<byte> bytes) => _bytes = bytes;

    public static WireError TryParse(ReadOnlySpan<byte> bytes, out ArpPacket packet)
    {
        packet = default;
        if (bytes.Length < Length)
        {
            return WireError.Truncated;
        }

        if (BinaryPrimitives.ReadUInt16BigEndian(bytes) != 1 || BinaryPrimitives.ReadUInt16BigEndian(bytes[2..]) != (ushort)EtherType.Ipv4
            || bytes[4] != MacAddress.Length || bytes[5] != Ipv4Address.Length)
        {
            return WireError.Unsupported;
        }

        ushort op = BinaryPrimitives.ReadUInt16BigEndian(bytes[6..]);
        if (op is not ((ushort)ArpOperation.Request or (ushort)ArpOperation.Reply))
        {
            return WireError.Unsupported;
        }

        packet = new ArpPacket(bytes[..Length]);
        return WireError.None;
    }

    public ArpOperation Operation => (ArpOperation)BinaryPrimitives.ReadUInt16BigEndian(_bytes[6..]);

    public MacAddress SenderMac => MacAddress.Read(_bytes[8..]);

    public Ipv4Address SenderIp => Ipv4Address.Read(_bytes[14..]);

    public MacAddress TargetMac => MacAddress.Read(_bytes[18..]);

    public Ipv4Address TargetIp => Ipv4Address.Read(_bytes[24..]);

    /// <summary>Writes a whole ARP packet into the first <see cref="Length"/> bytes of <paramref name="destination"/>.</summary>
    public static void Write(Span<byte> destination, ArpOperation operation, MacAddress senderMac, Ipv4Address senderIp, MacAddress targetMac, Ipv4Address targetIp)
    {
        Span<byte> d = destination[..Length];
        BinaryPrimitives.WriteUInt16BigEndian(d, 1);
        BinaryPrimitives.WriteUInt16BigEndian(d[2..], (ushort)EtherType.Ipv4);
        d[4] = MacAddress.Length;
        d[5] = Ipv4Address.Length;
        BinaryPrimitives.WriteUInt16BigEndian(d[6..], (ushort)operation);
        senderMac.Write(d[8..]);
        senderIp.Write(d[14..]);
        targetMac.Write(d[18..]);
        targetIp.Write(d[24..]);
    }
}
