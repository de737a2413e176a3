namespace Multikernel.CpuDriver.Capabilities;

/// <summary>
/// Notices of copies a revoke took from this CSpace (not ones the domain deleted itself): netd
/// learns that an application revoked a PacketFilter it installed, a stack that its registered
/// region was taken. The queue holds one notice per slot (the revoke empties the slot, so at
/// most that many are new at once); should a domain not take them while slots are reused and
/// revoked again, the oldest stay, later ones are counted in <see cref="RevocationsLost"/>, and
/// the domain rescans its slots (<see cref="IsEmpty"/>).
/// </summary>
public sealed partial class CSpace
{
    private readonly CapabilityRevocation[] _revocations;
    private int _revocationHead;
    private int _revocationCount;
    private TaskCompletionSource? _revocationWaiter;

    /// <summary>Revocation notices that did not fit the queue since the domain last took one.</summary>
    public long RevocationsLost { get; private set; }

    internal void QueueRevocation(in CapabilityRevocation notice)
    {
        if (_revocationCount == _revocations.Length)
        {
            RevocationsLost++;
        }
        else
        {
            _revocations[(_revocationHead + _revocationCount) % _revocations.Length] = notice;
            _revocationCount++;
        }

        // Completed on the core's thread; the waiter continues on its own context, not inside the protocol.
        TaskCompletionSource? waiter = _revocationWaiter;
        _revocationWaiter = null;
        waiter?.TrySetResult();
    }

    /// <summary>Takes the oldest notice of a copy a revoke removed from this CSpace. Core thread.</summary>
    public bool TryTakeRevocation(out CapabilityRevocation notice)
    {
        _core.CheckThread();
        if (_revocationCount == 0)
        {
            notice = default;
            return false;
        }

        notice = _revocations[_revocationHead];
        _revocationHead = (_revocationHead + 1) % _revocations.Length;
        _revocationCount--;
        return true;
    }

    /// <summary>Completes when a revocation notice is waiting (at once if one is). Core thread; one waiter at a time.</summary>
    public Task WaitForRevocationAsync(CancellationToken cancellationToken = default)
    {
        _core.CheckThread();
        if (_revocationCount > 0)
        {
            return Task.CompletedTask;
        }

        if (_revocationWaiter is not null)
        {
            throw new InvalidOperationException($"{this} already has a task waiting for revocation notices.");
        }

        _revocationWaiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        return _revocationWaiter.Task.WaitAsync(cancellationToken);
    }
}
