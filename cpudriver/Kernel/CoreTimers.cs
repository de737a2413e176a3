namespace Multikernel.CpuDriver.Kernel;

/// <summary>
/// A core's timers: the <see cref="TimerWheel"/> on a 1 µs tick read from the kernel's
/// <see cref="TimeProvider"/>, a pool of delay entries, and the conversions between the clock's
/// timestamps and wheel ticks. Core thread only; other threads reach it through posted work.
/// </summary>
internal sealed class CoreTimers
{
    private const int PoolRetained = 256;

    private readonly TimeProvider _clock;
    private readonly long _divisor;
    private readonly double _scale;
    private readonly Stack<DelayTimer> _pool = new();

    public CoreTimers(CoreKernel kernel, TimeProvider clock, int capacity)
    {
        Kernel = kernel;
        _clock = clock;
        long frequency = clock.TimestampFrequency;
        _divisor = frequency % 1_000_000 == 0 ? frequency / 1_000_000 : 0;
        _scale = 1_000_000.0 / frequency;
        Wheel = new TimerWheel(NowTick(), capacity);
    }

    public CoreKernel Kernel { get; }

    public TimerWheel Wheel { get; }

    /// <summary>The clock now, in wheel ticks (µs).</summary>
    public long NowTick()
    {
        long timestamp = _clock.GetTimestamp();
        return _divisor > 0 ? timestamp / _divisor : (long)(timestamp * _scale);
    }

    /// <summary>The tick <paramref name="delay"/> from now (rounded up to whole µs; negative = now).</summary>
    public long DueTick(TimeSpan delay)
    {
        long micros = delay.Ticks <= 0 ? 0 : (delay.Ticks + 9) / 10;
        return NowTick() + micros;
    }

    /// <summary>Fires what is due; returns how many fired.</summary>
    public int Fire() => Wheel.Count == 0 ? 0 : Wheel.Advance(NowTick());

    /// <summary>True when a timer is due now.</summary>
    public bool HasDue => Wheel.Count > 0 && Wheel.NextEventTick() <= NowTick();

    /// <summary>Nanoseconds until the wheel next needs the core (a firing or a cascade), or -1 when empty.</summary>
    public long NanosecondsUntilNext()
    {
        long next = Wheel.NextEventTick();
        if (next == long.MaxValue)
        {
            return -1;
        }

        long micros = next - NowTick();
        return micros <= 0 ? 0 : micros * 1000;
    }

    /// <summary>A delay on the wheel: completes on this core after <paramref name="delay"/>.</summary>
    public ValueTask Delay(TimeSpan delay, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        DelayTimer timer = _pool.Count > 0 ? _pool.Pop() : new DelayTimer(this);
        return timer.Start(DueTick(delay), cancellationToken);
    }

    public void Return(DelayTimer timer)
    {
        if (_pool.Count < PoolRetained)
        {
            _pool.Push(timer);
        }
    }
}

/// <summary>
/// A pooled delay: a wheel entry and the operation its awaiter waits on. It goes back to the
/// pool when the awaiter has taken the result; its cancellation registration is released as soon
/// as it fires or is cancelled, so a long-lived token does not collect dead registrations.
/// </summary>
internal sealed class DelayTimer : WheelTimer, ICoreOperationOwner
{
    private readonly CoreTimers _timers;
    private readonly CoreOperation<bool> _operation;
    private CancellationTokenRegistration _registration;
    private CancellationToken _token;
    private int _generation;

    public DelayTimer(CoreTimers timers)
    {
        _timers = timers;
        _operation = new CoreOperation<bool>(timers.Kernel) { Owner = this };
    }

    public ValueTask Start(long expires, CancellationToken cancellationToken)
    {
        _operation.Reset();
        _generation++;
        _timers.Wheel.Schedule(this, expires);
        if (cancellationToken.CanBeCanceled)
        {
            _token = cancellationToken;
            // State is the entry itself: nothing allocated here. The callback reads the
            // generation, which cannot change while the registration is live (it is disposed,
            // waiting for a running callback, before the entry can be reused).
            _registration = cancellationToken.UnsafeRegister(static s => ((DelayTimer)s!).OnCancelRequested(), this);
        }

        return _operation.AsValueTaskNonGeneric();
    }

    internal override void Expire()
    {
        ReleaseRegistration();
        _operation.SetResult(true);
    }

    // Any thread: the token was cancelled. The wheel is the core's, so the cancel goes there,
    // naming the delay it was meant for.
    private void OnCancelRequested()
    {
        int generation = _generation;
        _ = _timers.Kernel.TryPostInternal(static s =>
        {
            var (timer, g) = ((DelayTimer, int))s!;
            timer.CancelOnCore(g);
        }, (this, generation));
    }

    private void CancelOnCore(int generation)
    {
        if (generation != _generation || !_operation.IsPending)
        {
            return; // fired already, or a later delay reuses this entry
        }

        _timers.Wheel.Cancel(this);
        CancellationToken token = _token;
        ReleaseRegistration();
        _operation.SetException(new OperationCanceledException(token));
    }

