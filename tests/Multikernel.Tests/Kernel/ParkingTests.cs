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
            await Task.Delay(100);
            long parks = sleeperCore.Counters.ParkCount;
            long received = sleeperCore.Counters.TotalReceived;

            request.SetResult();
            Assert.Equal(7, await answered.Task.WaitAsync(TimeSpan.FromSeconds(20)));
            // It was asleep (no loop ran in between) and the message got through: the doorbell woke it.
            Assert.True(sleeperCore.Counters.TotalReceived > received);
            Assert.True(sleeperCore.Counters.ParkCount >= parks);
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }
}
