using Multikernel.Monitor;
using Multikernel.Monitor.Hosting;

namespace Multikernel.Tests.Hosting;

/// <summary>Per-core services (<see cref="Sharded{TService}"/>) and host calls into a core (<see cref="MultikernelRuntime.InvokeAsync{T}(int, Func{DomainContext, Task{T}})"/>).</summary>
public sealed class ShardedTests
{
    private static readonly TimeSpan Short = TimeSpan.FromSeconds(20);

    /// <summary>A shard's state: touched only on its own core (the test checks it is).</summary>
    private sealed class Shard(DomainContext context)
    {
        public int Core { get; } = context.Core;

        public DomainContext Context { get; } = context;

        public long Total { get; set; }

        public int Running { get; set; }

        public int MaxRunning { get; set; }

        public TaskCompletionSource Gate { get; set; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int OnWrongThread { get; set; }

        public long Add(long value)
        {
            if (SynchronizationContext.Current is not CpuDriver.Kernel.CoreSynchronizationContext c || c.CoreId != Core)
            {
                OnWrongThread++;
            }

            Total += value;
            return Total;
        }
    }

    [Fact]
    public async Task InvokeAsync_FromATestThread_RunsOnThatCore_AndReturnsTheResult()
    {
        MultikernelRuntime runtime = await TestMachine.StartAsync(2);
        try
        {
            (int core, bool onCore) = await runtime.InvokeAsync(1, ctx => (ctx.Core, SynchronizationContext.Current is CpuDriver.Kernel.CoreSynchronizationContext { CoreId: 1 })).WaitAsync(Short);
            Assert.Equal(1, core);
            Assert.True(onCore);

            // Asynchronous work: its awaits come back to the core, and it can use the monitor's services.
            string name = await runtime.InvokeAsync(0, async ctx =>
            {
                await using ServiceListener listener = await ctx.ExportAsync("host-svc");
                await ctx.Delay(TimeSpan.FromMilliseconds(1));
                Assert.Equal(0, (SynchronizationContext.Current as CpuDriver.Kernel.CoreSynchronizationContext)?.CoreId);
                return listener.Name;
            }).WaitAsync(Short);
            Assert.Equal("host-svc", name);

            var failure = await Assert.ThrowsAsync<InvalidOperationException>(() => runtime.InvokeAsync(1, (Func<DomainContext, int>)(_ => throw new InvalidOperationException("from the core")))).WaitAsync(Short);
            Assert.Equal("from the core", failure.Message);
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }

        Assert.Throws<InvalidOperationException>(() => { _ = runtime.InvokeAsync(0, ctx => ctx.Core); });
    }

