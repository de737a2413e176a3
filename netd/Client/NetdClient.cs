using System.Threading.Channels;
using Multikernel.CpuDriver.Capabilities;
using Multikernel.CpuDriver.Kernel;
using Multikernel.CpuDriver.Memory;
using Multikernel.CpuDriver.Urpc;
using Multikernel.Monitor;
using Multikernel.Netd.Daemon;
using Multikernel.Netd.Filters;
using Multikernel.Netd.Wire;

namespace Multikernel.Netd.Client;

/// <summary>Sizes of a consumer's region and the address it claims.</summary>
public sealed class NetdClientOptions
{
    /// <summary>The IPv4 address the consumer claims (netd answers ARP for it; it may send only as it).</summary>
    public required Ipv4Address Address { get; init; }

    /// <summary>Page buffers posted for large frames. Default 64.</summary>
    public int ReceivePages { get; init; } = 64;

    /// <summary>128-byte buffers posted for small frames. Default 128 (4 pages).</summary>
    public int SmallBuffers { get; init; } = 128;

    /// <summary>Page buffers for frames to send. Default 64.</summary>
    public int TransmitPages { get; init; } = 64;

    /// <summary>How long to wait for netd to be exported (at connect and after a restart). Default 10 s.</summary>
    public TimeSpan BindTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// When netd goes away (it stopped, crashed or was restarted; seed 003), bind again, register
    /// the region, claim the address, reinstall the filters and repost the buffers, instead of
    /// failing. Frames in flight at netd are lost (a stack's retransmission covers them). Default true.
    /// </summary>
    public bool Reconnect { get; init; } = true;

    internal int SmallPages => (SmallBuffers * NetdLimits.SmallPacket + PhysicalMemory.FrameSize - 1) / PhysicalMemory.FrameSize;

    // page 0: control (filter programs); then receive pages, small pages, transmit pages.
    internal int TotalPages => 1 + ReceivePages + SmallPages + TransmitPages;
}

/// <summary>The error a consumer sees when netd refused a request or went away.</summary>
public sealed class NetdException(string message, NetdStatus status) : IOException(message)
{
    /// <summary>What netd answered.</summary>
    public NetdStatus Status { get; } = status;
}

/// <summary>
/// A consumer's end of netd: one region of its own RAM (it pays) registered once, a filter,
/// empty buffers posted, and from then on frames as descriptors. Single-threaded on the
/// consumer's core, like its stack.
/// </summary>
/// <remarks>
/// Nothing is allocated per packet: the receive pump drains every completion the channel holds
/// per wake and wakes a waiter once per batch, through a reusable kernel operation (no task per
/// wait); the buffers given back and the frames to send in one run step leave as one batch on
/// the channel (one ring-space check, one doorbell), flushed at the end of the step.
/// </remarks>
public sealed class NetdClient : IAsyncDisposable
{
    private readonly DomainContext _ctx;
    private DomainChannel _channel;
    private readonly NetdClientOptions _options;
    private readonly int _regionSlot;
    private readonly FrameHandle _region;
    private readonly Queue<Descriptor> _received;
    private readonly Stack<int> _freeTransmit;
    private readonly BoundedRing<Message> _outbox;
    private readonly Dictionary<int, (int Slot, byte[] Binary, string Text)> _filters = [];
    private int _nextFilterId = 1;

    // Where each buffer is, so a restarted netd gets back exactly those it held: a receive buffer
    // is posted (at netd) or with this client (received, not yet released); a transmit page is in
    // flight (at netd) or with this client.
    private readonly bool[] _pagePosted;
    private readonly bool[] _pageForwarded; // a received page sent on as it is (Forward): at netd until it comes back
    private readonly bool[] _smallPosted;
    private readonly bool[] _transmitInFlight;
    private bool _reconnecting;
    private bool _disposing;
    private readonly int _outboxLimit;
    private readonly int _firstTransmitPage;
    private readonly uint _smallBase;
    private ushort _regionId;
    private TaskCompletionSource<Message>? _control;
    private readonly CoreKernel _kernel;
    private readonly ClientSignal _receiveSignal;
    private readonly ClientSignal _transmitSignal;
    private readonly Message[] _inbound = new Message[InboundBatch];

    // Messages of this run step not yet on the channel (posts, transmits): sent as one batch when
    // the step ends (a work item queued once), when the batch is full, or before a request.
    private readonly Message[] _batch = new Message[OutboundBatch];
    private int _batchCount;

    // Where in _batch the step's open run of small posts, of page posts and of transmits is (-1:
    // none): a buffer given back or a frame sent joins its kind's open message (PostSmallRun,
    // PostPageRun, TransmitMany), so the echo of a frame - a repost and a transmit, alternating -
    // still leaves as a few messages, not two per frame. Posts and transmits are independent at
    // netd, so a post joining a message queued before a transmit changes nothing netd does.
    private int _openSmallRun = -1;
    private int _openPageRun = -1;
    private int _openTransmit = -1;
    private bool _batchScheduled;
    private readonly ClientSignal _writerSignal;
    private Exception? _fault;
    private Task _pump = Task.CompletedTask;

