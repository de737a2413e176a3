using System.Collections.Immutable;
using System.Diagnostics.Metrics;
using Multikernel.Netd.Drivers;
using Multikernel.Netd.Filters;

namespace Multikernel.Netd.Daemon;

/// <summary>
/// netd's instruments in the <c>Multikernel</c> meter, all observable: they are read when a reader
/// collects, on the reader's thread, from counters netd's core writes with plain stores (a value
/// may be slightly stale, never torn), so the data path pays nothing for them.
/// </summary>
/// <remarks>
/// Instruments (unit; tags): <c>multikernel.netd.packets</c> and <c>multikernel.netd.bytes</c>
/// ({packet}, By; <see cref="NetdTags.Direction"/>), <c>multikernel.netd.drops</c> ({packet};
/// <see cref="NetdTags.Reason"/>: unclaimed, malformed, no_buffer, region_gone, tx_refused and the
/// device's own reasons prefixed <c>device_</c>), <c>multikernel.netd.deliveries</c> ({packet};
/// <see cref="NetdTags.Kind"/> small | page), <c>multikernel.netd.replies</c> ({packet}; arp |
/// echo), <c>multikernel.netd.filter.matches</c> and <c>.filter.bytes</c> ({packet}, By;
/// <see cref="NetdTags.Filter"/>, <see cref="NetdTags.Consumer"/>, <see cref="NetdTags.FilterText"/>),
/// <c>multikernel.netd.consumer.drops</c> ({packet}; consumer), the queue depths
/// <c>multikernel.netd.consumer.posted</c> ({buffer}; consumer, kind small | page),
/// <c>multikernel.netd.consumer.owed</c> ({message}; consumer) and
/// <c>multikernel.netd.transmit.pending</c> ({descriptor}), and the capture's
/// <c>multikernel.netd.capture.packets</c> ({packet}; <see cref="NetdTags.Reason"/> written | dropped).
/// Every series also carries <see cref="NetdTags.Device"/>.
/// </remarks>
public static class NetdMetrics
{
    /// <summary>Instrument name.</summary>
    public const string Packets = "multikernel.netd.packets";
    /// <summary>Instrument name.</summary>
    public const string Bytes = "multikernel.netd.bytes";
    /// <summary>Instrument name.</summary>
    public const string Drops = "multikernel.netd.drops";
    /// <summary>Instrument name.</summary>
    public const string Deliveries = "multikernel.netd.deliveries";
    /// <summary>Instrument name.</summary>
    public const string Replies = "multikernel.netd.replies";
    /// <summary>Instrument name.</summary>
    public const string FilterMatches = "multikernel.netd.filter.matches";
    /// <summary>Instrument name.</summary>
    public const string FilterBytes = "multikernel.netd.filter.bytes";
    /// <summary>Instrument name.</summary>
    public const string ConsumerDrops = "multikernel.netd.consumer.drops";
    /// <summary>Instrument name.</summary>
    public const string ConsumerPosted = "multikernel.netd.consumer.posted";
    /// <summary>Instrument name.</summary>
    public const string ConsumerOwed = "multikernel.netd.consumer.owed";
    /// <summary>Instrument name.</summary>
    public const string TransmitPending = "multikernel.netd.transmit.pending";
    /// <summary>Instrument name.</summary>
    public const string CapturePackets = "multikernel.netd.capture.packets";

    private static readonly ImmutableArray<(RxDropReason Reason, string Name)> RxReasons =
    [
        (RxDropReason.Unclaimed, "unclaimed"), (RxDropReason.Malformed, "malformed"),
        (RxDropReason.NoBuffer, "no_buffer"), (RxDropReason.RegionGone, "region_gone"),
    ];

    internal static void Register(Meter meter, NetdHost host)
    {
        meter.CreateObservableCounter(Packets, () => Pair(host, static (e, _) => e.Counters.RxPackets, static (e, _) => e.Counters.TxPackets), "{packet}", "Frames netd received from and sent to its NIC.");
        meter.CreateObservableCounter(Bytes, () => Pair(host, static (e, _) => e.Counters.RxBytes, static (e, _) => e.Counters.TxBytes), "By", "Bytes netd received from and sent to its NIC.");
        meter.CreateObservableCounter(Drops, () => ObserveDrops(host), "{packet}", "Frames netd dropped, by reason (device_*: dropped by the driver).");
        meter.CreateObservableCounter(Deliveries, () => Kinds(host, "small", static e => e.Counters.SmallDeliveries, "page", static e => e.Counters.PageDeliveries), "{packet}", "Frames delivered to consumers: copied into small buffers, or into page buffers.");
        meter.CreateObservableCounter(Replies, () => Kinds(host, "arp", static e => e.Counters.ArpReplies, "echo", static e => e.Counters.EchoReplies), "{packet}", "netd's own ARP and ICMP echo replies.");
        meter.CreateObservableCounter(FilterMatches, () => ObserveFilters(host, bytes: false), "{packet}", "Frames each installed filter claimed.");
        meter.CreateObservableCounter(FilterBytes, () => ObserveFilters(host, bytes: true), "By", "Bytes each installed filter claimed.");
        meter.CreateObservableCounter(ConsumerDrops, () => ObserveConsumers(host, static (c, _) => c.DroppedNoBuffer, null), "{packet}", "Frames dropped because their consumer had no buffer posted (billed to it).");
        meter.CreateObservableGauge(ConsumerPosted, () => ObserveConsumers(host, static (c, _) => c.Small.Count, static (c, _) => c.Pages.Count), "{buffer}", "Empty buffers a consumer has posted that netd holds now.");
        meter.CreateObservableGauge(ConsumerOwed, () => ObserveConsumers(host, static (c, _) => c.Owed.Count, null), "{message}", "Completions netd owes a consumer whose channel window is full.");
        meter.CreateObservableGauge(TransmitPending, () => One(host, static e => e.Counters.PendingTransmits), "{descriptor}", "Transmit descriptors waiting for a busy device.");
        meter.CreateObservableCounter(CapturePackets, () => ObserveCapture(host), "{packet}", "Frames written to the capture file (--pcap), and dropped at its size cap.");
    }

