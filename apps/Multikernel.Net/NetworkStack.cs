using System.Security.Cryptography;
using Multikernel.Net.Tcp;
using Multikernel.Net.Udp;
using Multikernel.Net.Wire;
using Multikernel.Netd.Wire;

namespace Multikernel.Net;

/// <summary>
/// One library-OS TCP/IP stack: Ethernet, ARP, IPv4 (with bounded reassembly), ICMP echo, UDP
/// and TCP for one IPv4 address on one link port. One instance per application domain, and
/// single-threaded: every call — <see cref="Receive(ReadOnlySpan{byte})"/> from below, socket
/// calls from the application, timer callbacks from the <see cref="TimeProvider"/> — must come
/// on the owning core's thread, so the stack takes no locks. All work is driven by received
/// frames and timers; nothing here blocks.
/// </summary>
public sealed partial class NetworkStack : IDisposable
{
    private readonly ILinkPort _link;
    private readonly byte[] _tx;
    private readonly byte[] _large;
    private readonly BufferPool _pool;
    private readonly long _start;
    private readonly byte[] _isnSecret;
    private readonly ArpCache _arp;
    private readonly Reassembler _reassembler;
    private readonly Dictionary<ushort, UdpSocket> _udp = [];
    private ushort _ipIdentification;
    private readonly SynchronizationContext _home;
    private readonly int _threadId;
    private bool _started;
    private bool _disposed;
    private List<Tcp.TcpConnection> _linkWaiters = [];
    private List<Tcp.TcpConnection> _linkWaking = [];
    private List<Tcp.TcpConnection> _ackAtBurstEnd = [];
    private List<Tcp.TcpConnection> _acking = [];
    private bool _inReceiveBurst;
    private ITimer? _linkRetry;
    private readonly byte[] _deferred = new byte[DeferredFrames * DeferredFrameBytes];
    private readonly int[] _deferredLengths = new int[DeferredFrames];
    private int _deferredCount;

    /// <summary>
    /// Creates a stack on the calling thread, which becomes its thread; call <see cref="Start"/>
    /// to announce it. <paramref name="context"/> is the thread's synchronization context — on a
    /// core, the core's own (the default: <see cref="SynchronizationContext.Current"/>); every
    /// socket continuation is posted to it and adapters marshal calls from other threads onto it.
    /// </summary>
    public NetworkStack(NetworkStackOptions options, ILinkPort link, TimeProvider time, SynchronizationContext? context = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(link);
        ArgumentNullException.ThrowIfNull(time);
        context ??= SynchronizationContext.Current;
        if (context is null || context.GetType() == typeof(SynchronizationContext))
        {
            throw new InvalidOperationException("A network stack runs on one thread with its own synchronization context (a core's): create it on its core, or pass the context.");
        }

        options.Validate();
        if (link.Mtu is < 576 or > 9000)
        {
            throw new ArgumentException($"The link's MTU must be 576..9000 (was {link.Mtu}).", nameof(link));
        }

        _home = context;
        Core = context is CpuDriver.Kernel.CoreSynchronizationContext core ? core.CoreId : -1;
        _threadId = Environment.CurrentManagedThreadId;
        _shutdown = new AsyncSlot<bool>(context);
        Options = options;
        _link = link;
        Time = time;
        Mac = link.Mac;
        Address = options.Address;
        Mtu = link.Mtu;
        _tx = new byte[EthernetFrame.HeaderLength + Mtu];
        _large = new byte[ushort.MaxValue];
        _pool = new BufferPool(options.ReceiveBuffers, EthernetFrame.HeaderLength + Mtu);
        _start = time.GetTimestamp();
        _isnSecret = options.IsnSecret is { } secret ? (byte[])secret.Clone() : RandomNumberGenerator.GetBytes(32);
        _ipIdentification = (ushort)RandomNumberGenerator.GetInt32(ushort.MaxValue + 1);
        _arp = new ArpCache(this);
        _reassembler = new Reassembler(this);
        _tcp = new TcpTable(this);
    }

    public NetworkStackOptions Options { get; }

    public TimeProvider Time { get; }

    public NetworkCounters Counters { get; } = new();

    public Ipv4Address Address { get; }

    /// <summary>The core the stack runs on (from its synchronization context), or -1 when it is not a core's.</summary>
    public int Core { get; }

    /// <summary><see cref="Address"/> as text, made once (a span tag).</summary>
    internal string AddressText => _addressText ??= Address.ToString();

