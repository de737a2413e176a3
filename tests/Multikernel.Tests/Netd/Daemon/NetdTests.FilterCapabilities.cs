using Multikernel.CpuDriver.Capabilities;
using Multikernel.CpuDriver.Urpc;
using Multikernel.Monitor;
using Multikernel.Netd.Client;
using Multikernel.Netd.Daemon;
using WireMac = Multikernel.Netd.Wire.MacAddress;

namespace Multikernel.Tests.Netd.Daemon;

/// <summary>A filter is a PacketFilter capability billed to its installer; revoking it removes the filter.</summary>
public sealed partial class NetdTests
{
    [Fact]
    public async Task AFilter_IsACapabilityBilledToItsInstaller_AndRevokingIt_RemovesTheFilter()
    {
        var installed = new TaskCompletionSource<(int Filter, long RamBefore, long RamAfter)>(TaskCreationOptions.RunContinuationsAsynchronously);
        var revoke = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var revoked = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        long received = 0;
        await using Rig rig = await StartAsync(o =>
        {
            o.AddProgram("udp-sink", async ctx =>
            {
                try
                {
                    await using NetdClient client = await NetdClient.ConnectAsync(ctx, new NetdClientOptions { Address = AppIp });
                    long before = ctx.Capabilities.FreeRamFrames;
                    int filter = await client.InstallFilterAsync("ip.dst == 10.77.0.2 && udp.dport == 9000");
                    installed.SetResult((filter, before, ctx.Capabilities.FreeRamFrames));
                    Task revoking = revoke.Task.ContinueWith(async _ =>
                    {
                        await client.RemoveFilterAsync(filter);
                        revoked.SetResult();
                    }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.FromCurrentSynchronizationContext()).Unwrap();
                    while (!ctx.Stopping.IsCancellationRequested)
                    {
                        await client.WaitToReceiveAsync(ctx.Stopping);
                        while (client.TryReceive(out ReceivedFrame frame))
                        {
                            Interlocked.Increment(ref received);
                            client.Release(frame);
                        }
                    }

                    await revoking;
                }
                catch (OperationCanceledException) when (ctx.Stopping.IsCancellationRequested)
                {
                }
                catch (Exception ex)
                {
                    installed.TrySetException(ex);
                    revoked.TrySetException(ex);
                }
            });
            o.SpawnAtBoot("udp-sink", core: 0);
        });
        (int filterId, long ramBefore, long ramAfter) = await installed.Task.WaitAsync(Patience);
        Assert.True(filterId > 0);
        Assert.Equal(ramBefore - 1, ramAfter); // the filter's frame is the installer's

        var frame = new byte[1514];
        WireMac netdMac = rig.Host.Mac!.Value;
        int n = BuildUdp(frame, netdMac, AppIp, 9000, 32);
        SendPaced(rig.Peer, frame.AsSpan(0, n));
        await Eventually(() => Interlocked.Read(ref received) == 1, "the filtered datagram to reach the installer");

        revoke.SetResult();
        await revoked.Task.WaitAsync(Patience);
        await Eventually(() => rig.Host.Counters!.FiltersRevoked == 1, "netd to remove the revoked filter");
        long unclaimed = rig.Host.Counters!.Dropped(RxDropReason.Unclaimed);
        SendPaced(rig.Peer, frame.AsSpan(0, n));
        await Eventually(() => rig.Host.Counters!.Dropped(RxDropReason.Unclaimed) == unclaimed + 1, "the next datagram to be unclaimed");
        Assert.Equal(1, Interlocked.Read(ref received));
    }

    [Fact]
    public async Task AFilterRequest_WithoutItsCapability_OrWithAnotherKind_IsRefused_AndNothingIsInstalled()
    {
        var outcome = new TaskCompletionSource<(ulong Bare, ulong Frame)>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using Rig rig = await StartAsync(o =>
        {
            o.AddProgram("hostile", async ctx =>
            {
                try
                {
                    // Speaks netd's protocol by hand: an InstallFilter with no capability, then one
                    // after granting a plain Frame instead of a PacketFilter.
                    DomainChannel channel = await ctx.BindAsync(NetdMessages.ServiceName, TimeSpan.FromSeconds(10), ctx.Stopping);
                    Message hello = await channel.Endpoint.ReadAsync();
                    Assert.Equal(NetdMessages.Hello, hello.Type);
                    Assert.True(channel.Endpoint.TryWrite(Message.Create(NetdMessages.InstallFilter, 0, 0, 0)));
                    Message bare = await channel.Endpoint.ReadAsync();
                    int frameSlot = ctx.Capabilities.Retype(ctx.RamSlot, CapabilityType.Frame);
                    await channel.SendCapabilityAsync(frameSlot, TransferMode.Copy, CapabilityRights.Read);
                    Assert.True(channel.Endpoint.TryWrite(Message.Create(NetdMessages.InstallFilter, 0, 0, 0)));
                    Message wrongKind = await channel.Endpoint.ReadAsync();
                    outcome.SetResult((bare.Word1, wrongKind.Word1));
                    await Task.Delay(Timeout.Infinite, ctx.Stopping).ContinueWith(_ => { }, TaskScheduler.Current);
                }
                catch (Exception ex)
                {
                    outcome.TrySetException(ex);
                }
            });
            o.SpawnAtBoot("hostile", core: 0);
        });
        (ulong bare, ulong wrongKind) = await outcome.Task.WaitAsync(Patience);
        Assert.Equal((ulong)NetdStatus.BadCapability, bare);
        Assert.Equal((ulong)NetdStatus.BadCapability, wrongKind);
    }
}
