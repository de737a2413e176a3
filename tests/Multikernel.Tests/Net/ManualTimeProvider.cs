namespace Multikernel.Tests.Net;

/// <summary>
/// A virtual clock for deterministic network tests: time moves only when the test (or
/// <see cref="SimNetwork"/>) advances it, and due timers fire synchronously on the caller's
/// thread, in due order — the same single-threaded contract as a core's timer wheel.
/// </summary>
internal sealed class ManualTimeProvider : TimeProvider
{
    private readonly List<ManualTimer> _timers = [];
    private long _now;

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    public override long GetTimestamp() => _now;

    public override DateTimeOffset GetUtcNow() => new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero).AddTicks(_now);

    public long NowTicks => _now;

    public TimeSpan Elapsed => TimeSpan.FromTicks(_now);

    /// <summary>Live (armed) timers.</summary>
    public int ArmedTimers { get { int n = 0; foreach (ManualTimer t in _timers) { if (t.DueAt != long.MaxValue) { n++; } } return n; } }

    public int CreatedTimers => _timers.Count;

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var timer = new ManualTimer(this, callback, state);
        _timers.Add(timer);
        timer.Change(dueTime, period);
        return timer;
    }

    /// <summary>When the next timer is due (long.MaxValue for none).</summary>
    public long NextDue
    {
        get
        {
            long next = long.MaxValue;
            foreach (ManualTimer t in _timers)
            {
                next = Math.Min(next, t.DueAt);
            }

            return next;
        }
    }

    /// <summary>Moves the clock to <paramref name="ticks"/>, firing every timer due on the way, in order.</summary>
    public void AdvanceTo(long ticks)
    {
        while (true)
        {
            ManualTimer? due = null;
            foreach (ManualTimer t in _timers)
            {
                if (t.DueAt <= ticks && (due is null || t.DueAt < due.DueAt))
                {
                    due = t;
                }
            }

            if (due is null)
            {
                break;
            }

            _now = Math.Max(_now, due.DueAt);
            due.Fire();
        }

        _now = Math.Max(_now, ticks);
    }

    public void Advance(TimeSpan by) => AdvanceTo(_now + by.Ticks);

    private void Remove(ManualTimer timer) => _timers.Remove(timer);

    private sealed class ManualTimer(ManualTimeProvider owner, TimerCallback callback, object? state) : ITimer
    {
        private long _period = -1;

        public long DueAt { get; private set; } = long.MaxValue;

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            DueAt = dueTime == Timeout.InfiniteTimeSpan ? long.MaxValue : owner._now + Math.Max(0, dueTime.Ticks);
            _period = period == Timeout.InfiniteTimeSpan || period == TimeSpan.Zero ? -1 : period.Ticks;
            return true;
        }

        public void Fire()
        {
            DueAt = _period > 0 ? owner._now + _period : long.MaxValue;
            callback(state);
        }

        public void Dispose()
        {
            DueAt = long.MaxValue;
            owner.Remove(this);
        }

        public ValueTask DisposeAsync()
        {
            Dispose();
            return ValueTask.CompletedTask;
        }
    }
}

/// <summary>A single-threaded synchronization context: posted continuations wait in a queue the simulation drains, like a core's run queue.</summary>
internal sealed class SimSynchronizationContext : SynchronizationContext
{
    private readonly Queue<(SendOrPostCallback Callback, object? State)> _queue = new();
    private readonly int _thread = Environment.CurrentManagedThreadId;
    private string? _foreign;

    public int Pending => _queue.Count;

    /// <summary>
    /// Work must only ever be posted from the simulation's own thread: a post from another thread
    /// means some continuation left the simulation (the thread pool ran it), so the run is no
    /// longer deterministic. It is recorded and fails the next step, with the poster's stack.
    /// </summary>
    public override void Post(SendOrPostCallback d, object? state)
    {
        if (Environment.CurrentManagedThreadId != _thread)
        {
            Interlocked.CompareExchange(ref _foreign, Environment.StackTrace, null);
            return;
        }

        _queue.Enqueue((d, state));
    }

    /// <summary>Fails when anything was posted from another thread (see <see cref="Post"/>).</summary>
    public void ThrowIfLeftTheThread(int seed)
    {
        if (Volatile.Read(ref _foreign) is { } where)
        {
            throw new InvalidOperationException($"A continuation left the simulation's thread and posted back from another one (seed {seed}): {where}");
        }
    }

    public override void Send(SendOrPostCallback d, object? state) => throw new NotSupportedException("The simulation never blocks.");

    /// <summary>Runs everything queued (and what that queues); returns how many ran.</summary>
    public int RunAll()
    {
        SynchronizationContext? previous = Current;
        SetSynchronizationContext(this);
        int n = 0;
        try
        {
            while (_queue.TryDequeue(out (SendOrPostCallback Callback, object? State) item))
            {
                item.Callback(item.State);
                n++;
            }
        }
        finally
        {
            SetSynchronizationContext(previous);
        }

        return n;
    }

    /// <summary>Runs <paramref name="action"/> with this context current, so its awaits come back here.</summary>
    public T Run<T>(Func<T> action)
    {
        SynchronizationContext? previous = Current;
        SetSynchronizationContext(this);
        try
        {
            return action();
        }
        finally
        {
            SetSynchronizationContext(previous);
        }
    }
}
