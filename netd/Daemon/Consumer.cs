using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Memory;
using Multikernel.CpuDriver.Urpc;
using Multikernel.Netd.Wire;

namespace Multikernel.Netd.Daemon;

/// <summary>
/// netd's state for one bound consumer: the regions it registered (netd reaches them only
/// through generation-checked frame handles), the empty buffers it posted, the completions netd
/// owes it, its addresses and filters. Every table is bounded by <see cref="NetdOptions"/>;
/// netd never holds more buffers for a consumer than the consumer handed it.
/// </summary>
internal sealed class Consumer
{
    /// <summary>Room in <see cref="Owed"/> beyond one completion per buffer the consumer may hand netd: for replies (and the greeting).</summary>
    public const int ReplyReserve = 16;

    private readonly Region[] _regions;

    public Consumer(int id, string name, Endpoint channel, NetdOptions options)
    {
        Id = id;
        Name = name;
        Channel = channel;
        _regions = new Region[options.MaxRegionsPerConsumer];
        Small = new BoundedRing<Descriptor>(options.MaxPostedPerConsumer);
        Pages = new BoundedRing<Descriptor>(options.MaxPostedPerConsumer);
        // What netd can owe: a completion per buffer the consumer gave it (posts, transmits in
        // flight), plus replies to requests; the read loop reads no more than RequestRoom, so it
        // never overflows.
        Owed = new BoundedRing<Message>(2 * options.MaxPostedPerConsumer + options.MaxTransmitsInFlight + ReplyReserve);
        Addresses = new Ipv4Address[options.MaxAddressesPerConsumer];
    }

    public int Id { get; }

    public string Name { get; }

    public Endpoint Channel { get; }

    /// <summary>Posted small-packet buffers.</summary>
    public BoundedRing<Descriptor> Small { get; }

    /// <summary>Posted page buffers.</summary>
    public BoundedRing<Descriptor> Pages { get; }

    /// <summary>
    /// Messages to the consumer not on its channel yet, in order: buffer completions (bounded by
    /// the buffers the consumer handed over) and replies to its requests. Everything of one step
    /// gathers here and leaves as one batch (<c>NetdEngine.FlushOwed</c>: one ring check, one
    /// doorbell); what the window does not take waits for the consumer's credits. netd reads no
    /// more of the consumer's messages than <see cref="RequestRoom"/>, so a consumer that sends
    /// without reading stalls in its own sends instead of growing this queue.
    /// </summary>
    public BoundedRing<Message> Owed { get; }

    public Ipv4Address[] Addresses { get; }

    public int AddressCount { get; set; }

    public int TransmitsInFlight { get; set; }

    public long RxPackets;
    public long RxBytes;
    public long TxPackets;
    public long DroppedNoBuffer;