    private string? _addressText;

    public MacAddress Mac { get; }

    /// <summary>The link's IP MTU.</summary>
    public int Mtu { get; }

    /// <summary>The MSS this stack offers: the MTU less 40 bytes of IP and TCP header.</summary>
    public int MaxSegmentSize => Mtu - Ipv4Packet.MinHeaderLength - TcpSegment.MinHeaderLength;

    /// <summary>Free buffers in the stack's receive pool.</summary>
    public int FreeReceiveBuffers => _pool.Available;

    internal byte[] IsnSecret => _isnSecret;

    /// <summary>The stack's home: the synchronization context of its thread (its core).</summary>
    internal SynchronizationContext Home => _home;

    /// <summary>True on the stack's own thread, the only one that may touch its state.</summary>
    public bool IsOnStackThread => Environment.CurrentManagedThreadId == _threadId;

    /// <summary>Refuses a call from another thread with a clear error (the stack takes no locks).</summary>
    internal void ThrowIfNotOnStackThread()
    {
        if (Environment.CurrentManagedThreadId != _threadId)
        {
            ThrowWrongThread();
        }
    }

    private static void ThrowWrongThread() =>
        throw new InvalidOperationException("A network stack is used only on its own core's thread; from other threads use a connection's AsStream()/AsPipe() adapters, which marshal onto the core.");

    /// <summary>Milliseconds since the stack was created (the clock of every TCP timer and timestamp).</summary>
    internal long NowMs => (long)Time.GetElapsedTime(_start).TotalMilliseconds;

    /// <summary>Microseconds since the stack was created (the RFC 6528 ISN clock).</summary>
    internal long NowMicroseconds => (long)(Time.GetElapsedTime(_start).Ticks / 10);

    internal ArpCache Arp => _arp;

