using Multikernel.CpuDriver.Capabilities;
using Multikernel.CpuDriver.Memory;
using Multikernel.CpuDriver.Urpc;
using Multikernel.Monitor;
using Multikernel.Netd.Daemon;
using Multikernel.Netd.Drivers;
using Multikernel.Netd.Filters;
using Multikernel.Netd.Wire;

namespace Multikernel.Tests.Netd.Daemon;

/// <summary>
/// A hostile consumer that floods netd with requests and never reads its completions, while netd
/// holds many of its buffers: netd reads it only as far as what it may owe it stays bounded (every
/// request can add one message, every held buffer one completion), so frames delivered into those
/// buffers afterwards still fit, netd keeps running, and once the consumer reads it gets every
/// completion, none lost.
/// </summary>
public sealed partial class NetdTests
{
    [Fact]
    public async Task AConsumerThatFloodsWithoutReading_IsReadOnlyAsFarAsNetdCanOweIt_AndDeliveriesIntoItsHeldBuffersStillFit()
    {
        const int Held = 32; // more than the reserve netd keeps for replies
        const ushort Port = 9000;
        var reading = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var outcome = new TaskCompletionSource<(int Received, int Refused)>(TaskCreationOptions.RunContinuationsAsynchronously);
        int flooded = 0;
        await using Rig rig = await StartAsync(
            o =>
            {
                o.AddProgram("flood", async ctx =>
                {
                    try
                    {
                        // The protocol by hand, as a hostile domain would speak it.
                        await using DomainChannel channel = await ctx.BindAsync(NetdMessages.ServiceName, Patience);
                        CpuDriver.Channels.Endpoint endpoint = channel.Endpoint;
                        await endpoint.ReadAsync(); // Hello
                        int region = ctx.Capabilities.Retype(ctx.RamSlot, CapabilityType.Frame, 4);
                        FrameHandle memory = ctx.Capabilities.GetFrame(region);
                        await channel.SendCapabilityAsync(region, TransferMode.Copy, CapabilityRights.Read | CapabilityRights.Write);
                        await endpoint.WriteAsync(Message.Create(NetdMessages.AddRegion, 1));
                        ushort id = (ushort)(await endpoint.ReadAsync()).Word1;
                        await endpoint.WriteAsync(Message.Create(NetdMessages.AddAddress, AppIp.Value));
                        await endpoint.ReadAsync();
                        byte[] program = FilterBinary.Encode(FilterSyntax.Parse($"ip.dst == {AppIp} && udp.dport == {Port}"));
                        program.CopyTo(memory.Span);
                        int filter = ctx.Capabilities.Retype(ctx.RamSlot, CapabilityType.PacketFilter);
                        await channel.SendCapabilityAsync(filter, TransferMode.Copy, CapabilityRights.Read);
                        await endpoint.WriteAsync(new Descriptor(id, DescriptorFlags.None, 0, (uint)program.Length, 0).ToMessage(NetdMessages.InstallFilter));
                        Message installed = await endpoint.ReadAsync();
                        if ((NetdStatus)installed.Word1 != NetdStatus.Ok)
                        {
                            throw new InvalidOperationException($"filter refused: {(NetdStatus)installed.Word1}");
                        }

                        // Buffers netd holds (pages 1..), then a flood of posts netd refuses (not
                        // slot-aligned: each comes back), and no reading at all.
                        for (int i = 0; i < Held; i++)
                        {
                            await endpoint.WriteAsync(new Descriptor(id, DescriptorFlags.Small, (uint)(PhysicalMemory.FrameSize + (i * NetdLimits.SmallPacket)), NetdLimits.SmallPacket, (uint)i).ToMessage(NetdMessages.PostSmall));
                        }

                        ready.SetResult();
                        Task flood = FloodAsync(endpoint, id, () => Interlocked.Increment(ref flooded));
                        await reading.Task.WaitAsync(ctx.Stopping);

                        // Now read: every completion netd owed is there, in order.
                        int received = 0, refused = 0;
                        while (received < Held)
                        {
                            Message m = await endpoint.ReadAsync().AsTask().WaitAsync(Patience);
                            if (m.Type == NetdMessages.Received && (NetdStatus)m.Word2 == NetdStatus.Ok && Descriptor.From(in m).Length > 0)
                            {
                                received++;
                            }
                            else if (m.Type == NetdMessages.ReceivedMany)
                            {
                                received += (int)((m.Word0 >> 16) & 0xFF); // deliveries into held buffers that follow each other
                            }
                            else if (m.Type == NetdMessages.Received)
                            {
                                refused++;
                            }
                        }

                        outcome.SetResult((received, refused));
                        await flood.WaitAsync(ctx.Stopping);
                        await Task.Delay(Timeout.Infinite, ctx.Stopping);
                    }
                    catch (OperationCanceledException) when (ctx.Stopping.IsCancellationRequested)
                    {
                    }
                    catch (Exception ex)
                    {
                        ready.TrySetException(ex);
                        outcome.TrySetException(ex);
                    }
                });
                o.SpawnAtBoot("flood", core: 0);
            },
            netd: n =>
            {
                n.MaxPostedPerConsumer = Held;
                n.MaxTransmitsInFlight = 4;
            });
        await ready.Task.WaitAsync(Patience);

        // netd stops reading the flood once what it holds and owes reaches its bound, and the
        // consumer's sends stall (its window fills).
        int owedBound = (2 * Held) + 4 + Consumer.ReplyReserve;
        await Eventually(() => Stats(rig) is { PostedSmall: Held, Owed: var owed } && owed == owedBound - Held, () => $"netd pauses reading the flood ({Stats(rig)})");
        int stalledAt = Volatile.Read(ref flooded);
        await Task.Delay(50);
        Assert.True(Volatile.Read(ref flooded) - stalledAt <= 128, "the flooding consumer's sends stall once netd stops reading it");

        // Frames for it now: each goes into a buffer netd holds and adds a completion, which still fits.
        var frame = new byte[128];
        int n = BuildUdp(frame, rig.Host.Mac!.Value, AppIp, Port, 32);
        for (int i = 0; i < Held; i++)
        {
            SendPaced(rig.Peer, frame.AsSpan(0, n));
        }

        // (Deliveries into buffers that follow each other may share one ReceivedMany: owed grows by
        // at most one per frame, never past the bound.)
        await Eventually(() => Stats(rig) is { PostedSmall: 0, RxPackets: Held }, () => $"every frame delivered into a held buffer ({Stats(rig)})");
        Assert.InRange(Stats(rig).Owed, owedBound - Held + 1, owedBound);

        // netd is still answering (its core did not fault on an overfull queue).
        n = BuildArpRequest(frame, NetdIp);
        Assert.True(rig.Peer.TransmitOne(frame.AsSpan(0, n)));
        await ReceiveAsync(rig.Peer, f => EtherOf(f) == EtherType.Arp);

        reading.SetResult();
        (int received, int refused) = await outcome.Task.WaitAsync(Patience);
        Assert.Equal(Held, received);
        Assert.True(refused > 0, "the refused posts came back too");
        Assert.Equal(0, rig.Host.Counters!.Dropped(RxDropReason.NoBuffer));
    }

    private static async Task FloodAsync(CpuDriver.Channels.Endpoint endpoint, ushort region, Action sent)
    {
        // Not slot-aligned: refused, and handed straight back.
        Message bad = new Descriptor(region, DescriptorFlags.Small, 8, NetdLimits.SmallPacket, 999).ToMessage(NetdMessages.PostSmall);
        for (int i = 0; i < 100_000; i++)
        {
            await endpoint.WriteAsync(bad);
            sent();
        }
    }
}
