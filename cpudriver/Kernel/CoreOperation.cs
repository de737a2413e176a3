using System.Diagnostics;
using System.Threading.Tasks.Sources;

namespace Multikernel.CpuDriver.Kernel;

/// <summary>
/// A reusable, allocation-free awaitable owned by one core. Completion always happens on the
/// owning core's thread, and the continuation is queued on that core's run queue as a struct
/// (no closure, no tuple), so an awaited send/receive/delay that completes later costs nothing
/// on the heap. The version token catches a stale await of a recycled operation.
/// </summary>
public sealed class CoreOperation<T> : IValueTaskSource<T>, IValueTaskSource
{
    private readonly CoreKernel _kernel;
    private Action<object?>? _continuation;
    private object? _continuationState;
    private ExecutionContext? _executionContext;
    private T? _result;
    private Exception? _exception;
    private short _version;
    private bool _completed;
    private bool _observed;
    private CancellationTokenRegistration _registration;
    private bool _registered;

    internal CoreOperation(CoreKernel kernel) => _kernel = kernel;

    /// <summary>
    /// Told when the awaiter has taken the result, so a pool may hand the operation out again.
    /// Reusing an operation before then would cut off its awaiter (its token would be stale).
    /// </summary>
    internal ICoreOperationOwner? Owner { get; set; }

    /// <summary>True once completed and its result not yet taken by the awaiter.</summary>
    internal bool IsUnobserved => _completed && !_observed;

    /// <summary>Current version token.</summary>
    public short Version => _version;

    /// <summary>True between <see cref="Reset"/> and completion.</summary>
    public bool IsPending { get; private set; }

    /// <summary>Arms the operation for a new await and returns its version.</summary>
    public short Reset()
    {
        Debug.Assert(!IsPending, "operation re-armed while pending");
        _version++;
        _completed = false;
        _observed = false;
        _result = default;
        _exception = null;
        _continuation = null;
        _continuationState = null;
        _executionContext = null;
        IsPending = true;
        return _version;
    }

    /// <summary>The operation as a <see cref="ValueTask{T}"/>.</summary>
    public ValueTask<T> AsValueTask() => new(this, _version);

    /// <summary>The operation as a non-generic <see cref="ValueTask"/>.</summary>
    public ValueTask AsValueTaskNonGeneric() => new(this, _version);

    /// <summary>Completes with a result and schedules the continuation on the owning core.</summary>
    public void SetResult(T result)
    {
        _result = result;
        SignalCompletion();
    }

    /// <summary>Completes with an exception and schedules the continuation on the owning core.</summary>
    public void SetException(Exception exception)
    {
        _exception = exception;
        SignalCompletion();
    }

    /// <summary>Ties a cancellation registration to this await: released when the operation completes.</summary>
    internal void AttachRegistration(CancellationTokenRegistration registration)
    {
        _registration = registration;
        _registered = true;
    }

    private void SignalCompletion()
    {
        Debug.Assert(IsPending, "completed twice");
        if (_registered)
        {
            // Waits for a callback running on another thread right now; it only posts.
            _registered = false;
            _registration.Dispose();
            _registration = default;
        }

        IsPending = false;
        _completed = true;
        if (_continuation is not null)
        {
            QueueContinuation();
        }
    }

    private void QueueContinuation()
    {
        Action<object?> continuation = _continuation!;
        object? state = _continuationState;
        _continuation = null;
        _continuationState = null;
        if (_executionContext is { } context)
        {
            _executionContext = null;
            _kernel.PostInternal(static s =>
            {
                var (ctx, cont, st) = ((ExecutionContext, Action<object?>, object?))s!;
                ExecutionContext.Run(ctx, static x => { var (c, v) = ((Action<object?>, object?))x!; c(v); }, (cont, st));
            }, (context, continuation, state));
            return;
        }

        _kernel.PostInternal(continuation, state);
    }

    /// <inheritdoc />
    public ValueTaskSourceStatus GetStatus(short token)
    {
        ValidateToken(token);
        return !_completed ? ValueTaskSourceStatus.Pending
            : _exception is null ? ValueTaskSourceStatus.Succeeded
            : _exception is OperationCanceledException ? ValueTaskSourceStatus.Canceled
            : ValueTaskSourceStatus.Faulted;
    }

    /// <inheritdoc />
    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
    {
        ValidateToken(token);
        _continuation = continuation;
        _continuationState = state;
        if ((flags & ValueTaskSourceOnCompletedFlags.FlowExecutionContext) != 0)
        {
            _executionContext = ExecutionContext.Capture();
        }

        if (_completed)
        {
            // Completed between the awaiter's IsCompleted check and here: still never inline.
            QueueContinuation();
        }
    }

    /// <inheritdoc />
    public T GetResult(short token)
    {
        ValidateToken(token);
        if (!_completed)
        {
            throw new InvalidOperationException("The operation has not completed; await it instead of reading its result.");
        }

        T result = _result!;
        Exception? exception = _exception;
        _observed = true;
        _result = default;
        // The awaiter is done with this operation: its owner may reuse it from here on.
        Owner?.OnConsumed(this);
        if (exception is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(exception);
        }

        return result;
    }

    void IValueTaskSource.GetResult(short token) => GetResult(token);

    private void ValidateToken(short token)
    {
        if (token != _version)
        {
            throw new InvalidOperationException("A URPC operation was awaited twice or after it was reused.");
        }
    }
}

/// <summary>Owns pooled <see cref="CoreOperation{T}"/>s: told when an awaiter has taken one's result.</summary>
internal interface ICoreOperationOwner
{
    void OnConsumed(object operation);
}

