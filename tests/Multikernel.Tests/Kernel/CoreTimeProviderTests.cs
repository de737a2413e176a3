using System.Diagnostics;
using Multikernel.CpuDriver.Kernel;

namespace Multikernel.Tests.Kernel;

public sealed class CoreTimeProviderTests
{
    [Fact]
    public async Task CreateTimer_FiresOnTheCoresThread_Periodically_AndStopsWhenDisposed()
    {
        using var rig = new KernelRig(1);
        int onCore = 0;
        int offCore = 0;
        var fiveTicks = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        int ticks = 0;
        ITimer timer = rig[0].Timers.CreateTimer(_ =>
        {
            if (rig[0].IsCurrentThread) { onCore++; } else { offCore++; }
            if (++ticks == 5) { fiveTicks.SetResult(); }
        }, null, TimeSpan.FromMilliseconds(1), TimeSpan.FromMilliseconds(2));
        await fiveTicks.Task.WaitAsync(KernelRig.Patience);
        timer.Dispose();
        int after = await rig.On(0, () => ticks);
        await Task.Delay(50);
        Assert.Equal(after, await rig.On(0, () => ticks));
        Assert.Equal(0, offCore);
        Assert.True(onCore >= 5);
        Assert.Equal(0, await rig.On(0, () => rig[0].Timers.ArmedTimers));
    }

