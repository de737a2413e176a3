namespace Multikernel.Netd.Drivers;

/// <summary>Why a driver dropped a frame.</summary>
public enum DropReason
{
    /// <summary>The destination's bounded queue (switch) or the device (TAP) had no room.</summary>
    QueueFull,

    /// <summary>Shorter than an Ethernet header or longer than <c>Mtu + 14</c>.</summary>
    Malformed,

    /// <summary>The switch had no other port to deliver it to.</summary>
    NoDestination,

    /// <summary>Its destination port's link is down or the port was removed.</summary>
    LinkDown,

    /// <summary>Addressed to a station behind the port it came from (a switch never sends a frame back).</summary>
    Filtered,

    /// <summary>Injected loss.</summary>
    FaultLoss,

    /// <summary>A host-side error on read or write (TAP: the errno is logged once).</summary>
    DeviceError,
}

/// <summary>
/// Per-device counters. Each field has exactly one writing thread (the device's owner, or for
/// <see cref="DropReason.QueueFull"/> on a switch port, the senders' own rings — summed on read),
/// so the hot path increments plain fields; readers on other threads see values that are at most
/// slightly stale, never torn (64-bit fields on a 64-bit runtime).
/// </summary>
public sealed class DeviceCounters
{
    private const int Reasons = (int)DropReason.DeviceError + 1;

    private readonly long[] _drops = new long[Reasons];
    private long _rxPackets;
    private long _rxBytes;
    private long _txPackets;
    private long _txBytes;
    private long _duplicated;
    private long _reordered;
    private long _corrupted;
    private readonly Func<long>? _extraQueueFull;

    internal DeviceCounters(Func<long>? extraQueueFull = null) => _extraQueueFull = extraQueueFull;

    /// <summary>Frames handed to the owner.</summary>
    public long RxPackets => Volatile.Read(ref _rxPackets);

    /// <summary>Bytes of the frames handed to the owner.</summary>
    public long RxBytes => Volatile.Read(ref _rxBytes);

    /// <summary>Frames the owner sent that the device accepted.</summary>
    public long TxPackets => Volatile.Read(ref _txPackets);

    /// <summary>Bytes of the frames the owner sent that the device accepted.</summary>
    public long TxBytes => Volatile.Read(ref _txBytes);

    /// <summary>Injected duplicates delivered.</summary>
    public long Duplicated => Volatile.Read(ref _duplicated);

    /// <summary>Injected reorderings (a frame delivered after its successor).</summary>
    public long Reordered => Volatile.Read(ref _reordered);

    /// <summary>Frames delivered with an injected bit flip.</summary>
    public long Corrupted => Volatile.Read(ref _corrupted);

    /// <summary>Frames dropped for <paramref name="reason"/>.</summary>
    public long Dropped(DropReason reason)
    {
        if ((uint)reason >= Reasons)
        {
            throw new ArgumentOutOfRangeException(nameof(reason), reason, "Unknown drop reason.");
        }

        long n = Volatile.Read(ref _drops[(int)reason]);
        return reason == DropReason.QueueFull && _extraQueueFull is not null ? n + _extraQueueFull() : n;
    }

    /// <summary>All drops, every reason.</summary>
    public long DroppedTotal
    {
        get
        {
            long total = 0;
            for (int i = 0; i < Reasons; i++)
            {
                total += Dropped((DropReason)i);
            }

            return total;
        }
    }

    internal void Received(int bytes)
    {
        _rxPackets++;
        _rxBytes += bytes;
    }

    internal void Transmitted(int bytes)
    {
        _txPackets++;
        _txBytes += bytes;
    }

    internal void Drop(DropReason reason) => _drops[(int)reason]++;

    internal void Duplicate() => _duplicated++;

    internal void Reorder() => _reordered++;

    internal void Corrupt() => _corrupted++;

    /// <inheritdoc />
    public override string ToString() =>
        $"rx {RxPackets} pkts/{RxBytes} B, tx {TxPackets} pkts/{TxBytes} B, dropped {DroppedTotal} (queue full {Dropped(DropReason.QueueFull)}, malformed {Dropped(DropReason.Malformed)}, no destination {Dropped(DropReason.NoDestination)}, link down {Dropped(DropReason.LinkDown)}, filtered {Dropped(DropReason.Filtered)}, loss {Dropped(DropReason.FaultLoss)}, device error {Dropped(DropReason.DeviceError)})";
}
