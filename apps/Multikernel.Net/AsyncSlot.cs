using System.Threading.Tasks.Sources;

namespace Multikernel.Net;

/// <summary>
/// One reusable pending operation (a socket's read, write, accept or connect): a
/// <see cref="ManualResetValueTaskSourceCore{TResult}"/> with a version token, so awaiting costs
/// no allocation. Continuations always run asynchronously — posted to the awaiter's
/// synchronization context, which on a core is the core's own scheduler — so application code
/// never runs re-entrantly inside the stack's segment processing. A cancellation is posted back
/// to the context that started the operation, so it too runs on the stack's thread.
/// </summary>
internal sealed class AsyncSlot<T> : IValueTaskSource<T>, IValueTaskSource
{
    private ManualResetValueTaskSourceCore<T> _core = new() { RunContinuationsAsynchronously = true };
    private CancellationTokenRegistration _cancellation;
    private SynchronizationContext? _context;

    /// <summary>True between <see cref="Start"/> and completion.</summary>
    public bool IsPending { get; private set; }

    /// <summary>Called (on the stack's thread) when the pending operation is cancelled, before it completes.</summary>
    public Action? Cancelled { get; set; }

    public ValueTask<T> Start(CancellationToken cancellationToken, string operation)
    {
        if (IsPending)
        {
            throw new InvalidOperationException($"A {operation} is already pending on this socket; await it before starting another.");
        }

        _core.Reset();
        IsPending = true;
        if (cancellationToken.CanBeCanceled)
        {
            _context = SynchronizationContext.Current;
            short token = _core.Version;
            _cancellation = cancellationToken.UnsafeRegister(static (state, ct) =>
            {
                var (slot, version) = ((AsyncSlot<T>, short))state!;
                if (slot._context is { } context)
                {
                    context.Post(static s => { var (sl, v, c) = ((AsyncSlot<T>, short, CancellationToken))s!; sl.CancelFromStackThread(v, c); }, (slot, version, ct));
                }
                else
                {
                    slot.CancelFromStackThread(version, ct);
                }
            }, (this, token));
        }

        return new ValueTask<T>(this, _core.Version);
    }

    public ValueTask StartVoid(CancellationToken cancellationToken, string operation)
    {
        ValueTask<T> t = Start(cancellationToken, operation);
        _ = t;
        return new ValueTask(this, _core.Version);
    }

    private void CancelFromStackThread(short version, CancellationToken token)
    {
        if (IsPending && _core.Version == version)
        {
            Cancelled?.Invoke();
            Fail(new OperationCanceledException(token));
        }
    }

    public void Complete(T result)
    {
        if (!IsPending)
        {
            return;
        }

        IsPending = false;
        _cancellation.Dispose();
        _cancellation = default;
        _core.SetResult(result);
    }

    public void Fail(Exception error)
    {
        if (!IsPending)
        {
            return;
        }

        IsPending = false;
        _cancellation.Dispose();
        _cancellation = default;
        _core.SetException(error);
    }

    public T GetResult(short token) => _core.GetResult(token);

    void IValueTaskSource.GetResult(short token) => _core.GetResult(token);

    public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

    /// <summary>
    /// Always schedules on the awaiter's context, even under <c>ConfigureAwait(false)</c> (which
    /// System.IO.Pipelines uses): a continuation that hopped to the thread pool would call back
    /// into the single-threaded stack from another thread. The awaiter runs on the stack's
    /// thread, so its context is the stack's core.
    /// </summary>
    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags | ValueTaskSourceOnCompletedFlags.UseSchedulingContext);
}
