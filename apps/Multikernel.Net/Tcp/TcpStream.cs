namespace Multikernel.Net.Tcp;

/// <summary>
/// <see cref="Stream"/> over a <see cref="TcpConnection"/>, so ordinary .NET code (StreamReader,
/// CopyToAsync, System.IO.Pipelines, SslStream) runs on the stack. Only the asynchronous members
/// work: the stack runs on a core that must never block. Disposing closes the connection.
/// </summary>
/// <remarks>
/// Callable from any thread. On the stack's own thread a call goes straight to the connection
/// (no allocation); from another thread — a continuation that a FileStream or a timer completed
/// on the thread pool, say — the call is posted to the stack's core and carried out there, and
/// its result comes back as a task that completes like any other (its continuation runs where the
/// awaiter asked, never inside the stack). So no stack state is ever touched off its core.
/// </remarks>
public sealed class TcpStream : Stream
{
    private readonly TcpConnection _connection;
    private readonly NetworkStack _stack;
    private long _marshalled;

    internal TcpStream(TcpConnection connection, NetworkStack stack)
    {
        _connection = connection;
        _stack = stack;
    }

    public TcpConnection Connection => _connection;

    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => true;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    /// <summary>Calls made from other threads and carried out on the stack's core (for tests and diagnostics).</summary>
    public long MarshalledCalls => Interlocked.Read(ref _marshalled);

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_stack.IsOnStackThread)
        {
            return _connection.ReadAsync(buffer, cancellationToken);
        }

        return new ValueTask<int>(OnStackAsync(static s =>
        {
            var (c, b, ct) = ((TcpConnection, Memory<byte>, CancellationToken))s!;
            return c.ReadAsync(b, ct);
        }, (_connection, buffer, cancellationToken)));
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_stack.IsOnStackThread)
        {
            return _connection.WriteAsync(buffer, cancellationToken);
        }

        return new ValueTask(OnStackAsync(static async s =>
        {
            var (c, b, ct) = ((TcpConnection, ReadOnlyMemory<byte>, CancellationToken))s!;
            await c.WriteAsync(b, ct);
            return 0;
        }, (_connection, buffer, cancellationToken)));
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public override void Flush()
    {
    }

    public override int Read(byte[] buffer, int offset, int count) =>
        throw new NotSupportedException("A synchronous read would block the core; use ReadAsync.");

    public override void Write(byte[] buffer, int offset, int count) =>
        throw new NotSupportedException("A synchronous write would block the core; use WriteAsync.");

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    /// <summary>Half-closes the sending side (a FIN after what was written), from any thread.</summary>
    public Task ShutdownAsync()
    {
        if (_stack.IsOnStackThread)
        {
            _connection.Shutdown();
            return Task.CompletedTask;
        }

        return OnStackAsync(static s => { ((TcpConnection)s!).Shutdown(); return ValueTask.FromResult(0); }, _connection);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            if (_stack.IsOnStackThread)
            {
                _connection.Close();
            }
            else
            {
                // Fire and forget: a close cannot fail in a way the disposer could act on.
                _ = OnStackAsync(static s => { ((TcpConnection)s!).Close(); return ValueTask.FromResult(0); }, _connection);
            }
        }

        base.Dispose(disposing);
    }

    /// <summary>Runs <paramref name="operation"/> on the stack's core; the slow path for calls from other threads.</summary>
    private Task<int> OnStackAsync(Func<object?, ValueTask<int>> operation, object? state)
    {
        Interlocked.Increment(ref _marshalled);
        var done = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        try
        {
            _stack.Home.Post(static s =>
            {
                var (op, st, tcs) = ((Func<object?, ValueTask<int>>, object?, TaskCompletionSource<int>))s!;
                _ = ForwardAsync(op, st, tcs);
            }, (operation, state, done));
        }
        catch (InvalidOperationException ex)
        {
            done.SetException(ex); // the core has halted or refuses more work: a clear error, not a hang
        }

        return done.Task;
    }

    private static async Task ForwardAsync(Func<object?, ValueTask<int>> operation, object? state, TaskCompletionSource<int> done)
    {
        try
        {
            done.TrySetResult(await operation(state));
        }
        catch (OperationCanceledException ex)
        {
            done.TrySetCanceled(ex.CancellationToken);
        }
#pragma warning disable CA1031 // handed to the caller on its own thread
        catch (Exception ex)
#pragma warning restore CA1031
        {
            done.TrySetException(ex);
        }
    }
}