    private NetdClient(DomainContext ctx, DomainChannel channel, NetdClientOptions options, int regionSlot)
    {
        _ctx = ctx;
        _kernel = ctx.Domain.Kernel;
        _receiveSignal = new ClientSignal(_kernel);
        _transmitSignal = new ClientSignal(_kernel);
        _writerSignal = new ClientSignal(_kernel);
        _channel = channel;
        _options = options;
        _regionSlot = regionSlot;
        _region = ctx.Capabilities.GetFrame(regionSlot);
        _received = new Queue<Descriptor>(options.ReceivePages + options.SmallBuffers);
        _pagePosted = new bool[options.ReceivePages];
        _pageForwarded = new bool[options.ReceivePages];
        _smallPosted = new bool[options.SmallBuffers];
        _transmitInFlight = new bool[options.TransmitPages];
        Array.Fill(_pagePosted, true);
        Array.Fill(_smallPosted, true);
        _firstTransmitPage = 1 + options.ReceivePages + options.SmallPages;
        _smallBase = (uint)((1 + options.ReceivePages) * PhysicalMemory.FrameSize);
        _freeTransmit = new Stack<int>(options.TransmitPages);
        for (int i = options.TransmitPages - 1; i >= 0; i--)
        {
            _freeTransmit.Push(i);
        }

        // Every message this client sends names a buffer it owns (posts, transmits) or is one of
        // its own few requests, so the outbox never holds more than that.
        _outboxLimit = options.ReceivePages + options.SmallBuffers + options.TransmitPages + 16;
        _outbox = new BoundedRing<Message>(_outboxLimit);
        _ = WriterAsync();
    }

    private const int InboundBatch = 64;
    private const int OutboundBatch = 64;

    /// <summary>netd's station address: the source of every frame this consumer sends.</summary>
    public Wire.MacAddress Mac { get; private set; }

    /// <summary>The link's IP MTU.</summary>
    public int Mtu { get; private set; }

    /// <summary>The address this consumer claimed.</summary>
    public Ipv4Address Address => _options.Address;

    /// <summary>Frames received and not yet taken.</summary>
    public int PendingReceives => _received.Count;

    /// <summary>Times this client bound netd again after it went away.</summary>
    public int Reconnects { get; private set; }

    /// <summary>The CSpace slot of this client's region (the original; netd holds a copy): tests revoke it.</summary>
    internal int RegionSlot => _regionSlot;

    /// <summary>The whole region as this client sees it (tests check what netd wrote into it).</summary>
    internal FrameHandle Region => _region;

    /// <summary>Why netd last went away (null until it did): the clear error the queue saw.</summary>
    public NetdException? LastDisconnect { get; private set; }

