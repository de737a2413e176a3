using Multikernel.CpuDriver.Urpc;
using Multikernel.Monitor;
using Multikernel.Monitor.Hosting;

namespace Multikernel.Tests.Monitor;

public sealed class BindSpawnTests
{
    [Fact]
    public async Task Spawn_StartsTheDomainOnTheRequestedCore()
    {
        var cores = new TaskCompletionSource<int>[3];
        for (int i = 0; i < cores.Length; i++)
        {
            cores[i] = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        MultikernelRuntime runtime = await TestMachine.StartAsync(3, o => o.AddProgram("report", ctx =>
        {
            cores[(int)ctx.Argument].SetResult(ctx.Core);
            return Task.CompletedTask;
        }));
        try
        {
            for (int k = 0; k < 3; k++)
            {
                ulong id = await runtime.SpawnAsync(k, "report", (ulong)k);
                Assert.Equal((ulong)k, id >> 32);
                Assert.Equal(k, await cores[k].Task.WaitAsync(TestMachine.Patience));
            }
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }

    [Fact]
    public async Task SpawnFromADomain_OnAnotherCore_AndBindBack_EchoesAcrossCores()
    {
        var result = new TaskCompletionSource<long[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.AddProgram("echo", async ctx =>
            {
                using ServiceListener listener = await ctx.ExportAsync("echo");
                DomainChannel channel = await listener.AcceptAsync(ctx.Stopping);
                var reader = channel.Reader<long>();
                var writer = channel.Writer<long>();
                await foreach (long value in reader.ReadAllAsync(ctx.Stopping))
                {
                    await writer.WriteAsync(value * 2, ctx.Stopping);
                }
            });
            o.AddProgram("client", async ctx =>
            {
                try
                {
                    ulong echoDomain = await ctx.SpawnAsync(1, "echo");
                    Assert.Equal(1ul, echoDomain >> 32);
                    DomainChannel channel = await ctx.BindAsync("echo", TestMachine.Patience);
                    Assert.Equal(1, channel.RemoteCore);
                    var replies = new List<long>();
                    for (long i = 0; i < 1000; i++)
                    {
                        await channel.Writer<long>().WriteAsync(i);
                        replies.Add(await channel.Reader<long>().ReadAsync());
                    }

                    result.SetResult([.. replies]);
                }
                catch (Exception ex)
                {
                    result.SetException(ex);
                }
            });
            o.SpawnAtBoot("client", core: 0);
        });
        try
        {
            long[] replies = await result.Task.WaitAsync(TestMachine.Patience);
            Assert.Equal(Enumerable.Range(0, 1000).Select(i => i * 2L), replies);
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }

    [Fact]
    public async Task Bind_OnTheSameCore_UsesALocalChannel()
    {
        var result = new TaskCompletionSource<ulong>(TaskCreationOptions.RunContinuationsAsynchronously);
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.AddProgram("local", async ctx =>
            {
                try
                {
                    using ServiceListener listener = await ctx.ExportAsync("local-svc");
                    DomainChannel client = await ctx.BindAsync("local-svc");
                    DomainChannel server = await listener.AcceptAsync();
                    Assert.Equal(ctx.Core, client.RemoteCore);
                    await client.Endpoint.WriteAsync(Message.Create(9, 42));
                    Message m = await server.Endpoint.ReadAsync();
                    result.SetResult(m.Word0);
                }
                catch (Exception ex)
                {
                    result.SetException(ex);
                }
            });
            o.SpawnAtBoot("local", core: 1);
        });
        try
        {
            Assert.Equal(42ul, await result.Task.WaitAsync(TestMachine.Patience));
            Assert.True(runtime.Machine.Kernels[1].Counters.Sent(1) >= 1, "the message should have been delivered core-locally");
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }

    [Fact]
    public async Task MonitorRequests_FailWithClearErrors()
    {
        var errors = new TaskCompletionSource<Exception[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.AddProgram("holder", async ctx =>
            {
                using ServiceListener listener = await ctx.ExportAsync("taken", backlog: 1);
                await Task.Delay(Timeout.Infinite, ctx.Stopping);
            });
            o.AddProgram("prober", async ctx =>
            {
                var caught = new List<Exception>();
                async Task Try(Func<Task> action)
                {
                    try
                    {
                        await action();
                        caught.Add(new InvalidOperationException("no error"));
                    }
                    catch (Exception ex)
                    {
                        caught.Add(ex);
                    }
                }

                // wait for the holder's export to be replicated here
                DomainChannel first = await ctx.BindAsync("taken", TestMachine.Patience);
                await Try(() => ctx.BindAsync("nobody-home"));
                await Try(() => ctx.ExportAsync("taken"));
                await Try(() => ctx.ExportAsync("a-name-that-is-far-too-long"));
                await Try(() => ctx.SpawnAsync(1, "no-such-program"));
                await Try(() => ctx.SpawnAsync(7, "holder"));
                await Try(() => ctx.BindAsync("taken")); // backlog of 1 already holds `first`
                GC.KeepAlive(first);
                errors.SetResult([.. caught]);
            });
            o.SpawnAtBoot("holder", core: 1);
            o.SpawnAtBoot("prober", core: 0);
        });
        try
        {
            Exception[] e = await errors.Task.WaitAsync(TestMachine.Patience);
            Assert.Equal(MonitorStatus.NotFound, Assert.IsType<MonitorException>(e[0]).Status);
            Assert.Contains("nobody-home", e[0].Message, StringComparison.Ordinal);
            Assert.Equal(MonitorStatus.Duplicate, Assert.IsType<MonitorException>(e[1]).Status);
            Assert.Contains("16 bytes", Assert.IsType<ArgumentException>(e[2]).Message, StringComparison.Ordinal);
            Assert.Equal(MonitorStatus.UnknownProgram, Assert.IsType<MonitorException>(e[3]).Status);
            Assert.IsType<ArgumentOutOfRangeException>(e[4]);
            Assert.Equal(MonitorStatus.Refused, Assert.IsType<MonitorException>(e[5]).Status);
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }

    [Fact]
    public async Task WhenAServerDomainEnds_ItsClientsWritesFail_InsteadOfStallingForever()
    {
        var outcome = new TaskCompletionSource<Exception?>(TaskCreationOptions.RunContinuationsAsynchronously);
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.AddProgram("short-lived", async ctx =>
            {
                using ServiceListener listener = await ctx.ExportAsync("brief");
                DomainChannel channel = await listener.AcceptAsync(ctx.Stopping);
                _ = await channel.Reader<long>().ReadAsync(ctx.Stopping); // one message, then the domain ends
            });
            o.AddProgram("writer", async ctx =>
            {
                try
                {
                    DomainChannel channel = await ctx.BindAsync("brief", TestMachine.Patience);
                    var writer = channel.Writer<long>();
                    for (long i = 0; i < 1_000_000; i++)
                    {
                        await writer.WriteAsync(i, ctx.Stopping); // far more than one window
                    }

                    outcome.SetResult(null);
                }
                catch (Exception ex)
                {
                    outcome.SetResult(ex);
                }
            });
            o.SpawnAtBoot("short-lived", core: 1);
            o.SpawnAtBoot("writer", core: 0);
        });
        try
        {
            Exception? ex = await outcome.Task.WaitAsync(TestMachine.Patience);
            Assert.IsType<System.Threading.Channels.ChannelClosedException>(ex);
            Assert.Contains("closed", ex!.Message, StringComparison.Ordinal);
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }
}
