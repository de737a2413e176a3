using System.Net.Sockets;
using Multikernel.Net.Wire;

namespace Multikernel.Net.Tcp;

public sealed partial class TcpConnection
{
    /// <summary>
    /// Reads what has arrived into <paramref name="buffer"/>: completes at once when data is
    /// queued, else on the stack's thread when some arrives. 0 means the peer closed its side
    /// (FIN) and everything before it has been read. Throws <see cref="SocketException"/> after
    /// a reset or timeout. One read at a time.
    /// </summary>
    public ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        _stack.ThrowIfNotOnStackThread();
        if (_appClosed)
        {
            return ValueTask.FromException<int>(new ObjectDisposedException(nameof(TcpConnection)));
        }

        if (_receive is { Bytes: > 0 } && buffer.Length > 0)
        {
            int n = _receive.Read(buffer.Span);
            AfterRead();
            return ValueTask.FromResult(n);
        }

        if (_error is not null)
        {
            return ValueTask.FromException<int>(_error);
        }

        if (_finReceived || _destroyed || buffer.Length == 0)
        {
            return ValueTask.FromResult(0);
        }

        _pendingRead = buffer;
        return _read.Start(cancellationToken, "read");
    }

    /// <summary>
    /// Queues <paramref name="data"/> for sending: completes once all of it is in the send
    /// buffer (at once when it fits, else as the peer acknowledges and frees space — the bounded
    /// buffer stalls the writer, never grows). The caller must not change the memory until then.
    /// One write at a time.
    /// </summary>
    public ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        _stack.ThrowIfNotOnStackThread();
        if (_error is not null)
        {
            return ValueTask.FromException(_error);
        }

        if (_appClosed || _finQueued)
        {
            return ValueTask.FromException(new InvalidOperationException("The connection's sending side is shut down; nothing more can be written."));
        }

        if (State is not (TcpState.Established or TcpState.CloseWait) || _send is null)
        {
            return ValueTask.FromException(new SocketException((int)SocketError.NotConnected));
        }

        if (_write.IsPending)
        {
            return ValueTask.FromException(new InvalidOperationException("A write is already pending on this connection; await it before starting another."));
        }

        int n = _send.Write(data.Span);
        Output();
        Rearm();
        if (n == data.Length)
        {
            return ValueTask.CompletedTask;
        }

        _pendingWrite = data[n..];
        return _write.StartVoid(cancellationToken, "write");
    }

    /// <summary>
    /// Half-closes the sending side: a FIN follows the data already written (RFC 9293 CLOSE with
    /// the receiving side still open). Reading goes on until the peer's FIN.
    /// </summary>
    public void Shutdown()
    {
        _stack.ThrowIfNotOnStackThread();
        if (_destroyed || _finQueued)
        {
            return;
        }

        if (_write.IsPending)
        {
            throw new InvalidOperationException("A write is still pending; await it before shutting down the sending side.");
        }

        switch (State)
        {
            case TcpState.SynSent:
                Destroy(new SocketException((int)SocketError.OperationAborted));
                return;
            case TcpState.Established:
                SetState(TcpState.FinWait1);
                break;
            case TcpState.CloseWait:
                SetState(TcpState.LastAck);
                break;
            default:
                return;
        }

        _finQueued = true;
        _finSeq = _sndBufSeq + (_send?.Count ?? 0);
        Output();
        Rearm();
    }

    /// <summary>
    /// Closes the connection: a graceful FIN after the queued data, or a RST when received data
    /// is left unread (RFC 9293 §3.10.4). The stack finishes the close on its own (FIN-WAIT-2
    /// is bounded by <see cref="NetworkStackOptions.FinWait2Timeout"/>).
    /// </summary>
    public void Close()
    {
        _stack.ThrowIfNotOnStackThread();
        if (_appClosed)
        {
            return;
        }

        _appClosed = true;
        if (_destroyed)
        {
            return;
        }

        if (_receive is { Bytes: > 0 })
        {
            Abort();
            return;
        }

        if (_write.IsPending)
        {
            _write.Fail(new ObjectDisposedException(nameof(TcpConnection)));
        }

        _read.Fail(new ObjectDisposedException(nameof(TcpConnection)));
        Shutdown();
        if (State == TcpState.FinWait2 && _closeAt == Never)
        {
            _closeAt = _stack.NowMs + (long)_o.FinWait2Timeout.TotalMilliseconds;
            Rearm();
        }
    }

    /// <summary>Resets the connection at once (RST), discarding queued data both ways.</summary>
    public void Abort() => Abort(new SocketException((int)SocketError.ConnectionAborted));

    internal void Abort(Exception error)
    {
        if (_destroyed)
        {
            return;
        }

        if (State is not (TcpState.SynSent or TcpState.TimeWait or TcpState.Closed))
        {
            // The peer takes a RST only at exactly its RCV.NXT (RFC 5961), and with a zero window
            // nothing else: data sent past its window (before it closed) moved SND.NXT beyond what
            // it will ever accept. As Linux (tcp_acceptable_seq): SND.NXT, but no further than the
            // right edge of the peer's window — SND.UNA itself when that window is zero.
            SeqNumber seq = _sndNxt;
            SeqNumber edge = _sndUna + (int)Math.Min(_sndWnd, int.MaxValue);
            if (seq > edge)
            {
                seq = edge;
            }

            _table.SendControl(Key, seq, _rcvNxt, Wire.TcpFlags.Rst | Wire.TcpFlags.Ack);
        }

        Destroy(error);
    }

    /// <summary>Same as <see cref="Close"/>.</summary>
    public void Dispose() => Close();

    /// <summary>A <see cref="System.IO.Stream"/> over this connection (asynchronous calls only: a synchronous read would block the core).</summary>
    public TcpStream AsStream() => new(this, _stack);

    /// <summary>True while the stack still holds the connection (not CLOSED).</summary>
    public bool IsOpen => !_destroyed;

    /// <summary>True once the peer's FIN has arrived.</summary>
    public bool PeerClosed => _finReceived;

    private void CompleteRead()
    {
        if (!_read.IsPending)
        {
            return;
        }

        if (_receive is { Bytes: > 0 })
        {
            int n = _receive.Read(_pendingRead.Span);
            _pendingRead = default;
            _read.Complete(n);
            AfterRead();
        }
        else if (_finReceived)
        {
            _pendingRead = default;
            _read.Complete(0);
        }
    }

    private void ContinueWrite()
    {
        if (!_write.IsPending || _send is null)
        {
            return;
        }

        int n = _send.Write(_pendingWrite.Span);
        _pendingWrite = _pendingWrite[n..];
        if (_pendingWrite.IsEmpty)
        {
            _write.Complete(0);
        }
    }

    /// <summary>After the application read: announce a window that opened by enough to matter (receiver SWS avoidance).</summary>
    private void AfterRead()
    {
        if (_destroyed || _receive is null || !IsSynchronized)
        {
            return;
        }

        // A pure window update only when the peer's usable window has fallen to half the buffer
        // or less and the update at least doubles it (Linux's rule): above that the peer is not
        // starved, and the next data ACK carries the larger window anyway. An update for every
        // two segments read was an ACK per two segments whatever the delayed-ACK rule said. The
        // opening must still pass receiver SWS avoidance (RFC 9293 §3.8.6.2.2).
        int buffer = _o.ReceiveBufferSize;
        int free = buffer - _receive.Bytes;
        int advertised = ReceiveWindow;
        if (free - advertised >= Math.Min(buffer / 2, 2 * _sndMss) && 2 * advertised <= buffer && free >= 2 * advertised)
        {
            if (_stack.InReceiveBurst)
            {
                _windowUpdateOwed = true;
                _stack.AckAtBurstEnd(this); // the burst's one ACK carries it
                return;
            }

            _ackNow = true;
            Output();
            Rearm();
        }
    }
}
