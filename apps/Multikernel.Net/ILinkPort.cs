using Multikernel.Netd.Wire;

namespace Multikernel.Net;

/// <summary>
/// Where a stack sends its frames: one Ethernet port. netd's transmit descriptor queue implements
/// it (copying into a registered page, or lending one later); tests implement it with a simulated
/// link. Called only on the stack's thread.
/// </summary>
public interface ILinkPort
{
    /// <summary>The IP MTU: the largest IP datagram one frame carries (1500 on Ethernet). The stack derives its MSS from it.</summary>
    int Mtu { get; }

    /// <summary>This port's Ethernet address.</summary>
    MacAddress Mac { get; }

    /// <summary>
    /// Queues one whole Ethernet frame (header included, no FCS) for transmission. False when the
    /// port cannot take it now (a full transmit queue): the stack counts a drop and relies on
    /// retransmission, as a NIC that drops would make it.
    /// </summary>
    bool TryTransmit(ReadOnlySpan<byte> frame);

    /// <summary>
    /// True when <see cref="TryTransmit"/> would take a frame of <paramref name="frameLength"/>
    /// bytes now. TCP asks before it sends data: when the port is full it holds the data back
    /// (it stays in the send buffer, SND.NXT does not move) and sends it when the port has room
    /// (<see cref="NetworkStack.OnLinkWritable"/>), instead of sending into a drop and waiting a
    /// retransmission timeout. A port that never fills keeps the default.
    /// </summary>
    bool CanTransmit(int frameLength) => true;
}

/// <summary>An IPv4 address and port.</summary>
public readonly record struct Ipv4Endpoint(Ipv4Address Address, ushort Port)
{
    /// <inheritdoc/>
    public override string ToString() => $"{Address}:{Port}";
}
