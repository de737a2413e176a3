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