    /// <summary>Binds to netd, registers a region retyped from this domain's RAM, claims the address and posts every receive buffer.</summary>
    public static async Task<NetdClient> ConnectAsync(DomainContext ctx, NetdClientOptions options)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ArgumentNullException.ThrowIfNull(options);
        DomainChannel channel = await ctx.BindAsync(NetdMessages.ServiceName, options.BindTimeout);
        int slot = ctx.Capabilities.Retype(ctx.RamSlot, CapabilityType.Frame, options.TotalPages);
        var client = new NetdClient(ctx, channel, options, slot);
        try
        {
            await client.RegisterAsync();
            return client;
        }
        catch
        {
            await client.DisposeAsync();
            throw;
        }
    }

    // One session with a netd: greet, register the region, claim the address, (re)install the
    // filters, post every buffer netd should hold. At connect and after every restart.
    private async Task RegisterAsync()
    {
        Message hello = await _channel.Endpoint.ReadAsync();
        if (hello.Type != NetdMessages.Hello)
        {
            throw new NetdException($"netd greeted with message 0x{hello.Type:x4} instead of Hello.", NetdStatus.ProtocolError);
        }

        Mac = Wire.MacAddress.FromUInt64(hello.Word0);
        Mtu = (int)hello.Word1;
        _pump = PumpAsync(_channel);

        // netd gets a copy it can read and write but neither pass on nor revoke; this domain keeps
        // the original, so revoking it (or ending) takes the region from netd at once.
        await _channel.SendCapabilityAsync(_regionSlot, TransferMode.Copy, CapabilityRights.Read | CapabilityRights.Write);
        Message reply = await RequestAsync(Message.Create(NetdMessages.AddRegion, 1));
        Check(reply, (NetdStatus)reply.Word2, "register its region");
        _regionId = (ushort)reply.Word1;

        reply = await RequestAsync(Message.Create(NetdMessages.AddAddress, _options.Address.Value));
        Check(reply, (NetdStatus)reply.Word1, $"claim {_options.Address}");

        foreach ((int _, (int filterSlot, byte[] binary, string text)) in _filters)
        {
            await InstallAtNetdAsync(filterSlot, binary, text);
        }

        for (int i = 0; i < _pagePosted.Length; i++)
        {
            if (_pagePosted[i])
            {
                PostPage(i);
            }
        }

        for (int i = 0; i < _smallPosted.Length; i++)
        {
            if (_smallPosted[i])
            {
                PostSmall(i);
            }
        }
    }

    // netd went away: every transmit in flight is lost (its page is ours again), the buffers it held
    // are posted again to the next netd, and whatever was received stays readable here.
    private async Task ReconnectAsync(NetdException why)
    {
        _reconnecting = true;
        LastDisconnect = why;
        try
        {
            _channel.Endpoint.Close();
            _outbox.Clear();
            ClearBatch();
            for (int i = 0; i < _transmitInFlight.Length; i++)
            {
                if (_transmitInFlight[i])
                {
                    _transmitInFlight[i] = false;
                    _freeTransmit.Push(i);
                }
            }

            for (int i = 0; i < _pageForwarded.Length; i++)
            {
                if (_pageForwarded[i])
                {
                    // Lost with the old netd: the page is ours again and goes to the next one as a receive buffer.
                    _pageForwarded[i] = false;
                    _pagePosted[i] = true;
                }
            }

            _transmitSignal.Set();
            _channel = await _ctx.BindAsync(NetdMessages.ServiceName, _options.BindTimeout, _ctx.Stopping);
            _reconnecting = false;
            await RegisterAsync();
            Reconnects++;
        }
        catch (Exception ex) when (ex is MonitorException or NetdException or ChannelClosedException or TimeoutException or OperationCanceledException or InvalidOperationException or CapabilityException)
        {
            _reconnecting = false;
            Fault(new NetdException($"netd went away ({why.Message}) and could not be bound again: {ex.Message}", why.Status));
        }
    }

    /// <summary>
    /// Installs a filter (text syntax, compiled here to the binary form netd verifies); returns its
    /// id. The filter is a PacketFilter capability retyped from this domain's RAM (it pays for it),
    /// of which netd gets a copy it can neither pass on nor revoke: <see cref="RemoveFilterAsync"/>
    /// revokes it, and so does this domain ending.
    /// </summary>
    public async Task<int> InstallFilterAsync(string filter)
    {
        FilterProgram program = FilterSyntax.Parse(filter);
        byte[] binary = FilterBinary.Encode(program);
        if (binary.Length > PhysicalMemory.FrameSize)
        {
            throw new ArgumentException($"The filter's binary form is {binary.Length} bytes; at most {PhysicalMemory.FrameSize}.", nameof(filter));
        }

        ThrowIfFaulted();
        int filterSlot = _ctx.Capabilities.Retype(_ctx.RamSlot, CapabilityType.PacketFilter);
        try
        {
            await InstallAtNetdAsync(filterSlot, binary, filter);
        }
        catch
        {
            _ctx.Capabilities.Delete(filterSlot);
            throw;
        }

        // The id is this client's, stable across netd restarts (netd numbers its own).
        int id = _nextFilterId++;
        _filters[id] = (filterSlot, binary, filter);
        return id;
    }

    private async Task InstallAtNetdAsync(int filterSlot, byte[] binary, string text)
    {
        binary.CopyTo(_region.Span);
        await _channel.SendCapabilityAsync(filterSlot, TransferMode.Copy, CapabilityRights.Read);
        Message reply = await RequestAsync(new Descriptor(_regionId, DescriptorFlags.None, 0, (uint)binary.Length, 0).ToMessage(NetdMessages.InstallFilter));
        var status = (NetdStatus)reply.Word1;
        if (status != NetdStatus.Ok)
        {
            string why = status == NetdStatus.FilterRejected ? $" ({(FilterRejection)reply.Word2})" : string.Empty;
            throw new NetdException($"netd refused the filter '{text}': {status}{why}.", status);
        }
    }

    /// <summary>
    /// Removes filter <paramref name="filterId"/> by revoking its PacketFilter capability: netd's
    /// copy goes, and with it the filter, whatever netd does. Completes when the revoke has.
    /// </summary>
    public async Task RemoveFilterAsync(int filterId)
    {
        if (!_filters.Remove(filterId, out (int Slot, byte[] Binary, string Text) filter))
        {
            throw new ArgumentException($"Filter {filterId} is not one this client installed.", nameof(filterId));
        }

        await _ctx.Capabilities.RevokeAsync(filter.Slot);
        _ctx.Capabilities.Delete(filter.Slot);
    }

    // ------------------------------------------------------------------ receive

    /// <summary>Takes the next received frame; call <see cref="Release"/> when done with its bytes.</summary>
    public bool TryReceive(out ReceivedFrame frame)
    {
        ThrowIfFaulted();
        if (_received.TryDequeue(out Descriptor d))
        {
            frame = new ReceivedFrame(this, d);
            return true;
        }

        frame = default;
        return false;
    }

    /// <summary>
    /// Completes when frames are waiting (at once if some are), or throws when netd went away.
    /// One waiter at a time; it is woken once per batch of completions, so drain with
    /// <see cref="TryReceive"/> after it (another task of this core may have drained them first).
    /// Not an async method: a wait costs no state-machine box, only the reusable signal.
    /// </summary>
    public ValueTask WaitToReceiveAsync(CancellationToken cancellationToken = default)
    {
        if (_received.Count > 0)
        {
            return default;
        }

        ThrowIfFaulted();
        return _receiveSignal.WaitAsync(cancellationToken);
    }

    internal ReadOnlySpan<byte> Bytes(Descriptor d) => _region.ReadOnlySpan.Slice((int)d.Offset, (int)d.Length);

    private Memory<byte> _regionMemory;

    /// <summary>
    /// The client's whole region as <see cref="Memory{T}"/>, made once: a stack keeps a received
    /// frame in its page until the application reads it (zero-copy receive) by holding a slice of
    /// it at the frame's <see cref="Descriptor.Offset"/> and releasing the frame afterwards. Every
    /// span taken from it re-checks the region's capability, so a deleted region cannot be read.
    /// </summary>
    public Memory<byte> RegionMemory
    {
        get
        {
            if (_regionMemory.IsEmpty)
            {
                _regionMemory = _region.Memory;
            }

            return _regionMemory;
        }
    }

    // A received buffer's whole extent (a page, or a small slot), writable: the application's own memory until it gives it back.
    internal Span<byte> WritableBytes(Descriptor d) => _region.Span.Slice((int)d.Offset, (int)NetdLimits.Stride(d.Flags));

    /// <summary>Gives a received frame's buffer back to netd (posted again).</summary>
    public void Release(in ReceivedFrame frame)
    {
        Descriptor d = frame.Descriptor;
        if ((d.Flags & DescriptorFlags.Small) != 0)
        {
            PostSmall((int)d.Tag);
        }
        else
        {
            PostPage((int)d.Tag);
        }
    }

    /// <summary>
    /// Sends the first <paramref name="length"/> bytes of a received frame's own page on, as it
    /// is (the application has rewritten it in place, e.g. swapped its addresses): no copy into a
    /// transmit page. The page goes back to netd as a receive buffer once netd has sent it (or
    /// refused it), instead of through <see cref="Release"/>. A frame in a small buffer cannot be
    /// forwarded (copy it into a transmit page: <see cref="CanForward"/>).
    /// </summary>
    public void Forward(in ReceivedFrame frame, int length)
    {
        ThrowIfFaulted();
        Descriptor d = frame.Descriptor;
        int index = (int)d.Tag;
        if (!CanForward(in frame) || (uint)index >= (uint)_pageForwarded.Length || _pagePosted[index] || _pageForwarded[index])
        {
            throw new ArgumentException("Only a received page this client holds can be forwarded, once.", nameof(frame));
        }

        if ((uint)length > PhysicalMemory.FrameSize)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, "A frame fits in one page.");
        }

        if (_reconnecting)
        {
            TransmitRefusals++; // no netd now: dropped, and the page is posted to the next one
            _pagePosted[index] = true;
            return;
        }

        _pageForwarded[index] = true;
        int page = 1 + index; // receive page i is the region's page 1 + i; its tag is that page
        if (_openTransmit < 0 || _fault is not null || (ushort)_batch[_openTransmit].Word0 != _regionId
            || !TryAppendFrame(ref _batch[_openTransmit], (uint)page | ((uint)length << 16)))
        {
            Send(new Descriptor(_regionId, DescriptorFlags.None, (uint)(page * PhysicalMemory.FrameSize), (uint)length, (uint)page).ToMessage(NetdMessages.Transmit));
        }
    }

    /// <summary>True when <paramref name="frame"/> came in a page (not a small buffer), so <see cref="Forward"/> can send it on.</summary>
    public static bool CanForward(in ReceivedFrame frame) => (frame.Descriptor.Flags & DescriptorFlags.Page) != 0;

    private void PostPage(int index)
    {
        _pagePosted[index] = true;
        if (!_reconnecting)
        {
            uint offset = (uint)((1 + index) * PhysicalMemory.FrameSize);
            if (!TryGrowRun(_openPageRun, offset, (uint)index, NetdLimits.PageBuffer, NetdLimits.MaxPageRun, NetdMessages.PostPageRun))
            {
                Send(new Descriptor(_regionId, DescriptorFlags.Page, offset, PhysicalMemory.FrameSize, (uint)index).ToMessage(NetdMessages.PostPage));
            }
        }
    }

    private void PostSmall(int index)
    {
        _smallPosted[index] = true;
        if (!_reconnecting)
        {
            uint offset = _smallBase + (uint)(index * NetdLimits.SmallPacket);
            if (!TryGrowRun(_openSmallRun, offset, (uint)index, NetdLimits.SmallPacket, NetdLimits.MaxSmallRun, NetdMessages.PostSmallRun))
            {
                Send(new Descriptor(_regionId, DescriptorFlags.Small, offset, NetdLimits.SmallPacket, (uint)index).ToMessage(NetdMessages.PostSmall));
            }
        }
    }

    // ------------------------------------------------------------------ transmit

    /// <summary>Transmit pages free now (not handed to netd); <see cref="NetdClientOptions.TransmitPages"/> when nothing is in flight.</summary>
    public int FreeTransmitBuffers => _freeTransmit.Count;

    /// <summary>A free transmit page to build a frame in, or false when all are in flight.</summary>
    public bool TryGetTransmitBuffer(out TransmitBuffer buffer)
    {
        ThrowIfFaulted();
        if (_freeTransmit.TryPop(out int index))
        {
            buffer = new TransmitBuffer(this, index);
            return true;
        }

        buffer = default;
        return false;
    }

    /// <summary>Waits until a transmit page is free (one waiter at a time; its state machine is pooled, so a wait allocates nothing).</summary>
    [System.Runtime.CompilerServices.AsyncMethodBuilder(typeof(System.Runtime.CompilerServices.PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<TransmitBuffer> GetTransmitBufferAsync(CancellationToken cancellationToken = default)
    {
        while (true)
        {
            if (TryGetTransmitBuffer(out TransmitBuffer buffer))
            {
                return buffer;
            }

            await _transmitSignal.WaitAsync(cancellationToken);
        }
    }

    /// <summary>Sends the first <paramref name="length"/> bytes of <paramref name="buffer"/>; the page comes back free once netd has sent it.</summary>
    public void Transmit(in TransmitBuffer buffer, int length)
    {
        if ((uint)length > PhysicalMemory.FrameSize)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, "A frame fits in one page.");
        }

        if (_reconnecting)
        {
            // No netd to send it right now (it is being bound again): dropped, as by a NIC whose link is down.
            TransmitRefusals++;
            _freeTransmit.Push(buffer.Index);
            _transmitSignal.Set();
            return;
        }

        _transmitInFlight[buffer.Index] = true;
        int page = _firstTransmitPage + buffer.Index;
        if (_openTransmit >= 0 && _fault is null && page <= ushort.MaxValue
            && (ushort)_batch[_openTransmit].Word0 == _regionId // both forms start with the region
            && TryAppendFrame(ref _batch[_openTransmit], (uint)page | ((uint)length << 16)))
        {
            return; // joined the step's open TransmitMany
        }

        // The tag is the buffer's page in the region (what a TransmitMany names it by).
        Send(new Descriptor(_regionId, DescriptorFlags.None, (uint)TransmitOffset(buffer.Index), (uint)length, (uint)(FirstTransmitPage + buffer.Index)).ToMessage(NetdMessages.Transmit));
    }

    /// <summary>Transmit pages netd has refused (bad frame, spoofed source); each refusal also frees its page.</summary>
    public long TransmitRefusals { get; private set; }

    internal Span<byte> TransmitSpan(int index) => _region.Span.Slice(TransmitOffset(index), PhysicalMemory.FrameSize);

    private int TransmitOffset(int index) => (FirstTransmitPage + index) * PhysicalMemory.FrameSize;

    // The region's page of transmit buffer 0: a transmit's tag is its page, its index the tag less this.
    private int FirstTransmitPage => _firstTransmitPage;

    // A transmit buffer netd gave back (its tag is its page): free again, once; a forwarded
    // receive page (tag 1..ReceivePages) is posted again.
    private bool FreeTransmit(uint tag)
    {
        if (tag - 1 < (uint)_pageForwarded.Length)
        {
            int page = (int)tag - 1;
            if (_pageForwarded[page])
            {
                _pageForwarded[page] = false;
                PostPage(page);
            }

            return false;
        }

        uint index = tag - (uint)FirstTransmitPage;
        if (index < (uint)_transmitInFlight.Length && _transmitInFlight[index])
        {
            _transmitInFlight[index] = false;
            _freeTransmit.Push((int)index);
            return true;
        }

        return false;
    }

    // ------------------------------------------------------------------ the channel

    private async Task<Message> RequestAsync(Message request)
    {
        if (_control is not null)
        {
            throw new InvalidOperationException("A netd request is already in progress on this client; await it first.");
        }

        var reply = new TaskCompletionSource<Message>(TaskCreationOptions.RunContinuationsAsynchronously);
        _control = reply;
        try
        {
            Send(request);
            FlushBatch(); // a request leaves now, behind the buffers of this step
            return await reply.Task.WaitAsync(_options.BindTimeout);
        }
        finally
        {
            _control = null;
        }
    }

    // Every post and transmit joins the step's batch (and its kind's open message there), also
    // while older messages wait in the outbox for the channel's window: the batch then follows them
    // into the outbox when the step ends (FlushBatch), in order. Joining only while the outbox was
    // empty left a busy client - whose window is full most of the time - sending one message per
    // buffer.
    private void Send(in Message m)
    {
        ThrowIfFaulted();
        if (_batchCount > 0 && TryJoin(in m))
        {
            return; // joined its kind's open message of this step (flush already scheduled)
        }

        switch (m.Type)
        {
            case NetdMessages.PostSmall:
                _openSmallRun = _batchCount;
                break;
            case NetdMessages.PostPage:
                _openPageRun = _batchCount;
                break;
            case NetdMessages.Transmit:
                _openTransmit = _batchCount;
                break;
        }

        _batch[_batchCount++] = m;
        if (_batchCount == _batch.Length)
        {
            FlushBatch();
        }
        else if (!_batchScheduled)
        {
            // Once per step: the flush runs after the work already queued on this core, so
            // everything the application gives back or sends in between travels together.
            _batchScheduled = _kernel.TryPost(static s => ((NetdClient)s!).FlushBatch(), this);
            if (!_batchScheduled)
            {
                FlushBatch(); // the run queue is full: no batching, never a lost message
            }
        }
    }

    private bool TryJoin(in Message m) => m.Type switch
    {
        NetdMessages.PostSmall => _openSmallRun >= 0 && TryExtendRun(ref _batch[_openSmallRun], in m, NetdLimits.SmallPacket, NetdLimits.MaxSmallRun, NetdMessages.PostSmallRun),
        NetdMessages.PostPage => _openPageRun >= 0 && TryExtendRun(ref _batch[_openPageRun], in m, NetdLimits.PageBuffer, NetdLimits.MaxPageRun, NetdMessages.PostPageRun),
        NetdMessages.Transmit => _openTransmit >= 0 && TryAddTransmit(ref _batch[_openTransmit], in m),
        _ => false,
    };

    // Buffers given back in order (buffer after buffer, tag after tag) travel as one run.
    private static bool TryExtendRun(ref Message run, in Message post, uint stride, int max, ushort runType)
    {
        Descriptor first = Descriptor.From(in run);
        Descriptor next = Descriptor.From(in post);
        uint buffers = first.Length / stride;
        if (next.Region != first.Region || next.Length != stride || first.Length % stride != 0 || buffers >= max
            || next.Offset != first.Offset + first.Length || next.Tag != first.Tag + buffers)
        {
            return false;
        }

        run.SetPayload(first with { Length = first.Length + stride });
        run.Type = runType;
        return true;
    }

    // Frames sent from whole pages of the region travel as one TransmitMany (up to five): each
    // frame is its page and length, and its tag is its page.
    private static bool TryAddTransmit(ref Message open, in Message transmit)
    {
        Descriptor next = Descriptor.From(in transmit);
        if (!TryPackFrame(in next, out uint frame))
        {
            return false;
        }

        return (ushort)open.Word0 == next.Region && TryAppendFrame(ref open, frame);
    }

    // One more frame (page | length << 16) of the open message's region: a Transmit becomes a
    // TransmitMany of two, a TransmitMany takes it while it has room.
    private static bool TryAppendFrame(ref Message open, uint frame)
    {
        if (open.Type == NetdMessages.Transmit)
        {
            Descriptor first = Descriptor.From(in open);
            if (!TryPackFrame(in first, out uint firstFrame))
            {
                return false;
            }

            open = Message.Create(NetdMessages.TransmitMany, first.Region | (2UL << 16) | ((ulong)firstFrame << 32), frame);
            return true;
        }

        int count = (int)((open.Word0 >> 16) & 0xFFFF);
        if (count >= NetdLimits.FramesPerTransmitMany)
        {
            return false;
        }

        int bit = 32 * (count + 1);
        if (bit < 64)
        {
            open.Word0 |= (ulong)frame << bit;
        }
        else if (bit < 128)
        {
            open.Word1 |= (ulong)frame << (bit & 63);
        }
        else
        {
            open.Word2 |= (ulong)frame << (bit & 63);
        }

        open.Word0 = (open.Word0 & ~0xFFFF_0000UL) | ((ulong)(count + 1) << 16);
        return true;
    }

    private static bool TryPackFrame(in Descriptor d, out uint frame)
    {
        uint page = d.Offset / NetdLimits.PageBuffer;
        frame = page | (d.Length << 16);
        return d.Offset % NetdLimits.PageBuffer == 0 && page <= ushort.MaxValue && d.Length <= ushort.MaxValue && d.Tag == page;
    }

    // The buffer at `offset` with `tag` joins the open run at `open` in place when it is the next
    // one (the descriptor's fields read where they lie: Word0 = region | flags << 16 | offset << 32,
    // Word1 = length | tag << 32); false: send it as its own post (which may start a run).
    private bool TryGrowRun(int open, uint offset, uint tag, uint stride, int max, ushort runType)
    {
        if (open < 0 || _fault is not null)
        {
            return false;
        }

        ref Message run = ref _batch[open];
        uint runOffset = (uint)(run.Word0 >> 32), runLength = (uint)run.Word1, runTag = (uint)(run.Word1 >> 32);
        uint buffers = runLength / stride;
        if ((ushort)run.Word0 != _regionId || runLength % stride != 0 || buffers >= (uint)max
            || offset != runOffset + runLength || tag != runTag + buffers)
        {
            return false;
        }

        run.Word1 += stride; // the run's length (the low half), tags unchanged
        run.Type = runType;
        return true;
    }

    private void ClearBatch()
    {
        _batchCount = 0;
        _openSmallRun = _openPageRun = _openTransmit = -1;
    }

    private void Enqueue(in Message m)
    {
        if (!_outbox.TryPush(in m))
        {
            throw new InvalidOperationException("More messages to netd are waiting than this client has buffers: a buffer was released twice.");
        }

        _writerSignal.Set();
    }

    // The step's messages as one batch (one ring-space check, one doorbell); what the channel's
    // window or the ring cannot take now waits in the outbox, in order, for the writer.
    private void FlushBatch()
    {
        _batchScheduled = false;
        int count = _batchCount;
        if (count == 0)
        {
            return;
        }

        ClearBatch();
        int sent = 0;
        if (_outbox.Count == 0)
        {
            try
            {
                sent = _channel.Endpoint.TryWriteBatch(_batch.AsSpan(0, count));
            }
            catch (InvalidOperationException)
            {
                sent = 0; // not connected (netd went away): the outbox's writer reports it
            }
        }

        for (int i = sent; i < count; i++)
        {
            Enqueue(in _batch[i]);
        }
    }

    // The outbox's one writer, for the life of the client: it sleeps on a reusable signal while
    // the outbox is empty and on the channel's own write wait while the window or the ring is
    // full, so a stalled channel costs no allocation either.
    private async Task WriterAsync()
    {
        while (_fault is null && !_disposing)
        {
            try
            {
                if (_outbox.Count == 0)
                {
                    await _writerSignal.WaitAsync(CancellationToken.None);
                    continue;
                }

                CpuDriver.Channels.Endpoint endpoint = _channel.Endpoint;
                try
                {
                    while (_outbox.Count > 0)
                    {
                        if (WriteOutbox(endpoint) == 0 && !await endpoint.WaitToWriteAsync())
                        {
                            throw new ChannelClosedException();
                        }
                    }
                }
                catch (Exception ex) when (ex is ChannelClosedException or InvalidOperationException)
                {
                    if (!_options.Reconnect || _disposing)
                    {
                        Fault(new NetdException("netd closed the channel.", NetdStatus.ProtocolError));
                        return;
                    }

                    // The pump sees the channel close too and binds netd again (the outbox is
                    // cleared then); write again once something new is queued.
                    await _writerSignal.WaitAsync(CancellationToken.None);
                }
            }
            catch (NetdException)
            {
                return; // the client faulted or was disposed: nothing more to write
            }
        }
    }

    // As much of the outbox as the window and the ring take now, as batches (one ring check and
    // one doorbell each); returns how many went.
    private int WriteOutbox(CpuDriver.Channels.Endpoint endpoint)
    {
        int sent = 0;
        while (_outbox.Count > 0)
        {
            ReadOnlySpan<Message> segment = _outbox.FirstSegment;
            int n = endpoint.TryWriteBatch(segment);
            _outbox.DropFirst(n);
            sent += n;
            if (n < segment.Length)
            {
                break;
            }
        }

        return sent;
    }

    // Drains every message the channel holds per wake (the channel's own reusable wait, nothing
    // allocated), then wakes each waiter once for the whole batch.
    private async Task PumpAsync(DomainChannel channel)
    {
        NetdException? gone = null;
        CpuDriver.Channels.Endpoint endpoint = channel.Endpoint;
        try
        {
            while (gone is null)
            {
                if (!await endpoint.WaitToReadAsync())
                {
                    throw new ChannelClosedException();
                }

                bool received = false, freed = false;
                int n;
                while (gone is null && (n = endpoint.TryReadBatch(_inbound)) > 0)
                {
                    for (int i = 0; i < n && gone is null; i++)
                    {
                        gone = OnMessage(in _inbound[i], ref received, ref freed);
                    }
                }

                if (received)
                {
                    _receiveSignal.Set();
                }

                if (freed)
                {
                    _transmitSignal.Set();
                }
            }
        }
        catch (ChannelClosedException)
        {
            gone = new NetdException("netd closed the channel (it stopped or restarted).", NetdStatus.ProtocolError);
        }

        if (!ReferenceEquals(channel, _channel))
        {
            return; // a session already replaced
        }

        gone ??= new NetdException("netd closed the channel (it stopped or restarted).", NetdStatus.ProtocolError);
        _control?.TrySetException(gone);
        if (_options.Reconnect && !_disposing && !_ctx.Stopping.IsCancellationRequested)
        {
            await ReconnectAsync(gone);
        }
        else
        {
            Fault(gone);
        }
    }

    // One completion from netd; returns why netd is gone when it says so.
    private NetdException? OnMessage(in Message m, ref bool received, ref bool freed)
    {
        switch (m.Type)
        {
            case NetdMessages.Received:
                received |= OnReceived(Descriptor.From(in m), (NetdStatus)m.Word2);
                break;
            case NetdMessages.Transmitted:
                if ((NetdStatus)m.Word2 != NetdStatus.Ok)
                {
                    TransmitRefusals++;
                }

                freed |= FreeTransmit(Descriptor.From(in m).Tag);
                break;
            case NetdMessages.TransmittedMany:
                int count = (int)((m.Word0 >> 16) & 0xFFFF);
                if ((ushort)m.Word0 != _regionId || count > NetdLimits.TagsPerTransmittedMany)
                {
                    break; // not this session's region, or malformed: ignored
                }

                for (int i = 0; i < count; i++)
                {
                    freed |= FreeTransmit(NetdLimits.TransmittedTag(in m, i));
                }

                break;
            case NetdMessages.ReceivedMany:
                received |= OnReceivedMany(in m);
                break;
            case NetdMessages.RegionGone:
                return new NetdException("netd can no longer reach this client's region (revoked or netd restarted).", NetdStatus.BadCapability);
            case NetdMessages.RegionReply or NetdMessages.FilterReply or NetdMessages.Ack:
                _control?.TrySetResult(m);
                break;
            default:
                break; // unknown completions are ignored: a newer netd may send more
        }

        return null;
    }

    // Deliveries into buffers that follow each other (the order they were posted): each is the
    // Received of (region, kind, offset + i x stride, length i, tag + i).
    private bool OnReceivedMany(in Message m)
    {
        int count = (int)((m.Word0 >> 16) & 0xFF);
        var kind = (DescriptorFlags)(byte)(m.Word0 >> 24);
        if ((ushort)m.Word0 != _regionId || count > NetdLimits.FramesPerReceivedMany || kind is not (DescriptorFlags.Small or DescriptorFlags.Page))
        {
            return false; // not this session's region, or malformed: ignored
        }

        uint stride = NetdLimits.Stride(kind);
        uint tag = (uint)(m.Word0 >> 32);
        uint offset = (uint)m.Word1;
        bool received = false;
        for (int i = 0; i < count; i++)
        {
            received |= OnReceived(new Descriptor(_regionId, kind, offset + ((uint)i * stride), NetdLimits.ReceivedLength(in m, i), tag + (uint)i), NetdStatus.Ok);
        }

        return received;
    }

    private bool OnReceived(Descriptor d, NetdStatus status)
    {
        bool small = (d.Flags & DescriptorFlags.Small) != 0;
        uint stride = small ? (uint)NetdLimits.SmallPacket : NetdLimits.PageBuffer;
        if (status != NetdStatus.Ok && d.Length > stride)
        {
            // A run of posts refused whole: each of its buffers is ours again and stays unused.
            bool[] kind = small ? _smallPosted : _pagePosted;
            for (uint k = 0; k < d.Length / stride; k++)
            {
                if (d.Tag + k < (uint)kind.Length)
                {
                    kind[d.Tag + k] = false;
                }
            }

            return false;
        }

        int index = (int)d.Tag;
        bool[] posted = (d.Flags & DescriptorFlags.Small) != 0 ? _smallPosted : _pagePosted;
        if ((uint)index >= (uint)posted.Length || !posted[index])
        {
            return false; // not a buffer netd holds: ignored
        }

        posted[index] = false;
        if (status != NetdStatus.Ok)
        {
            return false; // a refused post: the buffer is ours again and stays unused
        }

        _received.Enqueue(d);
        return true;
    }

    private void Fault(Exception ex)
    {
        _fault ??= ex;
        _control?.TrySetException(ex);
        _receiveSignal.Fail(ex);
        _transmitSignal.Fail(ex);
        _writerSignal.Fail(ex);
    }

    private void ThrowIfFaulted()
    {
        if (_fault is not null)
        {
            throw _fault;
        }
    }

    private static void Check(in Message reply, NetdStatus status, string what)
    {
        if (status != NetdStatus.Ok)
        {
            throw new NetdException($"netd refused to {what}: {status}.", status);
        }
    }

    /// <summary>Closes the channel and deletes the region (netd loses access to it at once).</summary>
    public async ValueTask DisposeAsync()
    {
        // What this step gave back or sent leaves before the channel closes (as an unbatched send would have).
        if (_fault is null && !_disposing)
        {
            FlushBatch();
        }

        _disposing = true;
        _channel.Endpoint.Close();
        _writerSignal.Fail(new NetdException("The netd client was disposed.", NetdStatus.ProtocolError));
        try
        {
            await _pump;
        }
        catch (Exception ex) when (ex is ChannelClosedException or NetdException)
        {
        }

        if (!_ctx.Capabilities.IsEmpty(_regionSlot))
        {
            _ctx.Capabilities.Delete(_regionSlot);
        }
    }
}

