namespace Multikernel.CpuDriver.Kernel;

/// <summary>
/// A kernel's own counters. Written only by the owning core's thread; other threads (the stats
/// table, metrics) read them racily with <see cref="Volatile"/> reads, which is enough for
/// monotonic 64-bit counters on 64-bit hardware.
/// </summary>
public sealed class CoreCounters
{
    internal CoreCounters(int cores)
    {
        SentTo = new long[cores];
        ReceivedFrom = new long[cores];
        StallsTo = new long[cores];
        WindowStallsTo = new long[cores];
    }

    /// <summary>Messages sent to each core (index = destination; own index = same-core deliveries).</summary>
    internal long[] SentTo { get; }

    /// <summary>Messages received from each core.</summary>
    internal long[] ReceivedFrom { get; }

    /// <summary>Times a send found the ring to each core full and had to stall.</summary>
    internal long[] StallsTo { get; }

    /// <summary>Times a send to each core had to wait for its channel's receiver to return credits (flow control, not a full ring).</summary>
    internal long[] WindowStallsTo { get; }

    internal long BusyTicks;
    internal long IdleTicks;
    internal long Parks;
    internal long Iterations;
    internal long WorkItems;
    internal long DroppedToClosedEndpoint;
    internal long RefusedPosts;

    /// <summary>Messages sent to <paramref name="core"/>.</summary>
    public long Sent(int core) => Volatile.Read(ref SentTo[core]);

    /// <summary>Messages received from <paramref name="core"/>.</summary>
    public long Received(int core) => Volatile.Read(ref ReceivedFrom[core]);

    /// <summary>Ring-full stalls towards <paramref name="core"/>.</summary>
    public long Stalls(int core) => Volatile.Read(ref StallsTo[core]);

    /// <summary>Sends to <paramref name="core"/> that waited for their channel's window.</summary>
    public long WindowStalls(int core) => Volatile.Read(ref WindowStallsTo[core]);

    /// <summary>Total messages sent.</summary>
    public long TotalSent { get { long s = 0; for (int i = 0; i < SentTo.Length; i++) { s += Volatile.Read(ref SentTo[i]); } return s; } }

    /// <summary>Total messages received.</summary>
    public long TotalReceived { get { long s = 0; for (int i = 0; i < ReceivedFrom.Length; i++) { s += Volatile.Read(ref ReceivedFrom[i]); } return s; } }

    /// <summary>Total ring-full stalls.</summary>
    public long TotalStalls { get { long s = 0; for (int i = 0; i < StallsTo.Length; i++) { s += Volatile.Read(ref StallsTo[i]); } return s; } }

    /// <summary>Time the core spent doing work, in <see cref="TimeProvider"/> timestamp ticks.</summary>
    public long Busy => Volatile.Read(ref BusyTicks);

    /// <summary>Time the core spent idle (spinning or parked), in timestamp ticks.</summary>
    public long Idle => Volatile.Read(ref IdleTicks);

    /// <summary>Times the core parked.</summary>
    public long ParkCount => Volatile.Read(ref Parks);

    /// <summary>Kernel loop iterations.</summary>
    public long LoopIterations => Volatile.Read(ref Iterations);

    /// <summary>Continuations and posted work items run.</summary>
    public long WorkItemsRun => Volatile.Read(ref WorkItems);

    /// <summary>Posts from the core's own thread refused because the run queue was at RunQueueCapacity.</summary>
    public long RefusedPostCount => Volatile.Read(ref RefusedPosts);

    /// <summary>Messages that arrived for an endpoint that no longer exists.</summary>
    public long Dropped => Volatile.Read(ref DroppedToClosedEndpoint);
}
