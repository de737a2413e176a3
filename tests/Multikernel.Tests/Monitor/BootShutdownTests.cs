using Multikernel.Monitor;
using Multikernel.Monitor.Hosting;

namespace Multikernel.Tests.Monitor;

public sealed class BootShutdownTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    [InlineData(8)] // oversubscribed on a 2-CPU machine: kernels share CPUs round-robin
    public async Task BootStreamAndShutdown_WithMessagesInFlight_DrainsEveryRing(int cores)
    {
        long[] sent = new long[cores];
        long[] received = new long[cores];
        long outOfOrder = 0;
        MultikernelRuntime runtime = await TestMachine.StartAsync(cores, o =>
        {
            o.AddProgram("sink", async ctx =>
            {
                using ServiceListener listener = await ctx.ExportAsync($"sink-{ctx.Core}");
                DomainChannel channel = await listener.AcceptAsync(ctx.Stopping);
                try
                {
                    await foreach (long value in channel.Reader<long>().ReadAllAsync(ctx.Stopping))
                    {
                        if (value != received[ctx.Core])
                        {
                            Interlocked.Increment(ref outOfOrder); // per-channel FIFO violated
                        }

                        received[ctx.Core]++;
                    }
                }
                catch (OperationCanceledException) when (ctx.Stopping.IsCancellationRequested)
                {
                }
            });
            o.AddProgram("source", async ctx =>
            {
                int target = (ctx.Core + 1) % ctx.CoreCount;
                DomainChannel channel = await ctx.BindAsync($"sink-{target}", TestMachine.Patience);
                var writer = channel.Writer<long>();
                try
                {
                    while (true)
                    {
                        await writer.WriteAsync(sent[ctx.Core], ctx.Stopping);
                        sent[ctx.Core]++;
                    }
                }
                catch (OperationCanceledException) when (ctx.Stopping.IsCancellationRequested)
                {
                }
                catch (System.Threading.Channels.ChannelClosedException)
                {
                    // Shutdown reached the sink's core first: its domain ended and closed the channel.
                }
            });
            o.SpawnAtBoot("sink");
            o.SpawnAtBoot("source");
        });

        try
        {
            Assert.Equal(cores, runtime.Cores);
            await TestMachine.EventuallyAsync(() => Enumerable.Range(0, cores).All(c => Volatile.Read(ref received[c]) > 1000), "every stream to carry messages");
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }

        Assert.All(runtime.Machine.Kernels, k => Assert.True(k.Stopped.IsCompleted, $"core {k.Id} still running"));
        Assert.Equal(0, runtime.AbandonedDomains);
        Assert.Equal(0, outOfOrder);
        for (int c = 0; c < cores; c++)
        {
            // The kernels halted with empty rings: everything a core sent, its peer's kernel received.
            for (int d = 0; d < cores; d++)
            {
                Assert.Equal(runtime.Machine.Kernels[c].Counters.Sent(d), runtime.Machine.Kernels[d].Counters.Received(c));
            }

            // A sink reads at most what its source wrote, and only stopped while messages were in flight.
            int source = (c - 1 + cores) % cores;
            Assert.InRange(received[c], 1000, sent[source]);
        }
    }

    [Fact]
    public async Task Stop_AbandonsADomainThatIgnoresItsStopSignal_AndStillHalts()
    {
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.ShutdownTimeout = TimeSpan.FromMilliseconds(300);
            o.AddProgram("stubborn", _ => new TaskCompletionSource().Task); // never completes
            o.SpawnAtBoot("stubborn", core: 1);
        });

        await runtime.StopCleanlyAsync();
        Assert.All(runtime.Machine.Kernels, k => Assert.True(k.Stopped.IsCompleted));
        Assert.Equal(1, runtime.AbandonedDomains);
    }

    [Fact]
    public async Task Boot_StartsEveryKernelOnItsOwnThread()
    {
        var threads = new int[4];
        var started = new CountdownEvent(4);
        MultikernelRuntime runtime = await TestMachine.StartAsync(4, o =>
        {
            o.AddProgram("where", ctx =>
            {
                threads[ctx.Core] = Environment.CurrentManagedThreadId;
                Assert.True(ctx.Domain.Kernel.IsCurrentThread);
                Assert.IsType<CpuDriver.Kernel.CoreSynchronizationContext>(SynchronizationContext.Current);
                started.Signal();
                return Task.CompletedTask;
            });
            o.SpawnAtBoot("where");
        });
        try
        {
            Assert.True(started.Wait(TestMachine.Patience));
            Assert.Equal(4, threads.Distinct().Count());
            Assert.DoesNotContain(Environment.CurrentManagedThreadId, threads);
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }
}
