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