    [Fact]
    public async Task InvokeOn_FromACoreAndFromTheHost_ReachesThatCoresInstance_MapReduceAndInvokeOnAllCoverEveryCore()
    {
        MultikernelRuntime runtime = await TestMachine.StartAsync(3);
        try
        {
            Sharded<Shard> shards = await runtime.StartShardedAsync("adder", ctx => new Shard(ctx)).WaitAsync(Short);
            Assert.Equal(3, shards.Cores);

            // From core 0 (over the rings) to every core, including itself.
            long[] totals = await runtime.InvokeAsync(0, async ctx =>
            {
                var results = new long[3];
                for (int round = 0; round < 50; round++)
                {
                    for (int k = 0; k < 3; k++)
                    {
                        results[k] = await shards.InvokeOnAsync(k, (long)(k + 1), static (s, x) => new ValueTask<long>(s.Add(x)));
                    }
                }

                Assert.Equal(0, shards.Local.Core);
                return results;
            }).WaitAsync(Short);
            Assert.Equal([50L, 100L, 150L], totals);

            // From the host thread.
            Assert.Equal(160, await shards.InvokeOnAsync(2, s => s.Add(10)).AsTask().WaitAsync(Short));
            Assert.Throws<InvalidOperationException>(() => shards.Local);

            await shards.InvokeOnAllAsync(s =>
            {
                s.Add(1);
                return ValueTask.CompletedTask;
            }).WaitAsync(Short);
            long sum = await shards.MapReduceAsync(s => new ValueTask<long>(s.Total), 0L, static (acc, t) => acc + t).WaitAsync(Short);
            Assert.Equal(51 + 101 + 161, sum);
            string cores = await runtime.InvokeAsync(1, ctx => shards.MapReduceAsync(s => new ValueTask<int>(s.Core), "", static (acc, c) => acc + c)).WaitAsync(Short);
            Assert.Equal("012", cores);

            int wrongThread = await shards.MapReduceAsync(s => new ValueTask<int>(s.OnWrongThread), 0, static (a, b) => a + b).WaitAsync(Short);
            Assert.Equal(0, wrongThread);

            // A handler's exception reaches the caller on its own core.
            var error = await Assert.ThrowsAsync<InvalidDataException>(() => runtime.InvokeAsync(0, async _ =>
                await shards.InvokeOnAsync(1, (Func<Shard, int>)(s => throw new InvalidDataException($"shard {s.Core} refused"))))).WaitAsync(Short);
            Assert.Equal("shard 1 refused", error.Message);
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }

    [Fact]
    public async Task CallsInFlight_AreBoundedPerCallerAndDestination_AndWaitersPastTheLimitFail()
    {
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.ShardedRequestsInFlight = 2;
            o.ShardedMaxWaiting = 3;
        });
        try
        {
            Sharded<Shard> shards = await runtime.StartShardedAsync("gated", ctx => new Shard(ctx)).WaitAsync(Short);
            Shard remote = await shards.InvokeOnAsync(1, s => s).AsTask().WaitAsync(Short);
            Task<long[]> calls = runtime.InvokeAsync(0, async _ =>
            {
                var pending = new List<Task<long>>();
                for (int i = 0; i < 5; i++)
                {
                    pending.Add(shards.InvokeOnAsync(1, static async s =>
                    {
                        s.MaxRunning = Math.Max(s.MaxRunning, ++s.Running);
                        await s.Gate.Task;
                        s.Running--;
                        return s.Add(1);
                    }).AsTask());
                }

                // 2 in flight, 3 waiting: the sixth caller is refused at once.
                var refused = await Assert.ThrowsAsync<InvalidOperationException>(() => shards.InvokeOnAsync(1, s => s.Add(1)).AsTask());
                Assert.Contains("ShardedMaxWaiting", refused.Message, StringComparison.Ordinal);
                return await Task.WhenAll(pending);
            });

            await TestMachine.EventuallyAsync(() => remote.Running == 2, "two calls running on core 1");
            Assert.False(calls.IsCompleted);
            await shards.InvokeOnAsync(1, s =>
            {
                s.Gate.SetResult();
                return true;
            }).AsTask().WaitAsync(Short);
            long[] results = await calls.WaitAsync(Short);
            Assert.Equal([1L, 2L, 3L, 4L, 5L], results.Order());
            Assert.Equal(2, await shards.InvokeOnAsync(1, s => s.MaxRunning).AsTask().WaitAsync(Short));
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }

    [Fact]
    public async Task NestedCalls_ThatCallBackAndForth_DoNotDeadlock_WithATinyBudget()
    {
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.ShardedRequestsInFlight = 1;
            o.ShardedMaxNesting = 4;
        });
        try
        {
            Sharded<Shard> shards = await runtime.StartShardedAsync("pingpong", ctx => new Shard(ctx)).WaitAsync(Short);
            // Many concurrent chains 0 -> 1 -> 0 -> 1: with one budget shared by every level, the
            // outer calls hold every slot while their handlers wait for one (a deadlock). Each
            // level drawing on its own budget, they all finish.
            long[] depths = await runtime.InvokeAsync(0, async _ =>
            {
                var chains = new Task<long>[16];
                for (int i = 0; i < chains.Length; i++)
                {
                    chains[i] = shards.InvokeOnAsync(1, shards, static async (s, all) =>
                        await all.InvokeOnAsync(0, all, static async (s0, all0) =>
                            await all0.InvokeOnAsync(1, static s1 => s1.Add(1)))).AsTask();
                }

                return await Task.WhenAll(chains);
            }).WaitAsync(Short);
            Assert.Equal(Enumerable.Range(1, 16).Select(i => (long)i), depths.Order());
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }

