using System.Threading.Channels;
using Multikernel.Netd.Client;

namespace Multikernel.Net.Netd;

/// <summary>
/// A received frame left where netd put it — in one of the consumer's own receive pages — and
/// handed to the stack as a <see cref="PacketBuffer"/>: the stack keeps slices of it for queued
/// data, so the payload stays in the page until the application reads it (the mbuf-style view
/// DESIGN.md §7 asks for; no copy into the stack's pool). When the last slice is released the
/// page goes back to netd (posted again). One object per receive page, made when the network
/// starts, reused for every frame that lands in that page: nothing is allocated per packet.
/// </summary>
/// <remarks>
/// The page belongs to the application's RAM throughout (it paid for the region); netd may write
/// it again only after the repost. When netd is gone the repost is skipped (the client posts every
/// page it holds again when it reconnects). Used only on the stack's core.
/// </remarks>
internal sealed class NetdPageBuffer(NetdClient client, Action onReleased) : PacketBuffer
{
    private ReceivedFrame _frame;
    private Memory<byte> _memory;

    public override Memory<byte> Memory => _memory;

    /// <summary>Takes <paramref name="frame"/> (which landed in this page); the caller holds the one reference.</summary>
    public void Attach(in ReceivedFrame frame)
    {
        _frame = frame;
        _memory = client.RegionMemory.Slice((int)frame.Descriptor.Offset, (int)frame.Descriptor.Length);
        Activate();
    }

    protected override void OnReleased()
    {
        _memory = default;
        onReleased();
        try
        {
            client.Release(_frame);
        }
        catch (Exception e) when (e is NetdException or ChannelClosedException or ObjectDisposedException)
        {
            // netd is gone: the page stays with us; a reconnecting client posts it again.
        }
    }
}
