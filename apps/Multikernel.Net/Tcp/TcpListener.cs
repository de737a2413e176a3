using Multikernel.Net.Wire;

namespace Multikernel.Net.Tcp;

/// <summary>
/// A passive open on one port. Bounded twice: at most <see cref="Backlog"/> connections that
/// finished their handshake wait for <see cref="AcceptAsync"/>, and at most
/// <see cref="Backlog"/> half-open ones (SYN-RECEIVED) exist at once. When the SYN queue is full
/// a new SYN evicts the oldest half-open connection (counted) — a flood then only ages its own
/// entries out, while a real client whose ACK comes back within the queue's turnover still
/// connects — and when handshaken connections plus half-open ones would exceed the backlog the
/// SYN is dropped (counted) and the client retries.
/// </summary>
public sealed class TcpListener : IDisposable
{
    private readonly TcpTable _table;
    private readonly Queue<TcpConnection> _ready;
    private readonly LinkedList<TcpConnection> _halfOpen = new();
    private readonly AsyncSlot<TcpConnection> _accept;
    private bool _disposed;

    internal TcpListener(TcpTable table, ushort port, int backlog)
    {
        _table = table;
        _accept = new AsyncSlot<TcpConnection>(table.Stack.Home);
        Port = port;
        Backlog = backlog;
        _ready = new Queue<TcpConnection>(backlog);
    }

    public ushort Port { get; }

    public int Backlog { get; }

    /// <summary>Handshaken connections waiting for accept.</summary>
    public int PendingAccepts => _ready.Count;

    /// <summary>Half-open connections (SYN received, SYN-ACK sent).</summary>
    public int HalfOpen => _halfOpen.Count;

    /// <summary>The next established connection; completes on the stack's thread.</summary>
    public ValueTask<TcpConnection> AcceptAsync(CancellationToken cancellationToken = default)
    {
        _table.Stack.ThrowIfNotOnStackThread();
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_ready.TryDequeue(out TcpConnection? c))
        {
            return ValueTask.FromResult(c);
        }

        return _accept.Start(cancellationToken, "accept");
    }

    internal void OnSegment(TcpKey key, in Incoming seg)
    {
        NetworkStack stack = _table.Stack;
        if (seg.Has(TcpFlags.Rst))
        {
            return;
        }

        if (seg.Has(TcpFlags.Ack))
        {
            _table.ResetFor(key, in seg);
            return;
        }

        if (!seg.Has(TcpFlags.Syn) || seg.Has(TcpFlags.Fin))
        {
            stack.Counters.Drop(DropReason.BadTcp);
            return;
        }

        if (_ready.Count >= Backlog)
        {
            stack.Counters.Drop(DropReason.TcpSynQueueFull);
            return;
        }

        if (_halfOpen.Count >= Backlog)
        {
            TcpConnection oldest = _halfOpen.First!.Value;
            stack.Counters.SynQueueEvictionsField++;
            oldest.Destroy(null);
        }

        if (!_table.HasRoomForConnection)
        {
            stack.Counters.Drop(DropReason.TcpConnectionLimit);
            return;
        }

        var connection = new TcpConnection(_table, key, this);
        _halfOpen.AddLast(connection.ListenerNode);
        _table.Add(connection);
        connection.OnSynInListen(in seg);
    }

    /// <summary>A half-open child finished its handshake.</summary>
    internal void OnEstablished(TcpConnection connection)
    {
        _halfOpen.Remove(connection.ListenerNode);
        _table.Stack.Counters.ConnectionsAcceptedField++;
        if (_disposed)
        {
            connection.Close();
            return;
        }

        if (_accept.IsPending)
        {
            _accept.Complete(connection);
        }
        else
        {
            _ready.Enqueue(connection);
        }
    }

    /// <summary>A half-open child died (RST, timeout, eviction).</summary>
    internal void OnHalfOpenGone(TcpConnection connection)
    {
        if (connection.ListenerNode.List is not null)
        {
            _halfOpen.Remove(connection.ListenerNode);
        }
    }

    /// <summary>Stops listening: half-open connections are dropped, handshaken ones not yet accepted are closed, a pending accept fails.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _table.RemoveListener(this);
        while (_halfOpen.First is { } node)
        {
            node.Value.Abort();
        }

        while (_ready.TryDequeue(out TcpConnection? c))
        {
            c.Close();
        }

        _accept.Fail(new ObjectDisposedException(nameof(TcpListener)));
    }
}
