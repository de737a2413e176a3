using System.Threading.Channels;
using Multikernel.CpuDriver.Capabilities;
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
public sealed class NetdClient : IAsyncDisposable
{
    private readonly DomainContext _ctx;
    private DomainChannel _channel;
    private readonly NetdClientOptions _options;
    private readonly int _regionSlot;
    private readonly FrameHandle _region;
    private readonly Queue<Descriptor> _received;
    private readonly Stack<int> _freeTransmit;
    private readonly Queue<Message> _outbox;
    private readonly Dictionary<int, (int Slot, byte[] Binary, string Text)> _filters = [];
    private int _nextFilterId = 1;

    // Where each buffer is, so a restarted netd gets back exactly those it held: a receive buffer
    // is posted (at netd) or with this client (received, not yet released); a transmit page is in
    // flight (at netd) or with this client.
    private readonly bool[] _pagePosted;
    private readonly bool[] _smallPosted;
    private readonly bool[] _transmitInFlight;
    private bool _reconnecting;
    private bool _disposing;
    private readonly int _outboxLimit;
    private ushort _regionId;
    private TaskCompletionSource<Message>? _control;
    private TaskCompletionSource? _receiveSignal;
    private TaskCompletionSource? _transmitSignal;
    private bool _flushing;
    private Exception? _fault;
    private Task _pump = Task.CompletedTask;

    private NetdClient(DomainContext ctx, DomainChannel channel, NetdClientOptions options, int regionSlot)
    {
        _ctx = ctx;
        _channel = channel;
        _options = options;
        _regionSlot = regionSlot;
        _region = ctx.Capabilities.GetFrame(regionSlot);
        _received = new Queue<Descriptor>(options.ReceivePages + options.SmallBuffers);
        _pagePosted = new bool[options.ReceivePages];
        _smallPosted = new bool[options.SmallBuffers];
        _transmitInFlight = new bool[options.TransmitPages];
        Array.Fill(_pagePosted, true);
        Array.Fill(_smallPosted, true);
        _freeTransmit = new Stack<int>(options.TransmitPages);
        for (int i = options.TransmitPages - 1; i >= 0; i--)
        {
            _freeTransmit.Push(i);
        }

        // Every message this client sends names a buffer it owns (posts, transmits) or is one of
        // its own few requests, so the outbox never holds more than that.
        _outboxLimit = options.ReceivePages + options.SmallBuffers + options.TransmitPages + 16;
        _outbox = new Queue<Message>(64);
    }

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
            for (int i = 0; i < _transmitInFlight.Length; i++)
            {
                if (_transmitInFlight[i])
                {
                    _transmitInFlight[i] = false;
                    _freeTransmit.Push(i);
                }
            }

            Signal(ref _transmitSignal);
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

    /// <summary>Waits until a frame is received (true) or netd went away (throws).</summary>
    public async ValueTask WaitToReceiveAsync(CancellationToken cancellationToken = default)
    {
        while (_received.Count == 0)
        {
            ThrowIfFaulted();
            _receiveSignal ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            await _receiveSignal.Task.WaitAsync(cancellationToken);
        }
    }

    internal ReadOnlySpan<byte> Bytes(Descriptor d) => _region.ReadOnlySpan.Slice((int)d.Offset, (int)d.Length);

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

    private void PostPage(int index)
    {
        _pagePosted[index] = true;
        if (!_reconnecting)
        {
            Send(new Descriptor(_regionId, DescriptorFlags.Page, (uint)((1 + index) * PhysicalMemory.FrameSize), PhysicalMemory.FrameSize, (uint)index).ToMessage(NetdMessages.PostPage));
        }
    }

    private void PostSmall(int index)
    {
        _smallPosted[index] = true;
        if (!_reconnecting)
        {
            uint offset = (uint)((1 + _options.ReceivePages) * PhysicalMemory.FrameSize + index * NetdLimits.SmallPacket);
            Send(new Descriptor(_regionId, DescriptorFlags.Small, offset, NetdLimits.SmallPacket, (uint)index).ToMessage(NetdMessages.PostSmall));
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

    /// <summary>Waits until a transmit page is free.</summary>
    public async ValueTask<TransmitBuffer> GetTransmitBufferAsync(CancellationToken cancellationToken = default)
    {
        while (true)
        {
            if (TryGetTransmitBuffer(out TransmitBuffer buffer))
            {
                return buffer;
            }

            _transmitSignal ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            await _transmitSignal.Task.WaitAsync(cancellationToken);
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
            Signal(ref _transmitSignal);
            return;
        }

        _transmitInFlight[buffer.Index] = true;
        Send(new Descriptor(_regionId, DescriptorFlags.None, (uint)TransmitOffset(buffer.Index), (uint)length, (uint)buffer.Index).ToMessage(NetdMessages.Transmit));
    }

    /// <summary>Transmit pages netd has refused (bad frame, spoofed source); each refusal also frees its page.</summary>
    public long TransmitRefusals { get; private set; }

    internal Span<byte> TransmitSpan(int index) => _region.Span.Slice(TransmitOffset(index), PhysicalMemory.FrameSize);

    private int TransmitOffset(int index) => (1 + _options.ReceivePages + _options.SmallPages + index) * PhysicalMemory.FrameSize;

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
            return await reply.Task.WaitAsync(_options.BindTimeout);
        }
        finally
        {
            _control = null;
        }
    }

