using System.Net.Sockets;
using TcpListener = Multikernel.Net.Tcp.TcpListener;
using Multikernel.Net.Tcp;

namespace Multikernel.Net;

public sealed partial class NetworkStack
{
    private readonly TcpTable _tcp;
    private readonly AsyncSlot<bool> _shutdown;
    private ITimer? _shutdownTimer;
    private bool _shuttingDown;

    /// <summary>Connections the stack holds, in any state.</summary>
    public int ConnectionCount => _tcp.Count;

    /// <summary>Every connection the stack holds (a snapshot).</summary>
    public IReadOnlyList<TcpConnection> ConnectionsSnapshot() => [.. _tcp.Connections];

    /// <summary>Listens on <paramref name="port"/>; at most <paramref name="backlog"/> connections wait for accept and as many half-open ones exist.</summary>
    public TcpListener Listen(ushort port, int backlog = 128)
    {
        ThrowIfNotOnStackThread();
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfZero(port);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(backlog);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(backlog, Options.MaxConnections);
        if (_shuttingDown)
        {
            throw new InvalidOperationException("The stack is shutting down.");
        }

        var listener = new TcpListener(_tcp, port, backlog);
        _tcp.AddListener(listener);
        return listener;
    }

    /// <summary>Opens a connection (active open); completes on the stack's thread when established. Throws <see cref="SocketException"/> when refused or timed out.</summary>
    public ValueTask<TcpConnection> ConnectAsync(Ipv4Endpoint remote, CancellationToken cancellationToken = default)
    {
        ThrowIfNotOnStackThread();
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfZero(remote.Port);
        if (remote.Address.IsAny || remote.Address.IsBroadcast || remote.Address.IsMulticast || IsSubnetBroadcast(remote.Address))
        {
            throw new ArgumentException($"{remote.Address} is not a unicast address.", nameof(remote));
        }

        if (_shuttingDown)
        {
            return ValueTask.FromException<TcpConnection>(new InvalidOperationException("The stack is shutting down."));
        }

        if (!_tcp.HasRoomForConnection)
        {
            return ValueTask.FromException<TcpConnection>(new SocketException((int)SocketError.TooManyOpenSockets));
        }

        if (!remote.Address.SameSubnet(Address, Options.PrefixLength) && Options.Gateway.IsAny)
        {
            return ValueTask.FromException<TcpConnection>(new SocketException((int)SocketError.NetworkUnreachable));
        }

        return ConnectFromPortAsync(_tcp.AllocatePort(remote), remote, cancellationToken);
    }

    /// <summary>An active open from a chosen local port (simultaneous open, tests).</summary>
    internal ValueTask<TcpConnection> ConnectFromPortAsync(ushort localPort, Ipv4Endpoint remote, CancellationToken cancellationToken = default)
    {
        var key = new TcpKey(remote.Address, remote.Port, localPort);
        if (_tcp.Contains(key))
        {
            throw new InvalidOperationException($"A connection from port {localPort} to {remote} already exists.");
        }

        var connection = new TcpConnection(_tcp, key, null);
        _tcp.Add(connection);
        return connection.StartConnect(cancellationToken);
    }

    /// <summary>
    /// Closes everything so no peer is left hanging (seed 000): listeners stop, every connection
    /// gets a FIN after its queued data, and whatever has not finished closing after
    /// <paramref name="timeout"/> is reset. Completes when no connection is left that a peer
    /// could still be waiting on (TIME-WAIT ones are done from the peer's view).
    /// </summary>
    public ValueTask ShutdownAsync(TimeSpan timeout)
    {
        ThrowIfNotOnStackThread();
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfLessThan(timeout, TimeSpan.Zero);
        if (_shutdown.IsPending)
        {
            throw new InvalidOperationException("A shutdown is already in progress.");
        }

        _shuttingDown = true;
        foreach (TcpListener listener in _tcp.Listeners.ToArray())
        {
            listener.Dispose();
        }

        foreach (TcpConnection c in _tcp.Connections.ToArray())
        {
            if (c.State is Tcp.TcpState.SynSent or Tcp.TcpState.SynReceived)
            {
                c.Abort();
            }
            else
            {
                c.Close();
            }
        }

        if (LiveConnections() == 0)
        {
            return ValueTask.CompletedTask;
        }

        ValueTask task = _shutdown.StartVoid(CancellationToken.None, "shutdown");
        _shutdownTimer = Time.CreateTimer(static s => ((NetworkStack)s!).OnShutdownTimeout(), this, timeout, Timeout.InfiniteTimeSpan);
        return task;
    }

    private int LiveConnections()
    {
        int n = 0;
        foreach (TcpConnection c in _tcp.Connections)
        {
            if (c.State != Tcp.TcpState.TimeWait)
            {
                n++;
            }
        }

        return n;
    }

    private void OnShutdownTimeout()
    {
        foreach (TcpConnection c in _tcp.Connections.ToArray())
        {
            if (c.State != Tcp.TcpState.TimeWait)
            {
                c.Abort(new SocketException((int)SocketError.Shutdown));
            }
        }

        CheckShutdownDone();
    }

    internal void OnConnectionRemoved() => CheckShutdownDone();

    internal void OnConnectionQuiet() => CheckShutdownDone();

    private void CheckShutdownDone()
    {
        if (_shutdown.IsPending && LiveConnections() == 0)
        {
            _shutdownTimer?.Dispose();
            _shutdownTimer = null;
            _shutdown.Complete(true);
        }
    }
}
