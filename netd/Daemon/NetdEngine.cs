using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Multikernel.CpuDriver.Diagnostics;
using Multikernel.CpuDriver.Memory;
using Multikernel.CpuDriver.Urpc;
using Multikernel.Netd.Capture;
using Multikernel.Netd.Drivers;
using Multikernel.Netd.Filters;
using Multikernel.Netd.Wire;

namespace Multikernel.Netd.Daemon;

/// <summary>
/// netd's data path, single-threaded on netd's core: the device's receive bursts classified and
/// delivered into consumers' posted buffers, consumers' transmit descriptors sent, ARP and ICMP
/// echo answered for what nobody claims. Per packet there is no capability operation and no
/// allocation: a packet is a descriptor on the consumer's channel.
/// </summary>
internal sealed class NetdEngine : IFramePlacer
{
    private readonly INetworkDevice _device;
    private readonly PacketClassifier _classifier;
    private readonly NetdOptions _options;
    private readonly Consumer?[] _consumers;
    private readonly FrameHandle _rxPool;
    private readonly FrameHandle _scratch;
    private readonly int[] _rxLengths;
    // Transmit descriptors not yet handed to the device, in arrival order (all consumers): a run
    // step's transmits leave as one device burst, and what a busy device did not take waits here.
    // Bounded by every consumer's transmit limit, so it never refuses for room of its own.
    private readonly BoundedRing<PendingTransmit> _pendingTx;
    private readonly PendingTransmit[] _burst;
    private readonly PcapWriter? _capture;
    private readonly MessageSampler? _sampler;
    private readonly int _core;
    private readonly MacAddress _mac;      // the device's, read once: every transmit is checked against it
    private readonly int _maxFrame;        // MTU + Ethernet header

    // Each installed filter's PacketFilter capability (the installer's copy held by netd): the
    // filter lives as long as that copy. Bounded by the classifier's filter limit.
    private readonly Dictionary<int, (int Slot, ulong Object, int Owner)> _filterCaps = [];
    private readonly Dictionary<ulong, int> _filterByObject = [];
    private ushort _nextIpId;

    // The frame a placing device is writing now (between Place and Placed): into a consumer's
    // posted buffer, or into netd's own receive buffer for its own handlers.
    private Consumer? _placingFor;
    private Descriptor _placingBuffer;
    private bool _placingSmall;
    private Activity? _placingJourney;
    private int _placingOwn;

    /// <param name="device">The NIC.</param>
    /// <param name="classifier">The merged packet filters.</param>
    /// <param name="options">Bounds.</param>
    /// <param name="address">netd's own IPv4 address.</param>
    /// <param name="rxPool">The receive pool (netd's DevFrames): <see cref="NetdOptions.RxBurst"/> page buffers.</param>
    /// <param name="scratch">A page for netd's own replies.</param>
    /// <param name="capture">Where both directions are recorded (<c>--pcap</c>), or null.</param>
    /// <param name="sampler">netd's core's message sampler: the same head-sampling decision for a packet's journey as for a root message (null: let the SDK decide).</param>
    /// <param name="core">netd's core (the span's track).</param>
    public NetdEngine(INetworkDevice device, PacketClassifier classifier, NetdOptions options, Ipv4Address address, FrameHandle rxPool, FrameHandle scratch, PcapWriter? capture = null, MessageSampler? sampler = null, int core = 0)
    {
        if (rxPool.Length < options.RxBurst * NetdLimits.PageBuffer)
        {
            throw new ArgumentException($"netd's receive pool holds {rxPool.Length} bytes; {options.RxBurst} buffers of {NetdLimits.PageBuffer} need more.", nameof(rxPool));
        }

        _device = device;
        _classifier = classifier;
        _options = options;
        Address = address;
        _rxPool = rxPool;
        _scratch = scratch;
        _consumers = new Consumer?[options.MaxConsumers];
        _rxLengths = new int[options.RxBurst];
        _pendingTx = new BoundedRing<PendingTransmit>(options.MaxConsumers * options.MaxTransmitsInFlight);
        _burst = new PendingTransmit[options.TxBurst];
        _capture = capture;
        _sampler = sampler;
        _core = core;
        _mac = device.MacAddress;
        _maxFrame = device.Mtu + NetworkDevice.EthernetHeaderLength;
        DeviceCounters = device switch
        {
            SwitchPort port => port.Counters,
            Drivers.Tap.TapDevice tap => tap.Counters,
            _ => null,
        };
    }

    /// <summary>The device's own counters (rx/tx at the driver, drops by <see cref="DropReason"/>), when it has them.</summary>
    public DeviceCounters? DeviceCounters { get; }

    /// <summary>The device's name (<c>netd</c> on the switch, the TAP interface's name).</summary>
    public string DeviceName => _device.Name;

    /// <summary>The capture file's writer (<c>--pcap</c>), or null.</summary>
    public PcapWriter? Capture => _capture;

    /// <summary>Transmit descriptors waiting for the device (all consumers).</summary>
    public int PendingTransmits => Volatile.Read(ref Counters.PendingTxField);

    /// <summary>netd's own address.</summary>
    public Ipv4Address Address { get; }

    /// <summary>The device's station address (every consumer sends with it).</summary>
    public MacAddress Mac => _mac;

    public NetdCounters Counters { get; } = new();

    public PacketClassifier Classifier => _classifier;

    /// <summary>
    /// The installed filters' live counters for the meter's reader thread: the classifier's current
    /// filter array (replaced, never changed, when the set changes) whose match counts netd's core
    /// bumps; a reader sees them slightly stale, never torn.
    /// </summary>
    internal InstalledFilter[] InstalledFilters => _classifier.Installed;

    /// <summary>Consumers bound now, for a reader off netd's core (the meter): slots are read once each; their counters are racy reads.</summary>
    internal IEnumerable<Consumer> ConsumersForReaders()
    {
        for (int i = 0; i < _consumers.Length; i++)
        {
            if (Volatile.Read(ref _consumers[i]) is { } c)
            {
                yield return c;
            }
        }
    }

