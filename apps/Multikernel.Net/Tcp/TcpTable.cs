using System.Buffers.Binary;
using System.Security.Cryptography;
using Multikernel.Net.Wire;
using Multikernel.Netd.Wire;

namespace Multikernel.Net.Tcp;

/// <summary>The key of a connection: the remote endpoint and our port (the local address is the stack's one).</summary>
internal readonly record struct TcpKey(Ipv4Address RemoteAddress, ushort RemotePort, ushort LocalPort);

/// <summary>One received segment, parsed: header fields, options and where its payload lies in the frame.</summary>
internal readonly struct Incoming(SeqNumber seq, SeqNumber ack, TcpFlags flags, ushort window, in TcpOptions options, PacketBuffer buffer, int payloadOffset, int payloadLength)
{
    public SeqNumber Seq { get; } = seq;

    public SeqNumber Ack { get; } = ack;

    public TcpFlags Flags { get; } = flags;

    public ushort Window { get; } = window;

    public TcpOptions Options { get; } = options;

    public PacketBuffer Buffer { get; } = buffer;

    public int PayloadOffset { get; } = payloadOffset;

    public int PayloadLength { get; } = payloadLength;

    public bool Has(TcpFlags f) => (Flags & f) != 0;

    public int SequenceLength => PayloadLength + (Has(TcpFlags.Syn) ? 1 : 0) + (Has(TcpFlags.Fin) ? 1 : 0);
}

/// <summary>
/// The stack's TCP demultiplexer: connections by 4-tuple, listeners by port, RSTs for segments
/// nobody owns (RFC 9293 §3.10.7.1), the RFC 6528 ISN function, and the per-stack RFC 5961
/// challenge-ACK budget.
/// </summary>
internal sealed class TcpTable : IDisposable
{
    private readonly NetworkStack _stack;
    private readonly Dictionary<TcpKey, TcpConnection> _connections = [];
    private readonly Dictionary<ushort, TcpListener> _listeners = [];
    private long _challengeWindowStartMs = long.MinValue;
    private int _challengeAcksInWindow;
    private uint _portCounter;

    public TcpTable(NetworkStack stack) => _stack = stack;

    public int Count => _connections.Count;

    public IEnumerable<TcpConnection> Connections => _connections.Values;

    public NetworkStack Stack => _stack;

    public void Receive(Ipv4Address source, PacketBuffer buffer, int offset, int length)
    {
        NetworkCounters counters = _stack.Counters;
        ReadOnlySpan<byte> bytes = buffer.Memory.Span.Slice(offset, length);
        if (TcpSegment.TryParse(bytes, out TcpSegment segment, out TcpOptions options) != WireError.None)
        {
            counters.Drop(DropReason.BadTcp);
            return;
        }

        if (!segment.IsChecksumValid(source, _stack.Address))
        {
            counters.Drop(DropReason.BadTcpChecksum);
            return;
        }

        if (segment.SourcePort == 0 || segment.DestinationPort == 0)
        {
            counters.Drop(DropReason.BadTcp);
            return;
        }

        counters.TcpSegmentsReceivedField++;
        counters.TcpBytesReceivedField += segment.Payload.Length;
        var incoming = new Incoming(segment.SequenceNumber, segment.AcknowledgmentNumber, segment.Flags, segment.Window, options,
            buffer, offset + segment.HeaderLength, segment.Payload.Length);
        var key = new TcpKey(source, segment.SourcePort, segment.DestinationPort);
        if (_connections.TryGetValue(key, out TcpConnection? connection))
        {
            connection.OnSegment(in incoming);
            return;
        }

        if (_listeners.TryGetValue(segment.DestinationPort, out TcpListener? listener))
        {
            listener.OnSegment(key, in incoming);
            return;
        }

        counters.Drop(DropReason.TcpNoConnection);
        ResetFor(key, in incoming);
    }

    /// <summary>The RST RFC 9293 sends in reply to a segment no connection owns (never in reply to a RST).</summary>
    public void ResetFor(TcpKey key, in Incoming segment)
    {
        if (segment.Has(TcpFlags.Rst))
        {
            return;
        }

        if (segment.Has(TcpFlags.Ack))
        {
            SendControl(key, segment.Ack, default, TcpFlags.Rst);
        }
        else
        {
            SendControl(key, default, segment.Seq + segment.SequenceLength, TcpFlags.Rst | TcpFlags.Ack);
        }
    }

