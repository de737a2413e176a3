using Multikernel.CpuDriver.Urpc;
using Multikernel.Monitor;
using Multikernel.Monitor.Hosting;

namespace Multikernel.Tests.Kernel;

public sealed class AllocationTests
{
    [Fact]
    public async Task CrossCoreRoundTrips_AllocateNothingPerMessage_OnEitherCore()
    {
        const int Warmup = 10_000;
        const int Measured = 100_000;
        var clientBytes = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        var serverBytes = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.AddProgram("server", async ctx =>
            {
                using ServiceListener listener = await ctx.ExportAsync("alloc");
                DomainChannel channel = await listener.AcceptAsync(ctx.Stopping);
                long before = 0;
                for (int i = 0; i < Warmup + Measured; i++)
                {
                    if (i == Warmup)
                    {
                        before = GC.GetAllocatedBytesForCurrentThread();
                    }

                    Message m = await channel.Endpoint.ReadAsync();
                    m.Word0++;
                    await channel.Endpoint.WriteAsync(in m);
                }

                serverBytes.SetResult(GC.GetAllocatedBytesForCurrentThread() - before);
            });
            o.AddProgram("client", async ctx =>
            {
                DomainChannel channel = await ctx.BindAsync("alloc", TestMachine.Patience);
                var message = Message.Create(1, 0);
                long before = 0;
                for (int i = 0; i < Warmup + Measured; i++)
                {
                    if (i == Warmup)
                    {
                        before = GC.GetAllocatedBytesForCurrentThread();
                    }

                    await channel.Endpoint.WriteAsync(in message);
                    message = await channel.Endpoint.ReadAsync();
                }

                clientBytes.SetResult(GC.GetAllocatedBytesForCurrentThread() - before);
            });
            o.SpawnAtBoot("server", core: 1);
            o.SpawnAtBoot("client", core: 0);
        });
        try
        {
            // The core threads run the kernel loop, the rings, the endpoints and the domain: any
            // per-message allocation anywhere on them would show up as >= 100,000 bytes here.
            long client = await clientBytes.Task.WaitAsync(TestMachine.Patience);
            long server = await serverBytes.Task.WaitAsync(TestMachine.Patience);
            Assert.True(client < 1024, $"client core allocated {client} bytes over {Measured} round trips");
            Assert.True(server < 1024, $"server core allocated {server} bytes over {Measured} round trips");
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }
}
