using System.Threading.Channels;
using Multikernel.CpuDriver.Kernel;

namespace Multikernel.CpuDriver.Channels;

/// <summary>
/// Flow control for capabilities granted over a channel, the same way data is flow-controlled:
/// a sender holds <see cref="KernelOptions.ChannelGrantWindow"/> grant credits; each capability
/// it passes takes one, and the receiver's kernel gives it back (a control message on the ring)
/// when the receiver takes the grant from its queue. A receiver that never takes what it is
/// given stalls its sender's next send (it does not complete) instead of failing it, and holds
/// only one window of capabilities, all billed to the sender (seed 002).
/// </summary>
public sealed partial class Endpoint
{
    private readonly int _grantWindow;
    private readonly Queue<TaskCompletionSource> _grantWaiters = new();
    private int _grantCredits;
    private int _grantCreditToReturn;

    /// <summary>Grant credits left before the sender's next capability send stalls.</summary>
    internal int GrantCredits => _grantCredits;

    /// <summary>
    /// Takes one grant credit, waiting (the send stalls) while the receiver has a whole window of
    /// grants untaken. Fails when this end was completed or the other end is gone. Core thread.
    /// </summary>
    internal Task AcquireGrantCreditAsync(CancellationToken cancellationToken)
    {
        _kernel.CheckThread();
        ThrowIfNotConnected();
        if (_localClosed || _peerGone)
        {
            throw new ChannelClosedException(_peerGone ? $"The other end of {Name} was closed." : $"Endpoint {Name} was completed; no more grants.");
        }

        if (_grantCredits > 0 && _grantWaiters.Count == 0)
        {
            _grantCredits--;
            return Task.CompletedTask;
        }

        if (_grantWaiters.Count >= _maxWaiters)
        {
            throw new InvalidOperationException($"Endpoint {Name} already has {_maxWaiters} capability sends waiting for the receiver (MaxWaitersPerEndpoint).");
        }

        _kernel.Counters.WindowStallsTo[RemoteCore]++;
        var waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _grantWaiters.Enqueue(waiter);
        if (!cancellationToken.CanBeCanceled)
        {
            return waiter.Task;
        }

        // The waiter stays queued when cancelled; the next credit skips it (it is already completed).
        CancellationTokenRegistration registration = cancellationToken.Register(static state => ((TaskCompletionSource)state!).TrySetCanceled(), waiter);
        _ = waiter.Task.ContinueWith(static (_, r) => ((CancellationTokenRegistration)r!).Dispose(), registration, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        return waiter.Task;
    }

    /// <summary>Gives back a credit taken for a grant that never reached the receiver's queue (the transfer failed). Core thread.</summary>
    internal void RefundGrantCredit()
    {
        _kernel.CheckThread();
        OnGrantCredits(1);
    }

    /// <summary>The receiver took <paramref name="count"/> grants from its queue: the sender may pass as many more. Core thread.</summary>
    internal void ReturnGrantCredits(int count)
    {
        _kernel.CheckThread();
        if (count <= 0 || RemoteCore < 0 || _peerGone || _released)
        {
            return;
        }

        _grantCreditToReturn += count;
        TrySendControlOrStall();
    }

    private void OnGrantCredits(int count)
    {
        _grantCredits += count;
        if (_grantCredits > _grantWindow)
        {
            // Only the peer's kernel sends these; more than a window means a protocol bug, not a hostile domain.
            throw new InvalidOperationException($"Endpoint {Name} received more grant credits than its window ({_grantCredits} > {_grantWindow}).");
        }

        while (_grantCredits > 0 && _grantWaiters.TryDequeue(out TaskCompletionSource? waiter))
        {
            if (waiter.TrySetResult())
            {
                _grantCredits--;
            }
        }
    }

    private void CancelGrantWaiters(Exception exception)
    {
        while (_grantWaiters.TryDequeue(out TaskCompletionSource? waiter))
        {
            waiter.TrySetException(exception);
        }
    }
}
