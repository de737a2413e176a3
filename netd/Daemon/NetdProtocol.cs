using System.Runtime.InteropServices;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.Netd.Daemon;

/// <summary>
/// Message types on a channel between netd and one consumer (an application's network stack).
/// The channel carries set-up requests once (regions, filters) and descriptors per packet; no
/// capability operation happens per packet.
/// </summary>
public static class NetdMessages
{
    /// <summary>The service name netd exports.</summary>
    public const string ServiceName = "netd";

    // consumer -> netd

    /// <summary>Register the region whose capability the consumer just sent on this channel (Word0: the consumer's cookie).</summary>
    public const ushort AddRegion = 0x4E01;

    /// <summary>Withdraw a region (descriptor's region; netd drops every buffer of it it holds).</summary>
    public const ushort RemoveRegion = 0x4E02;

    /// <summary>Install the binary filter program the descriptor points at.</summary>
    public const ushort InstallFilter = 0x4E03;

    /// <summary>Remove filter Word0 (the consumer's own).</summary>
    public const ushort RemoveFilter = 0x4E04;

    /// <summary>An empty buffer of at least <see cref="NetdLimits.SmallPacket"/> bytes for small packets.</summary>
    public const ushort PostSmall = 0x4E05;

    /// <summary>An empty buffer that holds a whole frame (a page) for large packets.</summary>
    public const ushort PostPage = 0x4E06;

    /// <summary>Send the frame the descriptor points at; the buffer comes back with <see cref="Transmitted"/>.</summary>
    public const ushort Transmit = 0x4E07;

    /// <summary>Answer ARP for this IPv4 address (Word0, host order) on the consumer's behalf.</summary>
    public const ushort AddAddress = 0x4E08;

    /// <summary>
    /// A run of empty small buffers, <see cref="NetdLimits.SmallPacket"/> bytes each, back to back:
    /// the descriptor's Offset is the first one's, its Length the run's bytes (a multiple of the slot,
    /// at most <see cref="NetdLimits.MaxSmallRun"/> slots), and the tags count up from its Tag. Each
    /// slot is posted (and refused) as a <see cref="PostSmall"/> of its own would be; one message for
    /// the buffers a step gives back in order.
    /// </summary>
    public const ushort PostSmallRun = 0x4E09;

    /// <summary>
    /// Up to <see cref="NetdLimits.FramesPerTransmitMany"/> frames to send from whole-page buffers
    /// of one region: Word0 bits 0..15 are the region, bits 16..31 how many, and the frames follow,
    /// 32 bits each, from bit 32 of Word0 on through Word1 and Word2: bits 0..15 the buffer's page
    /// in the region (its offset is page x <see cref="NetdLimits.PageBuffer"/>), bits 16..31 the
    /// frame's length. Each frame is the <see cref="Transmit"/> of
    /// <c>(region, page x 4096, length, tag = page)</c> and is checked, queued, refused and given back
    /// (with tag = its page) as that one would be; a count of 0 or beyond the limit is refused
    /// whole with one <see cref="Ack"/> (<see cref="NetdStatus.BadDescriptor"/>). One message for
    /// the frames a step sends instead of one each.
    /// </summary>
    public const ushort TransmitMany = 0x4E0A;

    /// <summary>
    /// A run of empty page buffers, <see cref="NetdLimits.PageBuffer"/> bytes each, back to back:
    /// the descriptor's Offset is the first one's, its Length the run's bytes (a multiple of the
    /// page, at most <see cref="NetdLimits.MaxPageRun"/> pages), and the tags count up from its Tag.
    /// Each page is posted (and refused) as a <see cref="PostPage"/> of its own would be.
    /// </summary>
    public const ushort PostPageRun = 0x4E0B;

    // netd -> consumer

    /// <summary>First message on a new channel: Word0 = NIC MAC (low 48 bits), Word1 = MTU, Word2 = limits (packed).</summary>
    public const ushort Hello = 0x4E41;

