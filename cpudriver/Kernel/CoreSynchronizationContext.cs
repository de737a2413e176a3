namespace Multikernel.CpuDriver.Kernel;

/// <summary>
/// The synchronization context installed on a core's thread: anything a domain awaits comes
/// back to the same core, whichever thread completed it.
/// </summary>
public sealed class CoreSynchronizationContext : SynchronizationContext
{
    private readonly CoreKernel _kernel;

    internal CoreSynchronizationContext(CoreKernel kernel) => _kernel = kernel;

    /// <summary>The core this context belongs to.</summary>
    public int CoreId => _kernel.Id;

    /// <inheritdoc />
    public override void Post(SendOrPostCallback d, object? state) => _kernel.PostCallback(d, state);

    /// <inheritdoc />
    public override void Send(SendOrPostCallback d, object? state)
    {
        if (_kernel.IsCurrentThread)
        {
            d(state);
            return;
        }

        throw new NotSupportedException("A core never blocks waiting for another thread; use Post.");
    }

    /// <inheritdoc />
    public override SynchronizationContext CreateCopy() => this;
}

/// <summary>A task scheduler that runs tasks on one core's run queue.</summary>
public sealed class CoreTaskScheduler : TaskScheduler
{
    private readonly CoreKernel _kernel;

    internal CoreTaskScheduler(CoreKernel kernel) => _kernel = kernel;

    /// <inheritdoc />
    public override int MaximumConcurrencyLevel => 1;

    /// <inheritdoc />
    protected override void QueueTask(Task task) =>
        _kernel.Post(static s => { var (sched, t) = ((CoreTaskScheduler, Task))s!; sched.TryExecuteTask(t); }, (this, task));

    /// <inheritdoc />
    protected override bool TryExecuteTaskInline(Task task, bool taskWasPreviouslyQueued) =>
        _kernel.IsCurrentThread && TryExecuteTask(task);

    /// <inheritdoc />
    protected override IEnumerable<Task>? GetScheduledTasks() => null;
}
