using Multikernel.CpuDriver.Kernel;

namespace Multikernel.Tests.Kernel;

/// <summary>Every queue a core has is bounded, and each bound has its designed behaviour.</summary>
public sealed class BoundedQueueTests
{
    [Fact]
    public async Task RunQueue_RefusesDomainWorkBeyondItsCapacity_WithAClearError_AndRunsWhatItTook()
    {
        using var rig = new KernelRig(1, o => o.RunQueueCapacity = 16);
        int ran = 0;
        (int accepted, string? error) = await rig.On(0, () =>
        {
            int n = 0;
            try
            {
                for (int i = 0; i < 100; i++)
                {
                    rig[0].Post(_ => ran++, null);
                    n++;
                }
            }
            catch (InvalidOperationException ex)
            {
                return (n, ex.Message);
            }

            return (n, (string?)null);
        });
        Assert.Equal(16, accepted); // before the fix the queue doubled and took all 100
        Assert.Contains("RunQueueCapacity", error, StringComparison.Ordinal);
        // rig.On is foreign work, which the loop may take before the run queue: poll until the
        // accepted items ran (they must all run), then check that exactly those did.
        int seen = 0;
        for (var clock = System.Diagnostics.Stopwatch.StartNew(); clock.Elapsed < KernelRig.Patience && (seen = await rig.On(0, () => ran)) < 16;)
        {
            await Task.Delay(1);
        }

        Assert.Equal(16, seen);
        Assert.Equal(16, await rig.On(0, () => ran));
        Assert.True(rig[0].Counters.RefusedPostCount >= 1);
    }

    [Fact]
    public async Task ForeignPosts_BeyondMaxForeignWork_FailTheCaller_AndTheAcceptedOnesRun()
    {
        using var rig = new KernelRig(1, o => o.MaxForeignWork = 4);
        using var blocked = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        int ran = 0;
        // Hold the core so posts pile up (a test-only stall of the kernel thread).
        rig[0].Post(_ => { blocked.Set(); release.Wait(KernelRig.Patience); }, null);
        Assert.True(blocked.Wait(KernelRig.Patience));
        for (int i = 0; i < 4; i++)
        {
            rig[0].Post(_ => Interlocked.Increment(ref ran), null);
        }

        var full = Assert.Throws<InvalidOperationException>(() => rig[0].Post(_ => Interlocked.Increment(ref ran), null));
        Assert.Contains("MaxForeignWork", full.Message, StringComparison.Ordinal);
        Assert.False(rig[0].TryPost(_ => Interlocked.Increment(ref ran), null));
        Task<int> refused = rig[0].RunAsync(() => 1);
        Assert.True(refused.IsFaulted, "RunAsync at the limit fails at once");
        release.Set();
        var watch = System.Diagnostics.Stopwatch.StartNew();
        while (Volatile.Read(ref ran) < 4 && watch.Elapsed < KernelRig.Patience)
        {
            await Task.Delay(1);
        }

        Assert.Equal(4, await rig.On(0, () => Volatile.Read(ref ran)));
    }

    [Fact]
    public async Task WorkPostedAfterHalt_FailsItsCaller_InsteadOfHanging()
    {
        var rig = new KernelRig(1);
        CoreKernel core = rig[0];
        try
        {
            Assert.Equal(1, await rig.On(0, () => 1));
        }
        finally
        {
            rig.Dispose();
        }

        Assert.True(core.Stopped.IsCompleted);
        Task<int> late = core.RunAsync(() => 2);
        var ex = await Assert.ThrowsAsync<InvalidOperationException>(() => late.WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.Contains("halted", ex.Message, StringComparison.Ordinal);
        Assert.Throws<InvalidOperationException>(() => core.Post(_ => { }, null));
        Assert.Throws<InvalidOperationException>(() => core.SynchronizationContext.Post(_ => { }, null));
    }

    [Fact]
    public async Task EndpointWaiters_AreBounded()
    {
        using var rig = new KernelRig(2, o => o.MaxWaitersPerEndpoint = 2);
        var (_, b) = await rig.ConnectAsync(0, 1);
        string message = await rig.On(1, () =>
        {
            _ = b.ReadAsync();
            _ = b.ReadAsync();
            return Assert.Throws<InvalidOperationException>(() => b.ReadAsync()).Message;
        });
        Assert.Contains("MaxWaitersPerEndpoint", message, StringComparison.Ordinal);
    }

    [Fact]
    public void KernelOptions_EachKernelHasItsOwnReadOnlySnapshot()
    {
        var options = new KernelOptions { PinThreads = false, RingSlots = 16 };
        using var machine = new Machine(2, options, TimeProvider.System, cpuCount: 2);
        options.RingSlots = 64; // the caller's object stays theirs
        Assert.Equal(16, machine.Kernels[0].Options.RingSlots);
        Assert.True(machine.Kernels[0].Options.IsReadOnly);
        Assert.NotSame(machine.Kernels[0].Options, machine.Kernels[1].Options);
        Assert.Throws<InvalidOperationException>(() => machine.Kernels[0].Options.RingSlots = 8);

        // Handed a read-only snapshot, each kernel still takes its own.
        using var shared = new Machine(2, options.Snapshot(), TimeProvider.System, cpuCount: 2);
        Assert.NotSame(shared.Kernels[0].Options, shared.Kernels[1].Options);
        Assert.Equal(64, shared.Kernels[1].Options.RingSlots);
    }
}