    /// <summary>Consumers bound now.</summary>
    public IEnumerable<ConsumerStats> ConsumerStats()
    {
        foreach (Consumer? c in _consumers)
        {
            if (c is not null)
            {
                yield return c.Stats();
            }
        }
    }

    // ------------------------------------------------------------------ consumers

    /// <summary>Admits a consumer on <paramref name="channel"/>, or returns null when <see cref="NetdOptions.MaxConsumers"/> are bound.</summary>
    public Consumer? Admit(string name, CpuDriver.Channels.Endpoint channel)
    {
        for (int i = 0; i < _consumers.Length; i++)
        {
            if (_consumers[i] is null)
            {
                var consumer = new Consumer(i + 1, name, channel, _options);
                _consumers[i] = consumer;
                Message hello = Message.Create(NetdMessages.Hello, Mac.ToUInt64(), (ulong)_device.Mtu, (ulong)_options.MaxPostedPerConsumer);
                Send(consumer, in hello);
                FlushOwed(consumer);
                return consumer;
            }
        }

        return null;
    }

    /// <summary>Forgets a consumer whose channel closed; returns the CSpace slots of its regions (to delete).</summary>
    public List<int> Remove(Consumer consumer)
    {
        _classifier.RemoveOwner(consumer.Id);
        var slots = new List<int>(consumer.RegionSlots());
        foreach ((int id, (int slot, ulong obj, int owner)) in _filterCaps.ToList())
        {
            if (owner == consumer.Id)
            {
                _filterCaps.Remove(id);
                _filterByObject.Remove(obj);
                slots.Add(slot);
            }
        }

        _consumers[consumer.Id - 1] = null;
        if (_pendingTx.Count > 0)
        {
            _pendingTx.RemoveAll(static (item, gone) => ReferenceEquals(item.Consumer, gone), consumer);
            Counters.PendingTxField = _pendingTx.Count;
        }

        return slots;
    }

    /// <summary>A region the consumer granted (a Frame capability netd now holds in <paramref name="slot"/>).</summary>
    public void OnRegionGranted(Consumer consumer, int slot, FrameHandle handle, ulong cookie)
    {
        NetdStatus status = NetdStatus.Ok;
        ushort id = 0;
        if ((handle.Rights & CpuDriver.Capabilities.CapabilityRights.Write) == 0 || !handle.IsValid)
        {
            status = NetdStatus.BadCapability;
        }
        else if (!consumer.TryAddRegion(handle, slot, out id))
        {
            status = NetdStatus.LimitReached;
        }

        Message reply = Message.Create(NetdMessages.RegionReply, cookie, id, (ulong)status);
        Send(consumer, in reply);
    }

    /// <summary>One message from a consumer. Returns a slot to delete from netd's CSpace, or -1.</summary>
    public int OnMessage(Consumer consumer, in Message message)
    {
        switch (message.Type)
        {
            case NetdMessages.PostSmall:
                Post(consumer, Descriptor.From(in message), consumer.Small, NetdLimits.SmallPacket, NetdLimits.SmallPacket);
                return -1;
            case NetdMessages.PostSmallRun:
                PostRun(consumer, Descriptor.From(in message), DescriptorFlags.Small);
                return -1;
            case NetdMessages.PostPage:
                Post(consumer, Descriptor.From(in message), consumer.Pages, _maxFrame, NetdLimits.PageBuffer);
                return -1;
            case NetdMessages.PostPageRun:
                PostRun(consumer, Descriptor.From(in message), DescriptorFlags.Page);
                return -1;
            case NetdMessages.Transmit:
                OnTransmit(consumer, Descriptor.From(in message));
                return -1;
            case NetdMessages.TransmitMany:
                OnTransmitMany(consumer, in message);
                return -1;
            case NetdMessages.InstallFilter:
                // Arrives through OnInstallFilter with the filter's capability, never here.
                Message refused = Message.Create(NetdMessages.FilterReply, 0, (ulong)NetdStatus.BadCapability, 0);
                Send(consumer, in refused);
                return -1;
            case NetdMessages.RemoveFilter:
                NetdStatus removed = RemoveFilter(consumer, (int)message.Word0, out int filterSlot);
                Ack(consumer, message.Type, removed);
                return filterSlot;
            case NetdMessages.AddAddress:
                Ack(consumer, message.Type, AddAddress(consumer, new Ipv4Address((uint)message.Word0)));
                return -1;
            case NetdMessages.RemoveRegion:
                return RetireRegion(consumer, Descriptor.From(in message).Region, notify: true);
            default:
                Ack(consumer, message.Type, NetdStatus.ProtocolError);
                return -1;
        }
    }

    private void Post(Consumer consumer, Descriptor d, BoundedRing<Descriptor> ring, int minimum, int alignment)
    {
        NetdStatus status = d.Length < minimum || d.Offset % alignment != 0 ? NetdStatus.BadDescriptor : consumer.Resolve(d, d.Length, out _);
        if (status == NetdStatus.Ok && ring.Count == ring.Capacity)
        {
            status = NetdStatus.LimitReached;
        }

        // The ledger: a buffer is netd's from its post until its completion, once; posting bytes
        // netd already holds (the same buffer twice, a page over a posted small slot) is refused.
        if (status == NetdStatus.Ok && !consumer.TryHold(in d))
        {
            status = NetdStatus.BadDescriptor;
        }

        if (status == NetdStatus.Ok)
        {
            ring.TryPush(d);
        }

        if (status != NetdStatus.Ok)
        {
            // The buffer goes straight back, marked, so the consumer's accounting stays exact.
            Complete(consumer, NetdMessages.Received, d with { Length = 0 }, status);
        }
    }