    [Fact]
    public async Task CallsNestedPastTheLimit_FailWithAClearError()
    {
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o => o.ShardedMaxNesting = 2);
        try
        {
            Sharded<Shard> shards = await runtime.StartShardedAsync("deep", ctx => new Shard(ctx)).WaitAsync(Short);
            var error = await Assert.ThrowsAsync<InvalidOperationException>(() => runtime.InvokeAsync(0, async _ =>
                await shards.InvokeOnAsync(1, shards, static async (s, all) =>
                    await all.InvokeOnAsync(0, all, static async (s0, all0) =>
                        await all0.InvokeOnAsync(1, static s1 => s1.Add(1)))))).WaitAsync(Short);
            Assert.Contains("ShardedMaxNesting", error.Message, StringComparison.Ordinal);

            // Two levels are fine.
            Assert.Equal(1, await runtime.InvokeAsync(0, async _ =>
                await shards.InvokeOnAsync(1, shards, static async (s, all) => await all.InvokeOnAsync(0, static s0 => s0.Add(1)))).WaitAsync(Short));
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }

    [Fact]
    public async Task RemoteCalls_AllocateNothingPerCall_OnTheCallingOrTheServingCore()
    {
        const int Calls = 10_000;
        MultikernelRuntime runtime = await TestMachine.StartAsync(2);
        try
        {
            Sharded<Shard> shards = await runtime.StartShardedAsync("alloc", ctx => new Shard(ctx)).WaitAsync(Short);
            async Task<long> CallMany(int calls)
            {
                long before = GC.GetAllocatedBytesForCurrentThread();
                for (int i = 0; i < calls; i++)
                {
                    await shards.InvokeOnAsync(1, 1L, static (s, x) => new ValueTask<long>(s.Add(x)));
                }

                return GC.GetAllocatedBytesForCurrentThread() - before;
            }

            await runtime.InvokeAsync(0, _ => CallMany(2000)).WaitAsync(Short); // pools and JIT warm
            long serverBefore = await runtime.InvokeAsync(1, _ => GC.GetAllocatedBytesForCurrentThread()).WaitAsync(Short);
            long caller = await runtime.InvokeAsync(0, _ => CallMany(Calls)).WaitAsync(Short);
            long server = await runtime.InvokeAsync(1, _ => GC.GetAllocatedBytesForCurrentThread()).WaitAsync(Short) - serverBefore;

            // A few hundred bytes are the measurement's own (the test's state machine, the two
            // InvokeAsync items); one allocation per call would be 10,000 times something.
            Assert.True(caller < 1024, $"{Calls} remote calls allocated {caller} B on the calling core ({caller / (double)Calls:F2} B/call), {server} B on the serving core");
            Assert.True(server < 2048, $"{Calls} remote calls allocated {server} B on the serving core ({server / (double)Calls:F2} B/call)");
            Assert.Equal(12_000, await shards.InvokeOnAsync(1, s => s.Total).AsTask().WaitAsync(Short));
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }

    [Fact]
    public async Task TheNestingLevel_FollowsAHandlerAcrossItsAwaits()
    {
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o => o.ShardedMaxNesting = 2);
        try
        {
            Sharded<Shard> shards = await runtime.StartShardedAsync("awaits", ctx => new Shard(ctx)).WaitAsync(Short);
            // The nested calls come after an await in each handler: the level still has to be the
            // handler's, so the third level is refused.
            var error = await Assert.ThrowsAsync<InvalidOperationException>(() => runtime.InvokeAsync(0, async _ =>
                await shards.InvokeOnAsync(1, shards, static async (s, all) =>
                {
                    await s.Context.Delay(TimeSpan.FromMilliseconds(1));
                    return await all.InvokeOnAsync(0, all, static async (s0, all0) =>
                    {
                        await s0.Context.Delay(TimeSpan.FromMilliseconds(1));
                        return await all0.InvokeOnAsync(1, static s1 => s1.Add(1));
                    });
                }))).WaitAsync(Short);
            Assert.Contains("ShardedMaxNesting", error.Message, StringComparison.Ordinal);

            // And a call the loop serves afterwards starts at level 1 again, not where the last handler was.
            Assert.Equal(1, await runtime.InvokeAsync(0, async _ =>
                await shards.InvokeOnAsync(1, shards, static async (s, all) =>
                {
                    await s.Context.Delay(TimeSpan.FromMilliseconds(1));
                    return await all.InvokeOnAsync(0, static s0 => s0.Add(1));
                })).WaitAsync(Short));
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }
}
