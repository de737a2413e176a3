using System.Threading.Tasks.Sources;

namespace Multikernel.CpuDriver.Capabilities;

/// <summary>
/// A preallocated, reusable awaitable for one distributed capability operation that a domain of
/// this core started (transfer or revoke). Each domain has its own few of them (its share,
/// <see cref="CapabilityOptions.OperationsPerDomain"/>), so a domain that never awaits its
/// operations blocks only itself; when the domain is destroyed they go back to the pool.
/// Completed by the protocol when the reply arrives; returned when the awaiter reads the result.
/// </summary>
internal sealed class PendingOperation : IValueTaskSource<int>, IValueTaskSource
{
    private readonly CoreCapabilities _owner;
    private ManualResetValueTaskSourceCore<int> _core;

    public PendingOperation(CoreCapabilities owner, int index)
    {
        _owner = owner;
        Index = index;
        // Continuations run through the core's synchronization context, never inline inside
        // the protocol's message handler.
        _core.RunContinuationsAsynchronously = true;
    }

    public int Index { get; }

    public bool InUse { get; set; }

    /// <summary>The domain that started it was destroyed: recycle on completion instead of completing.</summary>
    public bool Orphaned { get; set; }

    public bool IsMove { get; set; }

    public int RefIndex { get; set; }

    public uint RefGeneration { get; set; }

    public short Version => _core.Version;

    public bool IsCompleted => _core.GetStatus(_core.Version) != ValueTaskSourceStatus.Pending;

    /// <summary>Request ids name the pool index (16 bits) and the version (16 bits), so a late reply to a recycled operation is ignored.</summary>
    public uint RequestId => (uint)Index | ((uint)(ushort)_core.Version << 16);

    public void Complete(int result) => _core.SetResult(result);

    public void Fail(Exception error) => _core.SetException(error);

    /// <summary>Back to the pool without an awaiter (the version moves on, so a stale awaiter gets an error, never another operation's result).</summary>
    public void Recycle()
    {
        _core.Reset();
        Orphaned = false;
        InUse = false;
    }

    public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);

    public int GetResult(short token)
    {
        try
        {
            return _core.GetResult(token);
        }
        finally
        {
            _core.Reset();
            _owner.ReleasePending(this);
        }
    }

    void IValueTaskSource.GetResult(short token) => GetResult(token);
}
