using System.Runtime.CompilerServices;
using Multikernel.Netd.Client;
using Multikernel.Netd.Daemon;

namespace Multikernel.Tests.Netd.Daemon;

/// <summary>
/// A consumer revokes its region while traffic flows: netd stops touching it at once (nothing is
/// written into the revoked memory, its frames are dropped and counted against it alone), the
/// other consumer loses nothing, and the first one registers a new region and carries on.
/// </summary>
public sealed partial class NetdTests
{
    [Fact]
    public async Task AConsumerRevokesItsRegionMidStream_NetdStopsTouchingIt_OthersUnaffected_ItReRegistersAndContinues()
    {
        const int Burst = 20;
        const byte Sentinel = 0xEE;
        var aCount = new StrongBox<int>(0);
        var bCount = new StrongBox<int>(0);
        var aReady = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var bReady = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var revoke = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var revoked = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var check = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var checkedOld = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var reconnect = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var aReadyAgain = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        static async Task CountAsync(NetdClient client, StrongBox<int> count, CancellationToken until)
        {
            while (true)
            {
                await client.WaitToReceiveAsync(until);
                while (client.TryReceive(out ReceivedFrame frame))
                {
                    client.Release(frame);
                    Volatile.Write(ref count.Value, count.Value + 1);
                }
            }
        }

        await using Rig rig = await StartAsync(o =>
        {
            o.AddProgram("a", async ctx =>
            {
                try
                {
                    // No automatic reconnect: this test drives the re-registration itself.
                    NetdClient client = await NetdClient.ConnectAsync(ctx, new NetdClientOptions { Address = AppIp, ReceivePages = 4, SmallBuffers = 4, TransmitPages = 1, Reconnect = false });
                    await client.InstallFilterAsync("ip.dst == 10.77.0.2 && udp.dport == 9000");
                    using var stopCounting = CancellationTokenSource.CreateLinkedTokenSource(ctx.Stopping);
                    Task counting = CountAsync(client, aCount, stopCounting.Token);
                    aReady.SetResult();
                    await revoke.Task.WaitAsync(ctx.Stopping);

                    // Take netd's copy away (this domain keeps the original), then mark every
                    // page: whatever netd wrote after this moment would show.
                    await ctx.Capabilities.RevokeAsync(client.RegionSlot);
                    client.Region.Span.Fill(Sentinel);
                    revoked.SetResult();

                    await check.Task.WaitAsync(ctx.Stopping);
                    string problem = client.Region.Span.IndexOfAnyExcept(Sentinel) is int at and >= 0 ? $"byte {at} of the revoked region was written" : string.Empty;
                    try
                    {
                        await counting;
                        problem += "; the receive loop ended without an error";
                    }
                    catch (NetdException ex) when (ex.Status == NetdStatus.BadCapability)
                    {
                        // The clear error on its queue: netd can no longer reach the region.
                    }

                    checkedOld.SetResult(problem);
                    await client.DisposeAsync();
                    await reconnect.Task.WaitAsync(ctx.Stopping);

                    // A new region, registered once more; the same address and filter.
                    await using NetdClient again = await NetdClient.ConnectAsync(ctx, new NetdClientOptions { Address = AppIp, ReceivePages = 4, SmallBuffers = 4, TransmitPages = 1, Reconnect = false });
                    await again.InstallFilterAsync("ip.dst == 10.77.0.2 && udp.dport == 9000");
                    Task countingAgain = CountAsync(again, aCount, ctx.Stopping);
                    aReadyAgain.SetResult();
                    await countingAgain;
                }
                catch (OperationCanceledException) when (ctx.Stopping.IsCancellationRequested)
                {
                }
                catch (Exception ex)
                {
                    aReady.TrySetException(ex);
                    revoked.TrySetException(ex);
                    checkedOld.TrySetException(ex);
                    aReadyAgain.TrySetException(ex);
                }
            });
            o.AddProgram("b", async ctx =>
            {
                try
                {
                    await using NetdClient client = await NetdClient.ConnectAsync(ctx, new NetdClientOptions { Address = OtherAppIp, ReceivePages = 4, SmallBuffers = 4, TransmitPages = 1 });
                    await client.InstallFilterAsync("ip.dst == 10.77.0.3 && udp.dport == 9000");
                    bReady.SetResult();
                    await CountAsync(client, bCount, ctx.Stopping);
                }
                catch (OperationCanceledException) when (ctx.Stopping.IsCancellationRequested)
                {
                }
                catch (Exception ex)
                {
                    bReady.TrySetException(ex);
                }
            });
            o.SpawnAtBoot("a", core: 0);
            o.SpawnAtBoot("b", core: 0);
        });
        await Task.WhenAll(aReady.Task, bReady.Task).WaitAsync(Patience);
        var toA = new byte[1514];
        var toB = new byte[1514];
        int na = BuildUdp(toA, rig.Host.Mac!.Value, AppIp, 9000, 1000);
        int nb = BuildUdp(toB, rig.Host.Mac!.Value, OtherAppIp, 9000, 1000);

        // Traffic to both, paced by what they took.
        async Task SendBothAsync(int aExpected, int bExpected, bool aReceives)
        {
            for (int i = 0; i < Burst; i++)
            {
                SendPaced(rig.Peer, toA.AsSpan(0, na));
                SendPaced(rig.Peer, toB.AsSpan(0, nb));
                int a = aExpected + (aReceives ? i + 1 : 0), b = bExpected + i + 1;
                await Eventually(() => Volatile.Read(ref bCount.Value) >= b && (!aReceives || Volatile.Read(ref aCount.Value) >= a), () => $"frame {i}: a {aCount.Value}, b {bCount.Value}");
            }
        }

        await SendBothAsync(0, 0, aReceives: true);
        Assert.Equal(Burst, Volatile.Read(ref aCount.Value));

        // Mid-stream: a revokes its region; the stream goes on.
        revoke.SetResult();
        await revoked.Task.WaitAsync(Patience);
        long dropsBefore = rig.Host.Counters!.Dropped(RxDropReason.NoBuffer) + rig.Host.Counters.Dropped(RxDropReason.RegionGone);
        await SendBothAsync(Burst, Burst, aReceives: false);
        await Eventually(() => rig.Host.Counters.Dropped(RxDropReason.NoBuffer) + rig.Host.Counters.Dropped(RxDropReason.RegionGone) - dropsBefore == Burst, () => $"a's {Burst} frames dropped and counted (no-buffer {rig.Host.Counters.Dropped(RxDropReason.NoBuffer)}, region-gone {rig.Host.Counters.Dropped(RxDropReason.RegionGone)})");
        Assert.Equal(Burst, Volatile.Read(ref aCount.Value)); // nothing more reached a
        Assert.Equal(2 * Burst, Volatile.Read(ref bCount.Value)); // b lost nothing
        ConsumerStats[] stats = await rig.Host.ConsumerStatsAsync();
        ConsumerStats a = Assert.Single(stats, s => s.RxPackets == Burst);
        ConsumerStats b = Assert.Single(stats, s => s.RxPackets == 2 * Burst);
        Assert.Equal(0, b.DroppedNoBuffer);
        Assert.Equal(0, a.PostedPages + a.PostedSmall); // netd holds none of the revoked region's buffers
        Assert.Equal(0, a.HeldBytes);
        Assert.Equal(1, rig.Host.Counters.Dropped(RxDropReason.RegionGone)); // the frame that found the region gone
        Assert.Equal(Burst, a.DroppedNoBuffer); // every one of them billed to a, nobody else

        check.SetResult();
        Assert.Equal(string.Empty, await checkedOld.Task.WaitAsync(Patience));

        // a registers again (its old consumer gone first, so its address is free) and carries on.
        await Eventually(() => rig.Host.ConsumerStatsAsync().GetAwaiter().GetResult().Length == 1, "netd forgot a's old channel");
        reconnect.SetResult();
        await aReadyAgain.Task.WaitAsync(Patience);
        await SendBothAsync(Burst, 2 * Burst, aReceives: true);
        Assert.Equal(2 * Burst, Volatile.Read(ref aCount.Value));
        Assert.Equal(3 * Burst, Volatile.Read(ref bCount.Value));
    }
}
