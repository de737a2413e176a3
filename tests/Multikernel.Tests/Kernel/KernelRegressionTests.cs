using System.Threading.Channels;
using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Domains;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.Tests.Kernel;

/// <summary>Regression tests for the kernel bugs of issue 8 (each failed on the code before the fix).</summary>
public sealed class KernelRegressionTests
{
    [Fact]
    public async Task Bug1_StandardWriterLoop_WaitsInsteadOfSpinning_AndDeliversEverything()
    {
        // RingSlots = 2: the ring is full almost all the time. Before the fix WaitToWriteAsync
        // answered true synchronously while the ring was full, so this loop spun millions of
        // times without ever yielding to the kernel loop.
        const int Count = 3000;
        using var rig = new KernelRig(2, o => { o.RingSlots = 2; o.ChannelWindow = 64; });
        (Endpoint a, Endpoint b) = await rig.ConnectAsync(0, 1);
        Task<long[]> received = rig.On(1, async () =>
        {
            var values = new long[Count];
            var reader = UrpcChannelReader<long>.Of(b);
            for (int i = 0; i < Count; i++)
            {
                values[i] = await reader.ReadAsync();
            }

            return values;
        });
        long spins = await rig.On(0, async () =>
        {
            var writer = UrpcChannelWriter<long>.Of(a);
            long loops = 0;
            for (long i = 0; i < Count; i++)
            {
                while (await writer.WaitToWriteAsync())
                {
                    loops++;
                    if (writer.TryWrite(i))
                    {
                        break;
                    }
                }
            }

            return loops;
        });

        Assert.Equal(Enumerable.Range(0, Count).Select(i => (long)i), await received);
        Assert.True(spins <= 2 * Count, $"the writer loop went round {spins} times for {Count} messages: WaitToWriteAsync said writable when it was not");
    }

