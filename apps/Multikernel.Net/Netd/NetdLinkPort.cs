using System.Threading.Channels;
using Multikernel.Netd.Client;
using Multikernel.Netd.Wire;

namespace Multikernel.Net.Netd;

/// <summary>
/// A stack's link over netd: every frame the stack sends is copied into one of the consumer's
/// own transmit pages (registered with netd once) and handed over as a descriptor; the page
/// comes back free when netd has sent it. Used only on the stack's core, like the stack.
/// </summary>
/// <remarks>
/// Bounded by the client's transmit pages: with all of them in flight <see cref="TryTransmit"/>
/// says no. TCP asks <see cref="CanTransmit"/> first and holds its data back until pages come
/// home (the stack retries on every received batch and on a short timer); a control frame that
/// meets a full queue (a RST, FIN, ACK) is kept by the stack (a bounded few) and sent when pages
/// come home; what else meets a full queue (UDP, ICMP) is counted as a <c>TransmitQueueFull</c>
/// drop, as a NIC with a full ring would make it. The last <see cref="ControlReserve"/> pages are
/// kept for small frames (ACK, FIN, RST, ARP: at most <see cref="SmallFrame"/> bytes): data is
/// retransmitted when dropped, but a RST is sent once, and a lost one would leave the peer hanging. Once netd has gone (its channel closed, the
/// region revoked) every transmit is refused the same way and counted in <see cref="Refused"/>.
/// </remarks>
public sealed class NetdLinkPort : ILinkPort
{
    /// <summary>Transmit pages only small (control) frames may take. 4.</summary>
    public const int ControlReserve = 4;

    /// <summary>Largest frame that counts as control: headers with options, no payload to speak of. 128 bytes.</summary>
    public const int SmallFrame = 128;

    private readonly NetdClient _client;

    /// <summary>A link over <paramref name="client"/> (connected; its MAC and MTU are netd's).</summary>
    public NetdLinkPort(NetdClient client)
    {
        ArgumentNullException.ThrowIfNull(client);
        _client = client;
        Mtu = client.Mtu;
        Mac = client.Mac;
    }

    /// <inheritdoc/>
    public int Mtu { get; }

    /// <inheritdoc/>
    public MacAddress Mac { get; }

    /// <summary>Frames handed to netd.</summary>
    public long Transmitted { get; private set; }

    /// <summary>Frames refused because every transmit page was in flight.</summary>
    public long Busy { get; private set; }

    /// <summary>Frames refused because netd is gone (or the frame does not fit a page).</summary>
    public long Refused { get; private set; }

    /// <inheritdoc/>
    public bool CanTransmit(int frameLength) =>
        frameLength <= SmallFrame ? _client.FreeTransmitBuffers > 0 : _client.FreeTransmitBuffers > ControlReserve;

    /// <inheritdoc/>
    public bool TryTransmit(ReadOnlySpan<byte> frame)
    {
        if (frame.Length > Mtu + EthernetFrame.HeaderLength)
        {
            Refused++;
            return false; // netd would refuse it too; a frame over the MTU is the stack's bug
        }

        try
        {
            if (!CanTransmit(frame.Length) || !_client.TryGetTransmitBuffer(out TransmitBuffer buffer))
            {
                Busy++;
                return false;
            }

            frame.CopyTo(buffer.Span);
            _client.Transmit(buffer, frame.Length);
            Transmitted++;
            return true;
        }
        catch (Exception e) when (e is NetdException or ChannelClosedException)
        {
            Refused++;
            return false;
        }
    }
}
