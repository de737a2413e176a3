using Multikernel.Netd.Wire;
namespace Multikernel.Netd.Drivers;

/// <summary>
/// The one interface netd drives a NIC through: bursts of Ethernet frames (no preamble, no FCS)
/// in and out of buffers the caller owns, plus the few facts a stack needs about the link.
/// </summary>
/// <remarks>
/// <para>Shape: smoltcp's <c>phy::Device</c> hands out one token per frame; Barrelfish devif
/// moves descriptors of registered regions. Here the caller keeps its buffers (spans it took
/// from its own DevFrames), the device copies at most once into or out of them, and a whole burst
/// is one call, so per-frame cost is a copy and a few branches. Nothing is allocated per frame;
/// the buffer lists are generic over <c>allows ref struct</c> implementations, so a caller passes
/// a stack-only view over its frame table.</para>
/// <para>Threading: a device instance has one owner thread (the core that drives it). Only the
/// counters may be read from elsewhere.</para>
/// <para>Waiting: when <see cref="ReceiveBurst"/> returns 0 the owner may park. It calls
/// <see cref="PrepareToWait"/>; if that returns true, <see cref="WaitFileDescriptor"/> (when not
/// -1) becomes readable as soon as a frame can be received, so the kernel adds it to its epoll
/// set. Level-triggered devices (TAP) return true at once; devices that must arm a signal (a
/// virtual switch port) arm it and return false if frames slipped in meanwhile.</para>
/// </remarks>
public interface INetworkDevice : IDisposable
{
    /// <summary>A name for logs and counters (the TAP interface name, or the switch port's name).</summary>
    string Name { get; }

    /// <summary>The station address the owner of this device uses on the link.</summary>
    MacAddress MacAddress { get; }

    /// <summary>IP MTU: the largest Ethernet payload. Frames are at most <c>Mtu + 14</c> bytes (no VLAN tag, no FCS).</summary>
    int Mtu { get; }

    /// <summary>True while frames can flow (a TAP whose host side is up, an attached switch port).</summary>
    bool IsLinkUp { get; }

    /// <summary>An OS file descriptor that becomes readable when frames arrive, or -1 when the device has none (poll it).</summary>
    int WaitFileDescriptor { get; }

    /// <summary>
    /// Receives up to <c>min(buffers.Count, lengths.Length)</c> frames, frame <c>i</c> into
    /// <c>buffers[i]</c> with its length in <c>lengths[i]</c>; returns how many. Never blocks.
    /// Every buffer must hold at least <see cref="NetworkDevice.MaxFrameLength"/> bytes.
    /// </summary>
    int ReceiveBurst<TBuffers>(scoped ref TBuffers buffers, scoped Span<int> lengths)
        where TBuffers : IReceiveBuffers, allows ref struct;

    /// <summary>
    /// Transmits frames <c>0..frames.Count-1</c> in order; returns how many the device took (sent,
    /// or dropped and counted because they were malformed). Frames from the returned index on were
    /// not taken because the device is busy: the caller keeps them and retries. Never blocks.
    /// </summary>
    int TransmitBurst<TFrames>(scoped ref TFrames frames)
        where TFrames : ITransmitFrames, allows ref struct;

    /// <summary>
    /// Called before the owner parks. Returns true when it may sleep on
    /// <see cref="WaitFileDescriptor"/> (nothing is pending and a signal is armed), false when
    /// frames are already waiting.
    /// </summary>
    bool PrepareToWait();
}

/// <summary>Buffers a receive burst fills, one frame per buffer.</summary>
public interface IReceiveBuffers
{
    /// <summary>How many buffers are offered.</summary>
    int Count { get; }

    /// <summary>Buffer <paramref name="index"/>; the device writes a frame at its start.</summary>
    Span<byte> this[int index] { get; }
}

/// <summary>Frames a transmit burst sends, each exactly its frame's length.</summary>
public interface ITransmitFrames
{
    /// <summary>How many frames.</summary>
    int Count { get; }

    /// <summary>Frame <paramref name="index"/>, exactly the bytes to send.</summary>
    ReadOnlySpan<byte> this[int index] { get; }
}

/// <summary>Constants and helpers shared by the drivers.</summary>
public static class NetworkDevice
{
    /// <summary>Destination, source, EtherType.</summary>
    public const int EthernetHeaderLength = 14;

    /// <summary>Ethernet's minimum frame without FCS; shorter frames are legal on TAP but padded on a wire.</summary>
    public const int MinimumFrameLength = 60;

    /// <summary>The default IP MTU.</summary>
    public const int DefaultMtu = 1500;

    /// <summary>The largest MTU a driver accepts (a jumbo frame still fits in one 16 KiB buffer).</summary>
    public const int MaxMtu = 9000;

    /// <summary>The smallest MTU a driver accepts (IPv4's minimum datagram).</summary>
    public const int MinMtu = 576;

    /// <summary>Largest frame of a device: <c>Mtu + 14</c>.</summary>
    public static int MaxFrameLength(this INetworkDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        return device.Mtu + EthernetHeaderLength;
    }

