using System.Net.Sockets;
using Multikernel.CpuDriver.Diagnostics;
using Multikernel.Net.Wire;
using Multikernel.Netd.Wire;

namespace Multikernel.Net.Tcp;

/// <summary>
/// One TCP connection (RFC 9293) and its socket surface. Everything runs on the stack's thread:
/// segments from <see cref="NetworkStack.Receive(ReadOnlySpan{byte})"/>, the application's
/// calls, and one timer (the earliest of the retransmission, delayed-ACK, persist, keep-alive
/// and TIME-WAIT deadlines), re-armed with <see cref="ITimer.Change"/> whenever that earliest
/// deadline moves. Sequence arithmetic is <see cref="SeqNumber"/>'s: wrapping, never throwing.
/// </summary>
public sealed partial class TcpConnection : IDisposable
{
    private const long Never = long.MaxValue;
    private const int MaxWindowShift = 14;
    private const long InvalidAckIntervalMs = 100;

    private readonly TcpTable _table;
    private readonly NetworkStack _stack;
    private readonly NetworkStackOptions _o;
    private readonly TcpListener? _listener;
    private readonly ITimer _timer;
    private readonly AsyncSlot<int> _read;
    private readonly AsyncSlot<int> _write;
    private readonly AsyncSlot<TcpConnection> _connect;
    private readonly SackBlock[] _scoreboard = new SackBlock[8];

    private SendRing? _send;
    private ReceiveQueue? _receive;

    // Send sequence space (RFC 9293 §3.3.1). _sndMax is the highest number ever sent: after a
    // timeout _sndNxt goes back to _sndUna and climbs again.
    private SeqNumber _iss;
    private SeqNumber _sndUna;
    private SeqNumber _sndNxt;
    private SeqNumber _sndMax;
    private SeqNumber _sndWl1;
    private SeqNumber _sndWl2;
    private SeqNumber _sndBufSeq; // sequence number of the send ring's first byte
    private uint _sndWnd;
    private uint _maxSndWnd;
    private int _sndShift;
    private int _sndMss = 536;
    private bool _finQueued;
    private SeqNumber _finSeq;

    // Receive sequence space.
    private SeqNumber _irs;
    private SeqNumber _rcvNxt;
    private SeqNumber _rcvRight; // right edge of the last advertised window (never moves left)
    private int _rcvShift;
    private bool _finReceived;

    // RFC 7323 / 2018 state.
    private bool _tsEnabled;
    private uint _tsOffset;
    private uint _tsRecent;
    private SeqNumber _lastAckSent;
    private bool _sackEnabled;
    private int _scoreboardCount;

    // Congestion control (RFC 5681 / 6582).
    private uint _cwnd;
    private uint _ssthresh = uint.MaxValue;
    private int _dupAcks;
    private bool _inRecovery;
    private SeqNumber _recover;
    private SeqNumber _highRxt;

    // RTT (RFC 6298), in milliseconds.
    private double _srtt;
    private double _rttvar;
    private bool _hasRtt;
    private long _rto;
    private bool _timing;
    private SeqNumber _timedSeq;
    private long _timedAtMs;
    private int _retries;

    // Deadlines (stack milliseconds; Never when off).
    private long _rtoAt = Never;
    private long _ackAt = Never;
    private long _persistAt = Never;
    private long _keepAliveAt = Never;
    private long _closeAt = Never;
    private long _armedAt = Never;
    private long _persistBackoff;
    private int _keepAliveSent;
    private int _segmentsSinceAck;
    private bool _ackNow;
    private bool _windowUpdateOwed; // a window update deferred to the end of the receive burst

    private long _lastInvalidAckMs = long.MinValue / 2;
    private bool _appClosed;
    private bool _destroyed;
    private Exception? _error;
    private ReadOnlyMemory<byte> _pendingWrite;
    private Memory<byte> _pendingRead;
    private bool _keepAlive;
    private bool _inCall;

