using BenchmarkDotNet.Attributes;
using Multikernel.CpuDriver.Kernel;

namespace Multikernel.Benchmarks;

/// <summary>
/// The per-core timer wheel directly (no kernel loop): arm, reset and cancel of
/// <see cref="Timers"/> entries per operation, with the memory diagnoser showing 0 B. The
/// baseline is <see cref="TimeProvider.System"/> timers changed the same way.
/// </summary>
[MemoryDiagnoser]
public class TimerWheelBenchmarks
{
    public const int Timers = 1024;

    private sealed class Entry : WheelTimer
    {
        internal override void Expire()
        {
        }
    }

    private readonly Entry[] _entries = new Entry[Timers];
    private readonly ITimer[] _system = new ITimer[Timers];
    private TimerWheel _wheel = null!;
    private long _now;

    [GlobalSetup]
    public void Setup()
    {
        _now = 1;
        _wheel = new TimerWheel(_now, Timers);
        for (int i = 0; i < Timers; i++)
        {
            _entries[i] = new Entry();
            _system[i] = TimeProvider.System.CreateTimer(static _ => { }, null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (ITimer timer in _system)
        {
            timer.Dispose();
        }
    }

    /// <summary>Arm, re-arm and cancel every entry once: 3 x <see cref="Timers"/> wheel operations.</summary>
    [Benchmark(OperationsPerInvoke = 3 * Timers)]
    public void WheelArmResetCancel()
    {
        TimerWheel wheel = _wheel;
        long now = _now;
        for (int i = 0; i < Timers; i++)
        {
            wheel.Schedule(_entries[i], now + 10_000 + ((i * 7919) % 2_000_000));
        }

        for (int i = 0; i < Timers; i++)
        {
            wheel.Schedule(_entries[i], now + 200_000 + (i % 1_000_000));
        }

        for (int i = 0; i < Timers; i++)
        {
            wheel.Cancel(_entries[i]);
        }
    }

    /// <summary>The same pattern on <see cref="TimeProvider.System"/> timers.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = 3 * Timers)]
    public void SystemArmResetCancel()
    {
        for (int i = 0; i < Timers; i++)
        {
            _system[i].Change(TimeSpan.FromMilliseconds(10 + ((i * 7919) % 2000)), Timeout.InfiniteTimeSpan);
        }

        for (int i = 0; i < Timers; i++)
        {
            _system[i].Change(TimeSpan.FromMilliseconds(200 + (i % 1000)), Timeout.InfiniteTimeSpan);
        }

        for (int i = 0; i < Timers; i++)
        {
            _system[i].Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        }
    }
}