/// <summary>A received frame: its bytes stay in the consumer's region until <see cref="NetdClient.Release"/>.</summary>
public readonly struct ReceivedFrame
{
    private readonly NetdClient? _client;

    internal ReceivedFrame(NetdClient client, Descriptor descriptor)
    {
        _client = client;
        Descriptor = descriptor;
    }

    /// <summary>The buffer and the frame's length.</summary>
    public Descriptor Descriptor { get; }

    /// <summary>The frame's bytes.</summary>
    public ReadOnlySpan<byte> Span => _client is null ? default : _client.Bytes(Descriptor);

    /// <summary>
    /// The whole buffer the frame is in (its page, or its small slot), writable: to rewrite the
    /// frame in place before <see cref="NetdClient.Forward"/> sends it on. Valid until the buffer is
    /// given back.
    /// </summary>
    public Span<byte> WritableSpan => _client is null ? default : _client.WritableBytes(Descriptor);

    /// <summary>True when it arrived in a small (128-byte) buffer.</summary>
    public bool IsSmall => (Descriptor.Flags & DescriptorFlags.Small) != 0;
}

/// <summary>A transmit page the consumer owns until it hands it to <see cref="NetdClient.Transmit"/>.</summary>
public readonly struct TransmitBuffer
{
    private readonly NetdClient? _client;

    internal TransmitBuffer(NetdClient client, int index)
    {
        _client = client;
        Index = index;
    }

    internal int Index { get; }

    /// <summary>The page to build the frame in.</summary>
    public Span<byte> Span => _client is null ? default : _client.TransmitSpan(Index);
}