    /// <summary>Announces the stack with a gratuitous ARP (RFC 5227 §3 announcement), so switches and neighbours learn it at once.</summary>
    public void Start()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_started)
        {
            return;
        }

        _started = true;
        Options.Metrics?.Add(this);
        _arp.SendRequest(Address, gratuitous: true);
    }

    /// <summary>
    /// Processes one received Ethernet frame given as a span: it is copied once into a buffer of
    /// the stack's own pool (dropped and counted when the pool is empty). Never throws for any
    /// content.
    /// </summary>
    public void Receive(ReadOnlySpan<byte> frame)
    {
        ThrowIfNotOnStackThread();
        if (_disposed)
        {
            return;
        }

        if (frame.Length > _pool.BufferSize)
        {
            Counters.FramesReceivedField++;
            Counters.Drop(DropReason.BadEthernet);
            return;
        }

        BufferPool.PooledBuffer? buffer = _pool.TryRent();
        if (buffer is null)
        {
            Counters.FramesReceivedField++;
            Counters.Drop(DropReason.NoBuffer);
            return;
        }

        frame.CopyTo(buffer.Array);
        Receive(buffer, frame.Length);
    }

    /// <summary>
    /// Processes one received frame in place: the first <paramref name="length"/> bytes of
    /// <paramref name="frame"/>. The caller hands over one reference; the stack keeps further
    /// references for data it queues (so the page stays until the application reads it) and
    /// releases the handed-over one before returning. Never throws for any content.
    /// </summary>
    public void Receive(PacketBuffer frame, int length)
    {
        ArgumentNullException.ThrowIfNull(frame);
        try
        {
            if (!_disposed && (uint)length <= (uint)frame.Memory.Length)
            {
                Counters.FramesReceivedField++;
                ReceiveFrame(frame, length);
            }
        }
        finally
        {
            frame.Release();
        }
    }

    private void ReceiveFrame(PacketBuffer buffer, int length)
    {
        ReadOnlySpan<byte> bytes = buffer.Memory.Span[..length];
        if (EthernetFrame.TryParse(bytes, out EthernetFrame eth) != WireError.None)
        {
            Counters.Drop(DropReason.BadEthernet);
            return;
        }

        MacAddress to = eth.Destination;
        if (to != Mac && !to.IsBroadcast)
        {
            Counters.Drop(DropReason.NotForUs);
            return;
        }

        switch (eth.EtherType)
        {
            case EtherType.Arp:
                _arp.Receive(eth.Payload);
                break;
            case EtherType.Ipv4:
                ReceiveIpv4(buffer, EthernetFrame.HeaderLength, length - EthernetFrame.HeaderLength, eth.Source);
                break;
            default:
                Counters.Drop(DropReason.UnknownEtherType);
                break;
        }
    }

    private void ReceiveIpv4(PacketBuffer buffer, int offset, int length, MacAddress sourceMac)
    {
        ReadOnlySpan<byte> bytes = buffer.Memory.Span.Slice(offset, length);
        WireError error = Ipv4Packet.TryParse(bytes, out Ipv4Packet ip);
        if (error != WireError.None)
        {
            Counters.Drop(error == WireError.BadChecksum ? DropReason.BadIpv4Checksum : DropReason.BadIpv4);
            return;
        }

        Ipv4Address destination = ip.Destination;
        bool broadcast = destination.IsBroadcast || IsSubnetBroadcast(destination);
        if (destination != Address && !broadcast)
        {
            Counters.Drop(DropReason.NotForUs);
            return;
        }

        Ipv4Address source = ip.Source;
        if (source.IsBroadcast || source.IsMulticast)
        {
            Counters.Drop(DropReason.BadIpv4);
            return;
        }

        // A host that talks to us is a neighbour we will answer: remember its address only if
        // we already have it (RFC 826's merge rule keeps spoofed datagrams from filling the cache).
        _ = sourceMac;
        if (ip.IsFragment)
        {
            _reassembler.Add(ip, broadcast);
            return;
        }

        Deliver(source, destination, ip.Protocol, broadcast, buffer, offset + ip.HeaderLength, ip.Payload.Length);
    }

    internal bool IsSubnetBroadcast(Ipv4Address a)
    {
        uint host = uint.MaxValue >> Options.PrefixLength;
        return a.SameSubnet(Address, Options.PrefixLength) && (a.Value & host) == host;
    }

    /// <summary>Hands a whole (possibly reassembled) IP payload to its protocol.</summary>
    internal void Deliver(Ipv4Address source, Ipv4Address destination, IpProtocol protocol, bool broadcast, PacketBuffer buffer, int offset, int length)
    {
        switch (protocol)
        {
            case IpProtocol.Icmp:
                ReceiveIcmp(source, broadcast, buffer.Memory.Span.Slice(offset, length));
                break;
            case IpProtocol.Udp:
                ReceiveUdp(source, destination, buffer, offset, length);
                break;
            case IpProtocol.Tcp:
                if (broadcast)
                {
                    Counters.Drop(DropReason.NotForUs);
                    return;
                }

                _tcp.Receive(source, buffer, offset, length);
                break;
            default:
                Counters.Drop(DropReason.UnknownProtocol);
                break;
        }
    }

    private void ReceiveIcmp(Ipv4Address source, bool broadcast, ReadOnlySpan<byte> bytes)
    {
        if (IcmpPacket.TryParse(bytes, out IcmpPacket icmp) != WireError.None)
        {
            Counters.Drop(DropReason.BadIcmp);
            return;
        }

        // RFC 1122 §3.2.2.6: a host may ignore broadcast echo requests (smurf amplification).
        if (icmp.Type != IcmpType.EchoRequest || icmp.Code != 0 || broadcast)
        {
            Counters.Drop(DropReason.BadIcmp);
            return;
        }

        Span<byte> reply = _large.AsSpan(0, icmp.Length);
        icmp.Data.CopyTo(reply[IcmpPacket.HeaderLength..]);
        IcmpPacket.WriteEcho(reply, IcmpType.EchoReply, icmp.Identifier, icmp.SequenceNumber, icmp.Data.Length);
        if (SendIpv4(source, IpProtocol.Icmp, reply))
        {
            Counters.IcmpEchoRepliesField++;
        }
    }

    private void ReceiveUdp(Ipv4Address source, Ipv4Address destination, PacketBuffer buffer, int offset, int length)
    {
        ReadOnlySpan<byte> bytes = buffer.Memory.Span.Slice(offset, length);
        if (UdpDatagram.TryParse(bytes, out UdpDatagram udp) != WireError.None || !udp.IsChecksumValid(source, destination) || udp.SourcePort == 0)
        {
            Counters.Drop(DropReason.BadUdp);
            return;
        }

        if (!_udp.TryGetValue(udp.DestinationPort, out UdpSocket? socket))
        {
            Counters.Drop(DropReason.UdpNoListener);
            return;
        }

        Counters.UdpReceivedField++;
        socket.Enqueue(new Ipv4Endpoint(source, udp.SourcePort), new BufferSlice(buffer, offset + UdpDatagram.HeaderLength, udp.Payload.Length));
    }

    /// <summary>Opens a UDP socket on <paramref name="port"/> (0 picks an ephemeral port).</summary>
    public UdpSocket BindUdp(ushort port)
    {
        ThrowIfNotOnStackThread();
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (port == 0)
        {
            for (int attempt = 0; attempt < 64 && port == 0; attempt++)
            {
                ushort candidate = (ushort)RandomNumberGenerator.GetInt32(49152, 65536);
                if (!_udp.ContainsKey(candidate))
                {
                    port = candidate;
                }
            }

            if (port == 0)
            {
                throw new InvalidOperationException("No free ephemeral UDP port was found.");
            }
        }

        if (_udp.ContainsKey(port))
        {
            throw new InvalidOperationException($"UDP port {port} is already bound on {Address}.");
        }

        var socket = new UdpSocket(this, port);
        _udp.Add(port, socket);
        return socket;
    }

    internal void UnbindUdp(UdpSocket socket) => _udp.Remove(socket.LocalPort);

    internal bool SendUdp(ushort sourcePort, Ipv4Endpoint to, ReadOnlySpan<byte> payload)
    {
        if (payload.Length > ushort.MaxValue - UdpDatagram.HeaderLength - Ipv4Packet.MinHeaderLength)
        {
            throw new ArgumentException($"A UDP payload is at most {ushort.MaxValue - UdpDatagram.HeaderLength - Ipv4Packet.MinHeaderLength} bytes (was {payload.Length}).", nameof(payload));
        }

        Span<byte> d = _large.AsSpan(0, UdpDatagram.HeaderLength + payload.Length);
        payload.CopyTo(d[UdpDatagram.HeaderLength..]);
        UdpDatagram.Write(d, Address, to.Address, sourcePort, to.Port, payload.Length);
        bool sent = SendIpv4(to.Address, IpProtocol.Udp, d);
        if (sent)
        {
            Counters.UdpSentField++;
        }

        return sent;
    }

    /// <summary>Room for an IP payload that goes out in one frame (<see cref="SendIpv4InPlace"/>).</summary>
    internal Span<byte> TransmitPayload => _tx.AsSpan(EthernetFrame.HeaderLength + Ipv4Packet.MinHeaderLength, Mtu - Ipv4Packet.MinHeaderLength);

    /// <summary>Sends the first <paramref name="length"/> bytes of <see cref="TransmitPayload"/> as one unfragmented datagram.</summary>
    internal bool SendIpv4InPlace(Ipv4Address to, IpProtocol protocol, int length)
    {
        Ipv4Packet.WriteHeader(_tx.AsSpan(EthernetFrame.HeaderLength), Address, to, protocol, length, _ipIdentification++, Options.TimeToLive, dontFragment: true);
        return SendFrame(to, _tx.AsSpan(0, EthernetFrame.HeaderLength + Ipv4Packet.MinHeaderLength + length));
    }

    /// <summary>Sends a datagram, in fragments when it does not fit the MTU (RFC 791 §3.2).</summary>
    internal bool SendIpv4(Ipv4Address to, IpProtocol protocol, ReadOnlySpan<byte> payload)
    {
        int room = Mtu - Ipv4Packet.MinHeaderLength;
        if (payload.Length <= room)
        {
            payload.CopyTo(TransmitPayload);
            Ipv4Packet.WriteHeader(_tx.AsSpan(EthernetFrame.HeaderLength), Address, to, protocol, payload.Length, _ipIdentification++, Options.TimeToLive);
            return SendFrame(to, _tx.AsSpan(0, EthernetFrame.HeaderLength + Ipv4Packet.MinHeaderLength + payload.Length));
        }

        int chunk = room & ~7;
        ushort id = _ipIdentification++;
        bool all = true;
        for (int offset = 0; offset < payload.Length; offset += chunk)
        {
            int n = Math.Min(chunk, payload.Length - offset);
            payload.Slice(offset, n).CopyTo(TransmitPayload);
            Ipv4Packet.WriteHeader(_tx.AsSpan(EthernetFrame.HeaderLength), Address, to, protocol, n, id, Options.TimeToLive,
                fragmentOffset: offset, moreFragments: offset + n < payload.Length);
            all &= SendFrame(to, _tx.AsSpan(0, EthernetFrame.HeaderLength + Ipv4Packet.MinHeaderLength + n));
            Counters.FragmentsSentField++;
        }

        return all;
    }

    /// <summary>Fills the Ethernet header of an IPv4 frame and transmits it, or parks it until ARP resolves the next hop.</summary>
    private bool SendFrame(Ipv4Address to, Span<byte> frame)
    {
        Ipv4Address nextHop;
        if (to.IsBroadcast || IsSubnetBroadcast(to))
        {
            EthernetFrame.WriteHeader(frame, MacAddress.Broadcast, Mac, EtherType.Ipv4);
            return TransmitFrame(frame);
        }

        if (to.SameSubnet(Address, Options.PrefixLength))
        {
            nextHop = to;
        }
        else if (!Options.Gateway.IsAny)
        {
            nextHop = Options.Gateway;
        }
        else
        {
            Counters.Drop(DropReason.NoRoute);
            return false;
        }

        if (_arp.TryLookup(nextHop, out MacAddress mac))
        {
            EthernetFrame.WriteHeader(frame, mac, Mac, EtherType.Ipv4);
            return TransmitFrame(frame);
        }

        EthernetFrame.WriteHeader(frame, MacAddress.Zero, Mac, EtherType.Ipv4);
        return _arp.Park(nextHop, frame);
    }

    internal bool TransmitFrame(ReadOnlySpan<byte> frame)
    {
        if (_deferredCount > 0)
        {
            FlushDeferred(); // frames deferred earlier go first
        }

        if (_deferredCount == 0 && _link.TryTransmit(frame))
        {
            Counters.FramesSentField++;
            return true;
        }

        // A full link. A control frame (a RST, FIN, pure ACK, ARP: at most DeferredFrameBytes) is
        // kept and sent when the link drains: a RST goes out once, and a lost one would leave its
        // peer hanging. Data is held back before it gets here (ILinkPort.CanTransmit); anything
        // else that meets a full link is dropped and counted, as a full NIC ring would.
        if (frame.Length <= DeferredFrameBytes && _deferredCount < DeferredFrames)
        {
            frame.CopyTo(_deferred.AsSpan(_deferredCount * DeferredFrameBytes, DeferredFrameBytes));
            _deferredLengths[_deferredCount++] = frame.Length;
            Counters.FramesDeferredField++;
            ArmLinkRetry();
            return true;
        }

        Counters.Drop(DropReason.TransmitQueueFull);
        return false;
    }

    /// <summary>Control frames a stack keeps for a full link before it drops more (see <see cref="TransmitFrame"/>). 16.</summary>
    public const int DeferredFrames = 16;

    /// <summary>The largest frame that may be deferred: headers with options, no payload. 128 bytes.</summary>
    public const int DeferredFrameBytes = 128;

    // Sends deferred frames in order while the link takes them.
    private void FlushDeferred()
    {
        int sent = 0;
        while (sent < _deferredCount && _link.TryTransmit(_deferred.AsSpan(sent * DeferredFrameBytes, _deferredLengths[sent])))
        {
            Counters.FramesSentField++;
            sent++;
        }

        if (sent == 0)
        {
            return;
        }

        int left = _deferredCount - sent;
        _deferred.AsSpan(sent * DeferredFrameBytes, left * DeferredFrameBytes).CopyTo(_deferred);
        Array.Copy(_deferredLengths, sent, _deferredLengths, 0, left);
        _deferredCount = left;
    }

    private void ArmLinkRetry()
    {
        _linkRetry ??= Time.CreateTimer(static s => ((NetworkStack)s!).OnLinkWritable(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        _linkRetry.Change(LinkRetryInterval, Timeout.InfiniteTimeSpan);
    }

    // ---------------------------------------------------------------- holding data back for the link

    /// <summary>True when the link takes a frame of <paramref name="frameLength"/> bytes now (see <see cref="ILinkPort.CanTransmit"/>).</summary>
    internal bool LinkCanTake(int frameLength)
    {
        // Deferred control frames go first (TransmitFrame flushes them before anything else): a
        // frame that fits the link now but not after them would be dropped there, so while any
        // remain the answer is no.
        if (_deferredCount > 0)
        {
            FlushDeferred();
        }

        return _deferredCount == 0 && _link.CanTransmit(frameLength);
    }

    /// <summary>
    /// <paramref name="connection"/> has data the link cannot take now: it is called back from
    /// <see cref="OnLinkWritable"/>. Each connection waits at most once, so the list is bounded by
    /// the connection table; a retry timer (<see cref="LinkRetryInterval"/>) covers a link that
    /// drains while nothing arrives.
    /// </summary>
    internal void WaitForLink(Tcp.TcpConnection connection)
    {
        if (connection.WaitingForLink)
        {
            return;
        }

        connection.WaitingForLink = true;
        _linkWaiters.Add(connection);
        Counters.LinkWaitsField++;
        ArmLinkRetry();
    }

    /// <summary>How soon connections held back by a full link try again when nothing else wakes them. 1 ms.</summary>
    public static readonly TimeSpan LinkRetryInterval = TimeSpan.FromMilliseconds(1);

    // ---------------------------------------------------------------- receive bursts

    /// <summary>
    /// The frames passed to <see cref="Receive(ReadOnlySpan{byte})"/> until <see cref="EndReceiveBurst"/>
    /// arrived together (one batch from the link): connections acknowledge in-order data once at
    /// the end of the burst instead of every second segment (at most
    /// <see cref="NetworkStackOptions.MaxSegmentsPerAck"/> segments per ACK). Stack thread.
    /// </summary>
    public void BeginReceiveBurst()
    {
        ThrowIfNotOnStackThread();
        _inReceiveBurst = true;
    }

    /// <summary>
    /// Ends the burst <see cref="BeginReceiveBurst"/> started: sends the acknowledgments it
    /// deferred, then lets connections held back by the link go (<see cref="OnLinkWritable"/>).
    /// Stack thread.
    /// </summary>
    public void EndReceiveBurst()
    {
        ThrowIfNotOnStackThread();
        _inReceiveBurst = false;
        if (_ackAtBurstEnd.Count > 0 && !_disposed)
        {
            (_ackAtBurstEnd, _acking) = (_acking, _ackAtBurstEnd);
            foreach (Tcp.TcpConnection connection in _acking)
            {
                connection.AckDeferredByBurst = false;
                connection.SendDeferredAck();
            }

            _acking.Clear();
        }

        OnLinkWritable();
    }

    /// <summary>True between <see cref="BeginReceiveBurst"/> and <see cref="EndReceiveBurst"/>.</summary>
    internal bool InReceiveBurst => _inReceiveBurst;

    /// <summary>
    /// <paramref name="connection"/> owes an acknowledgment it sends when the burst ends. Each
    /// connection is listed at most once, so the list is bounded by the connection table.
    /// </summary>
    internal void AckAtBurstEnd(Tcp.TcpConnection connection)
    {
        if (connection.AckDeferredByBurst)
        {
            return;
        }

        connection.AckDeferredByBurst = true;
        _ackAtBurstEnd.Add(connection);
    }

    /// <summary>
    /// The link may have room again (its driver got transmit buffers back, or frames arrived):
    /// connections that held data back send what they can now. Cheap when none waits. Stack thread.
    /// </summary>
    public void OnLinkWritable()
    {
        if (_disposed)
        {
            return;
        }

        if (_deferredCount > 0)
        {
            FlushDeferred();
            if (_deferredCount > 0)
            {
                ArmLinkRetry(); // still full: the data waits behind the control frames
                return;
            }
        }

        if (_linkWaiters.Count == 0)
        {
            return;
        }

        (_linkWaiters, _linkWaking) = (_linkWaking, _linkWaiters);
        foreach (Tcp.TcpConnection connection in _linkWaking)
        {
            connection.WaitingForLink = false;
            connection.ResumeOutput(); // may wait again (and re-arm the retry)
        }

        _linkWaking.Clear();
    }

    internal PacketBuffer? RentBuffer() => _pool.TryRent();

    internal Span<byte> ScratchFrame => _tx;

    /// <summary>Stops every timer and releases every buffer the stack holds. Connections are dropped without a word: use <see cref="ShutdownAsync"/> first to close them.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _linkRetry?.Dispose();
        _linkWaiters.Clear();
        if (_started)
        {
            Options.Metrics?.Remove(this);
        }

        _tcp.Dispose();
        foreach (UdpSocket socket in _udp.Values.ToArray())
        {
            socket.Dispose();
        }

        _arp.Dispose();
        _reassembler.Dispose();
    }
}
