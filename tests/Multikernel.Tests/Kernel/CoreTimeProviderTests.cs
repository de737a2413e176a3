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
}
