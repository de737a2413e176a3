using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace Multikernel.CpuDriver.Kernel;

/// <summary>
/// A core's timers: its <see cref="TimerWheel"/> on a 1 µs tick read from the kernel's
/// <see cref="TimeProvider"/>, a pool of delay entries, and the conversions between the clock's
/// timestamps and wheel ticks. Core thread only; other threads reach it through posted work.
/// </summary>
/// <remarks>
/// <para><b>One object.</b> This is the wheel itself (a subclass), not a holder of one: every
/// <see cref="CoreTimer.Change"/> reads the owner check's stack top and the cached now from
/// here and counts the timer in the wheel, and with all three in one object a change loads one
/// reference from the timer and needs no second null check (and the timer is a field smaller).</para>
/// <para><b>The cached now.</b> Arming reads <see cref="ClockNow"/>, which reads the clock once and
/// then serves that tick until the kernel loop invalidates it: at the top of every loop
/// iteration, after every work item, and before firing. So a work item that re-arms a thousand
/// timers (a TCP stack processing a batch of ACKs) reads the clock once, not a thousand times.
/// The price: a timer armed late in a work item counts from the item's first clock read, so it
/// can fire early by at most how long that item had already run — the same kind of error as
/// <see cref="TimeProvider.System"/>'s timers, which count from a coarse millisecond clock that
/// lags real time by up to a scheduler tick. Before the loop starts (boot-time setup on another
/// thread) nothing is cached.</para>
/// <para>The clock is read with <see cref="Stopwatch.GetTimestamp"/> directly when the kernel's
/// provider is <see cref="TimeProvider.System"/> (no virtual call), through the provider
/// otherwise (a test's manual clock).</para>
/// </remarks>
internal sealed class CoreTimers : TimerWheel
{
    private const int PoolRetained = 256;

    private readonly TimeProvider _clock;
    private readonly bool _systemClock;
    private readonly long _divisor;
    private readonly double _scale;
    private readonly Stack<DelayTimer> _pool = new();
    // The cached now, or -1 when the next read must go to the clock: one field, so the hot path's
    // "is it cached?" is a sign test of the value it then uses (a clock that reads negative is
    // simply never cached).
    private long _cachedNow = NotCached;
    private bool _caching;
    // While the loop runs: the top of the core thread's stack, as CoreKernel records it (see
    // OnCoreStack); 0 otherwise.
    private nint _stackTop;
    private const long NotCached = -1;

    public CoreTimers(CoreKernel kernel, TimeProvider clock, int capacity)
        : base(TicksOf(clock.GetTimestamp(), DivisorOf(clock.TimestampFrequency), ScaleOf(clock.TimestampFrequency)), capacity)
    {
        Kernel = kernel;
        _clock = clock;
        _systemClock = ReferenceEquals(clock, TimeProvider.System);
        _divisor = DivisorOf(clock.TimestampFrequency);
        _scale = ScaleOf(clock.TimestampFrequency);
    }

    public CoreKernel Kernel { get; }