    internal TcpConnection(TcpTable table, TcpKey key, TcpListener? listener)
    {
        _table = table;
        _stack = table.Stack;
        _read = new AsyncSlot<int>(_stack.Home);
        _write = new AsyncSlot<int>(_stack.Home);
        _connect = new AsyncSlot<TcpConnection>(_stack.Home);
        _o = _stack.Options;
        _listener = listener;
        Key = key;
        ListenerNode = new LinkedListNode<TcpConnection>(this);
        _timer = _stack.Time.CreateTimer(static s => ((TcpConnection)s!).OnTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        _rto = (long)_o.InitialRetransmissionTimeout.TotalMilliseconds;
        (_iss, _tsOffset) = table.InitialSequence(key);
        _sndUna = _iss;
        _sndNxt = _iss;
        _sndMax = _iss;
        _sndBufSeq = _iss + 1;
        _recover = _iss;
        while (_o.WindowScaling && _rcvShift < MaxWindowShift && (_o.ReceiveBufferSize >> _rcvShift) > ushort.MaxValue)
        {
            _rcvShift++;
        }
    }

    internal TcpKey Key { get; }

    internal LinkedListNode<TcpConnection> ListenerNode { get; }

    public TcpState State { get; private set; }

    public Ipv4Endpoint LocalEndPoint => new(_stack.Address, Key.LocalPort);

    public Ipv4Endpoint RemoteEndPoint => new(Key.RemoteAddress, Key.RemotePort);

    /// <summary>Turns Nagle's algorithm off (RFC 9293 §3.7.4), as TCP_NODELAY does. Default false.</summary>
    public bool NoDelay { get; set; }

    /// <summary>Sends keep-alive probes after <see cref="NetworkStackOptions.KeepAliveIdle"/> of silence (RFC 1122 §4.2.3.6). Default false.</summary>
    public bool KeepAlive
    {
        get => _keepAlive;
        set
        {
            _keepAlive = value;
            _keepAliveAt = value && IsSynchronized ? _stack.NowMs + (long)_o.KeepAliveIdle.TotalMilliseconds : Never;
            Rearm();
        }
    }

    /// <summary>The MSS used for sending (the peer's, less the timestamp option).</summary>
    public int SendMss => _sndMss;

    /// <summary>Shift applied to the peer's window (0 when scaling is off).</summary>
    public int SendWindowShift => _sndShift;

    /// <summary>Shift applied to our advertised window.</summary>
    public int ReceiveWindowShift => _rcvShift;

    public bool TimestampsEnabled => _tsEnabled;

    public bool SackEnabled => _sackEnabled;

    /// <summary>Current retransmission timeout.</summary>
    public TimeSpan RetransmissionTimeout => TimeSpan.FromMilliseconds(_rto);

    internal uint CongestionWindow => _cwnd;

    internal uint SendWindow => _sndWnd;

    internal int UnreadBytes => _receive?.Bytes ?? 0;

    internal int OutOfOrderSegments => _receive?.OutOfOrderCount ?? 0;

    internal int BufferedToSend => _send?.Count ?? 0;

    internal SeqNumber InitialSequenceNumber => _iss;

    internal SeqNumber ReceiveNext => _rcvNxt;

    internal SeqNumber SendNext => _sndNxt;

    internal SeqNumber SendUnacknowledged => _sndUna;

    private bool IsSynchronized => State is TcpState.Established or TcpState.FinWait1 or TcpState.FinWait2 or TcpState.CloseWait
        or TcpState.Closing or TcpState.LastAck or TcpState.TimeWait;

    private int ReceiveWindow => Math.Max(0, _rcvRight - _rcvNxt);

    // ---------------------------------------------------------------- opening

    internal ValueTask<TcpConnection> StartConnect(CancellationToken cancellationToken)
    {
        ValueTask<TcpConnection> task = _connect.Start(cancellationToken, "connect");
        _connect.Cancelled = () => Destroy(new OperationCanceledException(cancellationToken));
        SetState(TcpState.SynSent);
        _timedAtMs = _stack.NowMs;
        _stack.Counters.ConnectionsOpenedField++;
        SendSyn();
        Rearm();
        return task;
    }

    internal void OnSynInListen(in Incoming seg)
    {
        SetState(TcpState.SynReceived);
        _irs = seg.Seq;
        _rcvNxt = seg.Seq + 1;
        _rcvRight = _rcvNxt;
        Negotiate(seg.Options, seg.Window);
        SendSyn();
        Rearm();
    }

    /// <summary>Takes the peer's SYN options: MSS, window scale (both sides or neither), timestamps, SACK-permitted.</summary>
    private void Negotiate(in TcpOptions options, ushort window)
    {
        int peerMss = options.MaxSegmentSize is ushort m && m > 0 ? m : 536;
        if (options.WindowScale is byte shift && _o.WindowScaling)
        {
            _sndShift = shift;
        }
        else
        {
            _sndShift = 0;
            _rcvShift = 0;
        }

        _tsEnabled = _o.Timestamps && options.HasTimestamps;
        if (_tsEnabled)
        {
            _tsRecent = options.TimestampValue;
        }

        _sackEnabled = _o.SelectiveAck && options.SackPermitted;
        _sndMss = Math.Max(64, Math.Min(peerMss, _stack.MaxSegmentSize) - (_tsEnabled ? 12 : 0));
        // SYN windows are never scaled (RFC 7323 §2.2).
        _sndWnd = window;
        _maxSndWnd = window;
        _cwnd = (uint)InitialWindow();
    }

    private int InitialWindow() => Math.Min(4 * _sndMss, Math.Max(2 * _sndMss, 4380)); // RFC 3390

    private void SendSyn()
    {
        bool synAck = State == TcpState.SynReceived;
        var options = new TcpOptions { MaxSegmentSize = (ushort)_stack.MaxSegmentSize };
        bool offer = !synAck;
        if (_o.WindowScaling && (offer || _sndShift > 0 || _rcvShift > 0))
        {
            options.WindowScale = (byte)_rcvShift;
        }

        if (_o.SelectiveAck && (offer || _sackEnabled))
        {
            options.SackPermitted = true;
        }

        if (_o.Timestamps && (offer || _tsEnabled))
        {
            options.HasTimestamps = true;
            options.TimestampValue = TsNow();
            options.TimestampEcho = synAck ? _tsRecent : 0;
        }

        ushort window = (ushort)Math.Min(_o.ReceiveBufferSize, ushort.MaxValue);
        if (synAck)
        {
            _rcvRight = _rcvNxt + window;
        }

        Emit(_iss, 0, synAck ? TcpFlags.Syn | TcpFlags.Ack : TcpFlags.Syn, in options, window);
        _sndNxt = _iss + 1;
        _sndMax = _sndNxt;

        if (_rtoAt == Never)
        {
            _rtoAt = _stack.NowMs + _rto;
        }
    }

    private void BecomeEstablished()
    {
        SetState(TcpState.Established);
        _send ??= new SendRing(_o.SendBufferSize);
        _receive ??= new ReceiveQueue(_o.MaxReceiveSlices, _o.MaxOutOfOrderSegments);
        _retries = 0;
        if (_keepAlive)
        {
            _keepAliveAt = _stack.NowMs + (long)_o.KeepAliveIdle.TotalMilliseconds;
        }
    }

    // ---------------------------------------------------------------- receiving

    internal void OnSegment(in Incoming seg)
    {
        if (_destroyed)
        {
            return;
        }

        Heard();
        _inCall = true;
        try
        {
            if (State == TcpState.SynSent)
            {
                OnSegmentSynSent(in seg);
            }
            else
            {
                OnSegmentSynchronized(in seg);
            }
        }
        finally
        {
            _inCall = false;
        }

        if (!_destroyed)
        {
            Output();
            Rearm();
        }
    }

    private void OnSegmentSynSent(in Incoming seg)
    {
        bool hasAck = seg.Has(TcpFlags.Ack);
        if (hasAck && (seg.Ack <= _iss || seg.Ack > _sndMax))
        {
            if (!seg.Has(TcpFlags.Rst))
            {
                _table.SendControl(Key, seg.Ack, default, TcpFlags.Rst);
            }

            _stack.Counters.Drop(DropReason.TcpBadAck);
            return;
        }

        if (seg.Has(TcpFlags.Rst))
        {
            if (hasAck)
            {
                _stack.Counters.TcpResetsReceivedField++;
                Destroy(new SocketException((int)SocketError.ConnectionRefused));
            }

            return;
        }

        if (!seg.Has(TcpFlags.Syn))
        {
            return;
        }

        _irs = seg.Seq;
        _rcvNxt = seg.Seq + 1;
        _rcvRight = _rcvNxt;
        Negotiate(seg.Options, seg.Window);
        if (hasAck)
        {
            _sndUna = seg.Ack;
            _sndWl1 = seg.Seq;
            _sndWl2 = seg.Ack;
            if (_tsEnabled && seg.Options.TimestampEcho != 0)
            {
                SampleRtt(TsNow() - seg.Options.TimestampEcho);
            }
            else if (_retries == 0)
            {
                SampleRtt((uint)(_stack.NowMs - _timedAtMs));
            }

            _rtoAt = Never;
            BecomeEstablished();
            _ackNow = true;
            _connect.Complete(this);
        }
        else
        {
            // Simultaneous open (RFC 9293 figure 7): answer with SYN-ACK from the same ISS.
            SetState(TcpState.SynReceived);
            _sndNxt = _iss;
            SendSyn();
        }
    }

    private void OnSegmentSynchronized(in Incoming seg)
    {
        NetworkCounters counters = _stack.Counters;
        bool rst = seg.Has(TcpFlags.Rst);
        bool syn = seg.Has(TcpFlags.Syn);

        // A retransmitted SYN while our SYN-ACK is out: the SYN-ACK was lost, send it again.
        if (State == TcpState.SynReceived && syn && !rst && !seg.Has(TcpFlags.Ack) && seg.Seq == _irs)
        {
            SendSyn();
            return;
        }

        // PAWS (RFC 7323 §5): a timestamp older than the last one is a stale duplicate.
        if (_tsEnabled && seg.Options.HasTimestamps && !rst && unchecked((int)(seg.Options.TimestampValue - _tsRecent)) < 0)
        {
            counters.Drop(DropReason.TcpPawsRejected);
            _ackNow = true;
            return;
        }

        // 1. Sequence number check (RFC 9293 §3.10.7.4).
        int segLen = seg.SequenceLength;
        int window = ReceiveWindow;
        bool acceptable = segLen == 0
            ? (window == 0 ? seg.Seq == _rcvNxt : seg.Seq.InWindow(_rcvNxt, (uint)window))
            : window != 0 && (seg.Seq.InWindow(_rcvNxt, (uint)window) || (seg.Seq + (segLen - 1)).InWindow(_rcvNxt, (uint)window));
        // RFC 9293 §3.10.7.4: with a zero receive window no segment is acceptable, "but special
        // allowance should be made to accept valid ACKs": data at exactly RCV.NXT is dropped but
        // its ACK (and window) is processed, as Linux does. Without it, a peer whose every segment
        // carries data (a retransmission, a probe with a byte) could never tell us that our own
        // data arrived, while our application waits on that to read and open the window: a deadlock.
        bool ackOnly = !acceptable && window == 0 && segLen > 0 && seg.Seq == _rcvNxt && !rst && !syn && seg.Has(TcpFlags.Ack);
        if (!acceptable)
        {
            counters.Drop(DropReason.TcpOutOfWindow);
            long now = _stack.NowMs;
            // Answer with an ACK (RFC 9293), but at most one per interval: two stacks that
            // disagree must not ping-pong ACKs forever (Linux's tcp_invalid_ratelimit).
            if (!rst && now - _lastInvalidAckMs >= InvalidAckIntervalMs)
            {
                _lastInvalidAckMs = now;
                _ackNow = true;
                if (State == TcpState.TimeWait && seg.Has(TcpFlags.Fin))
                {
                    _closeAt = _stack.NowMs + (2 * (long)_o.MaximumSegmentLifetime.TotalMilliseconds);
                }
            }

            if (!ackOnly)
            {
                return;
            }
        }

        // 2. RST (RFC 5961 §3): only the exact next sequence number resets; any other in-window RST gets a challenge ACK.
        if (rst)
        {
            if (seg.Seq != _rcvNxt)
            {
                ChallengeAck();
                return;
            }

            counters.TcpResetsReceivedField++;
            switch (State)
            {
                case TcpState.SynReceived when _listener is not null:
                    Destroy(null);
                    break;
                case TcpState.SynReceived:
                    Destroy(new SocketException((int)SocketError.ConnectionRefused));
                    break;
                case TcpState.TimeWait:
                    // RFC 1337: a RST must not cut TIME-WAIT short (TIME-WAIT assassination).
                    break;
                case TcpState.Closing or TcpState.LastAck:
                    Destroy(null);
                    break;
                default:
                    Destroy(new SocketException((int)SocketError.ConnectionReset));
                    break;
            }

            return;
        }

        // 4. SYN in a synchronized state (RFC 5961 §4): a challenge ACK, never a reset.
        if (syn)
        {
            ChallengeAck();
            return;
        }

        // 5. ACK.
        if (!seg.Has(TcpFlags.Ack))
        {
            return;
        }

        if (_tsEnabled && seg.Options.HasTimestamps && seg.Seq <= _lastAckSent)
        {
            _tsRecent = seg.Options.TimestampValue;
        }

        if (State == TcpState.SynReceived)
        {
            if (!(seg.Ack > _sndUna && seg.Ack <= _sndMax))
            {
                _table.SendControl(Key, seg.Ack, default, TcpFlags.Rst);
                return;
            }

            _sndWnd = (uint)seg.Window << _sndShift;
            _maxSndWnd = Math.Max(_maxSndWnd, _sndWnd);
            _sndWl1 = seg.Seq;
            _sndWl2 = seg.Ack;
            _sndUna = seg.Ack;
            if (_tsEnabled && seg.Options.TimestampEcho != 0)
            {
                SampleRtt(TsNow() - seg.Options.TimestampEcho);
            }

            _rtoAt = Never;
            BecomeEstablished();
            if (_listener is not null)
            {
                _listener.OnEstablished(this);
            }
            else
            {
                _connect.Complete(this);
            }
        }

        if (seg.Ack > _sndMax)
        {
            // An ACK for something never sent: answer with an ACK and drop (RFC 9293; RFC 5961 §5.2).
            counters.Drop(DropReason.TcpBadAck);
            _ackNow = true;
            return;
        }

        if (seg.Ack < _sndUna - (int)Math.Min(_maxSndWnd, int.MaxValue / 2))
        {
            counters.Drop(DropReason.TcpBadAck);
            ChallengeAck();
            return;
        }

        bool sackedNew = false;
        if (_sackEnabled && seg.Options.SackCount > 0)
        {
            sackedNew = MergeSack(seg.Options);
        }

        uint newWindow = (uint)seg.Window << _sndShift;
        bool windowChanged = newWindow != _sndWnd;
        if (seg.Ack > _sndUna)
        {
            OnAckAdvances(in seg);
        }
        else if (seg.Ack == _sndUna && _sndMax > _sndUna
            && ((seg.PayloadLength == 0 && !seg.Has(TcpFlags.Fin) && !windowChanged) || sackedNew))
        {
            // A duplicate ACK: RFC 5681's (nothing but the same ACK and window), or RFC 6675's (it
            // SACKs bytes not SACKed before). The second counts when the peer's window moves or the
            // ACK rides on data — both the rule in a bidirectional transfer, where the strict
            // definition never reaches three and every loss waits for the timeout.
            OnDuplicateAck();
        }

        if (_sndWl1 < seg.Seq || (_sndWl1 == seg.Seq && _sndWl2 <= seg.Ack))
        {
            bool opened = _sndWnd == 0 && newWindow > 0;
            _sndWnd = newWindow;
            _maxSndWnd = Math.Max(_maxSndWnd, newWindow);
            _sndWl1 = seg.Seq;
            _sndWl2 = seg.Ack;
            if (opened)
            {
                _persistAt = Never;
                _persistBackoff = 0;
            }
        }

        bool finAcked = _finQueued && _sndUna == _finSeq + 1;
        switch (State)
        {
            case TcpState.FinWait1 when finAcked:
                SetState(TcpState.FinWait2);
                if (_appClosed)
                {
                    _closeAt = _stack.NowMs + (long)_o.FinWait2Timeout.TotalMilliseconds;
                }

                break;
            case TcpState.Closing when finAcked:
                EnterTimeWait();
                return;
            case TcpState.LastAck when finAcked:
                Destroy(null);
                return;
            case TcpState.TimeWait:
                return;
            default:
                break;
        }

        // 7. Segment text (none from a zero-window segment whose ACK alone was taken).
        if (!ackOnly && (seg.PayloadLength > 0 || seg.Has(TcpFlags.Fin)))
        {
            OnText(in seg);
        }
    }

    private void OnText(in Incoming seg)
    {
        NetworkCounters counters = _stack.Counters;
        SeqNumber seq = seg.Seq;
        int offset = seg.PayloadOffset;
        int length = seg.PayloadLength;
        bool fin = seg.Has(TcpFlags.Fin);

        // Trim what we already have and what lies past the advertised window.
        if (seq < _rcvNxt)
        {
            int skip = Math.Min(_rcvNxt - seq, length);
            offset += skip;
            length -= skip;
            seq += skip;
        }

        int room = _rcvRight - seq;
        if (length > room)
        {
            length = Math.Max(0, room);
            fin = false;
        }

        bool acceptsData = State is TcpState.Established or TcpState.FinWait1 or TcpState.FinWait2;
        if (length > 0 && acceptsData && !_finReceived)
        {
            if (_appClosed)
            {
                // Data for an application that has closed: nobody will read it (RFC 9293 §3.10.4 lets us reset).
                Abort();
                return;
            }

            var slice = new BufferSlice(seg.Buffer, offset, length);
            ReceiveQueue queue = _receive!;
            if (seq == _rcvNxt)
            {
                if (!queue.Append(slice))
                {
                    counters.Drop(DropReason.TcpReceiveQueueFull);
                    _ackNow = true;
                    return;
                }

                bool hadHoles = queue.OutOfOrderCount > 0;
                _rcvNxt += length;
                _rcvNxt = queue.Drain(_rcvNxt);
                ++_segmentsSinceAck;
                if (hadHoles || _segmentsSinceAck >= (_stack.InReceiveBurst ? _o.MaxSegmentsPerAck : 2))
                {
                    _ackNow = true;
                }
                else if (_segmentsSinceAck >= 2)
                {
                    _stack.AckAtBurstEnd(this); // one ACK for the burst (see NetworkStackOptions.MaxSegmentsPerAck)
                }
                else if (_ackAt == Never)
                {
                    _ackAt = _stack.NowMs + (long)_o.DelayedAckTimeout.TotalMilliseconds;
                }

                CompleteRead();
            }
            else
            {
                if (!queue.InsertOutOfOrder(seq, slice))
                {
                    counters.Drop(DropReason.TcpOutOfOrderFull);
                }

                // An immediate duplicate ACK (with SACK) drives the sender's fast retransmit (RFC 5681 §4.2).
                _ackNow = true;
                return;
            }
        }

        // 8. FIN: only once everything before it has arrived.
        if (fin && seq + length == _rcvNxt && !_finReceived)
        {
            _finReceived = true;
            _rcvNxt += 1;
            _ackNow = true;
            switch (State)
            {
                case TcpState.SynReceived or TcpState.Established:
                    SetState(TcpState.CloseWait);
                    break;
                case TcpState.FinWait1:
                    if (_finQueued && _sndUna == _finSeq + 1)
                    {
                        EnterTimeWait();
                    }
                    else
                    {
                        SetState(TcpState.Closing);
                    }

                    break;
                case TcpState.FinWait2:
                    EnterTimeWait();
                    break;
                default:
                    break;
            }

            CompleteRead();
        }
    }

    private void ChallengeAck()
    {
        if (_table.TryTakeChallengeAck())
        {
            SendAck();
        }
    }

    private void EnterTimeWait()
    {
        SetState(TcpState.TimeWait);
        _rtoAt = Never;
        _persistAt = Never;
        _keepAliveAt = Never;
        _ackAt = Never;
        _closeAt = _stack.NowMs + (2 * (long)_o.MaximumSegmentLifetime.TotalMilliseconds);
        SendAck();
        _send = null;
        _stack.OnConnectionQuiet();
    }

    // ---------------------------------------------------------------- acknowledgments and congestion control

    private void OnAckAdvances(in Incoming seg)
    {
        int acked = seg.Ack - _sndUna;
        if (_send is { } ring && seg.Ack > _sndBufSeq)
        {
            int data = Math.Min(seg.Ack - _sndBufSeq, ring.Count);
            ring.Consume(data);
            _sndBufSeq += data;
        }

        _sndUna = seg.Ack;
        if (_sndNxt < _sndUna)
        {
            _sndNxt = _sndUna;
        }

        if (_tsEnabled && seg.Options.HasTimestamps && seg.Options.TimestampEcho != 0)
        {
            SampleRtt(TsNow() - seg.Options.TimestampEcho);
        }
        else if (_timing && seg.Ack > _timedSeq)
        {
            _timing = false;
            SampleRtt((uint)(_stack.NowMs - _timedAtMs));
        }

        _retries = 0;
        PruneScoreboard();
        uint mss = (uint)_sndMss;
        if (_inRecovery)
        {
            if (seg.Ack >= _recover)
            {
                // Full acknowledgment (RFC 6582 §3.2 step 3).
                _inRecovery = false;
                _dupAcks = 0;
                _cwnd = Math.Min(_ssthresh, (uint)Math.Max(0, _sndMax - _sndUna) + mss);
            }
            else
            {
                // Partial acknowledgment: the next hole is lost too; deflate by what was acked.
                RetransmitAt(_sndUna);
                _cwnd = _cwnd > (uint)acked ? _cwnd - (uint)acked + mss : mss;
                _rtoAt = _stack.NowMs + _rto;
            }
        }
        else
        {
            _dupAcks = 0;
            // Appropriate byte counting (RFC 3465): the window grows by what the ACK covers, not by
            // one segment per ACK. Receivers that stretch their ACKs — Linux behind its receive
            // offload, ours once per receive burst — cover 16 segments or more with one ACK; one
            // MSS per ACK kept our slow start at a fraction of theirs. At most MaxSegmentsPerAck
            // segments per ACK (RFC 3465's L): a larger jump is a burst the path never showed.
            uint counted = (uint)Math.Min((long)acked, (long)_o.MaxSegmentsPerAck * mss);
            if (_cwnd < _ssthresh)
            {
                _cwnd += counted;
            }
            else
            {
                _cwnd += (uint)Math.Max(1L, (long)mss * counted / Math.Max(1u, _cwnd));
            }

            _cwnd = Math.Min(_cwnd, (uint)int.MaxValue);
        }

        _rtoAt = _sndUna == _sndMax ? Never : _stack.NowMs + _rto;
        if (_sndUna == _sndMax)
        {
            _persistBackoff = 0;
        }

        ContinueWrite();
    }

    private void OnDuplicateAck()
    {
        _dupAcks++;
        uint mss = (uint)_sndMss;
        if (!_inRecovery && _dupAcks >= DuplicateAckThreshold() && _sndUna > _recover)
        {
            // Fast retransmit (RFC 5681 §3.2) entering NewReno recovery (RFC 6582).
            uint flight = (uint)Math.Max(0, _sndMax - _sndUna);
            _ssthresh = Math.Max(flight / 2, 2 * mss);
            _recover = _sndMax;
            _inRecovery = true;
            _highRxt = _sndUna;
            _stack.Counters.TcpFastRetransmitsField++;
            RetransmitAt(_sndUna);
            _cwnd = _ssthresh + (3 * mss);
        }
        else if (_inRecovery)
        {
            _cwnd += mss;
            if (_sackEnabled)
            {
                RetransmitNextHole();
            }
        }
    }

    /// <summary>
    /// Duplicate ACKs that mean a loss: three, or with fewer than four segments outstanding and
    /// nothing new that can be sent, one less than outstanding (RFC 5827 early retransmit) — a
    /// response of three segments whose first is lost gets only two, and would otherwise wait
    /// for the RTO.
    /// </summary>
    private int DuplicateAckThreshold()
    {
        long outstanding = Math.Max(0, _sndMax - _sndUna);
        int unsent = DataLengthAt(_sndMax, _sndMss);
        if (unsent > 0 && (unsent == _sndMss || NoDelay) && _sndWnd - outstanding >= unsent)
        {
            return 3; // new data can go out and bring more duplicates (limited transmit); a partial segment Nagle holds cannot
        }

        long segments = (outstanding + _sndMss - 1) / Math.Max(1, _sndMss);
        return segments is >= 2 and < 4 ? (int)segments - 1 : 3;
    }

    private long SackedBytes()
    {
        long total = 0;
        for (int j = 0; j < _scoreboardCount; j++)
        {
            total += _scoreboard[j].Right - _scoreboard[j].Left;
        }

        return total;
    }

    /// <summary>Adds the peer's SACK blocks to the scoreboard; true when they covered bytes not SACKed before.</summary>
    private bool MergeSack(in TcpOptions options)
    {
        long before = SackedBytes();
        for (int i = 0; i < options.SackCount; i++)
        {
            SackBlock b = options.Sack(i);
            // Only blocks inside what is outstanding mean anything; the rest are forged or stale.
            if (b.Left >= b.Right || b.Left < _sndUna || b.Right > _sndMax)
            {
                continue;
            }

            SeqNumber left = b.Left;
            SeqNumber right = b.Right;
            int w = 0;
            for (int j = 0; j < _scoreboardCount; j++)
            {
                SackBlock s = _scoreboard[j];
                if (s.Right < left || s.Left > right)
                {
                    _scoreboard[w++] = s;
                }
                else
                {
                    left = SeqNumber.Min(left, s.Left);
                    right = SeqNumber.Max(right, s.Right);
                }
            }

            _scoreboardCount = w;
            if (_scoreboardCount == _scoreboard.Length)
            {
                // Keep the lowest blocks: they decide what is retransmitted next.
                int highest = 0;
                for (int j = 1; j < _scoreboardCount; j++)
                {
                    if (_scoreboard[j].Left > _scoreboard[highest].Left)
                    {
                        highest = j;
                    }
                }

                if (_scoreboard[highest].Left < left)
                {
                    continue;
                }

                _scoreboard[highest] = _scoreboard[--_scoreboardCount];
            }

            _scoreboard[_scoreboardCount++] = new SackBlock(left, right);
        }

        return SackedBytes() > before;
    }

    private void PruneScoreboard()
    {
        int w = 0;
        for (int j = 0; j < _scoreboardCount; j++)
        {
            SackBlock s = _scoreboard[j];
            if (s.Right > _sndUna)
            {
                _scoreboard[w++] = new SackBlock(SeqNumber.Max(s.Left, _sndUna), s.Right);
            }
        }

        _scoreboardCount = w;
    }

    /// <summary>If <paramref name="seq"/> lies in a SACKed block, that block's right edge; else <paramref name="seq"/>.</summary>
    private SeqNumber SkipSacked(SeqNumber seq)
    {
        bool moved = true;
        while (moved)
        {
            moved = false;
            for (int j = 0; j < _scoreboardCount; j++)
            {
                if (seq >= _scoreboard[j].Left && seq < _scoreboard[j].Right)
                {
                    seq = _scoreboard[j].Right;
                    moved = true;
                }
            }
        }

        return seq;
    }

    private SeqNumber HighestSacked()
    {
        SeqNumber h = _sndUna;
        for (int j = 0; j < _scoreboardCount; j++)
        {
            h = SeqNumber.Max(h, _scoreboard[j].Right);
        }

        return h;
    }

    /// <summary>SACK-aided recovery (after RFC 6675's NextSeg rule 1): retransmit the next hole below the highest SACKed byte.</summary>
    private void RetransmitNextHole()
    {
        SeqNumber next = SkipSacked(SeqNumber.Max(_highRxt, _sndUna));
        if (next < HighestSacked())
        {
            RetransmitAt(next);
        }
    }

    private void RetransmitAt(SeqNumber seq)
    {
        seq = SkipSacked(seq);
        if (seq >= _sndMax)
        {
            return;
        }

        int length = DataLengthAt(seq, _sndMss);
        bool fin = _finQueued && seq + length == _finSeq && _sndMax > _finSeq;
        if (length == 0 && !fin)
        {
            return;
        }

        _stack.Counters.TcpRetransmitsField++;
        _timing = false; // Karn: never time a retransmitted segment
        int sent = SendData(seq, length, fin);
        _highRxt = SeqNumber.Max(_highRxt, seq + sent + (fin && sent == length ? 1 : 0));
    }

    /// <summary>Bytes of data available to send from <paramref name="seq"/>, at most <paramref name="max"/>.</summary>
    private int DataLengthAt(SeqNumber seq, int max)
    {
        if (_send is null)
        {
            return 0;
        }

        int offset = seq - _sndBufSeq;
        int available = _send.Count - offset;
        return Math.Clamp(Math.Min(available, max), 0, max);
    }

    private void SampleRtt(uint sampleMs)
    {
        if (sampleMs > 600_000)
        {
            return; // an echo we never sent (or a wrapped clock): not a sample
        }

        double r = Math.Max(1, sampleMs);
        if (!_hasRtt)
        {
            _srtt = r;
            _rttvar = r / 2;
            _hasRtt = true;
        }
        else
        {
            _rttvar = (0.75 * _rttvar) + (0.25 * Math.Abs(_srtt - r));
            _srtt = (0.875 * _srtt) + (0.125 * r);
        }

        long rto = (long)Math.Ceiling(_srtt + Math.Max(1, 4 * _rttvar));
        _rto = Math.Clamp(rto, (long)_o.MinRetransmissionTimeout.TotalMilliseconds, (long)_o.MaxRetransmissionTimeout.TotalMilliseconds);
    }

    private uint TsNow() => unchecked((uint)_stack.NowMs + _tsOffset);

    // ---------------------------------------------------------------- sending

    /// <summary>Sends what the windows, Nagle and the state allow, then any ACK owed.</summary>
    private void Output()
    {
        if (_destroyed || _inCall)
        {
            return;
        }

        bool canSendData = State is TcpState.Established or TcpState.CloseWait or TcpState.FinWait1 or TcpState.Closing or TcpState.LastAck;
        if (canSendData && _send is not null)
        {
            bool heldByLink = false;
            int guard = 0;
            while (guard++ < 10_000)
            {
                if (_sndNxt < _sndMax)
                {
                    _sndNxt = SkipSacked(_sndNxt);
                }

                bool retransmitting = _sndNxt < _sndMax;
                int inFlight = _sndNxt - _sndUna;
                // Limited transmit (RFC 3042): the first two duplicate ACKs each let one new segment out,
                // so a small window still collects the three that trigger fast retransmit.
                long limited = !_inRecovery && _dupAcks is 1 or 2 ? (long)_dupAcks * _sndMss : 0;
                long window = Math.Min(_sndWnd, _cwnd + limited);
                int usable = (int)Math.Clamp(window - inFlight, 0, int.MaxValue);
                int available = DataLengthAt(_sndNxt, int.MaxValue);
                int length = Math.Min(Math.Min(available, usable), _sndMss);
                bool fin = _finQueued && _sndNxt + length == _finSeq && (usable > length || _sndWnd > 0 || length == 0) && (length == available);
                if (length == 0 && !fin)
                {
                    break;
                }

                if (!retransmitting && length < _sndMss && length < available)
                {
                    // Sender-side silly window avoidance (RFC 9293 §3.8.6.2.1): wait for a full
                    // segment unless it is at least half the largest window the peer offered.
                    if (length < _maxSndWnd / 2 || _maxSndWnd == 0)
                    {
                        break;
                    }
                }

                if (!retransmitting && !fin && length == available && length < _sndMss && !NoDelay && inFlight > 0)
                {
                    break; // Nagle: one small segment in flight at a time
                }

                if (!_stack.LinkCanTake(MaxFrameOverhead + length))
                {
                    // The link's transmit queue is full: keep the data (SND.NXT stays) and send it
                    // when the link drains, instead of into a drop that a retransmission timeout
                    // (200 ms or more) would have to repair.
                    _stack.WaitForLink(this);
                    heldByLink = true;
                    break;
                }

                if (retransmitting)
                {
                    _stack.Counters.TcpRetransmitsField++;
                }
                else if (!_timing && length > 0)
                {
                    _timing = true;
                    _timedSeq = _sndNxt;
                    _timedAtMs = _stack.NowMs;
                }

                // SACK blocks can take room the MSS left for data: the segment may carry less than
                // planned, and SND.NXT moves by what went out (and FIN only once all of it did).
                int sent = SendData(_sndNxt, length, fin);
                fin &= sent == length;
                _sndNxt += sent + (fin ? 1 : 0);
                _sndMax = SeqNumber.Max(_sndMax, _sndNxt);
                if (_rtoAt == Never)
                {
                    _rtoAt = _stack.NowMs + _rto;
                }

                if (fin)
                {
                    break;
                }
            }

            // Zero window (or a window too small to use) with nothing in flight: the persist timer
            // probes it. Not when the link held the data: the link's wake-up sends it, and a probe
            // forced onto a full link would only be dropped.
            if (!heldByLink && _sndUna == _sndMax && DataLengthAt(_sndNxt, 1) > 0 && _persistAt == Never)
            {
                _persistBackoff = Math.Max(_persistBackoff, _rto);
                _persistAt = _stack.NowMs + _persistBackoff;
            }
        }

        if (_ackNow)
        {
            SendAck();
        }
    }

    // Ethernet + IPv4 + TCP headers with the largest options: a segment's frame is at most this
    // plus its payload.
    private const int MaxFrameOverhead = 14 + 20 + 60;

    /// <summary>True while the connection is on the stack's list of those waiting for the link (see <see cref="NetworkStack.WaitForLink"/>).</summary>
    internal bool WaitingForLink { get; set; }

    /// <summary>True while the connection is on the stack's list of those that acknowledge when the receive burst ends (see <see cref="NetworkStack.AckAtBurstEnd"/>).</summary>
    internal bool AckDeferredByBurst { get; set; }

    /// <summary>The receive burst ended: acknowledge what it left unacknowledged (unless a segment sent since carried the ACK).</summary>
    internal void SendDeferredAck()
    {
        if (_destroyed || (_segmentsSinceAck < 2 && !_windowUpdateOwed))
        {
            return;
        }

        _ackNow = true;
        Output();
        Rearm();
    }

    /// <summary>The link may have room again: send what the windows allow.</summary>
    internal void ResumeOutput()
    {
        if (_destroyed)
        {
            return;
        }

        Output();
        Rearm();
    }

    private void SendAck()
    {
        if (State is TcpState.SynSent or TcpState.Closed || _destroyed)
        {
            return;
        }

        SendData(_sndNxt, 0, fin: false);
    }

    /// <summary>
    /// Builds one segment of the connection (ACK set, options as negotiated, data from the send ring)
    /// and sends it; returns the payload bytes it carried, which is less than <paramref name="length"/>
    /// when the options (SACK blocks) left less room, and then the FIN is not sent.
    /// </summary>
    private int SendData(SeqNumber seq, int length, bool fin)
    {
        var options = default(TcpOptions);
        if (_tsEnabled)
        {
            options.HasTimestamps = true;
            options.TimestampValue = TsNow();
            options.TimestampEcho = _tsRecent;
        }

        if (_sackEnabled && _receive is { OutOfOrderCount: > 0 } queue)
        {
            queue.FillSack(ref options, _rcvNxt, _tsEnabled ? 3 : 4);
        }

        TcpFlags flags = TcpFlags.Ack;
        if (fin)
        {
            flags |= TcpFlags.Fin;
        }

        if (length > 0 && seq + length == _sndBufSeq + (_send?.Count ?? 0))
        {
            flags |= TcpFlags.Psh;
        }

        return Emit(seq, length, flags, in options, AdvertiseWindow());
    }

    /// <summary>The window field to send: free receive space, scaled, never moving the right edge left (RFC 9293 §3.8.6.2.2).</summary>
    private ushort AdvertiseWindow()
    {
        int free = _o.ReceiveBufferSize - (_receive?.Bytes ?? 0);
        if (_receive is { } q && q.Slices >= _o.MaxReceiveSlices - 1)
        {
            free = 0; // the slice table is full: stop the peer until the application reads
        }

        // Receiver silly window avoidance: do not offer a sliver.
        if (free < Math.Min(_o.ReceiveBufferSize / 2, _sndMss))
        {
            free = 0;
        }

        int current = ReceiveWindow;
        int window = Math.Max(free, current);
        long scaled = Math.Min(window >> _rcvShift, ushort.MaxValue);
        SeqNumber right = _rcvNxt + (int)(scaled << _rcvShift);
        if (right > _rcvRight)
        {
            _rcvRight = right;
        }

        return (ushort)scaled;
    }

    /// <summary>Writes and sends one segment; returns the payload bytes it carries (at most what fits after the header).</summary>
    private int Emit(SeqNumber seq, int length, TcpFlags flags, in TcpOptions options, ushort window)
    {
        Span<byte> payload = _stack.TransmitPayload;
        int header = TcpSegment.WriteHeader(payload, Key.LocalPort, Key.RemotePort, seq, (flags & TcpFlags.Ack) != 0 ? _rcvNxt : default, flags, window, in options);
        if (length > payload.Length - header)
        {
            // Cut short: the rest (and the FIN after it) goes in the next segment.
            length = payload.Length - header;
            TcpSegment.RewriteFlags(payload, flags & ~(TcpFlags.Fin | TcpFlags.Psh));
        }
        if (length > 0)
        {
            _send!.CopyTo(seq - _sndBufSeq, payload.Slice(header, length));
        }

        TcpSegment.WriteChecksum(payload[..(header + length)], _stack.Address, Key.RemoteAddress);
        _stack.SendIpv4InPlace(Key.RemoteAddress, IpProtocol.Tcp, header + length);
        _stack.Counters.TcpSegmentsSentField++;
        _stack.Counters.TcpBytesSentField += length;
        if ((flags & TcpFlags.Ack) != 0)
        {
            _lastAckSent = _rcvNxt;
            _ackNow = false;
            _ackAt = Never;
            _segmentsSinceAck = 0;
            _windowUpdateOwed = false;
        }

        return length;
    }

    // ---------------------------------------------------------------- timers

    private void Rearm()
    {
        if (_destroyed)
        {
            return;
        }

        long next = Math.Min(Math.Min(_rtoAt, _ackAt), Math.Min(Math.Min(_persistAt, _keepAliveAt), _closeAt));
        if (next == _armedAt)
        {
            return;
        }

        _armedAt = next;
        _timer.Change(next == Never ? Timeout.InfiniteTimeSpan : TimeSpan.FromMilliseconds(Math.Max(0, next - _stack.NowMs)), Timeout.InfiniteTimeSpan);
    }

    private void OnTimer()
    {
        if (_destroyed)
        {
            return;
        }

        _armedAt = Never;
        long now = _stack.NowMs;
        if (_closeAt <= now)
        {
            _closeAt = Never;
            if (State is TcpState.TimeWait or TcpState.FinWait2 or TcpState.Closing or TcpState.LastAck or TcpState.FinWait1)
            {
                Destroy(State == TcpState.TimeWait ? null : new SocketException((int)SocketError.TimedOut));
                return;
            }
        }

        if (_rtoAt <= now)
        {
            _rtoAt = Never;
            OnRetransmissionTimeout();
            if (_destroyed)
            {
                return;
            }
        }

        if (_persistAt <= now)
        {
            _persistAt = Never;
            OnPersist();
        }

        if (_keepAliveAt <= now)
        {
            _keepAliveAt = Never;
            OnKeepAlive();
            if (_destroyed)
            {
                return;
            }
        }

        if (_ackAt <= now)
        {
            _ackAt = Never;
            _ackNow = true;
        }

        Output();
        Rearm();
    }

    private void OnRetransmissionTimeout()
    {
        _stack.Counters.TcpTimeoutsField++;
        _rto = Math.Min(_rto * 2, (long)_o.MaxRetransmissionTimeout.TotalMilliseconds);
        if (State is TcpState.SynSent or TcpState.SynReceived)
        {
            if (++_retries > _o.MaxSynRetransmissions)
            {
                Destroy(new SocketException((int)SocketError.TimedOut));
                return;
            }

            _stack.Counters.TcpRetransmitsField++;
            _rtoAt = _stack.NowMs + _rto;
            SendSyn();
            return;
        }

        if (_sndUna == _sndMax)
        {
            return;
        }

        if (++_retries > _o.MaxRetransmissions)
        {
            Abort(new SocketException((int)SocketError.TimedOut));
            return;
        }

        // RFC 5681 §3.1 (7) and RFC 6582 §4: back to one segment, remember how far we had got.
        uint mss = (uint)_sndMss;
        uint flight = (uint)Math.Max(0, _sndMax - _sndUna);
        if (_retries == 1)
        {
            _ssthresh = Math.Max(flight / 2, 2 * mss);
        }

        _cwnd = mss;
        _inRecovery = false;
        _dupAcks = 0;
        _recover = _sndMax;
        _timing = false;
        if (_retries > 1)
        {
            _scoreboardCount = 0; // the receiver may have reneged (RFC 2018 §8)
        }

        _sndNxt = _sndUna;
        _highRxt = _sndUna;
        _rtoAt = _stack.NowMs + _rto;
    }

    private void OnPersist()
    {
        if (!IsSynchronized || _send is null || DataLengthAt(_sndNxt, 1) == 0 || _sndUna != _sndMax)
        {
            _persistBackoff = 0;
            return;
        }

        if (_sndWnd > 0)
        {
            if (!_stack.LinkCanTake(MaxFrameOverhead + _sndMss))
            {
                // The link, not the window, holds the data back now: it goes when the link drains.
                _persistBackoff = 0;
                _stack.WaitForLink(this);
                return;
            }

            // A window too small for Nagle and SWS avoidance: send what fits (RFC 9293's override timeout).
            int length = DataLengthAt(_sndNxt, (int)Math.Min(_sndWnd, (uint)_sndMss));
            _sndNxt += SendData(_sndNxt, length, fin: false);
            _sndMax = SeqNumber.Max(_sndMax, _sndNxt);
            _rtoAt = _stack.NowMs + _rto;
            _persistBackoff = 0;
            return;
        }

        // Zero-window probe: a segment the receiver must answer with its current window.
        Emit(_sndUna - 1, 0, TcpFlags.Ack, default, AdvertiseWindow());
        _persistBackoff = Math.Min(_persistBackoff * 2, (long)_o.MaxRetransmissionTimeout.TotalMilliseconds);
        _persistAt = _stack.NowMs + _persistBackoff;
    }

    private void OnKeepAlive()
    {
        if (!_keepAlive || !IsSynchronized || State == TcpState.TimeWait)
        {
            return;
        }

        if (_keepAliveSent >= _o.KeepAliveProbes)
        {
            Abort(new SocketException((int)SocketError.TimedOut));
            return;
        }

        _keepAliveSent++;
        TcpOptions options = default;
        if (_tsEnabled)
        {
            options.HasTimestamps = true;
            options.TimestampValue = TsNow();
            options.TimestampEcho = _tsRecent;
        }

        Emit(_sndUna - 1, 0, TcpFlags.Ack, in options, AdvertiseWindow());
        _keepAliveAt = _stack.NowMs + (long)_o.KeepAliveInterval.TotalMilliseconds;
    }

    /// <summary>Any segment from the peer proves it alive.</summary>
    private void Heard()
    {
        _keepAliveSent = 0;
        if (_keepAlive && IsSynchronized)
        {
            _keepAliveAt = _stack.NowMs + (long)_o.KeepAliveIdle.TotalMilliseconds;
        }
    }

    // ---------------------------------------------------------------- state bookkeeping

    private void SetState(TcpState state)
    {
        TcpState from = State;
        _stack.Counters.StateChanged(from, state);
        State = state;
        if (_handshakeSpan is not null || _closeSpan is not null || ActivitySources.Net.HasListeners())
        {
            TraceState(from, state);
        }
    }

    /// <summary>Removes the connection: state CLOSED, buffers released, timer stopped, pending operations completed.</summary>
    internal void Destroy(Exception? error)
    {
        if (_destroyed)
        {
            return;
        }

        _destroyed = true;
        bool wasHalfOpen = State == TcpState.SynReceived;
        _error ??= error; // before the state change: a connection span ending here reports it
        SetState(TcpState.Closed);
        _timer.Dispose();
        _receive?.Clear();
        _send = null;
        if (wasHalfOpen)
        {
            _listener?.OnHalfOpenGone(this);
        }

        _table.Remove(this);
        Exception failure = _error ?? new SocketException((int)SocketError.ConnectionAborted);
        _connect.Fail(failure);
        if (_read.IsPending)
        {
            if (_error is null && _finReceived)
            {
                _read.Complete(0);
            }
            else
            {
                _read.Fail(failure);
            }
        }

        _write.Fail(failure);
    }
}
