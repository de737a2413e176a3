using Multikernel.Netd.Client;
using Multikernel.Netd.Drivers;
using Multikernel.Netd.Wire;
using WireMac = Multikernel.Netd.Wire.MacAddress;

namespace Multikernel.Tests.Netd.Daemon;

/// <summary>Seed 003: netd is stopped and started again while an application runs; the application binds again and carries on.</summary>
public sealed partial class NetdTests
{
    [Fact]
    public async Task Netd_Restarts_WhileAConsumerRuns_TheConsumerBindsAgain_AndItsTrafficFlowsAgain()
    {
        var client = new TaskCompletionSource<NetdClient>(TaskCreationOptions.RunContinuationsAsynchronously);
        long echoed = 0;
        await using Rig rig = await StartAsync(o =>
        {
            o.AddProgram("udp-echo", async ctx =>
            {
                try
                {
                    await using NetdClient netd = await NetdClient.ConnectAsync(ctx, new NetdClientOptions { Address = AppIp });
                    await netd.InstallFilterAsync("ip.dst == 10.77.0.2 && udp.dport == 9000");
                    client.SetResult(netd);
                    while (!ctx.Stopping.IsCancellationRequested)
                    {
                        await netd.WaitToReceiveAsync(ctx.Stopping);
                        while (netd.TryReceive(out ReceivedFrame frame))
                        {
                            TransmitBuffer tx = await netd.GetTransmitBufferAsync(ctx.Stopping);
                            int length = frame.Span.Length;
                            frame.Span.CopyTo(tx.Span);
                            SwapAddresses(tx.Span[..length]);
                            netd.Release(frame);
                            netd.Transmit(tx, length);
                            Interlocked.Increment(ref echoed);
                        }
                    }
                }
                catch (OperationCanceledException) when (ctx.Stopping.IsCancellationRequested)
                {
                }
                catch (Exception ex)
                {
                    client.TrySetException(ex);
                    throw;
                }
            });
            o.SpawnAtBoot("udp-echo", core: 0);
        });
        NetdClient consumer = await client.Task.WaitAsync(Patience);
        WireMac netdMac = rig.Host.Mac!.Value;
        var frame = new byte[1514];
        int n = BuildUdp(frame, netdMac, AppIp, 9000, 200);
        SendPaced(rig.Peer, frame.AsSpan(0, n));
        _ = await ReceiveAsync(rig.Peer, f => EtherOf(f) == EtherType.Ipv4);
        ulong firstNetd = rig.Host.DomainId;

        await rig.Host.RestartAsync(rig.Runtime, Patience);
        Assert.Equal(2, rig.Host.Starts);
        Assert.NotEqual(firstNetd, rig.Host.DomainId);

        // The consumer saw its channel close (a clear error), bound the new netd and re-registered:
        // traffic to it flows again through the new instance. Datagrams sent while it was binding
        // are lost, as on a real NIC that restarts, so send until one comes back.
        long before = Interlocked.Read(ref echoed);
        byte[]? back = null;
        for (int attempt = 0; attempt < 100 && back is null; attempt++)
        {
            SendPaced(rig.Peer, frame.AsSpan(0, n));
            back = await TryReceiveAsync(rig.Peer, f => EtherOf(f) == EtherType.Ipv4, TimeSpan.FromMilliseconds(100));
        }

        Assert.NotNull(back);
        Assert.True(Interlocked.Read(ref echoed) > before);
        Assert.Equal(1, consumer.Reconnects);
        Assert.NotNull(consumer.LastDisconnect);
        Assert.Contains("netd", consumer.LastDisconnect!.Message, StringComparison.Ordinal);
    }

    private static async Task<byte[]?> TryReceiveAsync(SwitchPort port, Func<byte[], bool> match, TimeSpan wait)
    {
        var buffer = new byte[port.MaxFrameLength()];
        var deadline = System.Diagnostics.Stopwatch.StartNew();
        while (deadline.Elapsed < wait)
        {
            int n = port.ReceiveOne(buffer);
            if (n > 0)
            {
                byte[] f = buffer[..n];
                if (match(f))
                {
                    return f;
                }

                continue;
            }

            await Task.Delay(1);
        }

        return null;
    }
}
