using System.Collections.Concurrent;

namespace Multikernel.Cli.Bench;

/// <summary>
/// A synchronization context whose thread spins on its own work queue, so continuations another
/// thread completes run back on the pinned thread (as on a multikernel core) without parking.
/// Shared by <c>multikernel bench urpc</c> and the BenchmarkDotNet project (linked there).
/// </summary>
internal sealed class SpinPump : SynchronizationContext
{
    private readonly ConcurrentQueue<(SendOrPostCallback Callback, object? State)> _work = new();

    /// <summary>Runs <paramref name="body"/> on this thread until it completes, calling <paramref name="idle"/> between empty polls.</summary>
    public static void Run(Func<Task> body, Action idle)
    {
        ArgumentNullException.ThrowIfNull(body);
        ArgumentNullException.ThrowIfNull(idle);
        SynchronizationContext? previous = Current;
        var pump = new SpinPump();
        SetSynchronizationContext(pump);
        try
        {
            Task task = body();
            while (!task.IsCompleted)
            {
                if (pump._work.TryDequeue(out (SendOrPostCallback Callback, object? State) item))
                {
                    item.Callback(item.State);
                }
                else
                {
                    idle();
                }
            }

            task.GetAwaiter().GetResult();
        }
        finally
        {
            SetSynchronizationContext(previous);
        }
    }

    public override void Post(SendOrPostCallback d, object? state) => _work.Enqueue((d, state));

    public override void Send(SendOrPostCallback d, object? state) =>
        throw new NotSupportedException("The benchmark pump only accepts posted work.");

    public override SynchronizationContext CreateCopy() => this;
}