    public void SendControl(TcpKey key, SeqNumber seq, SeqNumber ack, TcpFlags flags)
    {
        Span<byte> payload = _stack.TransmitPayload;
        TcpOptions none = default;
        int n = TcpSegment.WriteHeader(payload, key.LocalPort, key.RemotePort, seq, ack, flags, 0, in none);
        TcpSegment.WriteChecksum(payload[..n], _stack.Address, key.RemoteAddress);
        if (_stack.SendIpv4InPlace(key.RemoteAddress, IpProtocol.Tcp, n))
        {
            _stack.Counters.TcpSegmentsSentField++;
            if ((flags & TcpFlags.Rst) != 0)
            {
                _stack.Counters.TcpResetsSentField++;
            }
        }
    }

    /// <summary>True when one more challenge ACK fits this second's budget (RFC 5961 §7); counts suppressed ones.</summary>
    public bool TryTakeChallengeAck()
    {
        long now = _stack.NowMs;
        if (now - _challengeWindowStartMs >= 1000)
        {
            _challengeWindowStartMs = now;
            _challengeAcksInWindow = 0;
        }

        if (_challengeAcksInWindow >= _stack.Options.ChallengeAcksPerSecond)
        {
            _stack.Counters.ChallengeAcksSuppressedField++;
            return false;
        }

        _challengeAcksInWindow++;
        _stack.Counters.ChallengeAcksField++;
        return true;
    }

    /// <summary>
    /// RFC 6528: ISN = M + F(localip, localport, remoteip, remoteport, secretkey), M a 4 µs clock
    /// and F a keyed hash (HMAC-SHA256 here). The same hash gives the connection's timestamp
    /// offset, so TSval does not reveal the stack's uptime (RFC 7323 §7.1).
    /// </summary>
    public (SeqNumber Isn, uint TimestampOffset) InitialSequence(TcpKey key)
    {
        Span<byte> tuple = stackalloc byte[12];
        _stack.Address.Write(tuple);
        BinaryPrimitives.WriteUInt16BigEndian(tuple[4..], key.LocalPort);
        key.RemoteAddress.Write(tuple[6..]);
        BinaryPrimitives.WriteUInt16BigEndian(tuple[10..], key.RemotePort);
        Span<byte> hash = stackalloc byte[32];
        HMACSHA256.HashData(_stack.IsnSecret, tuple, hash);
        uint m = unchecked((uint)(_stack.NowMicroseconds / 4));
        return (new SeqNumber(unchecked(m + BinaryPrimitives.ReadUInt32BigEndian(hash))), BinaryPrimitives.ReadUInt32BigEndian(hash[4..]));
    }

    public ushort AllocatePort(Ipv4Endpoint remote)
    {
        Span<byte> input = stackalloc byte[10];
        Span<byte> hash = stackalloc byte[32];
        for (int attempt = 0; attempt < 1024; attempt++)
        {
            remote.Address.Write(input);
            BinaryPrimitives.WriteUInt16BigEndian(input[4..], remote.Port);
            BinaryPrimitives.WriteUInt32BigEndian(input[6..], _portCounter++);
            HMACSHA256.HashData(_stack.IsnSecret, input, hash);
            ushort port = (ushort)(49152 + (BinaryPrimitives.ReadUInt16BigEndian(hash) % 16384));
            if (!_listeners.ContainsKey(port) && !_connections.ContainsKey(new TcpKey(remote.Address, remote.Port, port)))
            {
                return port;
            }
        }

        throw new InvalidOperationException($"No free ephemeral port towards {remote}.");
    }

    public bool Contains(TcpKey key) => _connections.ContainsKey(key);

    public bool HasRoomForConnection => _connections.Count < _stack.Options.MaxConnections;

    public void Add(TcpConnection connection) => _connections.Add(connection.Key, connection);

    public void Remove(TcpConnection connection)
    {
        if (_connections.TryGetValue(connection.Key, out TcpConnection? c) && ReferenceEquals(c, connection))
        {
            _connections.Remove(connection.Key);
            _stack.OnConnectionRemoved();
        }
    }

    public void AddListener(TcpListener listener)
    {
        if (_listeners.ContainsKey(listener.Port))
        {
            throw new InvalidOperationException($"TCP port {listener.Port} is already listening on {_stack.Address}.");
        }

        _listeners.Add(listener.Port, listener);
    }

    public void RemoveListener(TcpListener listener) => _listeners.Remove(listener.Port);

    public IReadOnlyCollection<TcpListener> Listeners => _listeners.Values;

    public void Dispose()
    {
        foreach (TcpConnection c in _connections.Values.ToArray())
        {
            c.Destroy(null);
        }

        _connections.Clear();
        _listeners.Clear();
    }
}
