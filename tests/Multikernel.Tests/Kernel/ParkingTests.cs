using Multikernel.Monitor;
using Multikernel.Monitor.Hosting;

namespace Multikernel.Tests.Kernel;

public sealed class ParkingTests
{
    [Fact]
    public async Task IdleCoresPark_AndAMessageFromAnotherCoreWakesTheParkedReceiver()
    {
        var request = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var answered = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.SpinBudget = 100;
            o.MaxPark = TimeSpan.FromSeconds(30); // only a doorbell can wake it in time
            o.AddProgram("sleeper", async ctx =>
            {
                using ServiceListener listener = await ctx.ExportAsync("sleeper");
                DomainChannel channel = await listener.AcceptAsync(ctx.Stopping);
                long value = await channel.Reader<long>().ReadAsync(ctx.Stopping);
                answered.SetResult(value);
            });
            o.AddProgram("waker", async ctx =>
            {
                DomainChannel channel = await ctx.BindAsync("sleeper", TestMachine.Patience);
                await request.Task;
                await channel.Writer<long>().WriteAsync(7, ctx.Stopping);
            });
            o.SpawnAtBoot("sleeper", core: 1);
            o.SpawnAtBoot("waker", core: 0);
        });
        try
        {
            var sleeperCore = runtime.Machine.Kernels[1];
            await TestMachine.EventuallyAsync(() => sleeperCore.Counters.ParkCount > 0, "core 1 to park while idle");
            // Parked now (not only once): the sender must find it asleep for the ring to count.
            await TestMachine.EventuallyAsync(() => sleeperCore.IsParked, "core 1 to be parked");
            long received = sleeperCore.Counters.TotalReceived;
            long rings = sleeperCore.DoorbellRings;

            request.SetResult();
            var watch = System.Diagnostics.Stopwatch.StartNew();
            Assert.Equal(7, await answered.Task.WaitAsync(TimeSpan.FromSeconds(20)));
            // Well inside the 30 s MaxPark, and the sender had to ring: a ring is counted only
            // when the receiver was parked, so this fails if the core was polling or never woke.
            Assert.True(watch.Elapsed < TimeSpan.FromSeconds(10), $"the answer took {watch.Elapsed}");
            Assert.True(sleeperCore.DoorbellRings > rings, "no doorbell rang: the parked receiver was not woken by the sender");
            Assert.True(sleeperCore.Counters.TotalReceived > received);
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }
}