    /// <summary>
    /// What reading <paramref name="message"/> can add to what netd holds for and owes its sender
    /// (<see cref="Consumer.RequestRoom"/>): one, or a run's slots (a malformed run costs one: it is
    /// refused whole).
    /// </summary>
    public static int Cost(in Message message) => message.Type switch
    {
        NetdMessages.PostSmallRun when RunSlots(Descriptor.From(in message), DescriptorFlags.Small) is > 0 and int slots => slots,
        NetdMessages.PostPageRun when RunSlots(Descriptor.From(in message), DescriptorFlags.Page) is > 0 and int pages => pages,
        NetdMessages.TransmitMany when TransmitCount(in message) is > 0 and int frames => frames,
        _ => 1,
    };

    // The buffers of a run (a whole number of the kind's buffers, 1..the limit), or 0: malformed.
    private static int RunSlots(in Descriptor d, DescriptorFlags kind)
    {
        uint stride = NetdLimits.Stride(kind);
        int max = kind == DescriptorFlags.Small ? NetdLimits.MaxSmallRun : NetdLimits.MaxPageRun;
        return d.Length % stride == 0 && d.Length / stride is >= 1 and var n && n <= (uint)max ? (int)n : 0;
    }

    // The frames of a TransmitMany (1..the limit), or 0: malformed.
    private static int TransmitCount(in Message message) =>
        (int)((message.Word0 >> 16) & 0xFFFF) is >= 1 and <= NetdLimits.FramesPerTransmitMany and int n ? n : 0;

    /// <summary>A run of posts refused whole (it does not fit beside what netd holds): one completion names the run.</summary>
    public void RefuseRun(Consumer consumer, in Message message)
    {
        if (message.Type == NetdMessages.TransmitMany)
        {
            // Not reached: with nothing owed the room is at least Consumer.ReplyReserve (16), more
            // than a TransmitMany can cost (every other term is bounded by its own limit). Refused
            // whole all the same, should the bounds ever change.
            Counters.TxRefusedField++;
            Ack(consumer, message.Type, NetdStatus.LimitReached);
            return;
        }

        // The kind comes from the message type, not from the consumer's flags.
        DescriptorFlags kind = message.Type == NetdMessages.PostPageRun ? DescriptorFlags.Page : DescriptorFlags.Small;
        Complete(consumer, NetdMessages.Received, Descriptor.From(in message) with { Flags = kind }, NetdStatus.LimitReached);
    }

    // Each buffer of the run posted as its own PostSmall or PostPage would be (and refused alone);
    // a run of no whole buffers, or too many, comes back whole, refused.
    private void PostRun(Consumer consumer, Descriptor run, DescriptorFlags kind)
    {
        int slots = RunSlots(in run, kind);
        if (slots == 0)
        {
            Complete(consumer, NetdMessages.Received, run with { Length = 0, Flags = kind }, NetdStatus.BadDescriptor);
            return;
        }

        uint stride = NetdLimits.Stride(kind);
        bool small = kind == DescriptorFlags.Small;
        BoundedRing<Descriptor> ring = small ? consumer.Small : consumer.Pages;
        int minimum = small ? NetdLimits.SmallPacket : _maxFrame;
        for (int i = 0; i < slots; i++)
        {
            var slot = new Descriptor(run.Region, kind, run.Offset + ((uint)i * stride), stride, run.Tag + (uint)i);
            Post(consumer, slot, ring, minimum, (int)stride);
        }
    }

    private NetdStatus AddAddress(Consumer consumer, Ipv4Address address)
    {
        if (address.IsAny || address.IsBroadcast || address.IsMulticast || address == Address || OwnerOf(address) is not null)
        {
            return NetdStatus.Forbidden; // taken, or not a unicast address anyone may claim
        }

        if (consumer.AddressCount == consumer.Addresses.Length)
        {
            return NetdStatus.LimitReached;
        }

        consumer.Addresses[consumer.AddressCount++] = address;
        return NetdStatus.Ok;
    }

    private Consumer? OwnerOf(Ipv4Address address)
    {
        foreach (Consumer? c in _consumers)
        {
            if (c is not null && c.HasAddress(address))
            {
                return c;
            }
        }

        return null;
    }

    /// <summary>
    /// A consumer installs a filter: the program is in its region (the descriptor), and the
    /// PacketFilter capability it retyped from its own RAM (so it pays for the filter) was granted
    /// just before, into <paramref name="filterSlot"/> (-1: none came). The filter lives as long as
    /// netd's copy: revoking it removes the filter (<see cref="OnFilterRevoked"/>). Returns a slot to
    /// delete from netd's CSpace (the capability of a refused filter), or -1.
    /// </summary>
    public int OnInstallFilter(Consumer consumer, in Message message, int filterSlot, ulong filterObject)
    {
        Descriptor d = Descriptor.From(in message);
        scoped Span<byte> program = default;
        NetdStatus status = filterSlot < 0 ? NetdStatus.BadCapability : consumer.Resolve(d, d.Length, out program);
        int filterId = 0;
        ulong reason = 0;
        if (status == NetdStatus.Ok && _filterByObject.ContainsKey(filterObject))
        {
            status = NetdStatus.BadCapability; // one capability, one filter
        }

        if (status == NetdStatus.Ok)
        {
            if (!FilterBinary.TryDecode(program, out FilterProgram? decoded, out FilterProblem problem))
            {
                status = NetdStatus.FilterRejected;
                reason = (ulong)problem.Reason;
            }
            else if (!ClaimsOwnAddress(consumer, decoded!))
            {
                // Isolation: a filter may only claim traffic addressed to one of the consumer's own
                // addresses, so no application can install a filter that reads another's traffic.
                status = NetdStatus.Forbidden;
            }
            else
            {
                FilterInstallResult result = _classifier.Install(decoded!, consumer.Id);
                if (result.Succeeded)
                {
                    filterId = result.FilterId;
                    _filterCaps[filterId] = (filterSlot, filterObject, consumer.Id);
                    _filterByObject[filterObject] = filterId;
                }
                else
                {
                    status = NetdStatus.FilterRejected;
                    reason = (ulong)result.Problem.Reason;
                }
            }
        }

        Message reply = Message.Create(NetdMessages.FilterReply, (ulong)filterId, (ulong)status, reason);
        Send(consumer, in reply);
        return status == NetdStatus.Ok ? -1 : filterSlot;
    }