    /// <summary>Reply to <see cref="AddRegion"/>: Word0 = cookie, Word1 = region id (or a <see cref="NetdStatus"/> in Word2).</summary>
    public const ushort RegionReply = 0x4E42;

    /// <summary>Reply to <see cref="InstallFilter"/>: Word0 = filter id, Word1 = status, Word2 = rejection reason.</summary>
    public const ushort FilterReply = 0x4E43;

    /// <summary>A filled receive buffer: descriptor of the buffer and the frame's length.</summary>
    public const ushort Received = 0x4E44;

    /// <summary>A transmit buffer given back (sent, or refused with a status in the flags).</summary>
    public const ushort Transmitted = 0x4E45;

    /// <summary>
    /// Up to <see cref="NetdLimits.TagsPerTransmittedMany"/> transmit buffers of one region given
    /// back, all sent: Word0 bits 0..15 are the region, bits 16..31 how many, and the buffers' tags
    /// follow, 16 bits each, from bit 32 of Word0 on through Word1 and Word2. A buffer whose tag
    /// does not fit 16 bits, or that was refused, comes back alone as <see cref="Transmitted"/>.
    /// One message for a step's worth of sent frames instead of one each.
    /// </summary>
    public const ushort TransmittedMany = 0x4E48;

    /// <summary>
    /// Up to <see cref="NetdLimits.FramesPerReceivedMany"/> filled receive buffers of one kind that
    /// follow each other in one region (the order the consumer posted them): Word0 bits 0..15 are
    /// the region, bits 16..23 how many, bits 24..31 the <see cref="DescriptorFlags"/> (Small or
    /// Page), bits 32..63 the first buffer's tag; Word1 bits 0..31 the first buffer's offset, then
    /// the frames' lengths, 16 bits each, from bit 32 of Word1 on through Word2. Buffer i is at
    /// offset + i x stride (<see cref="NetdLimits.SmallPacket"/> for small buffers,
    /// <see cref="NetdLimits.PageBuffer"/> for pages) with tag + i, exactly the buffer the consumer
    /// posted there: netd writes a delivery into the open run only when it is that buffer, else it
    /// starts another (or sends <see cref="Received"/>). One message for a step's deliveries
    /// instead of one each.
    /// </summary>
    public const ushort ReceivedMany = 0x4E49;

    /// <summary>A region netd can no longer reach (revoked or removed): every buffer of it is back with its owner.</summary>
    public const ushort RegionGone = 0x4E46;

    /// <summary>Reply to <see cref="AddAddress"/> and <see cref="RemoveFilter"/>: Word0 = request type, Word1 = status.</summary>
    public const ushort Ack = 0x4E47;
}

/// <summary>Outcome of a consumer's request.</summary>
public enum NetdStatus : ushort
{
    /// <summary>Done.</summary>
    Ok = 0,

    /// <summary>A descriptor named an unknown or stale region, or lies outside it.</summary>
    BadDescriptor = 1,

    /// <summary>A configured limit (regions, filters, posted buffers, addresses) was reached.</summary>
    LimitReached = 2,

    /// <summary>The capability granted is not a writable Frame, or was revoked.</summary>
    BadCapability = 3,

    /// <summary>The filter program was rejected (reason in the reply).</summary>
    FilterRejected = 4,

    /// <summary>The frame is shorter than an Ethernet header or longer than the MTU allows.</summary>
    BadFrame = 5,

    /// <summary>No AddRegion request matched the grant, or a request arrived out of order.</summary>
    ProtocolError = 6,

    /// <summary>The frame's source address is not one the consumer registered (no spoofing other stacks).</summary>
    Forbidden = 7,
}

/// <summary>Flags of a descriptor.</summary>
[Flags]
public enum DescriptorFlags : ushort
{
    /// <summary>None.</summary>
    None = 0,

    /// <summary>The buffer is a small-packet slot (at most <see cref="NetdLimits.SmallPacket"/> bytes of frame).</summary>
    Small = 1,

    /// <summary>The buffer is a page that held a frame larger than a small slot.</summary>
    Page = 2,
}