    [Fact]
    public async Task Change_OnTheCore_ReArmsWithoutAllocating()
    {
        using var rig = new KernelRig(1);
        long allocated = await rig.On(0, () =>
        {
            ITimer timer = rig[0].Timers.CreateTimer(static _ => { }, null, TimeSpan.FromSeconds(10), Timeout.InfiniteTimeSpan);
            for (int i = 0; i < 1000; i++)
            {
                timer.Change(TimeSpan.FromMilliseconds(200 + i), Timeout.InfiniteTimeSpan);
            }

            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 100_000; i++)
            {
                timer.Change(TimeSpan.FromMilliseconds(200 + (i & 1023)), Timeout.InfiniteTimeSpan);
            }

            long bytes = GC.GetAllocatedBytesForCurrentThread() - before;
            timer.Dispose();
            return bytes;
        });
        Assert.Equal(0, allocated);
    }

    [Fact]
    public async Task ArmDisarmRearmLater_CountsOneArmedTimer_AndItFires()
    {
        // The TCP pattern on CoreTimer's in-place path: armed, pushed out, disarmed (lazily: the
        // node stays), armed again later — the core counts exactly the armed ones, and it fires.
        using var rig = new KernelRig(1);
        var fired = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        (int AfterArm, int AfterDisarm, int AfterRearm) counts = await rig.On(0, () =>
        {
            ITimer timer = rig[0].Timers.CreateTimer(_ => fired.TrySetResult(), null, TimeSpan.FromSeconds(5), Timeout.InfiniteTimeSpan);
            timer.Change(TimeSpan.FromSeconds(6), Timeout.InfiniteTimeSpan);
            int afterArm = rig[0].Timers.ArmedTimers;
            timer.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            int afterDisarm = rig[0].Timers.ArmedTimers;
            timer.Change(TimeSpan.FromSeconds(7), Timeout.InfiniteTimeSpan);
            timer.Change(TimeSpan.FromMilliseconds(5), Timeout.InfiniteTimeSpan); // earlier: moved in the wheel
            return (afterArm, afterDisarm, rig[0].Timers.ArmedTimers);
        });
        Assert.Equal((1, 0, 1), counts);
        await fired.Task.WaitAsync(KernelRig.Patience);
        Assert.Equal(0, await rig.On(0, () => rig[0].Timers.ArmedTimers));
    }

    [Fact]
    public async Task TaskDelay_AndCancelAfter_WorkOnTheCoresProvider()
    {
        using var rig = new KernelRig(1);
        bool resumedOnCore = await rig.On(0, async () =>
        {
            await Task.Delay(TimeSpan.FromMilliseconds(2), rig[0].Timers);
            using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(2), rig[0].Timers);
            await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await rig[0].Delay(TimeSpan.FromHours(1), cts.Token));
            return rig[0].IsCurrentThread;
        });
        Assert.True(resumedOnCore);
    }

    [Fact]
    public async Task PooledDelays_AllocateNothing()
    {
        using var rig = new KernelRig(1);
        long allocated = await rig.On(0, async () =>
        {
            for (int i = 0; i < 100; i++)
            {
                await rig[0].Delay(TimeSpan.Zero);
            }

            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 2000; i++)
            {
                await rig[0].Delay(TimeSpan.Zero);
            }

            return GC.GetAllocatedBytesForCurrentThread() - before;
        });
        Assert.True(allocated < 1024, $"2000 delays allocated {allocated} bytes");
    }

    [Fact]
    public async Task ChangeFromAnotherThread_IsPostedToTheCore_NeverAppliedInPlace()
    {
        // Change's fast path decides "on the core" by the address of a local against the core's
        // stack top (kept on CoreTimers). Every other thread must go through the core: from each
        // kind of foreign thread, while the core is held inside a work item whose cached now is
        // set (so only the thread is wrong), a change returns true and leaves the wheel alone
        // until the core runs it.
        using var rig = new KernelRig(2);
        (ITimer armed, ITimer idle, ITimer spare) = await rig.On(0, () => (
            rig[0].Timers.CreateTimer(static _ => { }, null, TimeSpan.FromSeconds(30), Timeout.InfiniteTimeSpan),
            rig[0].Timers.CreateTimer(static _ => { }, null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan),
            rig[0].Timers.CreateTimer(static _ => { }, null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan)));
        var threads = new (string Who, Func<Action, Task> Run)[]
        {
            ("another core's kernel thread", change => rig.On(1, () => { change(); return 0; })),
            ("a pool thread", change => Task.Run(change)),
            ("the test's thread", change => { change(); return Task.CompletedTask; }),
            ("a thread of the host with a 16 MiB stack", change => RunOnNewThread(change, 16 * 1024 * 1024)),
        };
        try
        {
            foreach ((string who, Func<Action, Task> run) in threads)
            {
                using var holding = new ManualResetEventSlim();
                using var gate = new ManualResetEventSlim();
                Task<int> held = rig.On(0, () =>
                {
                    spare.Change(TimeSpan.FromSeconds(10), Timeout.InfiniteTimeSpan); // caches the item's now
                    holding.Set();
                    gate.Wait(KernelRig.Patience);
                    return 0;
                });
                try
                {
                    Assert.True(holding.Wait(KernelRig.Patience));
                    long expires = ((WheelTimer)armed).Expires;
                    await run(() =>
                    {
                        Assert.True(idle.Change(TimeSpan.FromSeconds(20), Timeout.InfiniteTimeSpan));
                        Assert.True(armed.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan));
                    });

                    // The core is still held: its wheel must be as it was.
                    Assert.False(((WheelTimer)idle).Armed, who);
                    Assert.True(((WheelTimer)armed).Armed, who);
                    Assert.Equal(expires, ((WheelTimer)armed).Expires);
                }
                finally
                {
                    gate.Set();
                    await held;
                }

                // The posted changes ran on the core, after the held item and before this one.
                (bool IdleArmed, bool ArmedArmed, int Count) after = await rig.On(0, () => (((WheelTimer)idle).Armed, ((WheelTimer)armed).Armed, rig[0].Timers.ArmedTimers));
                Assert.Equal((true, false, 2), after); // idle and spare
                await rig.On(0, () =>
                {
                    idle.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
                    armed.Change(TimeSpan.FromSeconds(30), Timeout.InfiniteTimeSpan);
                    return 0;
                });
            }
        }
        finally
        {
            await rig.On(0, () => { armed.Dispose(); idle.Dispose(); spare.Dispose(); return 0; });
        }
    }

    [Fact]
    public async Task TheTimersOwnerCheck_SaysYesOnlyOnTheCoresThread_AndOnlyWhileItsLoopRuns()
    {
        // CoreTimers.OnCoreStack is the fast half of Change's owner check (false sends a change
        // to the kernel's full check). Yes on the core's thread while the loop runs, so changes
        // there take the fast path; no on every other thread; and the stack top it tests against
        // is gone once the loop has left, before the thread and its stack can be reused.
        var machine = new Machine(2, new KernelOptions { PinThreads = false, MaxPark = TimeSpan.FromSeconds(5) }, TimeProvider.System, cpuCount: 2);
        try
        {
            CoreKernel core = machine.Kernels[0];
            CoreTimers timers = core.Timers.Wheel;
            Assert.False(timers.KnowsCoreStack);
            machine.StartCore(0);
            machine.StartCore(1);
            Assert.True(await core.RunAsync(() => timers.OnCoreStack).WaitAsync(KernelRig.Patience));
            Assert.True(timers.KnowsCoreStack);
            Assert.False(await machine.Kernels[1].RunAsync(() => timers.OnCoreStack).WaitAsync(KernelRig.Patience));
            Assert.False(await Task.Run(() => timers.OnCoreStack));
            Assert.False(timers.OnCoreStack);
            bool onOther = true;
            var thread = new Thread(() => onOther = timers.OnCoreStack, 16 * 1024 * 1024);
            thread.Start();
            Assert.True(thread.Join(KernelRig.Patience));
            Assert.False(onOther);

            Assert.True(machine.HaltAll(KernelRig.Patience));
            await core.Stopped.WaitAsync(KernelRig.Patience);
            Assert.False(timers.KnowsCoreStack);
        }
        finally
        {
            if (machine.HaltAll(KernelRig.Patience))
            {
                machine.Dispose(); // only once the core threads have left their loops
            }
        }
    }

    [Fact]
    public async Task BeforeTheCoreStarts_AnyThreadArmsInPlace()
    {
        // Boot-time setup: no core thread yet, so the creating thread owns the wheel and the arm
        // is applied at once (not posted to a loop that is not running).
        var machine = new Machine(1, new KernelOptions { PinThreads = false, MaxPark = TimeSpan.FromSeconds(5) }, TimeProvider.System, cpuCount: 2);
        try
        {
            CoreKernel core = machine.Kernels[0];
            ITimer timer = core.Timers.CreateTimer(static _ => { }, null, TimeSpan.FromSeconds(30), Timeout.InfiniteTimeSpan);
            timer.Change(TimeSpan.FromSeconds(40), Timeout.InfiniteTimeSpan);
            Assert.Equal(1, core.Timers.ArmedTimers);
            Assert.True(((WheelTimer)timer).Armed);
            machine.StartCore(0);
            Assert.Equal(1, await core.RunAsync(() => { int armed = core.Timers.ArmedTimers; timer.Dispose(); return armed; }).WaitAsync(KernelRig.Patience));
        }
        finally
        {
            if (machine.HaltAll(KernelRig.Patience))
            {
                machine.Dispose(); // only once the core thread has left its loop
            }
        }
    }

    [Fact]
    public async Task Change_RefusesBadTimes_OnAnyThread_AndADisposedTimerChangesNothing()
    {
        using var rig = new KernelRig(1);
        ITimer other = await rig.On(0, () => rig[0].Timers.CreateTimer(static _ => { }, null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan));
        ITimer timer = await rig.On(0, () => rig[0].Timers.CreateTimer(static _ => { }, null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan));
        try
        {
            TimeSpan bad = TimeSpan.FromTicks(-2);
            // On the core, after an arm has cached the item's now: every condition of the fast
            // path holds but the argument.
            string?[] onCore = await rig.On(0, () =>
            {
                other.Change(TimeSpan.FromSeconds(10), Timeout.InfiniteTimeSpan);
                return new[]
                {
                    Assert.Throws<ArgumentOutOfRangeException>(() => timer.Change(bad, Timeout.InfiniteTimeSpan)).ParamName,
                    Assert.Throws<ArgumentOutOfRangeException>(() => timer.Change(TimeSpan.FromSeconds(1), bad)).ParamName,
                    Assert.Throws<ArgumentOutOfRangeException>(() => timer.Change(Timeout.InfiniteTimeSpan, bad)).ParamName,
                    Assert.Throws<ArgumentOutOfRangeException>(() => timer.Change(bad, bad)).ParamName,
                };
            });
            Assert.Equal(new string?[] { "dueTime", "period", "period", "dueTime" }, onCore);
            Assert.Equal("period", Assert.Throws<ArgumentOutOfRangeException>(() => timer.Change(TimeSpan.FromSeconds(1), bad)).ParamName);
            Assert.Equal(1, await rig.On(0, () => rig[0].Timers.ArmedTimers)); // nothing was armed or posted

            (bool Armed, bool Disarmed, int Count, string? Name) disposed = await rig.On(0, () =>
            {
                timer.Change(TimeSpan.FromSeconds(5), Timeout.InfiniteTimeSpan);
                timer.Dispose();
                other.Change(TimeSpan.FromSeconds(11), Timeout.InfiniteTimeSpan); // the now is cached
                bool rearmed = timer.Change(TimeSpan.FromSeconds(6), Timeout.InfiniteTimeSpan);
                bool disarmed = timer.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
                string? name = Assert.Throws<ArgumentOutOfRangeException>(() => timer.Change(bad, Timeout.InfiniteTimeSpan)).ParamName;
                return (rearmed, disarmed, rig[0].Timers.ArmedTimers, name);
            });
            Assert.Equal((false, false, 1, "dueTime"), disposed);
        }
        finally
        {
            await rig.On(0, () => { other.Dispose(); timer.Dispose(); return 0; });
        }
    }

    [Fact]
    public async Task TheLongestTimes_ArmFarAhead_NotInThePast()
    {
        // TimeSpan.MaxValue in µs, rounded up: a signed (ticks + 9) / 10 overflows there and the
        // longest due time became a past tick that fired at once (and the longest period a
        // negative one: never again).
        using var rig = new KernelRig(1);
        var fired = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        long farAhead = TimeSpan.MaxValue.Ticks / 10;
        ITimer never = await rig.On(0, () =>
        {
            ITimer timer = rig[0].Timers.CreateTimer(static _ => { }, null, TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan);
            timer.Change(TimeSpan.MaxValue, Timeout.InfiniteTimeSpan); // in place (later): the fast path
            return timer;
        });
        ITimer periodic = await rig.On(0, () => rig[0].Timers.CreateTimer(_ => fired.TrySetResult(), null, TimeSpan.Zero, TimeSpan.MaxValue));
        try
        {
            Assert.True(((WheelTimer)never).Expires > farAhead, $"armed for tick {((WheelTimer)never).Expires}");
            await fired.Task.WaitAsync(KernelRig.Patience);
            (int Count, long Next, bool NeverArmed) after = await rig.On(0, () => (rig[0].Timers.ArmedTimers, ((WheelTimer)periodic).Expires, ((WheelTimer)never).Armed));
            Assert.Equal(2, after.Count); // both: the periodic one is armed again, a period later
            Assert.True(after.Next > farAhead, $"re-armed for tick {after.Next}");
            Assert.True(after.NeverArmed);
        }
        finally
        {
            await rig.On(0, () => { never.Dispose(); periodic.Dispose(); return 0; });
        }
    }

    [Fact]
    public async Task APeriodSetByAnInPlaceChange_Repeats()
    {
        using var rig = new KernelRig(1);
        int ticks = 0;
        var three = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        ITimer timer = await rig.On(0, () =>
        {
            ITimer t = rig[0].Timers.CreateTimer(_ => { if (++ticks == 3) { three.TrySetResult(); } }, null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            t.Change(TimeSpan.FromMilliseconds(1), Timeout.InfiniteTimeSpan); // reads the clock
            t.Change(TimeSpan.FromMilliseconds(2), TimeSpan.FromMilliseconds(1)); // later, now cached: in place
            return t;
        });
        try
        {
            await three.Task.WaitAsync(TimeSpan.FromSeconds(5));
        }
        finally
        {
            await rig.On(0, () => { timer.Dispose(); return 0; });
        }
    }

    [Fact]
    public async Task ACallbackDisarmingTheOtherTimerOfItsTick_ThroughChange_KeepsItFromFiring()
    {
        // Both timers are due in the same tick, so both are on the firing list when the first
        // callback disarms the other: Change's in-place disarm must not apply there (the firing
        // list fires whatever is on it); the wheel takes it off instead.
        var clock = new SteppedClock();
        var machine = new Machine(1, new KernelOptions { PinThreads = false, MaxPark = TimeSpan.FromSeconds(5) }, clock, cpuCount: 2);
        try
        {
            machine.StartCore(0);
            CoreKernel core = machine.Kernels[0];
            int fired = 0;
            var first = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var pair = new ITimer[2];
            bool sameTick = await core.RunAsync(() =>
            {
                for (int i = 0; i < pair.Length; i++)
                {
                    pair[i] = core.Timers.CreateTimer(s =>
                    {
                        fired++;
                        pair[1 - (int)s!].Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
                        first.TrySetResult();
                    }, i, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
                }

                pair[0].Change(TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan);
                pair[1].Change(TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan); // the same cached now
                return ((WheelTimer)pair[0]).Expires == ((WheelTimer)pair[1]).Expires;
            }).WaitAsync(KernelRig.Patience);
            Assert.True(sameTick);
            clock.Step(TimeSpan.FromSeconds(2));
            await core.RunAsync(() => 0).WaitAsync(KernelRig.Patience); // wakes the core to look at its wheel
            await first.Task.WaitAsync(KernelRig.Patience);
            (int Fired, int Armed) after = await core.RunAsync(() =>
            {
                int armed = core.Timers.ArmedTimers;
                pair[0].Dispose();
                pair[1].Dispose();
                return (fired, armed);
            }).WaitAsync(KernelRig.Patience);
            Assert.Equal((1, 0), after);
        }
        finally
        {
            if (machine.HaltAll(KernelRig.Patience))
            {
                machine.Dispose(); // only once the core thread has left its loop
            }
        }
    }

    private static Task RunOnNewThread(Action action, int stackBytes)
    {
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                action();
            }
#pragma warning disable CA1031 // rethrown on the test's thread below
            catch (Exception ex)
#pragma warning restore CA1031
            {
                failure = ex;
            }
        }, stackBytes);
        thread.Start();
        Assert.True(thread.Join(KernelRig.Patience));
        return failure is null ? Task.CompletedTask : Task.FromException(failure);
    }

    /// <summary>A clock that counts its reads and can be moved forward (the rest of the machine keeps real time).</summary>
    private sealed class SteppedClock : TimeProvider
    {
        private long _offset;
        private long _reads;

        public long Reads => Interlocked.Read(ref _reads);

        public void Step(TimeSpan by) => Interlocked.Add(ref _offset, (long)(by.TotalSeconds * Stopwatch.Frequency));

        public override long GetTimestamp()
        {
            Interlocked.Increment(ref _reads);
            return Stopwatch.GetTimestamp() + Interlocked.Read(ref _offset);
        }

        public override long TimestampFrequency => Stopwatch.Frequency;
    }

    [Fact]
    public async Task ArmsInOneWorkItem_ReadTheClockOnce()
    {
        var clock = new SteppedClock();
        var machine = new Machine(1, new KernelOptions { PinThreads = false, MaxPark = TimeSpan.FromSeconds(5) }, clock, cpuCount: 2);
        try
        {
            machine.StartCore(0);
            CoreKernel core = machine.Kernels[0];
            long reads = await core.RunAsync(() =>
            {
                var timers = new ITimer[200];
                for (int i = 0; i < timers.Length; i++)
                {
                    timers[i] = core.Timers.CreateTimer(static _ => { }, null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
                }

                long before = clock.Reads;
                for (int round = 0; round < 5; round++)
                {
                    foreach (ITimer timer in timers)
                    {
                        timer.Change(TimeSpan.FromSeconds(10 + round), Timeout.InfiniteTimeSpan);
                    }
                }

                long used = clock.Reads - before;
                foreach (ITimer timer in timers)
                {
                    timer.Dispose();
                }

                return used;
            }).WaitAsync(KernelRig.Patience);
            Assert.True(reads <= 1, $"1000 arms in one work item read the clock {reads} times");
        }
        finally
        {
            if (machine.HaltAll(KernelRig.Patience))
            {
                machine.Dispose(); // only once the core thread has left its loop
            }
        }
    }

    [Fact]
    public async Task TheNextWorkItem_ArmsFromAFreshClockRead_NotTheLastItemsTime()
    {
        var clock = new SteppedClock();
        var machine = new Machine(1, new KernelOptions { PinThreads = false, MaxPark = TimeSpan.FromSeconds(5) }, clock, cpuCount: 2);
        try
        {
            machine.StartCore(0);
            CoreKernel core = machine.Kernels[0];
            ITimer first = await core.RunAsync(() => core.Timers.CreateTimer(static _ => { }, null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan)).WaitAsync(KernelRig.Patience);
            ITimer second = await core.RunAsync(() => core.Timers.CreateTimer(static _ => { }, null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan)).WaitAsync(KernelRig.Patience);

            // Hold the core inside one item while two more are queued behind it, so the loop runs
            // those two back to back in the same pass over its work from other threads.
            using var gate = new ManualResetEventSlim();
            Task<int> blocker = core.RunAsync(() => { gate.Wait(KernelRig.Patience); return 0; });
            Task<long> armFirst = core.RunAsync(() =>
            {
                first.Change(TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan);
                clock.Step(TimeSpan.FromSeconds(60)); // a minute passes inside this item
                return ((WheelTimer)first).Expires;
            });
            Task<long> armSecond = core.RunAsync(() =>
            {
                second.Change(TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan);
                return ((WheelTimer)second).Expires;
            });
            gate.Set();
            await blocker.WaitAsync(KernelRig.Patience);
            long a = await armFirst.WaitAsync(KernelRig.Patience);
            long b = await armSecond.WaitAsync(KernelRig.Patience);
            Assert.InRange(b - a, 60_000_000, 61_000_000);
            await core.RunAsync(() => { first.Dispose(); second.Dispose(); return 0; }).WaitAsync(KernelRig.Patience);
        }
        finally
        {
            if (machine.HaltAll(KernelRig.Patience))
            {
                machine.Dispose(); // only once the core thread has left its loop
            }
        }
    }
}
