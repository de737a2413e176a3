using System.Runtime.CompilerServices;
using Multikernel.CpuDriver.Capabilities;
using Multikernel.CpuDriver.Memory;
using Multikernel.CpuDriver.Urpc;
using Multikernel.Monitor;
using Multikernel.Netd.Client;
using Multikernel.Netd.Daemon;
using Multikernel.Netd.Wire;

namespace Multikernel.Tests.Netd.Daemon;

/// <summary>
/// The receive path without a netd copy (docs/netd-datapath.md): the switch shows netd each
/// frame in its port queue, netd classifies it there and has it written once, straight into the
/// consumer's posted page; the ledger keeps every page's owner exact and both sides' storage
/// constant; a hostile consumer cannot post a buffer twice or overlap one netd holds.
/// </summary>
public sealed partial class NetdTests
{
    [Fact]
    public async Task LargeFrames_AreWrittenStraightIntoThePostedPage_NoNetdCopy_AndStorageIsConservedOnBothSides()
    {
        const int Frames = 40; // ten times the pages posted: every page goes round the ledger many times
        const int Pages = 4;
        var received = new StrongBox<int>(0);
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var done = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var pagesSeen = new HashSet<uint>();
        await using Rig rig = await StartAsync(o =>
        {
            o.AddProgram("sink", async ctx =>
            {
                try
                {
                    await using NetdClient client = await NetdClient.ConnectAsync(ctx, new NetdClientOptions { Address = AppIp, ReceivePages = Pages, SmallBuffers = 4, TransmitPages = 1 });
                    await client.InstallFilterAsync("ip.dst == 10.77.0.2 && udp.dport == 9000");
                    ready.SetResult();
                    string problem = string.Empty;
                    while (Volatile.Read(ref received.Value) < Frames)
                    {
                        await client.WaitToReceiveAsync(ctx.Stopping);
                        while (client.TryReceive(out ReceivedFrame frame))
                        {
                            // The bytes are where the descriptor says, in this domain's own page.
                            ReadOnlySpan<byte> udp = frame.Span[(EthernetFrame.HeaderLength + Ipv4Packet.MinHeaderLength + 8)..];
                            for (int i = 0; i < udp.Length && problem.Length == 0; i++)
                            {
                                if (udp[i] != (byte)(i * 7))
                                {
                                    problem = $"payload byte {i} of frame {received.Value} is {udp[i]}";
                                }
                            }

                            if (frame.IsSmall || frame.Descriptor.Offset % PhysicalMemory.FrameSize != 0)
                            {
                                problem = $"frame {received.Value} arrived in {frame.Descriptor}, not a page";
                            }

                            pagesSeen.Add(frame.Descriptor.Offset);
                            client.Release(frame);
                            Volatile.Write(ref received.Value, received.Value + 1);
                        }
                    }

                    done.SetResult(problem);
                    await Task.Delay(Timeout.Infinite, ctx.Stopping);
                }
                catch (OperationCanceledException) when (ctx.Stopping.IsCancellationRequested)
                {
                }
                catch (Exception ex)
                {
                    ready.TrySetException(ex);
                    done.TrySetException(ex);
                }
            });
            o.SpawnAtBoot("sink", core: 0);
        });
        await ready.Task.WaitAsync(Patience);
        await Eventually(() => Stats(rig).PostedPages == Pages, "every page is posted");
        ConsumerStats before = Stats(rig);
        long appRam = await rig.Runtime.FreeRamFramesAsync(0), netdRam = await rig.Runtime.FreeRamFramesAsync(1);
        long copies = rig.Host.Counters!.PayloadCopies;

        var frame = new byte[1514];
        int n = BuildUdp(frame, rig.Host.Mac!.Value, AppIp, 9000, 1458); // a 1500-byte IP packet
        for (int i = 0; i < Frames; i++)
        {
            SendPaced(rig.Peer, frame.AsSpan(0, n));
            int want = i + 1;
            await Eventually(() => Volatile.Read(ref received.Value) >= want, () => $"frame {want} delivered (no-buffer drops {rig.Host.Counters!.Dropped(RxDropReason.NoBuffer)})");
        }

        Assert.Equal(string.Empty, await done.Task.WaitAsync(Patience));
        Assert.Equal(Frames, rig.Host.Counters.PageDeliveries);
        Assert.Equal(copies, rig.Host.Counters.PayloadCopies); // not one byte of payload copied by netd
        Assert.Equal(Pages, pagesSeen.Count); // the same posted pages went round, nothing else was used

        // Both sides' storage is what it was: every page is back at netd as posted (the ledger holds
        // exactly the same bytes), and neither the application's RAM nor netd's changed.
        await Eventually(() => Stats(rig).PostedPages == Pages, "every page posted again");
        ConsumerStats after = Stats(rig);
        Assert.Equal(before.HeldBytes, after.HeldBytes);
        Assert.Equal((Pages * PhysicalMemory.FrameSize) + (4 * NetdLimits.SmallPacket), after.HeldBytes);
        Assert.Equal(0, after.DroppedNoBuffer);
        Assert.Equal(appRam, await rig.Runtime.FreeRamFramesAsync(0));
        Assert.Equal(netdRam, await rig.Runtime.FreeRamFramesAsync(1));
    }