    /// <summary>A revoke took netd's copy of PacketFilter <paramref name="filterObject"/>: its filter goes at once.</summary>
    public bool OnFilterRevoked(ulong filterObject)
    {
        if (!_filterByObject.Remove(filterObject, out int filterId))
        {
            return false;
        }

        _filterCaps.Remove(filterId);
        Counters.FiltersRevokedField++;
        return _classifier.Remove(filterId);
    }

    /// <summary>Filters whose capability slot is no longer there (a revocation notice was lost): removed, as revoked.</summary>
    public int RemoveFiltersWithout(Func<int, bool> slotIsEmpty)
    {
        var gone = new List<ulong>();
        foreach ((int _, (int slot, ulong obj, int _)) in _filterCaps)
        {
            if (slotIsEmpty(slot))
            {
                gone.Add(obj);
            }
        }

        foreach (ulong obj in gone)
        {
            OnFilterRevoked(obj);
        }

        return gone.Count;
    }

    // The IPv4 destination, compared whole: Ethernet header (14) + offset of the destination (16).
    private const int Ipv4DestinationOffset = 30;

    private static bool ClaimsOwnAddress(Consumer consumer, FilterProgram program)
    {
        foreach (FilterAtom atom in program.Atoms)
        {
            if (atom.Offset == Ipv4DestinationOffset && atom.Width == 4 && atom.Mask == uint.MaxValue && atom.Shift is null
                && consumer.HasAddress(new Ipv4Address(atom.Value)))
            {
                return true;
            }
        }

        return false;
    }

    private NetdStatus RemoveFilter(Consumer consumer, int filterId, out int filterSlot)
    {
        filterSlot = -1;
        if (!_filterCaps.TryGetValue(filterId, out (int Slot, ulong Object, int Owner) entry))
        {
            return NetdStatus.BadDescriptor;
        }

        if (entry.Owner != consumer.Id)
        {
            return NetdStatus.Forbidden;
        }

        _filterCaps.Remove(filterId);
        _filterByObject.Remove(entry.Object);
        _classifier.Remove(filterId);
        filterSlot = entry.Slot;
        return NetdStatus.Ok;
    }

    private int RetireRegion(Consumer consumer, ushort region, bool notify)
    {
        int slot = consumer.RetireRegion(region);
        if (slot >= 0 && notify)
        {
            Send(consumer, new Descriptor(region, DescriptorFlags.None, 0, 0, 0).ToMessage(NetdMessages.RegionGone));
        }

        return slot;
    }

    // ------------------------------------------------------------------ transmit

    private void OnTransmit(Consumer consumer, Descriptor d)
    {
        if (consumer.TransmitsInFlight >= _options.MaxTransmitsInFlight || _pendingTx.Count == _pendingTx.Capacity)
        {
            Counters.TxRefusedField++;
            Complete(consumer, NetdMessages.Transmitted, d, NetdStatus.LimitReached);
            return;
        }

        // Queued, not sent: the step's transmits go to the device as one burst when the step ends
        // (FlushTransmits: one call into the driver, one signal of the switch's receiving port).
        consumer.TransmitsInFlight++;
        _pendingTx.TryPush(new PendingTransmit(consumer, d));
        Counters.PendingTxField = _pendingTx.Count;
    }

    // Each frame as the Transmit of (region, page x 4096, length, tag = page) would be; a count of
    // 0 or beyond the limit is refused whole.
    private void OnTransmitMany(Consumer consumer, in Message message)
    {
        int count = TransmitCount(in message);
        if (count == 0)
        {
            Counters.TxRefusedField++;
            Ack(consumer, message.Type, NetdStatus.BadDescriptor);
            return;
        }

        ushort region = (ushort)message.Word0;
        for (int i = 0; i < count; i++)
        {
            (ushort page, ushort length) = NetdLimits.TransmitFrame(in message, i);
            OnTransmit(consumer, new Descriptor(region, DescriptorFlags.None, (uint)page * NetdLimits.PageBuffer, length, page));
        }
    }

    /// <summary>
    /// Hands the queued transmits to the device in order, as bursts of at most
    /// <see cref="NetdOptions.TxBurst"/>: each descriptor is checked (bounds, generation, source),
    /// a refused one is returned at once, one for a stack of this machine is dispatched here, and
    /// a run of frames for the wire goes in one <see cref="INetworkDevice.TransmitBurst"/>. What a
    /// busy device did not take stays queued, first, for the next step. Returns the transmits finished.
    /// </summary>
    private int FlushTransmits()
    {
        int finished = 0;
        // A region is checked (generation, rights) once per burst, not once per frame: its span is
        // a view for this synchronous step, like any span taken from a handle.
        var regions = new RegionCache();
        while (_pendingTx.Count > 0)
        {
            // Gather the run of wire frames at the head; a refused or local transmit at the head is
            // finished on the spot, one behind a gathered run waits until the run went (FIFO).
            int run = 0;
            while (run < _pendingTx.Count && run < _burst.Length)
            {
                ref readonly PendingTransmit item = ref _pendingTx.PeekAt(run);
                NetdStatus status = regions.Resolve(item.Consumer, item.Descriptor, out Span<byte> frame);
                bool local = false;
                if (status == NetdStatus.Ok)
                {
                    status = CheckSource(item.Consumer, frame, out local);
                }

                if (status == NetdStatus.Ok && !local)
                {
                    _burst[run++] = item;
                    continue;
                }

                if (run > 0)
                {
                    break;
                }

                PendingTransmit head = item;
                _pendingTx.DropFirst(1);
                if (status == NetdStatus.Ok)
                {
                    // Between two stacks of this machine: dispatched here as if received, never on the wire.
                    Counters.LocalFramesField++;
                    head.Consumer.TxPackets++;
                    Dispatch(frame);
                    regions = new RegionCache(); // a delivery may have retired a region: check afresh
                }

                FinishTransmit(head.Consumer, head.Descriptor, status);
                finished++;
            }

            if (run == 0)
            {
                continue;
            }

            var frames = new PendingFrames(_burst.AsSpan(0, run), regions);
            int taken = _device.TransmitBurst(ref frames);
            for (int i = 0; i < taken; i++)
            {
                ref readonly PendingTransmit sent = ref _burst[i];
                Counters.TxPacketsField++;
                Counters.TxBytesField += sent.Descriptor.Length;
                sent.Consumer.TxPackets++;
                _capture?.Write(frames[i], CaptureDirection.Transmitted);
                FinishTransmit(sent.Consumer, sent.Descriptor, NetdStatus.Ok);
            }

            _pendingTx.DropFirst(taken);
            Array.Clear(_burst, 0, run);
            finished += taken;
            if (taken < run)
            {
                break; // the device is busy: the rest goes first next step
            }
        }

        Counters.PendingTxField = _pendingTx.Count;
        return finished;
    }

