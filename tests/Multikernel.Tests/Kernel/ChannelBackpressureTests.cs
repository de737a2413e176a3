using Multikernel.CpuDriver.Channels;
using Multikernel.Monitor;
using Multikernel.Monitor.Hosting;

namespace Multikernel.Tests.Kernel;

/// <summary>
/// Seed 002: a producer streaming to a consumer that does not consume stalls once its bounded
/// channel is full; nothing grows, and other domains on the same cores keep running.
/// </summary>
public sealed class ChannelBackpressureTests
{
    private const int Window = 64;

    [Fact]
    public async Task ProducerStallsAtTheWindow_OthersProgress_AndResumesWhenTheConsumerDrains()
    {
        const int Total = 20_000;
        long produced = 0;
        var drain = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var consumerDone = new TaskCompletionSource<long[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        var pingsDone = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        Endpoint? hoarded = null;

        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.ChannelWindow = Window;
            o.AddProgram("hoarder", async ctx =>
            {
                using ServiceListener listener = await ctx.ExportAsync("hoard");
                DomainChannel channel = await listener.AcceptAsync(ctx.Stopping);
                hoarded = channel.Endpoint;
                await drain.Task; // does not read until the test says so
                var values = new long[Total];
                var reader = channel.Reader<long>();
                for (int i = 0; i < Total; i++)
                {
                    values[i] = await reader.ReadAsync(ctx.Stopping);
                }

                consumerDone.SetResult(values);
            });
            o.AddProgram("producer", async ctx =>
            {
                DomainChannel channel = await ctx.BindAsync("hoard", TestMachine.Patience);
                var writer = channel.Writer<long>();
                for (long i = 0; i < Total; i++)
                {
                    await writer.WriteAsync(i, ctx.Stopping);
                    Volatile.Write(ref produced, i + 1);
                }
            });
            o.AddProgram("pong", async ctx =>
            {
                using ServiceListener listener = await ctx.ExportAsync("pong");
                DomainChannel channel = await listener.AcceptAsync(ctx.Stopping);
                await foreach (long v in channel.Reader<long>().ReadAllAsync(ctx.Stopping))
                {
                    await channel.Writer<long>().WriteAsync(v, ctx.Stopping);
                }
            });
            o.AddProgram("ping", async ctx =>
            {
                DomainChannel channel = await ctx.BindAsync("pong", TestMachine.Patience);
                int n = 0;
                for (; n < 2000; n++)
                {
                    await channel.Writer<long>().WriteAsync(n, ctx.Stopping);
                    await channel.Reader<long>().ReadAsync(ctx.Stopping);
                }

                pingsDone.SetResult(n);
            });
            o.SpawnAtBoot("hoarder", core: 1);
            o.SpawnAtBoot("producer", core: 0);
        });

        try
        {
            // The producer fills exactly one window and then stalls.
            await TestMachine.EventuallyAsync(() => Volatile.Read(ref produced) == Window, "the producer to fill its window");
            long ringBytes = runtime.Machine.RingBytes;

            // Other domains on the same two cores keep making progress while it is stalled.
            await runtime.SpawnAsync(1, "pong");
            await runtime.SpawnAsync(0, "ping");
            Assert.Equal(2000, await pingsDone.Task.WaitAsync(TestMachine.Patience));

            // Still stalled, nothing buffered beyond the window, no memory grown.
            Assert.Equal(Window, Volatile.Read(ref produced));
            Assert.Equal(ringBytes, runtime.Machine.RingBytes);
            Assert.Equal(Window, await runtime.Machine.Kernels[1].RunAsync(() => hoarded!.QueuedCount));
            Assert.Equal(0, runtime.Machine.Kernels[0].Counters.Stalls(1)); // the window stalled it, the ring never filled
            Assert.True(runtime.Machine.Kernels[0].Counters.WindowStalls(1) >= 1, "the producer's wait for credits is counted");

            // The consumer drains: the producer resumes and every message arrives once, in order.
            drain.SetResult();
            long[] values = await consumerDone.Task.WaitAsync(TestMachine.Patience);
            Assert.Equal(Enumerable.Range(0, Total).Select(i => (long)i), values);
            Assert.Equal(Total, Volatile.Read(ref produced));
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }

    [Fact]
    public async Task RepeatedAbandonedPairs_CannotGrowKernelMemory()
    {
        // Seed 002's loop: new producer/consumer pairs whose consumers never read. Each pair
        // holds at most one window in the consumer's own preallocated queue; the kernels' rings
        // are the same fixed memory they booted with.
        const int Pairs = 50;
        long totalProduced = 0;
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.ChannelWindow = 16;
            o.DomainMemory = "64KiB";
            o.AddProgram("deaf", async ctx =>
            {
                using ServiceListener listener = await ctx.ExportAsync($"deaf-{ctx.Argument}");
                _ = await listener.AcceptAsync(ctx.Stopping);
                await Task.Delay(Timeout.Infinite, ctx.Stopping);
            });
            o.AddProgram("flood", async ctx =>
            {
                DomainChannel channel = await ctx.BindAsync($"deaf-{ctx.Argument}", TestMachine.Patience);
                var writer = channel.Writer<long>();
                while (true)
                {
                    await writer.WriteAsync(1, ctx.Stopping);
                    Interlocked.Increment(ref totalProduced);
                }
            });
        });
        try
        {
            long ringBytes = runtime.Machine.RingBytes;
            for (int i = 0; i < Pairs; i++)
            {
                await runtime.SpawnAsync(1, "deaf", (ulong)i);
                await runtime.SpawnAsync(0, "flood", (ulong)i);
            }

            await TestMachine.EventuallyAsync(() => Volatile.Read(ref totalProduced) == Pairs * 16, "every flood to fill its window");
            await Task.Delay(200);
            Assert.Equal(Pairs * 16, Volatile.Read(ref totalProduced));
            Assert.Equal(ringBytes, runtime.Machine.RingBytes);
            Assert.Equal(0, runtime.Machine.Kernels[0].Counters.Stalls(1));
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }
}
