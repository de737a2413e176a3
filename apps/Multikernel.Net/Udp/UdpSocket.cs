namespace Multikernel.Net.Udp;

/// <summary>One received datagram's size and sender.</summary>
public readonly record struct UdpReceiveResult(int Length, Ipv4Endpoint Remote, bool Truncated);

/// <summary>
/// A UDP socket bound to one port. Received datagrams wait, as slices of the frames they came
/// in, in a bounded queue (<see cref="NetworkStackOptions.UdpReceiveQueue"/>; one more is
/// dropped and counted). Used only on the stack's thread.
/// </summary>
public sealed class UdpSocket : IDisposable
{
    private readonly NetworkStack _stack;
    private readonly Queue<(Ipv4Endpoint From, BufferSlice Data)> _queue;
    private readonly AsyncSlot<UdpReceiveResult> _receive;
    private Memory<byte> _pending;
    private bool _disposed;

    internal UdpSocket(NetworkStack stack, ushort port)
    {
        _stack = stack;
        _receive = new AsyncSlot<UdpReceiveResult>(stack.Home);
        LocalPort = port;
        _queue = new Queue<(Ipv4Endpoint, BufferSlice)>(stack.Options.UdpReceiveQueue);
    }

    public ushort LocalPort { get; }

    /// <summary>Datagrams waiting to be read.</summary>
    public int Queued => _queue.Count;

    /// <summary>
    /// The next datagram, copied into <paramref name="buffer"/> (a longer one is cut and marked
    /// <see cref="UdpReceiveResult.Truncated"/>). Completes at once when one is queued.
    /// </summary>
    public ValueTask<UdpReceiveResult> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        _stack.ThrowIfNotOnStackThread();
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_queue.TryDequeue(out (Ipv4Endpoint From, BufferSlice Data) item))
        {
            return ValueTask.FromResult(CopyOut(item, buffer.Span));
        }

        _pending = buffer;
        return _receive.Start(cancellationToken, "receive");
    }

    /// <summary>Sends one datagram (fragmented when it exceeds the MTU). False when it could not be sent now (no route, ARP pending full, link full); UDP does not retry.</summary>
    public bool TrySend(Ipv4Endpoint to, ReadOnlySpan<byte> payload)
    {
        _stack.ThrowIfNotOnStackThread();
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfZero(to.Port);
        return _stack.SendUdp(LocalPort, to, payload);
    }

    internal void Enqueue(Ipv4Endpoint from, BufferSlice data)
    {
        if (_receive.IsPending)
        {
            (Ipv4Endpoint, BufferSlice) item = (from, data);
            data.Buffer.Retain();
            Memory<byte> target = _pending;
            _pending = default;
            _receive.Complete(CopyOut(item, target.Span));
            return;
        }

        if (_queue.Count >= _stack.Options.UdpReceiveQueue)
        {
            _stack.Counters.Drop(DropReason.UdpQueueFull);
            return;
        }

        data.Buffer.Retain();
        _queue.Enqueue((from, data));
    }

    private static UdpReceiveResult CopyOut((Ipv4Endpoint From, BufferSlice Data) item, Span<byte> destination)
    {
        ReadOnlySpan<byte> data = item.Data.Span;
        int n = Math.Min(data.Length, destination.Length);
        data[..n].CopyTo(destination);
        item.Data.Buffer.Release();
        return new UdpReceiveResult(n, item.From, n < data.Length);
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _stack.UnbindUdp(this);
        while (_queue.TryDequeue(out (Ipv4Endpoint, BufferSlice Data) item))
        {
            item.Data.Buffer.Release();
        }

        _receive.Fail(new ObjectDisposedException(nameof(UdpSocket)));
    }
}