    private void FinishTransmit(Consumer consumer, in Descriptor d, NetdStatus status)
    {
        if (status != NetdStatus.Ok)
        {
            Counters.TxRefusedField++;
        }

        consumer.TransmitsInFlight--;
        if (status == NetdStatus.Ok)
        {
            consumer.OweSent(in d); // gathered: one TransmittedMany for up to ten of them
            return;
        }

        Complete(consumer, NetdMessages.Transmitted, d, status);
    }

    /// <summary>A transmit queued at netd: whose, and which of its buffers.</summary>
    private readonly record struct PendingTransmit(Consumer Consumer, Descriptor Descriptor);

    /// <summary>
    /// The last region a burst resolved (a consumer's region and its bytes, checked once): the
    /// frames of one burst nearly always come from one region, so each frame after the first costs
    /// a bounds check instead of a handle check. Stack-only, for one synchronous step.
    /// </summary>
    private ref struct RegionCache
    {
        private Consumer? _consumer;
        private ushort _region;
        private NetdStatus _status;
        private Span<byte> _bytes;

        /// <summary>The bytes <paramref name="d"/> names in <paramref name="consumer"/>'s region, checked as <see cref="Consumer.Resolve"/> checks them.</summary>
        public NetdStatus Resolve(Consumer consumer, scoped in Descriptor d, out Span<byte> frame)
        {
            if (!ReferenceEquals(consumer, _consumer) || d.Region != _region)
            {
                _status = consumer.ResolveRegion(d.Region, out _bytes);
                _consumer = consumer;
                _region = d.Region;
            }

            frame = default;
            if (_status != NetdStatus.Ok)
            {
                return _status;
            }

            if ((ulong)d.Offset + d.Length > (ulong)_bytes.Length)
            {
                return NetdStatus.BadDescriptor;
            }

            frame = _bytes.Slice((int)d.Offset, (int)d.Length);
            return NetdStatus.Ok;
        }

        /// <summary>The frame of an already checked descriptor when it is of the cached region, else empty (false).</summary>
        public readonly bool TryFrame(Consumer consumer, scoped in Descriptor d, out ReadOnlySpan<byte> frame)
        {
            if (ReferenceEquals(consumer, _consumer) && d.Region == _region && _status == NetdStatus.Ok && (ulong)d.Offset + d.Length <= (ulong)_bytes.Length)
            {
                frame = _bytes.Slice((int)d.Offset, (int)d.Length);
                return true;
            }

            frame = default;
            return false;
        }
    }

    /// <summary>
    /// A run of checked transmits as the device's burst, read in place from the consumers'
    /// regions (a stack-only view, nothing copied or allocated): from the burst's cached region,
    /// else through a fresh check. A region revoked between the check and the device's read gives
    /// an empty frame, which the device counts as malformed.
    /// </summary>
    private readonly ref struct PendingFrames(ReadOnlySpan<PendingTransmit> items, RegionCache regions) : ITransmitFrames
    {
        private readonly ReadOnlySpan<PendingTransmit> _items = items;
        private readonly RegionCache _regions = regions;

        public int Count => _items.Length;

        public ReadOnlySpan<byte> this[int index]
        {
            get
            {
                ref readonly PendingTransmit item = ref _items[index];
                return _regions.TryFrame(item.Consumer, item.Descriptor, out ReadOnlySpan<byte> frame) ? frame : item.Consumer.FrameOf(item.Descriptor);
            }
        }
    }

    // A consumer sends only as itself: netd's MAC, and one of its own IPv4 addresses. Parses the
    // frame once and also says whether it is for a stack of this machine (never on the wire).
    private NetdStatus CheckSource(Consumer consumer, ReadOnlySpan<byte> frame, out bool local)
    {
        local = false;
        if (frame.Length < EthernetFrame.HeaderLength || frame.Length > _maxFrame
            || EthernetFrame.TryParse(frame, out EthernetFrame eth) != WireError.None)
        {
            return NetdStatus.BadFrame;
        }

        if (eth.Source != _mac)
        {
            return NetdStatus.Forbidden;
        }

        NetdStatus status;
        switch (eth.EtherType)
        {
            case EtherType.Ipv4:
                status = eth.Payload.Length >= 20 && consumer.HasAddress(Ipv4Address.Read(eth.Payload[12..])) ? NetdStatus.Ok : NetdStatus.Forbidden;
                break;
            case EtherType.Arp:
                status = ArpPacket.TryParse(eth.Payload, out ArpPacket arp) == WireError.None && consumer.HasAddress(arp.SenderIp) && arp.SenderMac == _mac
                    ? NetdStatus.Ok
                    : NetdStatus.Forbidden;
                break;
            default:
                return NetdStatus.Forbidden;
        }

        // Only a frame to netd's own station address (or an ARP broadcast) can be local.
        local = status == NetdStatus.Ok && (eth.Destination == _mac || (eth.EtherType == EtherType.Arp && eth.Destination.IsBroadcast)) && IsLocal(frame);
        return status;
    }