    /// <summary>
    /// The clock now in wheel ticks (µs), cached until the loop's next <see cref="Invalidate"/>
    /// (see the remarks). Not the wheel's <see cref="TimerWheel.Now"/>, the next tick it processes.
    /// </summary>
    public long ClockNow
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            long now = _cachedNow;
            return now >= 0 ? now : Refresh();
        }
    }

    /// <summary>
    /// Loop thread: from now on <see cref="ClockNow"/> is cached between invalidations and
    /// <see cref="OnCoreStack"/> knows the core's stack (false: the loop is leaving; read the
    /// clock every time, and let the kernel say who owns the core).
    /// </summary>
    public void SetCaching(bool caching)
    {
        _caching = caching;
        _cachedNow = NotCached;
        // Cleared before the loop's thread can exit (Run clears its own copy later still).
        Volatile.Write(ref _stackTop, caching ? Kernel.StackTop : 0);
    }

    /// <summary>The next <see cref="ClockNow"/> reads the clock.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Invalidate() => _cachedNow = NotCached;

    /// <summary>
    /// True only on the core's own thread, while its loop runs, in a frame within
    /// <see cref="CoreKernel.OwnStackBytes"/> of the loop's: the fast half of
    /// <see cref="CoreKernel.IsCurrentThread"/>, answered from this object because every
    /// <see cref="CoreTimer.Change"/> asks and reads this object anyway (the cached now), so the
    /// question costs no load of the kernel and no call. The test is the kernel's own — the
    /// address of a local lies within the window below the top of the core thread's stack, which
    /// no other thread's stack reaches — against the top the kernel recorded, copied here by
    /// <see cref="SetCaching"/> while the loop runs. False says nothing: the caller then asks
    /// <see cref="CoreKernel.IsOwnerThread"/>, which is always right.
    /// </summary>
    public unsafe bool OnCoreStack
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        [SkipLocalsInit] // only the local's address is used: no store to zero it
        get
        {
            byte probe;
            return (nuint)(_stackTop - (nint)(&probe)) < CoreKernel.OwnStackBytes;
        }
    }

    /// <summary>True while <see cref="OnCoreStack"/> has a stack top to test against (the loop runs); tests.</summary>
    internal bool KnowsCoreStack => Volatile.Read(ref _stackTop) != 0;

    /// <summary>The cached now, or a negative value when <see cref="ClockNow"/> would read the clock.</summary>
    public long CachedNow
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => _cachedNow;
    }

    /// <summary>The clock now, in wheel ticks (µs), read now.</summary>
    public long ReadClock() => TicksOf(_systemClock ? Stopwatch.GetTimestamp() : _clock.GetTimestamp(), _divisor, _scale);

    // Static, for the base constructor's first tick, before this object's fields are set.
    private static long DivisorOf(long frequency) => frequency % 1_000_000 == 0 ? frequency / 1_000_000 : 0;

    private static double ScaleOf(long frequency) => 1_000_000.0 / frequency;

    private static long TicksOf(long timestamp, long divisor, double scale) => divisor > 0 ? timestamp / divisor : (long)(timestamp * scale);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private long Refresh()
    {
        long now = ReadClock();
        if (_caching)
        {
            _cachedNow = now;
        }

        return now;
    }

    /// <summary>Microseconds in <paramref name="timeSpanTicks"/> (100 ns ticks), rounded up (negative = 0).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long Micros(long timeSpanTicks) => timeSpanTicks <= 0 ? 0 : MicrosOfNonNegative(timeSpanTicks);

    /// <summary>
    /// <see cref="Micros"/> for ticks known to be at least 0. Unsigned, so it is right up to
    /// <see cref="TimeSpan.MaxValue"/> (a signed <c>ticks + 9</c> overflows there, and the
    /// longest due time would fire at once) and the division by 10 compiles to a multiply and a
    /// shift, without the signed version's rounding fix-up.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long MicrosOfNonNegative(long timeSpanTicks) => (long)(((ulong)timeSpanTicks + 9) / 10);

    /// <summary>The tick <paramref name="delay"/> from now (rounded up to whole µs; negative = now).</summary>
    public long DueTick(TimeSpan delay) => ClockNow + Micros(delay.Ticks);

    /// <summary>Fires what is due (against a fresh clock read); returns how many fired.</summary>
    public int Fire()
    {
        _cachedNow = NotCached;
        return Linked == 0 ? 0 : Advance(ClockNow);
    }

    /// <summary>True when a timer is due now (a fresh clock read: the park path).</summary>
    public bool HasDue => Linked > 0 && NextEventTick() <= ReadClock();

    /// <summary>Nanoseconds until the wheel next needs the core (a firing or a cascade), or -1 when empty.</summary>
    public long NanosecondsUntilNext()
    {
        long next = NextEventTick();
        if (next == long.MaxValue)
        {
            return -1;
        }

        long micros = next - ReadClock();
        return micros <= 0 ? 0 : micros * 1000;
    }

    /// <summary>
    /// A delay on the wheel: completes on this core after <paramref name="delay"/>, never before
    /// (as <see cref="Task.Delay(TimeSpan)"/> promises), so it counts from a fresh clock read, not
    /// from the cached one the timers' hot re-arm path uses.
    /// </summary>
    public ValueTask Delay(TimeSpan delay, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        DelayTimer timer = _pool.Count > 0 ? _pool.Pop() : new DelayTimer(this);
        // +1: the clock is read in whole µs (truncated), so the arm instant may be up to 1 µs past
        // the tick read; counting from the next tick keeps the delay from ever being short.
        return timer.Start(ReadClock() + 1 + Micros(delay.Ticks), cancellationToken);
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
        _timers.Schedule(this, expires);
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

        _timers.Cancel(this);
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
    // Change's hot path reads _timers (the owner check, the cached now, the wheel's count) and
    // nothing else outside this object; the kernel is one load further, for the cold paths.
    private readonly CoreTimers _timers;
    private readonly TimerCallback _callback;
    private readonly object? _state;
    private const long InfiniteTicks = -TimeSpan.TicksPerMillisecond; // Timeout.InfiniteTimeSpan
    private long _periodTicks;
    private bool _disposed;

    public CoreTimer(CoreTimers timers, TimerCallback callback, object? state)
    {
        _timers = timers;
        _callback = callback;
        _state = state;
    }

    /// <remarks>
    /// The hot path — a TCP stack's arm, its re-arm on every ACK, its disarm when everything is
    /// acknowledged, on the core's thread within a work item — is a handful of tests and stores,
    /// all inlined into the caller: no clock read (the cached now), no call (the owner check is a
    /// subtraction against the core's stack top kept on <see cref="CoreTimers"/>; the wheel's
    /// stores-only re-arm and its lazy disarm are inlined), no division (µs by a multiply), no
    /// allocation. It commits only when every condition holds; anything else — a bad argument, a
    /// disposed timer, another thread, the first arm of a work item (no cached now) — goes to
    /// <see cref="ChangeSlow"/>, which checks everything in order, so the fast path decides
    /// nothing on its own, and no value of it lives across a call (the JIT keeps it in registers).
    /// </remarks>
    public bool Change(TimeSpan dueTime, TimeSpan period)
    {
        long due = dueTime.Ticks;
        long every = period.Ticks;
        CoreTimers timers = _timers;
        if ((every >= 0 || every == InfiniteTicks) && !_disposed && timers.OnCoreStack)
        {
            if (due >= 0)
            {
                long now = timers.CachedNow;
                if (now >= 0 && timers.TryScheduleInPlace(this, now + CoreTimers.MicrosOfNonNegative(due)))
                {
                    _periodTicks = every <= 0 ? 0 : CoreTimers.MicrosOfNonNegative(every);
                    return true;
                }
            }
            else if (due == InfiniteTicks && timers.TryDisarmInPlace(this)) // lazily: the next arm, later, is then two stores
            {
                _periodTicks = every <= 0 ? 0 : CoreTimers.MicrosOfNonNegative(every);
                return true;
            }
        }

        return ChangeSlow(dueTime, period);
    }

    // Change in full, in order: the arguments (refused alike on any thread and on a disposed
    // timer), disposal, the owner (another thread posts the change to the core), then the wheel.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool ChangeSlow(TimeSpan dueTime, TimeSpan period)
    {
        long due = dueTime.Ticks;
        long every = period.Ticks;
        if ((due < 0 && due != InfiniteTicks) || (every < 0 && every != InfiniteTicks))
        {
            ThrowNegative(dueTime, period);
        }

        if (_disposed)
        {
            return false;
        }

        if (!_timers.Kernel.IsOwnerThread)
        {
            PostChange(dueTime, period);
            return true;
        }

        _periodTicks = every <= 0 ? 0 : CoreTimers.MicrosOfNonNegative(every);
        if (due < 0)
        {
            _timers.Disarm(this);
        }
        else
        {
            _timers.Schedule(this, _timers.ClockNow + CoreTimers.MicrosOfNonNegative(due));
        }

        return true;
    }

    private void PostChange(TimeSpan dueTime, TimeSpan period) =>
        _timers.Kernel.Post(static s =>
        {
            var (timer, due, p) = ((CoreTimer, TimeSpan, TimeSpan))s!;
            if (!timer._disposed)
            {
                timer.Change(due, p);
            }
        }, (this, dueTime, period));

    internal override void Expire()
    {
        if (_periodTicks > 0 && !_disposed)
        {
            // Drift-free: the next period counts from this due tick, not from when it ran.
            long next = Expires + _periodTicks;
            _timers.Schedule(this, next < _timers.Now ? _timers.Now : next); // the wheel's now: the next tick it processes
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
            _timers.Cancel(this);
        }
        else
        {
            _ = _timers.Kernel.TryPostInternal(static s => { var t = (CoreTimer)s!; t._timers.Cancel(t); }, this);
        }
    }

    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }

    // Not NoInlining: the JIT then sees that it always throws and compiles its call site as a
    // dead end.
    [DoesNotReturn]
    private static void ThrowNegative(TimeSpan dueTime, TimeSpan period)
    {
        bool badDue = dueTime < TimeSpan.Zero && dueTime != Timeout.InfiniteTimeSpan;
        throw new ArgumentOutOfRangeException(badDue ? nameof(dueTime) : nameof(period), badDue ? dueTime : period, "A timer's due time and period are non-negative or Timeout.InfiniteTimeSpan.");
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
    public int ArmedTimers => _timers.Count;

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

    /// <summary>The core's wheel and clock (tests).</summary>
    internal CoreTimers Wheel => _timers;

    /// <summary>Benchmarks: the next arm on this core reads the clock (as the first arm of a work item does).</summary>
    internal void InvalidateCachedNow() => _timers.Invalidate();

    /// <summary>Completes after <paramref name="delay"/>, on this core; pooled, allocation-free when not cancelled. Core thread only.</summary>
    public ValueTask Delay(TimeSpan delay, CancellationToken cancellationToken = default)
    {
        _timers.Kernel.CheckThread();
        return _timers.Delay(delay, cancellationToken);
    }
}
