using System.Collections.Concurrent;
using Multikernel.CpuDriver.Capabilities;
using Multikernel.CpuDriver.Kernel;
using Multikernel.Monitor;
using Multikernel.Monitor.Hosting;

namespace Multikernel.Tests.Capabilities;

/// <summary>
/// The Nic's life across NIC-program restarts (seed 003: netd can be stopped and started again)
/// and the device authority it carries: only its holder may put code in the kernel loop.
/// </summary>
public sealed class NicLifecycleTests
{
    private sealed class CountingService : IKernelService
    {
        private long _polls;

        public long Polls => Interlocked.Read(ref _polls);

        public int Poll()
        {
            Interlocked.Increment(ref _polls);
            return 0;
        }

        public bool HasWork => false;
    }

    private static void NicMachine(MultikernelOptions o)
    {
        o.DeviceMemory = "64KiB";
        o.NicCore = 1;
        o.NicProgram = "nic-holder";
    }

    [Fact]
    public async Task AddingADeviceService_NeedsTheNic_ADomainWithout_IsRefused_AndNothingRuns()
    {
        var outcome = new TaskCompletionSource<Exception?>(TaskCreationOptions.RunContinuationsAsynchronously);
        var service = new CountingService();
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            NicMachine(o);
            o.AddProgram("intruder", ctx =>
            {
                try
                {
                    // Its own RAM is not device authority, and neither is a slot it does not have.
                    Assert.Throws<CapabilityTypeException>(() => ctx.AddDeviceService(ctx.RamSlot, service));
                    Assert.ThrowsAny<CapabilityException>(() => ctx.AddDeviceService(ctx.RamSlot + 7, service));
                    outcome.SetResult(null);
                }
                catch (Exception e)
                {
                    outcome.SetResult(e);
                }

                return Task.CompletedTask;
            });
        });
        try
        {
            await runtime.SpawnAsync(1, "intruder"); // on the Nic core, but not the NIC program
            Assert.Null(await outcome.Task.WaitAsync(TestMachine.Patience));
            await runtime.InvokeAsync(1, _ => 0); // a loop iteration or more has run since
            Assert.Equal(0, service.Polls);
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }

    [Fact]
    public async Task WhenTheNicProgramEnds_TheNicComesBack_EveryDevFrameItHandedOutIsRevoked_AndARestartGetsItAgain()
    {
        var starts = new ConcurrentQueue<int>(); // the NicSlot each start saw
        var services = new ConcurrentQueue<CountingService>();
        var handedOut = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var holderSaw = new ConcurrentQueue<string>();
        var holderCheck = new ConcurrentDictionary<int, TaskCompletionSource>();
        TaskCompletionSource Check(int round) => holderCheck.GetOrAdd(round, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            NicMachine(o);
            o.AddProgram("nic-holder", async ctx =>
            {
                starts.Enqueue(ctx.NicSlot);
                if (ctx.NicSlot < 0)
                {
                    return;
                }

                var service = new CountingService();
                services.Enqueue(service);
                using IDisposable registration = ctx.AddDeviceService(ctx.NicSlot, service);
                int devFrames = ctx.Capabilities.Retype(ctx.NicSlot, CapabilityType.DevFrame, 4);
                if (starts.Count == 1)
                {
                    // The first instance hands a DevFrame to an application, as netd would a receive page.
                    DomainChannel app = await ctx.BindAsync("app", TimeSpan.FromSeconds(10), ctx.Stopping);
                    ctx.Capabilities.GetFrame(devFrames).Span[0] = 0x5A;
                    await app.SendCapabilityAsync(devFrames, TransferMode.Copy, CapabilityRights.Read);
                    handedOut.SetResult();
                }

                await Task.Delay(Timeout.Infinite, ctx.Stopping).ContinueWith(_ => { }, TaskScheduler.Current);
            });
            o.AddProgram("app", async ctx =>
            {
                using ServiceListener listener = await ctx.ExportAsync("app");
                DomainChannel channel = await listener.AcceptAsync(ctx.Stopping);
                int slot = await channel.ReceiveCapabilityAsync(ctx.Stopping);
                for (int round = 0; ; round++)
                {
                    await Check(round).Task.WaitAsync(ctx.Stopping);
                    try
                    {
                        holderSaw.Enqueue($"{round}: {ctx.Capabilities.GetFrame(slot).ReadOnlySpan[0]:x2}");
                    }
                    catch (CapabilityException e) when (e is CapabilityRevokedException or EmptySlotException)
                    {
                        holderSaw.Enqueue($"{round}: gone");
                    }
                }
            });
        });
        try
        {
            await runtime.SpawnAsync(0, "app");
            ulong first = await runtime.SpawnAsync(1, "nic-holder");
            await handedOut.Task.WaitAsync(TestMachine.Patience);
            Check(0).SetResult();
            await TestMachine.EventuallyAsync(() => holderSaw.Count == 1, "the application to read its DevFrame");
            CountingService firstService = Assert.Single(services);
            await TestMachine.EventuallyAsync(() => firstService.Polls > 0, "the device service to run in core 1's loop");

            Assert.True(await runtime.StopDomainAsync(first));

            // The application's window into device memory is gone, and so is the first driver's service.
            Check(1).SetResult();
            await TestMachine.EventuallyAsync(() => holderSaw.Count == 2, "the application to look again");
            Assert.Equal(["0: 5a", "1: gone"], holderSaw.ToArray());
            long polls = firstService.Polls;
            await runtime.InvokeAsync(1, _ => 0);
            await runtime.InvokeAsync(1, _ => 0);
            Assert.Equal(polls, firstService.Polls);

            // A restarted NIC program gets the Nic again (and the whole device region: 4 DevFrames retype again).
            _ = await runtime.SpawnAsync(1, "nic-holder");
            await TestMachine.EventuallyAsync(() => services.Count == 2, "the restarted NIC program to get the Nic and start its service");
            Assert.All(starts, s => Assert.True(s >= 0));
            await runtime.SpawnAsync(1, "nic-holder"); // while one runs, a second start still gets none
            await TestMachine.EventuallyAsync(() => starts.Count == 3, "the third start");
            Assert.True(starts.ToArray()[2] < 0);
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }
}