    [Fact]
    public async Task AHostileConsumer_CannotPostABufferTwice_NorOverlapOneNetdHolds_NorPostUnaligned()
    {
        var outcome = new TaskCompletionSource<string[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using Rig rig = await StartAsync(o =>
        {
            o.AddProgram("hostile", async ctx =>
            {
                try
                {
                    // The protocol by hand, as a hostile domain would speak it.
                    await using DomainChannel channel = await ctx.BindAsync(NetdMessages.ServiceName, Patience);
                    Message hello = await channel.Endpoint.ReadAsync();
                    int region = ctx.Capabilities.Retype(ctx.RamSlot, CapabilityType.Frame, 4);
                    await channel.SendCapabilityAsync(region, TransferMode.Copy, CapabilityRights.Read | CapabilityRights.Write);
                    await channel.Endpoint.WriteAsync(Message.Create(NetdMessages.AddRegion, 7));
                    Message reply = await channel.Endpoint.ReadAsync();
                    ushort id = (ushort)reply.Word1;
                    var seen = new List<string> { $"region:{(NetdStatus)reply.Word2}" };
                    var page = new Descriptor(id, DescriptorFlags.Page, PhysicalMemory.FrameSize, PhysicalMemory.FrameSize, 1);
                    Descriptor[] posts =
                    [
                        page,                                                                        // taken
                        page with { Tag = 2 },                                                       // the same page again
                        new(id, DescriptorFlags.Small, PhysicalMemory.FrameSize + 256, NetdLimits.SmallPacket, 3), // inside the posted page
                        new(id, DescriptorFlags.Page, 2 * PhysicalMemory.FrameSize + 64, PhysicalMemory.FrameSize - 64, 4), // not page-aligned
                        new(id, DescriptorFlags.Small, 3 * PhysicalMemory.FrameSize + 8, NetdLimits.SmallPacket, 5), // not slot-aligned
                        new(id, DescriptorFlags.Small, 3 * PhysicalMemory.FrameSize, NetdLimits.SmallPacket, 6),     // fine
                        new(id, DescriptorFlags.Small, 4 * PhysicalMemory.FrameSize - 64, NetdLimits.SmallPacket, 7), // past the region's end
                    ];
                    foreach (Descriptor d in posts)
                    {
                        await channel.Endpoint.WriteAsync(d.ToMessage((d.Flags & DescriptorFlags.Small) != 0 ? NetdMessages.PostSmall : NetdMessages.PostPage));
                    }

                    // Refused posts come straight back, marked; accepted ones stay at netd.
                    for (int i = 0; i < 5; i++)
                    {
                        Message m = await channel.Endpoint.ReadAsync().AsTask().WaitAsync(Patience);
                        Descriptor back = Descriptor.From(in m);
                        seen.Add($"{back.Tag}:{(NetdStatus)m.Word2}");
                    }

                    outcome.SetResult([.. seen]);
                    await Task.Delay(Timeout.Infinite, ctx.Stopping); // the channel stays open while the test looks at netd's side
                }
                catch (OperationCanceledException) when (ctx.Stopping.IsCancellationRequested)
                {
                }
                catch (Exception ex)
                {
                    outcome.TrySetException(ex);
                }
            });
            o.SpawnAtBoot("hostile", core: 0);
        });
        string[] seen = await outcome.Task.WaitAsync(Patience);
        Assert.Equal(["region:Ok", "2:BadDescriptor", "3:BadDescriptor", "4:BadDescriptor", "5:BadDescriptor", "7:BadDescriptor"], seen);
        await Eventually(() => rig.Host.ConsumerStatsAsync().GetAwaiter().GetResult() is [{ PostedPages: 1, PostedSmall: 1 }], "netd holds exactly the two good buffers");
        Assert.Equal(PhysicalMemory.FrameSize + NetdLimits.SmallPacket, Stats(rig).HeldBytes);
    }

    private static ConsumerStats Stats(Rig rig) => Assert.Single(rig.Host.ConsumerStatsAsync().GetAwaiter().GetResult());
}

/// <summary>The reusable waits of <see cref="NetdClient"/>, called as a careless or hostile domain would.</summary>
public sealed partial class NetdTests
{
    [Fact]
    public async Task ClientWaits_OneWaiterAtATime_CancellationEndsAWait_AndTheWaitIsReusableAfterwards()
    {
        var outcome = new TaskCompletionSource<string[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using Rig rig = await StartAsync(o =>
        {
            o.AddProgram("waiter", async ctx =>
            {
                var seen = new List<string>();
                try
                {
                    await using NetdClient client = await NetdClient.ConnectAsync(ctx, new NetdClientOptions { Address = AppIp, ReceivePages = 2, SmallBuffers = 2, TransmitPages = 1 });
                    await client.InstallFilterAsync("ip.dst == 10.77.0.2 && udp.dport == 9000");
                    using (var cancel = new CancellationTokenSource())
                    {
                        ValueTask first = client.WaitToReceiveAsync(cancel.Token);
                        try
                        {
                            _ = client.WaitToReceiveAsync(ctx.Stopping);
                            seen.Add("a second waiter was accepted");
                        }
                        catch (InvalidOperationException)
                        {
                            seen.Add("second waiter refused");
                        }

                        cancel.Cancel();
                        try
                        {
                            await first;
                            seen.Add("the cancelled wait completed");
                        }
                        catch (OperationCanceledException)
                        {
                            seen.Add("cancelled");
                        }
                    }

                    // The same wait again, now woken by a frame.
                    ValueTask again = client.WaitToReceiveAsync(ctx.Stopping);
                    ready.SetResult();
                    await again;
                    seen.Add(client.TryReceive(out ReceivedFrame frame) ? $"received {frame.Span.Length}" : "woken with nothing");
                    client.Release(frame);
                    _ = client.TryGetTransmitBuffer(out _);
                    using var cancelTx = new CancellationTokenSource();
                    ValueTask<TransmitBuffer> tx = client.GetTransmitBufferAsync(cancelTx.Token); // none free: waits
                    cancelTx.Cancel();
                    try
                    {
                        await tx;
                        seen.Add("got a transmit page that was not free");
                    }
                    catch (OperationCanceledException)
                    {
                        seen.Add("transmit wait cancelled");
                    }

                    outcome.SetResult([.. seen]);
                }
                catch (Exception ex)
                {
                    ready.TrySetException(ex);
                    outcome.TrySetException(ex);
                }
            });
            o.SpawnAtBoot("waiter", core: 0);
        });
        await ready.Task.WaitAsync(Patience);
        var frame = new byte[1514];
        int n = BuildUdp(frame, rig.Host.Mac!.Value, AppIp, 9000, 100);
        SendPaced(rig.Peer, frame.AsSpan(0, n));
        string[] seen = await outcome.Task.WaitAsync(Patience);
        Assert.Equal(["second waiter refused", "cancelled", $"received {n}", "transmit wait cancelled"], seen);
    }
}
