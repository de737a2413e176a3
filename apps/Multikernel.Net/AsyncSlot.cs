using System.Threading.Tasks.Sources;

namespace Multikernel.Net;

/// <summary>
/// One reusable pending operation (a socket's read, write, accept or connect): a
/// <see cref="ManualResetValueTaskSourceCore{TResult}"/> with a version token, so awaiting costs
/// no allocation. The continuation is always posted to the stack's home context (its core), never
/// run inside segment processing and never on the thread pool, whatever the awaiter asked for.
/// </summary>
/// <remarks>
/// Why the awaiter's own choice is not followed: BCL code (StreamReader, StreamPipeReader,
/// Stream.CopyToAsync) awaits with <c>ConfigureAwait(false)</c>. If its continuation ran on the
/// thread pool it would call back into the single-threaded stack from another thread. So a
/// <c>ConfigureAwait(false)</c> continuation runs on the core too — but with no synchronization
/// context current while it runs: .NET refuses to inline a context-free continuation on a thread
/// that has a context (<c>IsValidLocationForInlining</c>) and queues it to the thread pool
/// instead, which is exactly how such code would leave the core one level further up. With none
/// current, the chain of context-free awaits above it completes inline, on the core, and the
/// first awaiter that did capture the core's context is posted back to it as usual.
/// </remarks>
internal sealed class AsyncSlot<T> : IValueTaskSource<T>, IValueTaskSource
{
    private static readonly Action<object?> s_dispatch = static s => ((AsyncSlot<T>)s!).Dispatch();
    private static readonly SendOrPostCallback s_run = static s => ((AsyncSlot<T>)s!).RunContinuation();
    private static readonly ContextCallback s_invokeInContext = static s => ((AsyncSlot<T>)s!).Invoke();

    private readonly SynchronizationContext _home;
    private ManualResetValueTaskSourceCore<T> _core = new() { RunContinuationsAsynchronously = false };
    private CancellationTokenRegistration _cancellation;
    private Action<object?>? _continuation;
    private object? _continuationState;
    private ExecutionContext? _executionContext;
    private bool _wantsContext;

    /// <summary>A slot whose continuations and cancellations run on <paramref name="home"/> (the stack's core).</summary>
    public AsyncSlot(SynchronizationContext home) => _home = home;

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
            short token = _core.Version;
            // The token may be cancelled on any thread (a timer, another core's code): the
            // cancellation itself always runs on the stack's core.
            _cancellation = cancellationToken.UnsafeRegister(static (state, ct) =>
            {
                var (slot, version) = ((AsyncSlot<T>, short))state!;
                slot._home.Post(static s => { var (sl, v, c) = ((AsyncSlot<T>, short, CancellationToken))s!; sl.CancelFromStackThread(v, c); }, (slot, version, ct));
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
    /// Records the awaiter's continuation; the core calls <see cref="Dispatch"/> synchronously
    /// on completion (inside the stack's processing), which only posts it to the home context.
    /// </summary>
    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
    {
        _continuation = continuation;
        _continuationState = state;
        _wantsContext = (flags & ValueTaskSourceOnCompletedFlags.UseSchedulingContext) != 0;
        _executionContext = (flags & ValueTaskSourceOnCompletedFlags.FlowExecutionContext) != 0 ? ExecutionContext.Capture() : null;
        if (_core.GetStatus(token) != ValueTaskSourceStatus.Pending)
        {
            // Already complete (the core would queue to the thread pool here): post it ourselves.
            Dispatch();
            return;
        }

        _core.OnCompleted(s_dispatch, this, token, ValueTaskSourceOnCompletedFlags.None);
    }

    private void Dispatch() => _home.Post(s_run, this);

    private void RunContinuation()
    {
        if (_wantsContext)
        {
            RunInExecutionContext();
            return;
        }

        // ConfigureAwait(false): run on the core with no context current (see the remarks).
        SynchronizationContext? previous = SynchronizationContext.Current;
        SynchronizationContext.SetSynchronizationContext(null);
        try
        {
            RunInExecutionContext();
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(previous);
        }
    }

    private void RunInExecutionContext()
    {
        if (_executionContext is { } ec)
        {
            _executionContext = null;
            ExecutionContext.Run(ec, s_invokeInContext, this);
        }
        else
        {
            Invoke();
        }
    }

    private void Invoke()
    {
        Action<object?>? continuation = _continuation;
        object? state = _continuationState;
        _continuation = null;
        _continuationState = null;
        continuation?.Invoke(state);
    }
}