    // ------------------------------------------------------------------ receive

    /// <summary>
    /// One step of the data path: queued transmits as a device burst, a receive burst, then every
    /// consumer's completions of the step as one channel batch each. Returns the work done.
    /// </summary>
    public int Poll()
    {
        int work = FlushTransmits();
        work += Receive();
        return work + FlushOwed();
    }

    /// <summary>
    /// The end of a step of a consumer's requests (netd's read loop calls it after each batch it
    /// read): their transmits go to the device as a burst and the completions and replies of the
    /// step leave as one batch per consumer.
    /// </summary>
    public void EndBatch()
    {
        FlushTransmits();
        FlushOwed();
    }

    private int Receive()
    {
        if (_device is IFramePlacingDevice { CanPlace: true } placing)
        {
            // Each frame classified where the device holds it and written once, straight into
            // its consumer's posted buffer: netd copies nothing.
            return placing.ReceivePlaced(this, _options.RxBurst);
        }

        Span<byte> pool = _rxPool.Span;
        var buffers = new StridedFrameBuffers(pool, NetdLimits.PageBuffer, _options.RxBurst);
        int received = _device.ReceiveBurst(ref buffers, _rxLengths);
        for (int i = 0; i < received; i++)
        {
            Span<byte> frame = pool.Slice(i * NetdLimits.PageBuffer, _rxLengths[i]);
            Counters.RxPacketsField++;
            Counters.RxBytesField += frame.Length;
            _capture?.Write(frame, CaptureDirection.Received);
            Dispatch(frame);
        }

        return received;
    }

    /// <summary>A placing device shows a received frame: the buffer it goes to (a consumer's posted one, or netd's own), or empty to drop it.</summary>
    Span<byte> IFramePlacer.Place(ReadOnlySpan<byte> frame)
    {
        Counters.RxPacketsField++;
        Counters.RxBytesField += frame.Length;
        _capture?.Write(frame, CaptureDirection.Received);
        _placingFor = null;
        if (EthernetFrame.TryParse(frame, out EthernetFrame _) != WireError.None)
        {
            Counters.Drop(RxDropReason.Malformed);
            return default;
        }

        ClassifyResult claim = _classifier.Classify(frame);
        if (claim.Matched && (uint)(claim.Owner - 1) < (uint)_consumers.Length && _consumers[claim.Owner - 1] is { } owner)
        {
            _placingJourney = ActivitySources.Netd.HasListeners() ? StartJourney(frame.Length, claim, owner) : null;
            if (!TryTakeBuffer(owner, frame.Length, out Descriptor buffer, out Span<byte> target, out bool small))
            {
                EndPlacingJourney();
                return default; // no buffer posted: dropped and counted against that consumer
            }

            _placingFor = owner;
            _placingBuffer = buffer;
            _placingSmall = small;
            return target;
        }

        // Not claimed: netd's own handlers (ARP, ICMP echo) read it from netd's receive pool,
        // one buffer after another, so a reply never overwrites the frame it answers.
        _placingOwn = (_placingOwn + 1) % _options.RxBurst;
        return _rxPool.Span.Slice(_placingOwn * NetdLimits.PageBuffer, NetdLimits.PageBuffer);
    }

    /// <summary>The device wrote the frame where <see cref="IFramePlacer.Place"/> said.</summary>
    void IFramePlacer.Placed(int length)
    {
        if (_placingFor is { } consumer)
        {
            _placingFor = null;
            CompleteDelivery(consumer, _placingBuffer, length, _placingSmall, traced: _placingJourney is not null);
            EndPlacingJourney();
            return;
        }

        Dispatch(_rxPool.Span.Slice(_placingOwn * NetdLimits.PageBuffer, length));
    }

    private void EndPlacingJourney()
    {
        if (_placingJourney is { } journey)
        {
            _placingJourney = null;
            StopJourney(journey);
        }
    }

    private void Dispatch(Span<byte> frame)
    {
        if (EthernetFrame.TryParse(frame, out EthernetFrame eth) != WireError.None)
        {
            Counters.Drop(RxDropReason.Malformed);
            return;
        }

        ClassifyResult claim = _classifier.Classify(frame);
        if (claim.Matched && (uint)(claim.Owner - 1) < (uint)_consumers.Length && _consumers[claim.Owner - 1] is { } owner)
        {
            // One volatile read when nobody traces; a sampled journey span otherwise, current
            // while the completion is sent, so the channel's send span (and the application's
            // process span on the other core) continue the packet's trace: NIC -> netd -> application.
            Activity? journey = ActivitySources.Netd.HasListeners() ? StartJourney(frame.Length, claim, owner) : null;
            Deliver(owner, frame, traced: journey is not null);
            if (journey is not null)
            {
                StopJourney(journey);
            }

            return;
        }

        if (eth.EtherType == EtherType.Arp)
        {
            OnArp(frame, eth);
            return;
        }

        if (eth.EtherType == EtherType.Ipv4 && TryEcho(frame, eth))
        {
            return;
        }

        Counters.Drop(RxDropReason.Unclaimed);
    }

    // A frame netd holds (TAP, a faulty switch port, another stack's transmit page, an ARP reply
    // for a consumer's address) copied into its consumer's posted buffer.
    private void Deliver(Consumer consumer, ReadOnlySpan<byte> frame, bool traced = false)
    {
        if (TryTakeBuffer(consumer, frame.Length, out Descriptor buffer, out Span<byte> target, out bool small))
        {
            frame.CopyTo(target);
            Counters.PayloadCopiesField++;
            CompleteDelivery(consumer, buffer, frame.Length, small, traced);
        }
    }

