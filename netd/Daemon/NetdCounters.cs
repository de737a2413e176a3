namespace Multikernel.Netd.Daemon;

/// <summary>Why netd did not deliver a received frame.</summary>
public enum RxDropReason
{
    /// <summary>No filter claimed it and it was neither ARP nor an ICMP echo for netd.</summary>
    Unclaimed,

    /// <summary>Shorter than an Ethernet header, or a header that does not parse.</summary>
    Malformed,

    /// <summary>Its consumer had no empty buffer posted (billed to that consumer).</summary>
    NoBuffer,

    /// <summary>Its consumer's region was revoked while the frame was on its way.</summary>
    RegionGone,
}

/// <summary>
/// netd's counters. Written only by netd's core; other threads (the meter's exporter, the
/// stats table) read them, at most slightly stale, never torn.
/// </summary>
public sealed class NetdCounters
{
    private readonly long[] _drops = new long[(int)RxDropReason.RegionGone + 1];

    internal long RxPacketsField;
    internal long RxBytesField;
    internal long TxPacketsField;
    internal long TxBytesField;
    internal long TxRefusedField;
    internal long ArpRepliesField;
    internal long EchoRepliesField;
    internal long FiltersRevokedField;
    internal long LocalFramesField;
    internal long SmallCopiesField;
    internal long PageDeliveriesField;
    internal long PayloadCopiesField;
    internal int PendingTxField;

    /// <summary>Frames received from the device.</summary>
    public long RxPackets => Volatile.Read(ref RxPacketsField);

    /// <summary>Bytes received from the device.</summary>
    public long RxBytes => Volatile.Read(ref RxBytesField);

    /// <summary>Frames sent for consumers and for netd itself.</summary>
    public long TxPackets => Volatile.Read(ref TxPacketsField);

    /// <summary>Bytes sent.</summary>
    public long TxBytes => Volatile.Read(ref TxBytesField);

    /// <summary>Transmit descriptors refused (bad descriptor, bad frame, spoofed source).</summary>
    public long TxRefused => Volatile.Read(ref TxRefusedField);

    /// <summary>ARP replies netd sent for itself and for consumers' addresses.</summary>
    public long ArpReplies => Volatile.Read(ref ArpRepliesField);

    /// <summary>ICMP echo replies netd sent for its own address.</summary>
    public long EchoReplies => Volatile.Read(ref EchoRepliesField);

    /// <summary>Filters removed because their installer revoked the PacketFilter capability.</summary>
    public long FiltersRevoked => Volatile.Read(ref FiltersRevokedField);

    /// <summary>Frames between two stacks of this machine, dispatched by netd without the device.</summary>
    public long LocalFrames => Volatile.Read(ref LocalFramesField);

    /// <summary>Frames of at most 128 bytes delivered into small buffers.</summary>
    public long SmallDeliveries => Volatile.Read(ref SmallCopiesField);

    /// <summary>Larger frames delivered into page buffers.</summary>
    public long PageDeliveries => Volatile.Read(ref PageDeliveriesField);

    /// <summary>
    /// Frames netd copied from a buffer it received into (or a consumer's transmit page) into a
    /// consumer's buffer: small frames into small slots, larger ones only when the device could
    /// not place them itself (TAP, a switch port with injected faults) or between two stacks of
    /// this machine. 0 for large frames the device placed into the consumer's posted page.
    /// </summary>
    public long PayloadCopies => Volatile.Read(ref PayloadCopiesField);

    /// <summary>Transmit descriptors waiting for a busy device now (all consumers).</summary>
    public int PendingTransmits => Volatile.Read(ref PendingTxField);

    /// <summary>Frames dropped for <paramref name="reason"/> (all consumers).</summary>
    public long Dropped(RxDropReason reason) => Volatile.Read(ref _drops[(int)reason]);

    internal void Drop(RxDropReason reason) => _drops[(int)reason]++;
}

/// <summary>Tag names of netd's spans and instruments (next to <see cref="CpuDriver.Diagnostics.TelemetryTags"/>).</summary>
public static class NetdTags
{
    /// <summary>The NIC's name (<c>netd</c> on the in-memory switch, the TAP interface's name).</summary>
    public const string Device = "multikernel.netd.device";

    /// <summary>received | transmitted.</summary>
    public const string Direction = "multikernel.netd.direction";

    /// <summary>Why a frame was dropped (<c>unclaimed</c>, <c>malformed</c>, <c>no_buffer</c>, ...).</summary>
    public const string Reason = "multikernel.netd.reason";

    /// <summary>small | page (deliveries), arp | echo (netd's own replies), small | page (posted buffers).</summary>
    public const string Kind = "multikernel.netd.kind";

    /// <summary>An installed filter's id.</summary>
    public const string Filter = "multikernel.netd.filter";

    /// <summary>The filter's text (instrument tags only: people read the filter list).</summary>
    public const string FilterText = "multikernel.netd.filter.text";

    /// <summary>A consumer's id.</summary>
    public const string Consumer = "multikernel.netd.consumer";

    /// <summary>The length of a frame (journey spans).</summary>
    public const string FrameLength = "multikernel.netd.frame.length";
}

/// <summary>One consumer's counters, as listed by <c>run --stats</c> and the meter.</summary>
/// <param name="Id">Consumer id.</param>
/// <param name="Name">The binding domain's name (diagnostics).</param>
/// <param name="RxPackets">Frames delivered.</param>
/// <param name="RxBytes">Bytes delivered.</param>
/// <param name="TxPackets">Frames sent.</param>
/// <param name="DroppedNoBuffer">Frames dropped because it had no buffer posted.</param>
/// <param name="PostedSmall">Small buffers netd holds for it now.</param>
/// <param name="PostedPages">Page buffers netd holds for it now.</param>
/// <param name="Owed">Completions waiting for room on its channel.</param>
/// <param name="HeldBytes">Bytes of its regions netd holds now as posted, empty buffers (the ledger: every post adds its buffer, every completion takes it back).</param>
public sealed record ConsumerStats(int Id, string Name, long RxPackets, long RxBytes, long TxPackets, long DroppedNoBuffer, int PostedSmall, int PostedPages, int Owed, long HeldBytes = 0);