    /// <summary>Receives one frame into <paramref name="buffer"/>; returns its length, or 0 when none is waiting.</summary>
    public static int ReceiveOne(this INetworkDevice device, Span<byte> buffer)
    {
        ArgumentNullException.ThrowIfNull(device);
        var one = new StridedFrameBuffers(buffer, buffer.Length, 1);
        Span<int> length = stackalloc int[1];
        return device.ReceiveBurst(ref one, length) == 1 ? length[0] : 0;
    }

    /// <summary>Transmits one frame; returns false when the device was busy and did not take it.</summary>
    public static bool TransmitOne(this INetworkDevice device, ReadOnlySpan<byte> frame)
    {
        ArgumentNullException.ThrowIfNull(device);
        var one = new SingleFrame(frame);
        return device.TransmitBurst(ref one) == 1;
    }

    private readonly ref struct SingleFrame(ReadOnlySpan<byte> frame) : ITransmitFrames
    {
        private readonly ReadOnlySpan<byte> _frame = frame;

        public int Count => 1;

        public ReadOnlySpan<byte> this[int index] => index == 0 ? _frame : throw new ArgumentOutOfRangeException(nameof(index));
    }
}

/// <summary>
/// Receive buffers cut from one contiguous span at a fixed stride (a DevFrame region of several
/// 4 KiB frames, one packet per frame). A stack-only view: it allocates nothing.
/// </summary>
public readonly ref struct StridedFrameBuffers : IReceiveBuffers
{
    private readonly Span<byte> _memory;
    private readonly int _stride;

    /// <summary><paramref name="count"/> buffers of <paramref name="stride"/> bytes each from the start of <paramref name="memory"/>.</summary>
    public StridedFrameBuffers(Span<byte> memory, int stride, int count)
    {
        if (stride <= 0 || count < 0 || (long)stride * count > memory.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(count), $"{count} buffers of {stride} bytes do not fit in {memory.Length} bytes.");
        }

        _memory = memory;
        _stride = stride;
        Count = count;
    }

    public int Count { get; }

    public Span<byte> this[int index] => (uint)index < (uint)Count ? _memory.Slice(index * _stride, _stride) : throw new ArgumentOutOfRangeException(nameof(index));
}

/// <summary>Transmit frames laid out at a fixed stride in one span, each with its own length.</summary>
public readonly ref struct StridedFrames : ITransmitFrames
{
    private readonly ReadOnlySpan<byte> _memory;
    private readonly ReadOnlySpan<int> _lengths;
    private readonly int _stride;

    /// <summary>Frame <c>i</c> is <c>lengths[i]</c> bytes at <c>i * stride</c> in <paramref name="memory"/>.</summary>
    public StridedFrames(ReadOnlySpan<byte> memory, int stride, ReadOnlySpan<int> lengths)
    {
        if (stride <= 0 || (long)stride * lengths.Length > memory.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(stride), $"{lengths.Length} frames at a stride of {stride} bytes do not fit in {memory.Length} bytes.");
        }

        foreach (int length in lengths)
        {
            if ((uint)length > (uint)stride)
            {
                throw new ArgumentOutOfRangeException(nameof(lengths), $"A frame length of {length} does not fit the stride of {stride} bytes.");
            }
        }

        _memory = memory;
        _stride = stride;
        _lengths = lengths;
    }

    public int Count => _lengths.Length;

    public ReadOnlySpan<byte> this[int index] => _memory.Slice(index * _stride, _lengths[index]);
}

/// <summary>
/// A device that shows its owner each received frame where the device holds it (its own memory:
/// the switch's port queue, a NIC's descriptor ring) before the frame is placed anywhere, and
/// then writes it exactly where the owner says — the place a NIC's DMA engine writes to. netd
/// classifies the frame in place and has it written straight into the owning consumer's posted
/// buffer: the frame crosses memory once, and netd copies nothing (docs/netd-datapath.md).
/// </summary>
/// <remarks>A device that cannot (TAP: <c>read</c> needs its destination first) simply does not implement this; netd then receives bursts into its own buffers and copies.</remarks>
public interface IFramePlacingDevice
{
    /// <summary>True while frames can be placed now (a switch port with injected faults cannot: it mangles frames on receive).</summary>
    bool CanPlace { get; }

    /// <summary>
    /// Receives up to <paramref name="max"/> frames, each placed where <paramref name="placer"/>
    /// says (or dropped when it names no buffer); returns how many frames were taken. Never blocks.
    /// Owner thread only, like <see cref="INetworkDevice.ReceiveBurst"/>.
    /// </summary>
    int ReceivePlaced(IFramePlacer placer, int max);
}

/// <summary>Where a <see cref="IFramePlacingDevice"/> puts each frame it receives.</summary>
public interface IFramePlacer
{
    /// <summary>
    /// Looks at <paramref name="frame"/> in the device's memory (valid during this call only) and
    /// names the buffer it goes to, at least <c>frame.Length</c> bytes; an empty span drops it.
    /// </summary>
    Span<byte> Place(ReadOnlySpan<byte> frame);

    /// <summary>The device wrote the <paramref name="length"/>-byte frame into the buffer <see cref="Place"/> named.</summary>
    void Placed(int length);
}
