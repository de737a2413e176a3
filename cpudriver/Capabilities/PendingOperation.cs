using System.Threading.Tasks.Sources;

namespace Multikernel.CpuDriver.Capabilities;

/// <summary>
/// A preallocated, reusable awaitable for one distributed capability operation that a domain of
/// this core started (transfer or revoke). Completed by the protocol when the reply arrives;
/// returned to the core's free list when the awaiter reads the result.
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

    public bool IsMove { get; set; }

    public int RefIndex { get; set; }

    public uint RefGeneration { get; set; }

    public short Version => _core.Version;

    public uint RequestId => (uint)Index | ((uint)(ushort)_core.Version << 16);

    public void Complete(int result) => _core.SetResult(result);

    public void Fail(Exception error) => _core.SetException(error);

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