    // The posted buffer a frame of `length` bytes for `consumer` goes into: a small slot for at most
    // 128 bytes (when one is posted), else a page. False when none is posted (dropped and counted
    // against that consumer, nobody else) or its region is gone.
    private bool TryTakeBuffer(Consumer consumer, int length, out Descriptor buffer, out Span<byte> target, out bool small)
    {
        bool regionGone = false;
        while (true)
        {
            small = length <= NetdLimits.SmallPacket && consumer.Small.Count > 0;
            BoundedRing<Descriptor> ring = small ? consumer.Small : consumer.Pages;
            if (!ring.TryPop(out buffer))
            {
                // Billed to this consumer; counted once, by why (the frame that found its region
                // revoked and nothing else posted is a region-gone drop, not also a no-buffer one).
                consumer.DroppedNoBuffer++;
                Counters.Drop(regionGone ? RxDropReason.RegionGone : RxDropReason.NoBuffer);
                target = default;
                return false;
            }

            NetdStatus status = consumer.Resolve(buffer, (uint)length, out target);
            if (status == NetdStatus.BadCapability)
            {
                // The consumer revoked the region: netd forgets every buffer of it at once (and
                // never touches it again); try its next one, of another region.
                RetireRegion(consumer, buffer.Region, notify: true);
                regionGone = true;
                continue;
            }

            if (status != NetdStatus.Ok)
            {
                consumer.Release(in buffer);
                Counters.Drop(RxDropReason.NoBuffer);
                return false;
            }

            // The buffer goes back to its owner with this completion (the ledger forgets it).
            consumer.Release(in buffer);
            return true;
        }
    }

    // A traced delivery (a sampled journey span is current) leaves at once, on its own, so the
    // channel's send span carries the packet's trace on to the application's core; every other
    // one gathers with the step's completions and leaves in the step's batch.
    private void CompleteDelivery(Consumer consumer, in Descriptor buffer, int length, bool small, bool traced)
    {
        if (small)
        {
            Counters.SmallCopiesField++;
        }
        else
        {
            Counters.PageDeliveriesField++;
        }

        consumer.RxPackets++;
        consumer.RxBytes += length;
        DescriptorFlags kind = small ? DescriptorFlags.Small : DescriptorFlags.Page;
        if (!traced)
        {
            // Gathered with the step's other deliveries into the buffers that follow it: one
            // ReceivedMany for up to six of them.
            consumer.OweDelivery(in buffer, length, kind);
            return;
        }

        Complete(consumer, NetdMessages.Received, buffer with { Length = (uint)length, Flags = kind }, NetdStatus.Ok, traced);
    }

    /// <summary>The span name of a received packet's way through netd.</summary>
    public const string JourneySpanName = "netd receive";

    [MethodImpl(MethodImplOptions.NoInlining)]
    private Activity? StartJourney(int length, ClassifyResult claim, Consumer owner)
    {
        Activity? activity;
        if (Activity.Current is not null || _sampler is not { IsGating: true })
        {
            activity = ActivitySources.Netd.StartActivity(JourneySpanName, ActivityKind.Consumer);
        }
        else
        {
            // The same head sampling as a root message of this core: decided before anything is built.
            if (!_sampler.SampleRoot())
            {
                return null;
            }

            activity = ActivitySources.Netd.StartActivity(
                ActivityKind.Consumer,
                parentContext: default,
                tags: [new(MessageSampler.KernelSampledTag, MessageSampler.KernelSampledValue)],
                name: JourneySpanName);
        }

        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag(TelemetryTags.Core, _core);
            activity.SetTag(NetdTags.Device, _device.Name);
            activity.SetTag(NetdTags.Filter, claim.FilterId);
            activity.SetTag(NetdTags.Consumer, owner.Id);
            activity.SetTag(NetdTags.FrameLength, length);
        }

        return activity;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void StopJourney(Activity journey)
    {
        Activity? parent = journey.Parent;
        journey.Stop();
        Activity.Current = parent;
    }

    // ------------------------------------------------------------------ filters (for people)

    /// <summary>The installed filters with their counters (netd's core only: the classifier belongs to it).</summary>
    public IReadOnlyList<FilterInfo> Filters() => _classifier.List();

    // ------------------------------------------------------------------ netd's own handlers

    private void OnArp(ReadOnlySpan<byte> frame, EthernetFrame eth)
    {
        if (ArpPacket.TryParse(eth.Payload, out ArpPacket arp) != WireError.None)
        {
            Counters.Drop(RxDropReason.Malformed);
            return;
        }

        if (arp.Operation == ArpOperation.Request && (arp.TargetIp == Address || OwnerOf(arp.TargetIp) is not null))
        {
            Span<byte> reply = _scratch.Span[..(EthernetFrame.HeaderLength + ArpPacket.Length)];
            EthernetFrame.WriteHeader(reply, arp.SenderMac, Mac, EtherType.Arp);
            ArpPacket.Write(reply[EthernetFrame.HeaderLength..], ArpOperation.Reply, Mac, arp.TargetIp, arp.SenderMac, arp.SenderIp);
            if (SendOwn(reply))
            {
                Counters.ArpRepliesField++;
            }

            return;
        }

        // A reply (or a request from a peer) addressed to a consumer's address: its stack learns from it.
        if (OwnerOf(arp.TargetIp) is { } target)
        {
            Deliver(target, frame);
            return;
        }

        Counters.Drop(RxDropReason.Unclaimed);
    }