/// <summary>netd's fixed protocol limits.</summary>
public static class NetdLimits
{
    /// <summary>Frames of at most this many bytes are copied into small buffers (seed 001's XX).</summary>
    public const int SmallPacket = 128;

    /// <summary>Small buffers one <see cref="NetdMessages.PostSmallRun"/> posts at most.</summary>
    public const int MaxSmallRun = 64;

    /// <summary>Page buffers one <see cref="NetdMessages.PostPageRun"/> posts at most.</summary>
    public const int MaxPageRun = 64;

    /// <summary>Frames one <see cref="NetdMessages.TransmitMany"/> carries at most.</summary>
    public const int FramesPerTransmitMany = 5;

    /// <summary>Deliveries one <see cref="NetdMessages.ReceivedMany"/> carries at most.</summary>
    public const int FramesPerReceivedMany = 6;

    /// <summary>Frame <paramref name="index"/> (0..4) of a <see cref="NetdMessages.TransmitMany"/>: its page and length.</summary>
    public static (ushort Page, ushort Length) TransmitFrame(in Message message, int index)
    {
        int bit = 32 * (index + 1);
        ulong word = bit < 64 ? message.Word0 : bit < 128 ? message.Word1 : message.Word2;
        uint frame = (uint)(word >> (bit & 63));
        return ((ushort)frame, (ushort)(frame >> 16));
    }

    /// <summary>Length <paramref name="index"/> (0..5) of a <see cref="NetdMessages.ReceivedMany"/>.</summary>
    public static ushort ReceivedLength(in Message message, int index)
    {
        int bit = 96 + (16 * index); // Word1 from bit 32 (bits 64.. of the payload hold the offset first)
        ulong word = bit < 128 ? message.Word1 : message.Word2;
        return (ushort)(word >> (bit & 63));
    }

    /// <summary>The distance between buffers of one kind in a run: a small slot or a page.</summary>
    public static uint Stride(DescriptorFlags kind) => (kind & DescriptorFlags.Small) != 0 ? (uint)SmallPacket : PageBuffer;

    /// <summary>Tags one <see cref="NetdMessages.TransmittedMany"/> carries at most.</summary>
    public const int TagsPerTransmittedMany = 10;

    /// <summary>Tag <paramref name="index"/> (0..9) of a <see cref="NetdMessages.TransmittedMany"/>.</summary>
    public static ushort TransmittedTag(in Message message, int index) => index switch
    {
        < 2 => (ushort)(message.Word0 >> (32 + (16 * index))),
        < 6 => (ushort)(message.Word1 >> (16 * (index - 2))),
        _ => (ushort)(message.Word2 >> (16 * (index - 6))),
    };

    /// <summary>Largest frame a page buffer must hold (MTU 1500 + Ethernet header), rounded to the page.</summary>
    public const int PageBuffer = 4096;
}

/// <summary>
/// A buffer named by the consumer's region id, an offset and a length: what travels per packet
/// (Barrelfish devif's <c>(region, offset, length, flags)</c>). 16 bytes, inline in one message.
/// </summary>
/// <param name="Region">Region id netd gave at registration.</param>
/// <param name="Flags">Buffer kind.</param>
/// <param name="Offset">Byte offset in the region.</param>
/// <param name="Length">Buffer length (posts) or frame length (received, transmit).</param>
/// <param name="Tag">The consumer's own tag, returned unchanged with the buffer (e.g. its buffer index).</param>
[StructLayout(LayoutKind.Sequential, Pack = 2)]
public readonly record struct Descriptor(ushort Region, DescriptorFlags Flags, uint Offset, uint Length, uint Tag)
{
    /// <summary>The descriptor as a message of <paramref name="type"/>.</summary>
    public Message ToMessage(ushort type)
    {
        var m = Message.Create(type);
        m.SetPayload(this);
        return m;
    }

    /// <summary>The descriptor carried by <paramref name="message"/>.</summary>
    public static Descriptor From(in Message message) => message.GetPayload<Descriptor>();
}