    private static KeyValuePair<string, object?> DeviceTag(NetdEngine engine) => new(NetdTags.Device, engine.DeviceName);

    private static IEnumerable<Measurement<long>> Pair(NetdHost host, Func<NetdEngine, int, long> received, Func<NetdEngine, int, long> transmitted)
    {
        if (host.Engine is not { } e)
        {
            yield break;
        }

        yield return new Measurement<long>(received(e, 0), DeviceTag(e), new(NetdTags.Direction, "received"));
        yield return new Measurement<long>(transmitted(e, 0), DeviceTag(e), new(NetdTags.Direction, "transmitted"));
    }

    private static IEnumerable<Measurement<long>> Kinds(NetdHost host, string first, Func<NetdEngine, long> a, string second, Func<NetdEngine, long> b)
    {
        if (host.Engine is not { } e)
        {
            yield break;
        }

        yield return new Measurement<long>(a(e), DeviceTag(e), new(NetdTags.Kind, first));
        yield return new Measurement<long>(b(e), DeviceTag(e), new(NetdTags.Kind, second));
    }

    private static IEnumerable<Measurement<long>> One(NetdHost host, Func<NetdEngine, long> value)
    {
        if (host.Engine is { } e)
        {
            yield return new Measurement<long>(value(e), DeviceTag(e));
        }
    }

    private static IEnumerable<Measurement<long>> ObserveDrops(NetdHost host)
    {
        if (host.Engine is not { } e)
        {
            yield break;
        }

        foreach ((RxDropReason reason, string name) in RxReasons)
        {
            yield return new Measurement<long>(e.Counters.Dropped(reason), DeviceTag(e), new(NetdTags.Reason, name));
        }

        yield return new Measurement<long>(e.Counters.TxRefused, DeviceTag(e), new(NetdTags.Reason, "tx_refused"));
        if (e.DeviceCounters is { } device)
        {
            foreach (DropReason reason in Enum.GetValues<DropReason>())
            {
                yield return new Measurement<long>(device.Dropped(reason), DeviceTag(e), new(NetdTags.Reason, "device_" + DeviceReasonName(reason)));
            }
        }
    }

    internal static string DeviceReasonName(DropReason reason) => reason switch
    {
        DropReason.QueueFull => "queue_full",
        DropReason.Malformed => "malformed",
        DropReason.NoDestination => "no_destination",
        DropReason.LinkDown => "link_down",
        DropReason.Filtered => "filtered",
        DropReason.FaultLoss => "fault_loss",
        DropReason.DeviceError => "error",
        _ => "other",
    };

    private static IEnumerable<Measurement<long>> ObserveFilters(NetdHost host, bool bytes)
    {
        if (host.Engine is not { } e)
        {
            yield break;
        }

        foreach (InstalledFilter f in e.InstalledFilters)
        {
            long value = bytes ? Volatile.Read(ref f.Bytes) : Volatile.Read(ref f.Matches);
            yield return new Measurement<long>(value, DeviceTag(e), new(NetdTags.Filter, f.Id), new(NetdTags.Consumer, f.Owner), new(NetdTags.FilterText, f.Program.ToString()));
        }
    }

    private static IEnumerable<Measurement<long>> ObserveConsumers(NetdHost host, Func<Consumer, int, long> value, Func<Consumer, int, long>? pages)
    {
        if (host.Engine is not { } e)
        {
            yield break;
        }

        foreach (Consumer c in e.ConsumersForReaders())
        {
            if (pages is null)
            {
                yield return new Measurement<long>(value(c, 0), DeviceTag(e), new(NetdTags.Consumer, c.Id));
            }
            else
            {
                yield return new Measurement<long>(value(c, 0), DeviceTag(e), new(NetdTags.Consumer, c.Id), new(NetdTags.Kind, "small"));
                yield return new Measurement<long>(pages(c, 0), DeviceTag(e), new(NetdTags.Consumer, c.Id), new(NetdTags.Kind, "page"));
            }
        }
    }

    private static IEnumerable<Measurement<long>> ObserveCapture(NetdHost host)
    {
        if (host.Engine is not { Capture: { } capture } e)
        {
            yield break;
        }

        yield return new Measurement<long>(capture.Packets, DeviceTag(e), new(NetdTags.Reason, "written"));
        yield return new Measurement<long>(capture.DroppedPackets, DeviceTag(e), new(NetdTags.Reason, "dropped"));
    }
}