/// <summary>
/// A wake-up for the one task waiting on a <see cref="NetdClient"/> (for a received frame, for a
/// free transmit page), reused for every wait: the kernel's own pooled operation, whose
/// continuation is queued on the core's run queue as a struct, so a wait costs no allocation (a
/// cancellation that fires allocates its one message to the core). Core thread only.
/// </summary>
internal sealed class ClientSignal(CoreKernel kernel)
{
    private readonly CoreKernel _kernel = kernel;
    private readonly CoreOperation<bool> _operation = new(kernel);
    private bool _waiting;

    /// <summary>Completes at the next <see cref="Set"/> or <see cref="Fail"/>, or when <paramref name="cancellationToken"/> fires.</summary>
    public ValueTask WaitAsync(CancellationToken cancellationToken)
    {
        if (_waiting)
        {
            throw new InvalidOperationException("Another task is already waiting on this netd client; one waiter at a time.");
        }

        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled(cancellationToken);
        }

        short version = _operation.Reset();
        _waiting = true;
        if (cancellationToken.CanBeCanceled)
        {
            // The token's registration nodes are reused by its source; nothing is allocated unless it fires.
            _operation.AttachRegistration(cancellationToken.UnsafeRegister(static (s, token) =>
            {
                var signal = (ClientSignal)s!;
                _ = signal._kernel.TryPostInternal(static x =>
                {
                    var (sig, v, t) = ((ClientSignal, short, CancellationToken))x!;
                    sig.Cancel(v, t);
                }, (signal, signal._operation.Version, token));
            }, this));
        }

        return new ValueTask(_operation, version);
    }

    /// <summary>Wakes the waiter, if any.</summary>
    public void Set()
    {
        if (_waiting)
        {
            _waiting = false;
            _operation.SetResult(true);
        }
    }

    /// <summary>Wakes the waiter, if any, with <paramref name="error"/>.</summary>
    public void Fail(Exception error)
    {
        if (_waiting)
        {
            _waiting = false;
            _operation.SetException(error);
        }
    }

    private void Cancel(short version, CancellationToken token)
    {
        if (_waiting && _operation.Version == version)
        {
            _waiting = false;
            _operation.SetException(new OperationCanceledException(token));
        }
    }
}
