using System.Threading.Channels;
using Multikernel.CpuDriver.Urpc;
using Multikernel.Monitor;
using Multikernel.Monitor.Hosting;
using Multikernel.Monitor.Protocol;
using Multikernel.Tests.Telemetry;

namespace Multikernel.Tests.Monitor;

/// <summary>Issue 8, "Bounded everything" for the monitors: each limit has a designed behaviour.</summary>
public sealed class MonitorBoundsTests
{
    private static readonly TimeSpan Short = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task MonitorLink_RefusesRequestsPastItsOutbox_KeepsAReserveForReplies_AndAFaultedPumpClearsItsFlag()
    {
        using var rig = new TwoCoreRig(); // window 8; core 1 never reads until the end
        MonitorLink link = null!;
        await TwoCoreRig.RunOn(rig.Core0, () =>
        {
            link = new MonitorLink(rig.Sender, capacity: 4, replyReserve: 2);
            int accepted = 0;
            while (link.TrySend(Message.Create(1, (ulong)accepted), LinkTraffic.Request))
            {
                accepted++;
            }

            Assert.Equal(8 + 4, accepted); // the window, then the outbox
            Assert.True(link.IsPumping);
            Assert.Contains("MonitorOutbox = 4", link.RefusalReason(), StringComparison.Ordinal);
            // A reply someone waits for still fits (the reserve), up to the reserve.
            Assert.True(link.TrySend(Message.Create(2), LinkTraffic.Reply));
            Assert.True(link.TrySend(Message.Create(2), LinkTraffic.Reply));
            Assert.False(link.TrySend(Message.Create(2), LinkTraffic.Reply));
            Assert.Equal(6, link.Backlog);
            return Task.CompletedTask;
        }).WaitAsync(Short);

        // The peer's end goes away: the pump's stalled write fails; the pump must not stay "pumping".
        await TwoCoreRig.RunOn(rig.Core1, () =>
        {
            rig.Receiver.Close();
            return Task.CompletedTask;
        }).WaitAsync(Short);
        await TestMachine.EventuallyAsync(() => link.Fault is not null, "the pump saw the closed peer");
        await TwoCoreRig.RunOn(rig.Core0, () =>
        {
            Assert.False(link.IsPumping);
            Assert.Equal(0, link.Backlog);
            Assert.IsType<ChannelClosedException>(link.Fault);
            Assert.False(link.TrySend(Message.Create(3), LinkTraffic.Reply));
            Assert.Contains("failed", link.RefusalReason(), StringComparison.Ordinal);
            return Task.CompletedTask;
        }).WaitAsync(Short);
    }

    [Fact]
    public async Task ARequestToAStuckCore_TimesOutWithAClearError_AndCancellationEndsTheWait()
    {
        using var release = new ManualResetEventSlim();
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.MonitorRequestTimeout = TimeSpan.FromMilliseconds(300);
            o.AddProgram("noop", _ => Task.CompletedTask);
        });
        try
        {
            // Core 1's thread is held (a stuck core): its monitor answers nothing until released.
            Task stuck = runtime.InvokeAsync(1, _ => release.Wait(Short));
            var timedOut = await Assert.ThrowsAsync<MonitorException>(() => runtime.InvokeAsync(0, ctx => ctx.SpawnAsync(1, "noop"))).WaitAsync(Short);
            Assert.Equal(MonitorStatus.TimedOut, timedOut.Status);
            Assert.Contains("did not answer the spawn request within 0.3 s (MonitorRequestTimeout)", timedOut.Message, StringComparison.Ordinal);

            using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(50));
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => runtime.InvokeAsync(0, ctx => ctx.SpawnAsync(1, "noop", 0, cancel.Token))).WaitAsync(Short);
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => runtime.InvokeAsync(0, ctx => ctx.BindAsync("absent", new CancellationToken(canceled: true)))).WaitAsync(Short);

            release.Set();
            await stuck.WaitAsync(Short);
            // The late replies find no waiter and are dropped; the monitors still work.
            ulong id = await runtime.InvokeAsync(0, ctx => ctx.SpawnAsync(1, "noop")).WaitAsync(Short);
            Assert.Equal(1UL, id >> 32);
        }
        finally
        {
            release.Set();
            await runtime.StopCleanlyAsync();
        }
    }

    [Fact]
    public async Task DisposingAListener_ClosesTheChannelsStillWaitingToBeAccepted()
    {
        var exported = new TaskCompletionSource<ServiceListener>(TaskCreationOptions.RunContinuationsAsynchronously);
        MultikernelRuntime runtime = await TestMachine.StartAsync(2);
        try
        {
            ServiceListener listener = await runtime.InvokeAsync(1, ctx => ctx.ExportAsync("lazy", backlog: 4)).WaitAsync(Short);
            Task<bool> clientSawTheEnd = runtime.InvokeAsync(0, async ctx =>
            {
                await using DomainChannel<long> channel = await ctx.BindAsync<long>("lazy", Short);
                Assert.Same(channel.Reader, channel.Channel.As<long>().Reader); // built once
                exported.SetResult(listener);
                return !await channel.Reader.WaitToReadAsync();
            });
            await exported.Task.WaitAsync(Short);
            // The server never accepted: its dispose must close the queued channel, not leave it dangling.
            await runtime.InvokeAsync(1, async _ => await listener.DisposeAsync()).WaitAsync(Short);
            Assert.True(await clientSawTheEnd.WaitAsync(Short));
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }
}