    [Fact]
    public async Task Bug2_CancelledDelays_LeaveTheWheel_SoArmAndCancelNeverHitsTheLimit()
    {
        using var rig = new KernelRig(1, o => o.MaxTimersPerCore = 64);
        int armed = await rig.On(0, async () =>
        {
            for (int i = 0; i < 5000; i++)
            {
                using var cts = new CancellationTokenSource();
                ValueTask delay = rig[0].Delay(TimeSpan.FromHours(1), cts.Token);
                cts.Cancel();
                await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await delay);
            }

            return rig[0].Timers.ArmedTimers;
        });
        Assert.Equal(0, armed);
    }

    [Fact]
    public async Task Bug2_DelaysOnALongLivedToken_ReleaseTheirRegistrations()
    {
        // BindAsync's retry loop: many short delays on the domain's Stopping token. Before the fix
        // every delay left its registration on the token (200k kept 35 MB alive).
        using var rig = new KernelRig(1);
        using var cts = new CancellationTokenSource();
        long grown = await rig.On(0, async () =>
        {
            for (int i = 0; i < 1000; i++)
            {
                await rig[0].Delay(TimeSpan.FromTicks(1), cts.Token);
            }

            long before = GC.GetTotalMemory(forceFullCollection: true);
            for (int i = 0; i < 50_000; i++)
            {
                await rig[0].Delay(TimeSpan.FromTicks(1), cts.Token);
            }

            return GC.GetTotalMemory(forceFullCollection: true) - before;
        });
        GC.KeepAlive(cts);
        Assert.True(grown < 2_000_000, $"50,000 completed delays kept {grown} bytes alive on the token");
    }

    [Fact]
    public async Task Bug3_SameCoreDelivery_IsQueuedOnTheCore_NotRunInsideTheSend()
    {
        const int Window = 8;
        using var rig = new KernelRig(1, o => o.ChannelWindow = Window);
        (Endpoint a, Endpoint b) = await rig.ConnectAsync(0, 0);
        (int queuedInsideSend, int creditsAfterSend, int maxCredits) = await rig.On(0, async () =>
        {
            Assert.True(a.TryWrite(Message.Create(1, 1)));
            int queued = b.QueuedCount; // before the fix the receiver had it (and ran) inside TryWrite
            int credits = a.Credits;
            Message m = await b.ReadAsync();
            Assert.Equal(1ul, m.Word0);
            int max = 0;
            for (int i = 0; i < 2000; i++)
            {
                await a.WriteAsync(Message.Create(1, (ulong)i));
                max = Math.Max(max, a.Credits);
                Message echo = await b.ReadAsync();
                await b.WriteAsync(echo);
                max = Math.Max(max, a.Credits);
                Message back = await a.ReadAsync();
                Assert.Equal((ulong)i, back.Word0);
            }

            return (queued, credits, max);
        });
        Assert.Equal(0, queuedInsideSend);
        Assert.Equal(Window - 1, creditsAfterSend);
        Assert.True(maxCredits <= Window, $"credits reached {maxCredits}, more than the window of {Window}");
    }

    [Fact]
    public async Task Bug4_ClosedEndpoints_LeaveTheirDomain()
    {
        using var rig = new KernelRig(1);
        var release = new TaskCompletionSource();
        Domain domain = await rig.On(0, () => rig[0].StartDomain("binder", _ => release.Task));
        (int open, int inUse) = await rig.On(0, () =>
        {
            for (int i = 0; i < 2000; i++)
            {
                Endpoint e = domain.CreateEndpoint("refused");
                e.Close();
            }

            return (domain.Endpoints.Count, rig[0].EndpointCount);
        });
        release.SetResult();
        Assert.Equal(0, open);
        Assert.Equal(0, inUse);
    }

    [Fact]
    public async Task Bug5_SubMillisecondDelays_ParkTheCore_AndNeverFireEarly()
    {
        const int Delays = 400;
        using var rig = new KernelRig(1, o => { o.SpinBudget = 10; o.SpinTime = TimeSpan.FromMicroseconds(5); });
        (long parks, long iterations, double shortest) = await rig.On(0, async () =>
        {
            long parks0 = rig[0].Counters.ParkCount;
            long iterations0 = rig[0].Counters.LoopIterations;
            double min = double.MaxValue;
            for (int i = 0; i < Delays; i++)
            {
                long start = System.Diagnostics.Stopwatch.GetTimestamp();
                await rig[0].Delay(TimeSpan.FromMicroseconds(500));
                min = Math.Min(min, System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalMicroseconds);
            }

            return (rig[0].Counters.ParkCount - parks0, rig[0].Counters.LoopIterations - iterations0, min);
        });
        // Before the fix a 0.5 ms park timeout truncated to 0 ms: the core re-parked for nothing
        // hundreds of times per delay. Now each delay is one timerfd park (plus a few spins).
        Assert.True(parks <= 4 * Delays, $"{parks} parks for {Delays} delays of 0.5 ms: the core is polling");
        Assert.True(iterations <= 60 * Delays, $"{iterations} loop iterations for {Delays} delays of 0.5 ms: the core is spinning");
        Assert.True(shortest >= 500, $"a 500 us delay completed after {shortest} us");
    }

    [Fact]
    public async Task Bug6_TryWrite_ReturnsFalseAfterCompletion_AndTryCompleteIsTrueOnce()
    {
        using var rig = new KernelRig(2);
        (Endpoint a, Endpoint b) = await rig.ConnectAsync(0, 1);
        (bool first, bool second, bool write) = await rig.On(0, () =>
        {
            var writer = UrpcChannelWriter<long>.Of(a);
            bool c1 = writer.TryComplete(new InvalidOperationException("boom"));
            bool c2 = writer.TryComplete();
            return (c1, c2, writer.TryWrite(1));
        });
        Assert.True(first);
        Assert.False(second);
        Assert.False(write);

        // The error crosses: the reader's Completion faults and a read fails as closed.
        Task completion = await rig.On(1, () => UrpcChannelReader<long>.Of(b).Completion);
        await Assert.ThrowsAsync<ChannelClosedException>(() => completion.WaitAsync(KernelRig.Patience));
        await Assert.ThrowsAsync<ChannelClosedException>(() => rig.On(1, async () => await UrpcChannelReader<long>.Of(b).ReadAsync()));
        bool waitThrows = await rig.On(0, async () =>
        {
            try
            {
                await UrpcChannelWriter<long>.Of(a).WaitToWriteAsync();
                return false;
            }
            catch (InvalidOperationException ex) when (ex.Message == "boom")
            {
                return true;
            }
        });
        Assert.True(waitThrows, "WaitToWriteAsync after TryComplete(error) surfaces the error");
    }

    [Fact]
    public async Task Bug6_Completion_CompletesOnceTheWriterCompletedAndEverythingWasRead()
    {
        using var rig = new KernelRig(2);
        (Endpoint a, Endpoint b) = await rig.ConnectAsync(0, 1);
        Task<(long Sum, Task Completion)> reading = rig.On(1, async () =>
        {
            var reader = UrpcChannelReader<long>.Of(b);
            long s = 0;
            await foreach (long v in reader.ReadAllAsync())
            {
                s += v;
            }

            return (s, reader.Completion);
        });
        await rig.On(0, async () =>
        {
            var writer = UrpcChannelWriter<long>.Of(a);
            for (long i = 0; i < 100; i++)
            {
                await writer.WriteAsync(i);
            }

            writer.Complete();
            return 0;
        });
        (long sum, Task completion) = await reading;
        Assert.Equal(4950, sum);
        await completion.WaitAsync(KernelRig.Patience);
        Assert.True(completion.IsCompletedSuccessfully);
    }

    [Fact]
    public async Task Bug6_TwoReaders_EachGetTheirOwnMessage_NoneLost()
    {
        using var rig = new KernelRig(2);
        (Endpoint a, Endpoint b) = await rig.ConnectAsync(0, 1);
        Task<(ulong, ulong, ulong)> reads = rig.On(1, async () =>
        {
            // A completes while its result is not yet taken; B must not recycle A's operation.
            ValueTask<Message> first = b.ReadAsync();
            ValueTask<Message> second = b.ReadAsync(); // before the fix: "already has a reader waiting"
            while (!first.IsCompleted)
            {
                await rig[1].Delay(TimeSpan.FromMilliseconds(1));
            }

            ValueTask<Message> third = b.ReadAsync();
            return ((await first).Word0, (await second).Word0, (await third).Word0);
        });
        await rig.On(0, async () =>
        {
            for (ulong i = 1; i <= 3; i++)
            {
                await a.WriteAsync(Message.Create(1, i));
                await rig[0].Delay(TimeSpan.FromMilliseconds(5));
            }

            return 0;
        });
        Assert.Equal((1ul, 2ul, 3ul), await reads);
    }

    [Fact]
    public async Task Bug6_ACancelledRead_CancelsOnlyItself_TheOtherReaderStillGetsTheMessage()
    {
        using var rig = new KernelRig(2);
        (Endpoint a, Endpoint b) = await rig.ConnectAsync(0, 1);
        using var cts = new CancellationTokenSource();
        Task<(bool, ulong)> reads = rig.On(1, async () =>
        {
            var reader = UrpcChannelReader<long>.Of(b);
            ValueTask<long> cancelled = reader.ReadAsync(cts.Token);
            ValueTask<Message> other = b.ReadAsync();
            cts.Cancel(); // before the fix the callback cancelled whichever reader was waiting
            bool wasCancelled;
            try
            {
                await cancelled;
                wasCancelled = false;
            }
            catch (OperationCanceledException)
            {
                wasCancelled = true;
            }

            return (wasCancelled, (await other).Word0);
        });
        await Task.Delay(50);
        await rig.On(0, async () => { await a.WriteAsync(Message.Create(1, 42)); return 0; });
        Assert.Equal((true, 42ul), await reads);
    }
}