    private bool TryEcho(ReadOnlySpan<byte> frame, EthernetFrame eth)
    {
        if (Ipv4Packet.TryParse(eth.Payload, out Ipv4Packet ip) != WireError.None || ip.Destination != Address
            || ip.Protocol != IpProtocol.Icmp || ip.IsFragment)
        {
            return false;
        }

        if (IcmpPacket.TryParse(ip.Payload, out IcmpPacket icmp) != WireError.None || icmp.Type != IcmpType.EchoRequest)
        {
            return false;
        }

        int ipLength = Ipv4Packet.MinHeaderLength + icmp.Length;
        int length = EthernetFrame.HeaderLength + ipLength;
        if (length > _scratch.Length || length > _device.Mtu + NetworkDevice.EthernetHeaderLength)
        {
            return false;
        }

        Span<byte> reply = _scratch.Span[..length];
        EthernetFrame.WriteHeader(reply, eth.Source, Mac, EtherType.Ipv4);
        Span<byte> ipBytes = reply[EthernetFrame.HeaderLength..];
        icmp.Data.CopyTo(ipBytes[(Ipv4Packet.MinHeaderLength + IcmpPacket.HeaderLength)..]);
        IcmpPacket.WriteEcho(ipBytes[Ipv4Packet.MinHeaderLength..], IcmpType.EchoReply, icmp.Identifier, icmp.SequenceNumber, icmp.Data.Length);
        Ipv4Packet.WriteHeader(ipBytes, Address, ip.Source, IpProtocol.Icmp, icmp.Length, identification: _nextIpId++, ttl: 64);
        if (SendOwn(reply))
        {
            Counters.EchoRepliesField++;
        }

        return true;
    }

    // Traffic between stacks on this machine never leaves it (a switch would not send a frame back
    // out of the port it came in on): a frame to netd's own station address for an address netd
    // or a consumer owns, or an ARP request for one, is dispatched locally.
    private bool IsLocal(ReadOnlySpan<byte> frame)
    {
        if (EthernetFrame.TryParse(frame, out EthernetFrame eth) != WireError.None)
        {
            return false;
        }

        if (eth.EtherType == EtherType.Arp)
        {
            return (eth.Destination == Mac || eth.Destination.IsBroadcast)
                && ArpPacket.TryParse(eth.Payload, out ArpPacket arp) == WireError.None
                && (arp.Operation == ArpOperation.Reply ? eth.Destination == Mac && OwnerOf(arp.TargetIp) is not null : arp.TargetIp == Address || OwnerOf(arp.TargetIp) is not null);
        }

        return eth.Destination == Mac && eth.EtherType == EtherType.Ipv4
            && Ipv4Packet.TryParse(eth.Payload, out Ipv4Packet ip) == WireError.None
            && (ip.Destination == Address || OwnerOf(ip.Destination) is not null);
    }

    private bool SendOwn(Span<byte> frame)
    {
        if (IsLocal(frame))
        {
            // A reply to a stack of this machine (its ARP request for another one's address).
            Counters.LocalFramesField++;
            Dispatch(frame);
            return true;
        }

        // netd's own replies are best effort: a busy device drops them (the peer retries).
        if (!_device.TransmitOne(frame))
        {
            return false;
        }

        Counters.TxPacketsField++;
        Counters.TxBytesField += frame.Length;
        _capture?.Write(frame, CaptureDirection.Transmitted);
        return true;
    }

    // ------------------------------------------------------------------ completions

    private void Complete(Consumer consumer, ushort type, in Descriptor d, NetdStatus status, bool traced = false)
    {
        Message m = d.ToMessage(type);
        m.Word2 = (ulong)status;
        m.Length = Message.PayloadSize;
        if (traced)
        {
            // Behind everything owed (order per consumer), then alone, with the current span.
            FlushOwed(consumer);
            if (consumer.Owed.Count == 0 && TrySend(consumer, in m))
            {
                return;
            }
        }

        consumer.Owe(in m);
    }

    private void Ack(Consumer consumer, ushort request, NetdStatus status)
    {
        Message m = Message.Create(NetdMessages.Ack, request, (ulong)status);
        Send(consumer, in m);
    }

    // Replies and completions join the consumer's queue, in order, and leave with the step's batch
    // (FlushOwed); when its window is full they wait there for its credits, never dropped.
    private static void Send(Consumer consumer, in Message m) => consumer.Owe(in m);

    private static bool TrySend(Consumer consumer, in Message m)
    {
        try
        {
            return consumer.Channel.TryWrite(in m);
        }
        catch (ChannelClosedException)
        {
            return true; // the consumer is gone; its read loop removes it
        }
    }

    private int FlushOwed()
    {
        int n = 0;
        foreach (Consumer? c in _consumers)
        {
            if (c is not null && (c.Owed.Count > 0 || c.HasGathered))
            {
                n += FlushOwed(c);
            }
        }

        return n;
    }

    /// <summary>
    /// Sends what netd owes <paramref name="consumer"/> as few channel batches as its window and
    /// the ring take now (one ring check and at most one doorbell each); the rest stays first in
    /// line. Returns how many went.
    /// </summary>
    public int FlushOwed(Consumer consumer)
    {
        consumer.CloseGathered();
        int sent = 0;
        while (consumer.Owed.Count > 0)
        {
            ReadOnlySpan<Message> segment = consumer.Owed.FirstSegment;
            int n;
            try
            {
                n = consumer.Channel.TryWriteBatch(segment);
            }
            catch (InvalidOperationException)
            {
                n = 0; // not connected any more: the consumer's read loop removes it
            }

            if (n == 0)
            {
                break;
            }

            consumer.Owed.DropFirst(n);
            sent += n;
            if (n < segment.Length)
            {
                break; // the window or the ring is full
            }
        }

        return sent;
    }

    /// <summary>True when a step would do something now (checked before the core parks).</summary>
    public bool HasWork
    {
        get
        {
            if (_pendingTx.Count > 0)
            {
                return true;
            }

            foreach (Consumer? c in _consumers)
            {
                // Only what can leave now: a consumer whose window is full returns credits in a
                // message, which wakes this core; until then there is nothing to do for it.
                if (c is not null && (c.Owed.Count > 0 || c.HasGathered) && c.Channel.Credits > 0 && !c.Channel.IsCompleted)
                {
                    return true;
                }
            }

            return false;
        }
    }
}