    private void ReleaseRegistration()
    {
        if (_token.CanBeCanceled)
        {
            _registration.Dispose();
            _registration = default;
            _token = default;
        }
    }

    void ICoreOperationOwner.OnConsumed(object operation) => _timers.Return(this);
}

/// <summary>
/// A <see cref="ITimer"/> on a core's wheel: its callback runs on the core's thread, and
/// <see cref="Change"/> on that thread re-arms in O(1) without allocating. From another thread
/// the change is posted to the core.
/// </summary>
internal sealed class CoreTimer : WheelTimer, ITimer
{
    private readonly CoreTimers _timers;
    private readonly TimerCallback _callback;
    private readonly object? _state;
    private long _periodTicks;
    private bool _disposed;

    public CoreTimer(CoreTimers timers, TimerCallback callback, object? state)
    {
        _timers = timers;
        _callback = callback;
        _state = state;
    }

    public bool Change(TimeSpan dueTime, TimeSpan period)
    {
        Validate(dueTime, nameof(dueTime));
        Validate(period, nameof(period));
        if (_disposed)
        {
            return false;
        }

        if (_timers.Kernel.IsOwnerThread)
        {
            Apply(dueTime, period);
        }
        else
        {
            _timers.Kernel.Post(static s =>
            {
                var (timer, due, p) = ((CoreTimer, TimeSpan, TimeSpan))s!;
                if (!timer._disposed)
                {
                    timer.Apply(due, p);
                }
            }, (this, dueTime, period));
        }

        return true;
    }

    private void Apply(TimeSpan dueTime, TimeSpan period)
    {
        _periodTicks = period == Timeout.InfiniteTimeSpan || period == TimeSpan.Zero ? 0 : Math.Max(1, (period.Ticks + 9) / 10);
        if (dueTime == Timeout.InfiniteTimeSpan)
        {
            _timers.Wheel.Cancel(this);
            return;
        }

        _timers.Wheel.Schedule(this, _timers.DueTick(dueTime));
    }

    internal override void Expire()
    {
        if (_periodTicks > 0 && !_disposed)
        {
            // Drift-free: the next period counts from this due tick, not from when it ran.
            long next = Expires + _periodTicks;
            _timers.Wheel.Schedule(this, next < _timers.Wheel.Now ? _timers.Wheel.Now : next);
        }

        try
        {
            _callback(_state);
        }
#pragma warning disable CA1031 // a timer callback's fault is reported, not allowed to stop the core
        catch (Exception ex)
#pragma warning restore CA1031
        {
            _timers.Kernel.ReportUnhandled(ex);
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        if (_timers.Kernel.IsOwnerThread)
        {
            _timers.Wheel.Cancel(this);
        }
        else
        {
            _ = _timers.Kernel.TryPostInternal(static s => { var t = (CoreTimer)s!; t._timers.Wheel.Cancel(t); }, this);
        }
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }

    private static void Validate(TimeSpan value, string name)
    {
        if (value < TimeSpan.Zero && value != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentOutOfRangeException(name, value, "A timer's due time and period are non-negative or Timeout.InfiniteTimeSpan.");
        }
    }
}

/// <summary>
/// A core's <see cref="TimeProvider"/>: the kernel's clock for timestamps and wall time, and
/// timers on the core's own wheel whose callbacks run on the core's thread (not the thread pool),
/// so a domain's timer callback touches its own state without locks. Timer callbacks do not
/// carry the creator's <see cref="ExecutionContext"/> (no AsyncLocal, no ambient trace span): a
/// retransmission timer is nobody's child.
/// </summary>
public sealed class CoreTimeProvider : TimeProvider
{
    private readonly CoreTimers _timers;
    private readonly TimeProvider _clock;

    internal CoreTimeProvider(CoreTimers timers, TimeProvider clock)
    {
        _timers = timers;
        _clock = clock;
    }

    /// <summary>The core whose wheel this is.</summary>
    public int CoreId => _timers.Kernel.Id;

    /// <summary>Timers armed on the core now. Core thread (racy elsewhere).</summary>
    public int ArmedTimers => _timers.Wheel.Count;

    /// <inheritdoc />
    public override long GetTimestamp() => _clock.GetTimestamp();

    /// <inheritdoc />
    public override long TimestampFrequency => _clock.TimestampFrequency;

    /// <inheritdoc />
    public override DateTimeOffset GetUtcNow() => _clock.GetUtcNow();

    /// <inheritdoc />
    public override TimeZoneInfo LocalTimeZone => _clock.LocalTimeZone;

    /// <inheritdoc />
    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        ArgumentNullException.ThrowIfNull(callback);
        var timer = new CoreTimer(_timers, callback, state);
        timer.Change(dueTime, period);
        return timer;
    }

    /// <summary>Completes after <paramref name="delay"/>, on this core; pooled, allocation-free when not cancelled. Core thread only.</summary>
    public ValueTask Delay(TimeSpan delay, CancellationToken cancellationToken = default)
    {
        _timers.Kernel.CheckThread();
        return _timers.Delay(delay, cancellationToken);
    }
}