    public bool HasAddress(Ipv4Address address)
    {
        for (int i = 0; i < AddressCount; i++)
        {
            if (Addresses[i] == address)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Registers a region in the first free entry; its id is the entry index + 1 (0 is never a region).</summary>
    public bool TryAddRegion(FrameHandle handle, int slot, out ushort id)
    {
        for (int i = 0; i < _regions.Length; i++)
        {
            if (!_regions[i].Live)
            {
                // One bit per 128-byte granule of the region: set while netd holds those bytes as
                // a posted buffer. Sized once, at registration, by the region the consumer paid for.
                _regions[i] = new Region(true, handle, slot, new ulong[((handle.Length / NetdLimits.SmallPacket) + 63) / 64]);
                id = (ushort)(i + 1);
                return true;
            }
        }

        id = 0;
        return false;
    }

    /// <summary>The bytes a descriptor names, checked against the region (bounds and the capability's generation).</summary>
    /// <returns>The status; <paramref name="bytes"/> is valid only with <see cref="NetdStatus.Ok"/>.</returns>
    public NetdStatus Resolve(scoped in Descriptor d, uint length, out Span<byte> bytes)
    {
        bytes = default;
        int index = d.Region - 1;
        if ((uint)index >= (uint)_regions.Length || !_regions[index].Live)
        {
            return NetdStatus.BadDescriptor;
        }

        ref Region region = ref _regions[index];
        if ((ulong)d.Offset + length > (ulong)region.Handle.Length)
        {
            return NetdStatus.BadDescriptor;
        }

        // One generation check (the access's own), not two: a revoked region throws, rarely.
        try
        {
            bytes = region.Handle.Span.Slice((int)d.Offset, (int)length);
        }
        catch (CpuDriver.Capabilities.CapabilityRevokedException)
        {
            return NetdStatus.BadCapability; // revoked under us: the caller retires the region
        }

        return NetdStatus.Ok;
    }

    /// <summary>
    /// The whole of region <paramref name="id"/>, checked once (live, the capability's generation):
    /// for a burst that slices many descriptors of one region within one synchronous step, each
    /// then checked against the span's bounds only.
    /// </summary>
    public NetdStatus ResolveRegion(ushort id, out Span<byte> bytes)
    {
        bytes = default;
        int index = id - 1;
        if ((uint)index >= (uint)_regions.Length || !_regions[index].Live)
        {
            return NetdStatus.BadDescriptor;
        }

        try
        {
            bytes = _regions[index].Handle.Span;
        }
        catch (CpuDriver.Capabilities.CapabilityRevokedException)
        {
            return NetdStatus.BadCapability;
        }

        return NetdStatus.Ok;
    }

    /// <summary>
    /// The bytes a descriptor already checked by <see cref="Resolve"/> names, or empty when its
    /// region went since (revoked from the consumer's core meanwhile): for a device reading a
    /// transmit burst, which must not throw halfway through.
    /// </summary>
    public ReadOnlySpan<byte> FrameOf(scoped in Descriptor d)
    {
        int index = d.Region - 1;
        if ((uint)index >= (uint)_regions.Length || !_regions[index].Live)
        {
            return default;
        }

        ref Region region = ref _regions[index];
        if ((ulong)d.Offset + d.Length > (ulong)region.Handle.Length)
        {
            return default;
        }

        try
        {
            return region.Handle.ReadOnlySpan.Slice((int)d.Offset, (int)d.Length);
        }
        catch (CpuDriver.Capabilities.CapabilityRevokedException)
        {
            return default; // revoked between the check and the access
        }
    }

    /// <summary>Bytes of this consumer's regions netd holds now as posted, empty buffers (the ledger's count).</summary>
    public long HeldBytes { get; private set; }

    /// <summary>
    /// The ledger: marks the buffer <paramref name="d"/> names (already resolved: a live region,
    /// in bounds, aligned to 128 bytes) as held by netd; false when netd already holds any of its
    /// bytes (the same buffer posted twice, or overlapping one posted), so ownership is exact.
    /// </summary>
    public bool TryHold(in Descriptor d)
    {
        ulong[] held = _regions[d.Region - 1].Held;
        int first = (int)(d.Offset / NetdLimits.SmallPacket);
        int end = (int)((d.Offset + d.Length + NetdLimits.SmallPacket - 1) / NetdLimits.SmallPacket);
        for (int g = first; g < end; g++)
        {
            if ((held[g >> 6] & (1UL << (g & 63))) != 0)
            {
                return false;
            }
        }

        for (int g = first; g < end; g++)
        {
            held[g >> 6] |= 1UL << (g & 63);
        }

        HeldBytes += (end - first) * NetdLimits.SmallPacket;
        return true;
    }

    /// <summary>The buffer goes back to the consumer (its completion is on the way): the ledger forgets it.</summary>
    public void Release(in Descriptor d)
    {
        int index = d.Region - 1;
        if ((uint)index >= (uint)_regions.Length || !_regions[index].Live)
        {
            return; // the region went, and its whole ledger with it
        }

        ulong[] held = _regions[index].Held;
        int first = (int)(d.Offset / NetdLimits.SmallPacket);
        int end = (int)((d.Offset + d.Length + NetdLimits.SmallPacket - 1) / NetdLimits.SmallPacket);
        for (int g = first; g < end; g++)
        {
            held[g >> 6] &= ~(1UL << (g & 63));
        }

        HeldBytes -= (end - first) * NetdLimits.SmallPacket;
    }

    /// <summary>Forgets region <paramref name="id"/>; returns its slot in netd's CSpace (to delete), or -1.</summary>
    public int RetireRegion(ushort id)
    {
        int index = id - 1;
        if ((uint)index >= (uint)_regions.Length || !_regions[index].Live)
        {
            return -1;
        }

        int slot = _regions[index].Slot;
        foreach (ulong word in _regions[index].Held)
        {
            HeldBytes -= (long)ulong.PopCount(word) * NetdLimits.SmallPacket;
        }

        _regions[index] = default;
        Small.RemoveAll(static (d, region) => d.Region == region, id);
        Pages.RemoveAll(static (d, region) => d.Region == region, id);
        // The region's buffer completions go: its RegionGone returns all of them at once.
        if (_sentRegion == id)
        {
            _sentCount = 0;
        }

        if (_runRegion == id)
        {
            _runCount = 0;
        }

        Owed.RemoveAll(static (m, region) => (m.Type is NetdMessages.Received or NetdMessages.Transmitted && Descriptor.From(in m).Region == region) || (m.Type is NetdMessages.TransmittedMany or NetdMessages.ReceivedMany && (ushort)m.Word0 == region), id);
        return slot;
    }

    /// <summary>Slots of every live region (to delete when the consumer goes).</summary>
    public IEnumerable<int> RegionSlots()
    {
        for (int i = 0; i < _regions.Length; i++)
        {
            if (_regions[i].Live)
            {
                yield return _regions[i].Slot;
            }
        }
    }

    /// <summary>
    /// How many more of this consumer's messages netd may read now (0: pause reading, so the
    /// consumer stalls in its own sends). Every message read adds at most one to what netd holds
    /// for the consumer or owes it — a posted buffer, a transmit in flight, a completion or a
    /// reply — and nothing else adds to that sum (a delivery turns a held buffer into an owed
    /// completion, a sent transmit its flight into one), so reading no more than this keeps
    /// <see cref="Owed"/> within its bound whatever the consumer sends and however long it does
    /// not read.
    /// </summary>
    public int RequestRoom => Owed.Capacity - (Owed.Count + _sentCount + _runCount + Small.Count + Pages.Count + TransmitsInFlight);

    // Sent transmit buffers not yet written into a TransmittedMany (all of one region, in order).
    private readonly ushort[] _sentTags = new ushort[NetdLimits.TagsPerTransmittedMany];
    private int _sentCount;
    private ushort _sentRegion;

    // Deliveries not yet written into a ReceivedMany: buffers that follow each other in one region.
    private readonly ushort[] _runLengths = new ushort[NetdLimits.FramesPerReceivedMany];
    private int _runCount;
    private ushort _runRegion;
    private DescriptorFlags _runKind;
    private uint _runOffset;
    private uint _runTag;

    /// <summary>True while sent transmit buffers or deliveries wait to be written into one message (<see cref="CloseGathered"/>).</summary>
    public bool HasGathered => _sentCount > 0 || _runCount > 0;

    /// <summary>
    /// A buffer netd filled with a frame of <paramref name="length"/> bytes: gathered with the
    /// deliveries before it into one <see cref="NetdMessages.ReceivedMany"/> when it is the buffer
    /// right after the last one (same region and kind, the next offset and tag: the order the
    /// consumer posted them); otherwise the open run is written and this one starts the next.
    /// </summary>
    public void OweDelivery(in Descriptor buffer, int length, DescriptorFlags kind)
    {
        if (_runCount > 0
            && (buffer.Region != _runRegion || kind != _runKind
                || buffer.Offset != _runOffset + ((uint)_runCount * NetdLimits.Stride(kind)) || buffer.Tag != _runTag + (uint)_runCount))
        {
            CloseReceived();
        }

        if (_runCount == 0)
        {
            CloseSent(); // what was owed before stays before it
            _runRegion = buffer.Region;
            _runKind = kind;
            _runOffset = buffer.Offset;
            _runTag = buffer.Tag;
        }

        _runLengths[_runCount++] = (ushort)length;
        if (_runCount == _runLengths.Length)
        {
            CloseReceived();
        }
    }

    /// <summary>Writes everything gathered into <see cref="Owed"/> (at most one of the two kinds is open at a time).</summary>
    public void CloseGathered()
    {
        CloseSent();
        CloseReceived();
    }

    private void CloseReceived()
    {
        if (_runCount == 0)
        {
            return;
        }

        Message m;
        if (_runCount == 1)
        {
            // One delivery alone: the plain completion.
            m = new Descriptor(_runRegion, _runKind, _runOffset, _runLengths[0], _runTag).ToMessage(NetdMessages.Received);
            m.Word2 = (ulong)NetdStatus.Ok;
            m.Length = Message.PayloadSize;
        }
        else
        {
            Span<ulong> words = stackalloc ulong[2];
            words.Clear();
            for (int i = 0; i < _runCount; i++)
            {
                int bit = 32 + (16 * i);
                words[bit >> 6] |= (ulong)_runLengths[i] << (bit & 63);
            }

            ulong head = _runRegion | ((ulong)_runCount << 16) | ((ulong)(byte)_runKind << 24) | ((ulong)_runTag << 32);
            m = Message.Create(NetdMessages.ReceivedMany, head, _runOffset | words[0], words[1]);
        }

        _runCount = 0;
        Push(in m);
    }

    /// <summary>
    /// A transmit buffer netd sent: gathered with the others of this step into one
    /// <see cref="NetdMessages.TransmittedMany"/> (written into <see cref="Owed"/> when it is full,
    /// the region changes, another message is owed — so the order of everything owed holds — or
    /// the step's batch leaves). A tag that does not fit 16 bits goes alone.
    /// </summary>
    public void OweSent(in Descriptor d)
    {
        if (d.Tag > ushort.MaxValue)
        {
            Message alone = d.ToMessage(NetdMessages.Transmitted);
            alone.Length = Message.PayloadSize;
            Owe(in alone);
            return;
        }

        if (_sentCount > 0 && _sentRegion != d.Region)
        {
            CloseSent();
        }

        CloseReceived(); // what was owed before stays before it

        _sentRegion = d.Region;
        _sentTags[_sentCount++] = (ushort)d.Tag;
        if (_sentCount == _sentTags.Length)
        {
            CloseSent();
        }
    }

    /// <summary>Writes the gathered sent buffers into <see cref="Owed"/> as one message.</summary>
    public void CloseSent()
    {
        if (_sentCount == 0)
        {
            return;
        }

        Span<ulong> words = stackalloc ulong[3];
        words.Clear();
        words[0] = _sentRegion | ((ulong)_sentCount << 16);
        for (int i = 0; i < _sentCount; i++)
        {
            int bit = 32 + (16 * i);
            words[bit >> 6] |= (ulong)_sentTags[i] << (bit & 63);
        }

        Message m = Message.Create(NetdMessages.TransmittedMany, words[0], words[1], words[2]);
        _sentCount = 0;
        Push(in m);
    }

    /// <summary>Queues a message netd could not send yet (the read loop pauses before this can overflow).</summary>
    public void Owe(in Message m)
    {
        CloseGathered(); // what was gathered before this stays before it
        Push(in m);
    }

    private void Push(in Message m)
    {
        if (!Owed.TryPush(in m))
        {
            throw new InvalidOperationException("netd owes a consumer more messages than its bound allows (the read loop must pause first).");
        }
    }

    public ConsumerStats Stats() => new(Id, Name, RxPackets, RxBytes, TxPackets, DroppedNoBuffer, Small.Count, Pages.Count, Owed.Count, HeldBytes);

    private readonly record struct Region(bool Live, FrameHandle Handle, int Slot, ulong[] Held);
}
