namespace Multikernel.Tests.Apps;

/// <summary>A clock that moves only when the test says so; its timers fire inside <see cref="Advance"/>.</summary>
public sealed class ManualTimeProvider : TimeProvider
{
    private readonly object _gate = new();
    private readonly List<ManualTimer> _timers = [];
    private long _ticks = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero).UtcTicks;

    public override DateTimeOffset GetUtcNow()
    {
        lock (_gate)
        {
            return new DateTimeOffset(_ticks, TimeSpan.Zero);
        }
    }

    public override long GetTimestamp()
    {
        lock (_gate)
        {
            return _ticks;
        }
    }

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var timer = new ManualTimer(this, callback, state);
        timer.Change(dueTime, period);
        return timer;
    }

    /// <summary>True when some timer is due exactly <paramref name="dueIn"/> from now (a deadline the code under test armed).</summary>
    public bool HasTimerDueIn(TimeSpan dueIn)
    {
        lock (_gate)
        {
            return _timers.Exists(t => t.DueTicks == _ticks + dueIn.Ticks);
        }
    }

    /// <summary>Waits (bounded) until <paramref name="condition"/> holds; false if it never did.</summary>
    public static async Task<bool> EventuallyAsync(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + PipeConnection.Patience;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                return false;
            }

            await Task.Delay(1);
        }

        return true;
    }

    /// <summary>Moves the clock forward and fires every timer that came due, in order.</summary>
    public void Advance(TimeSpan by)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(by, TimeSpan.Zero);
        long target;
        lock (_gate)
        {
            target = _ticks + by.Ticks;
        }

        while (true)
        {
            ManualTimer? due = null;
            lock (_gate)
            {
                foreach (ManualTimer t in _timers)
                {
                    if (t.DueTicks <= target && (due is null || t.DueTicks < due.DueTicks))
                    {
                        due = t;
                    }
                }

                if (due is null)
                {
                    _ticks = target;
                    return;
                }

                _ticks = Math.Max(_ticks, due.DueTicks);
                if (due.PeriodTicks > 0)
                {
                    due.DueTicks += due.PeriodTicks;
                }
                else
                {
                    _timers.Remove(due);
                }
            }

            due.Fire();
        }
    }

    private sealed class ManualTimer(ManualTimeProvider owner, TimerCallback callback, object? state) : ITimer
    {
        public long DueTicks;
        public long PeriodTicks;

        public void Fire() => callback(state);

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            lock (owner._gate)
            {
                owner._timers.Remove(this);
                if (dueTime == Timeout.InfiniteTimeSpan)
                {
                    return true;
                }

                DueTicks = owner._ticks + dueTime.Ticks;
                PeriodTicks = period == Timeout.InfiniteTimeSpan ? 0 : period.Ticks;
                owner._timers.Add(this);
                return true;
            }
        }

        public void Dispose() => Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);

        public ValueTask DisposeAsync()
        {
            Dispose();
            return default;
        }
    }
}