    private void Send(in Message m)
    {
        ThrowIfFaulted();
        if (!_flushing && _outbox.Count == 0 && _channel.Endpoint.TryWrite(in m))
        {
            return;
        }

        if (_outbox.Count >= _outboxLimit)
        {
            throw new InvalidOperationException("More messages to netd are waiting than this client has buffers: a buffer was released twice.");
        }

        _outbox.Enqueue(m);
        if (!_flushing)
        {
            _ = FlushAsync();
        }
    }

    private async Task FlushAsync()
    {
        _flushing = true;
        try
        {
            while (_outbox.TryPeek(out Message m))
            {
                await _channel.Endpoint.WriteAsync(in m);
                _outbox.Dequeue();
            }
        }
        catch (Exception ex) when (ex is ChannelClosedException or InvalidOperationException)
        {
            if (!_options.Reconnect || _disposing)
            {
                Fault(new NetdException("netd closed the channel.", NetdStatus.ProtocolError));
            }

            // Otherwise the pump sees the channel close too and binds netd again.
        }
        finally
        {
            _flushing = false;
        }
    }

    private async Task PumpAsync(DomainChannel channel)
    {
        NetdException gone;
        try
        {
            while (true)
            {
                Message m = await channel.Endpoint.ReadAsync();
                switch (m.Type)
                {
                    case NetdMessages.Received:
                        OnReceived(Descriptor.From(in m), (NetdStatus)m.Word2);
                        break;
                    case NetdMessages.Transmitted:
                        if ((NetdStatus)m.Word2 != NetdStatus.Ok)
                        {
                            TransmitRefusals++;
                        }

                        int index = (int)Descriptor.From(in m).Tag;
                        if ((uint)index < (uint)_transmitInFlight.Length && _transmitInFlight[index])
                        {
                            _transmitInFlight[index] = false;
                            _freeTransmit.Push(index);
                            Signal(ref _transmitSignal);
                        }

                        break;
                    case NetdMessages.RegionGone:
                        gone = new NetdException("netd can no longer reach this client's region (revoked or netd restarted).", NetdStatus.BadCapability);
                        goto Gone;
                    case NetdMessages.RegionReply or NetdMessages.FilterReply or NetdMessages.Ack:
                        _control?.TrySetResult(m);
                        break;
                    default:
                        break; // unknown completions are ignored: a newer netd may send more
                }
            }
        }
        catch (ChannelClosedException)
        {
            gone = new NetdException("netd closed the channel (it stopped or restarted).", NetdStatus.ProtocolError);
        }

    Gone:
        if (!ReferenceEquals(channel, _channel))
        {
            return; // a session already replaced
        }

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

    private void OnReceived(Descriptor d, NetdStatus status)
    {
        int index = (int)d.Tag;
        bool[] posted = (d.Flags & DescriptorFlags.Small) != 0 ? _smallPosted : _pagePosted;
        if ((uint)index >= (uint)posted.Length || !posted[index])
        {
            return; // not a buffer netd holds: ignored
        }

        posted[index] = false;
        if (status != NetdStatus.Ok)
        {
            return; // a refused post: the buffer is ours again and stays unused
        }

        _received.Enqueue(d);
        Signal(ref _receiveSignal);
    }

    private static void Signal(ref TaskCompletionSource? signal)
    {
        TaskCompletionSource? s = signal;
        signal = null;
        s?.TrySetResult();
    }

    private void Fault(Exception ex)
    {
        _fault ??= ex;
        _control?.TrySetException(ex);
        Signal(ref _receiveSignal);
        Signal(ref _transmitSignal);
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
        _disposing = true;
        _channel.Endpoint.Close();
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
