using Multikernel.CpuDriver.Capabilities;
using Multikernel.CpuDriver.Memory;
using Multikernel.CpuDriver.Urpc;
using Multikernel.Monitor;
using Multikernel.Netd.Daemon;
using Multikernel.Netd.Drivers;
using Multikernel.Netd.Filters;
using Multikernel.Netd.Wire;
using WireMac = Multikernel.Netd.Wire.MacAddress;

namespace Multikernel.Tests.Netd.Daemon;

/// <summary>
/// The batched per-packet messages, spoken by hand as a hostile or careless domain would:
/// <see cref="NetdMessages.TransmitMany"/> (each frame checked as its own transmit; forged regions,
/// pages and lengths past the region, spoofed sources and counts beyond the limit refused, netd
/// unharmed), <see cref="NetdMessages.PostPageRun"/> (each page checked as its own post; malformed
/// runs refused whole) and <see cref="NetdMessages.ReceivedMany"/> (a run names exactly the posted
/// buffers that follow each other, in the order they were posted, and nothing else).
/// </summary>
public sealed partial class NetdTests
{
    private const int HandPages = 8;

    [Fact]
    public async Task TransmitMany_EachFrameIsCheckedAsItsOwnTransmit_ForgedAndMalformedOnesAreRefused_NetdUnharmed()
    {
        var outcome = new TaskCompletionSource<string[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using Rig rig = await StartAsync(o =>
        {
            o.AddProgram("tx-many", async ctx =>
            {
                try
                {
                    (DomainChannel channel, ushort id, FrameHandle memory, WireMac mac) = await ConnectByHandAsync(ctx, filter: null);
                    await using DomainChannel _ = channel;
                    int length = BuildNumbered(memory.Span[(2 * PhysicalMemory.FrameSize)..], mac, AppIp, 1);
                    BuildNumbered(memory.Span[(3 * PhysicalMemory.FrameSize)..], mac, AppIp, 2);
                    BuildNumbered(memory.Span[(4 * PhysicalMemory.FrameSize)..], mac, OtherAppIp, 3); // spoofed source
                    Message[] requests =
                    [
                        TransmitMany(id, (2, length), (3, length), (4, length)),  // 2, 3 sent; 4 Forbidden
                        TransmitMany((ushort)(id + 1), (2, length)),               // a region this domain never registered
                        TransmitMany(id, (100, 60), (7, 4097)),                   // a page past the region; a length past its end
                        Message.Create(NetdMessages.TransmitMany, id | (0UL << 16)), // no frames
                        Message.Create(NetdMessages.TransmitMany, id | ((ulong)(NetdLimits.FramesPerTransmitMany + 1) << 16), ulong.MaxValue, ulong.MaxValue), // beyond the limit
                    ];
                    foreach (Message m in requests)
                    {
                        await channel.Endpoint.WriteAsync(m);
                    }

                    // 2 acks, one TransmittedMany (pages 2 and 3), four refusals.
                    var seen = new List<string>();
                    while (seen.Count < 8)
                    {
                        Message m = await channel.Endpoint.ReadAsync().AsTask().WaitAsync(Patience);
                        switch (m.Type)
                        {
                            case NetdMessages.Ack:
                                seen.Add($"ack {(ushort)m.Word0:x4}:{(NetdStatus)m.Word1}");
                                break;
                            case NetdMessages.TransmittedMany:
                                Assert.Equal(id, (ushort)m.Word0);
                                for (int i = 0; i < (int)((m.Word0 >> 16) & 0xFFFF); i++)
                                {
                                    seen.Add($"sent {NetdLimits.TransmittedTag(in m, i)}");
                                }

                                break;
                            case NetdMessages.Transmitted:
                                Descriptor d = Descriptor.From(in m);
                                seen.Add($"{(d.Region == id ? "own" : "forged")} {d.Tag}:{(NetdStatus)m.Word2}");
                                break;
                            default:
                                seen.Add($"unexpected 0x{m.Type:x4}");
                                break;
                        }
                    }

                    seen.Sort(StringComparer.Ordinal);
                    outcome.SetResult([.. seen]);
                    await Task.Delay(Timeout.Infinite, ctx.Stopping);
                }
                catch (OperationCanceledException) when (ctx.Stopping.IsCancellationRequested)
                {
                }
                catch (Exception ex)
                {
                    outcome.TrySetException(ex);
                }
            });
            o.SpawnAtBoot("tx-many", core: 0);
        });
        string[] seen = await outcome.Task.WaitAsync(Patience);
        Assert.Equal(
            [
                "ack 4e0a:BadDescriptor", "ack 4e0a:BadDescriptor",
                "forged 2:BadDescriptor", "own 100:BadDescriptor", "own 4:Forbidden", "own 7:BadDescriptor",
                "sent 2", "sent 3",
            ],
            seen);

        // Exactly the two good frames reached the wire, in order.
        var buffer = new byte[rig.Peer.MaxFrameLength()];
        var wire = new List<int>();
        await Eventually(() =>
        {
            int n;
            while ((n = rig.Peer.ReceiveOne(buffer)) > 0)
            {
                wire.Add(NumberOf(buffer.AsSpan(0, n)));
            }

            return wire.Count >= 2;
        }, () => $"two frames at the peer (got {string.Join(',', wire)})");
        Assert.Equal([1, 2], wire);
        Assert.Equal(6, rig.Host.Counters!.TxRefused);
        Assert.Equal(0, Stats(rig).Owed);

        // netd still answers (nothing threw on its core).
        int arp = BuildArpRequest(buffer, NetdIp);
        Assert.True(rig.Peer.TransmitOne(buffer.AsSpan(0, arp)));
        await ReceiveAsync(rig.Peer, f => EtherOf(f) == EtherType.Arp);
        Assert.Equal(0, rig.Peer.ReceiveOne(buffer)); // nothing else, nothing twice
    }

    [Fact]
    public async Task PostPageRun_EachPageIsCheckedAsItsOwnPost_AndMalformedRunsAreRefusedWhole()
    {
        var outcome = new TaskCompletionSource<string[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using Rig rig = await StartAsync(o =>
        {
            o.AddProgram("page-runs", async ctx =>
            {
                try
                {
                    (DomainChannel channel, ushort id, FrameHandle _, WireMac _) = await ConnectByHandAsync(ctx, filter: null);
                    await using DomainChannel _ = channel;
                    const uint Page = NetdLimits.PageBuffer;
                    Message[] requests =
                    [
                        new Descriptor(id, DescriptorFlags.Page, 3 * Page, Page, 13).ToMessage(NetdMessages.PostPage),                       // held first
                        new Descriptor(id, DescriptorFlags.Page, 2 * Page, 3 * Page, 12).ToMessage(NetdMessages.PostPageRun),                // 12, 13 (held: refused), 14
                        new Descriptor(id, DescriptorFlags.Page, 6 * Page, 3 * Page, 16).ToMessage(NetdMessages.PostPageRun),                // 16, 17; 18 is past the region
                        new Descriptor(id, DescriptorFlags.Page, 5 * Page, 5000, 30).ToMessage(NetdMessages.PostPageRun),                    // no whole page: refused whole
                        new Descriptor(id, DescriptorFlags.Page, 0, (NetdLimits.MaxPageRun + 1) * Page, 40).ToMessage(NetdMessages.PostPageRun), // too many: refused whole
                        new Descriptor((ushort)(id + 1), DescriptorFlags.Page, 0, 2 * Page, 50).ToMessage(NetdMessages.PostPageRun),        // a region it never registered: 50, 51
                        new Descriptor(id, DescriptorFlags.Page, 100, Page, 60).ToMessage(NetdMessages.PostPageRun),                        // not on a page boundary
                        new Descriptor(id, DescriptorFlags.Small, 5 * Page, Page, 70).ToMessage(NetdMessages.PostPageRun),                  // its flags say small: a page all the same
                    ];
                    foreach (Message m in requests)
                    {
                        await channel.Endpoint.WriteAsync(m);
                    }

                    var seen = new List<string>();
                    for (int i = 0; i < 7; i++)
                    {
                        Message m = await channel.Endpoint.ReadAsync().AsTask().WaitAsync(Patience);
                        Descriptor d = Descriptor.From(in m);
                        seen.Add($"{d.Tag}:{(NetdStatus)m.Word2}:{d.Length}");
                    }

                    outcome.SetResult([.. seen]);
                    await Task.Delay(Timeout.Infinite, ctx.Stopping);
                }
                catch (OperationCanceledException) when (ctx.Stopping.IsCancellationRequested)
                {
                }
                catch (Exception ex)
                {
                    outcome.TrySetException(ex);
                }
            });
            o.SpawnAtBoot("page-runs", core: 0);
        });
        string[] seen = await outcome.Task.WaitAsync(Patience);
        Assert.Equal(["13:BadDescriptor:0", "18:BadDescriptor:0", "30:BadDescriptor:0", "40:BadDescriptor:0", "50:BadDescriptor:0", "51:BadDescriptor:0", "60:BadDescriptor:0"], seen);
        // Held: 13 (page 3), 12 and 14 (pages 2, 4), 16 and 17 (pages 6, 7), 70 (page 5).
        await Eventually(() => Stats(rig) is { PostedPages: 6 }, () => $"netd holds six pages ({Stats(rig)})");
        Assert.Equal(6 * NetdLimits.PageBuffer, Stats(rig).HeldBytes);
        Assert.Equal(0, Stats(rig).PostedSmall);
    }

    [Fact]
    public async Task ReceivedMany_NamesExactlyThePostedBuffersThatFollowEachOther_InOrder_WithEachFramesLength()
    {
        const ushort Port = 9000;
        GatedDevice? gate = null;
        var posted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var outcome = new TaskCompletionSource<string[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using Rig rig = await StartAsync(
            o =>
            {
                o.AddProgram("rx-many", async ctx =>
                {
                    try
                    {
                        (DomainChannel channel, ushort id, FrameHandle memory, WireMac _) = await ConnectByHandAsync(ctx, $"ip.dst == {AppIp} && udp.dport == {Port}");
                        await using DomainChannel _ = channel;
                        const uint Page = NetdLimits.PageBuffer;
                        const uint Slot = NetdLimits.SmallPacket;
                        var posts = new List<Message>();
                        for (uint k = 0; k < 6; k++)
                        {
                            posts.Add(new Descriptor(id, DescriptorFlags.Small, Page + (k * Slot), Slot, k).ToMessage(NetdMessages.PostSmall)); // slots 0..5, tags 0..5
                        }

                        posts.Add(new Descriptor(id, DescriptorFlags.Small, Page + (9 * Slot), Slot, 9).ToMessage(NetdMessages.PostSmall));   // a gap before it
                        posts.Add(new Descriptor(id, DescriptorFlags.Small, Page + (10 * Slot), Slot, 10).ToMessage(NetdMessages.PostSmall));
                        posts.Add(new Descriptor(id, DescriptorFlags.Small, Page + (11 * Slot), Slot, 11).ToMessage(NetdMessages.PostSmall));
                        posts.Add(new Descriptor(id, DescriptorFlags.Small, Page + (12 * Slot), Slot, 99).ToMessage(NetdMessages.PostSmall)); // the next slot, not the next tag
                        posts.Add(new Descriptor(id, DescriptorFlags.Page, 2 * Page, 3 * Page, 100).ToMessage(NetdMessages.PostPageRun));    // pages 2..4, tags 100..102
                        foreach (Message m in posts)
                        {
                            await channel.Endpoint.WriteAsync(m);
                        }

                        posted.SetResult();
                        var seen = new List<string>();
                        int frames = 0;
                        while (frames < 13)
                        {
                            Message m = await channel.Endpoint.ReadAsync().AsTask().WaitAsync(Patience);
                            var buffers = new List<Descriptor>();
                            string kind;
                            if (m.Type == NetdMessages.ReceivedMany)
                            {
                                Assert.Equal(id, (ushort)m.Word0);
                                var flags = (DescriptorFlags)(byte)(m.Word0 >> 24);
                                int count = (int)((m.Word0 >> 16) & 0xFF);
                                Assert.InRange(count, 2, NetdLimits.FramesPerReceivedMany);
                                for (int i = 0; i < count; i++)
                                {
                                    buffers.Add(new Descriptor(id, flags, (uint)m.Word1 + ((uint)i * NetdLimits.Stride(flags)), NetdLimits.ReceivedLength(in m, i), (uint)(m.Word0 >> 32) + (uint)i));
                                }

                                kind = $"many {flags}";
                            }
                            else
                            {
                                Assert.Equal(NetdMessages.Received, m.Type);
                                Assert.Equal(NetdStatus.Ok, (NetdStatus)m.Word2);
                                Descriptor d = Descriptor.From(in m);
                                buffers.Add(d);
                                kind = $"one {d.Flags}";
                            }

                            // Each buffer holds the frame sent for it: frame k (its payload's first byte)
                            // in the k-th buffer posted, with exactly its length.
                            foreach (Descriptor d in buffers)
                            {
                                ReadOnlySpan<byte> bytes = memory.Span.Slice((int)d.Offset, (int)d.Length);
                                int number = bytes[EthernetFrame.HeaderLength + Ipv4Packet.MinHeaderLength + 8];
                                Assert.Equal(number, frames++);
                                Assert.Equal(FrameLength(number), (int)d.Length);
                            }

                            seen.Add($"{kind}: {string.Join(',', buffers.Select(b => $"{b.Tag}@{b.Offset}"))}");
                        }

                        outcome.SetResult([.. seen]);
                        await Task.Delay(Timeout.Infinite, ctx.Stopping);
                    }
                    catch (OperationCanceledException) when (ctx.Stopping.IsCancellationRequested)
                    {
                    }
                    catch (Exception ex)
                    {
                        posted.TrySetException(ex);
                        outcome.TrySetException(ex);
                    }
                });
                o.SpawnAtBoot("rx-many", core: 0);
            },
            device => gate = new GatedDevice((SwitchPort)device));
        await posted.Task.WaitAsync(Patience);
        await Eventually(() => Stats(rig) is { PostedSmall: 10, PostedPages: 3 }, () => $"netd holds the posted buffers ({Stats(rig)})");

        // All 13 frames wait in netd's port queue, then netd sees them in one receive burst.
        var frame = new byte[1514];
        for (int k = 0; k < 13; k++)
        {
            int n = BuildUdp(frame, rig.Host.Mac!.Value, AppIp, Port, FrameLength(k) - 42);
            frame[EthernetFrame.HeaderLength + Ipv4Packet.MinHeaderLength + 8] = (byte)k;
            SendPaced(rig.Peer, frame.AsSpan(0, n));
        }

        gate!.Open();
        string[] seen = await outcome.Task.WaitAsync(Patience);
        const int S = NetdLimits.SmallPacket, P = NetdLimits.PageBuffer;
        Assert.Equal(
            [
                $"many Small: 0@{P},1@{P + S},2@{P + (2 * S)},3@{P + (3 * S)},4@{P + (4 * S)},5@{P + (5 * S)}",
                $"many Small: 9@{P + (9 * S)},10@{P + (10 * S)},11@{P + (11 * S)}",
                $"one Small: 99@{P + (12 * S)}",
                $"many Page: 100@{2 * P},101@{3 * P},102@{4 * P}",
            ],
            seen);
        Assert.Equal(0, rig.Host.Counters!.Dropped(RxDropReason.NoBuffer));
        Assert.Equal(0L, Stats(rig).HeldBytes);
    }

    [Fact]
    public async Task NetdClient_EchoingABurst_SendsItsRepostsAndTransmitsAsBatches_FewerMessagesThanFrames()
    {
        const ushort Port = 9000;
        const int Frames = 30;
        GatedDevice? gate = null;
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var echoed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using Rig rig = await StartAsync(
            o =>
            {
                o.AddProgram("echo", async ctx =>
                {
                    try
                    {
                        await using Multikernel.Netd.Client.NetdClient client = await Multikernel.Netd.Client.NetdClient.ConnectAsync(ctx, new Multikernel.Netd.Client.NetdClientOptions { Address = AppIp, SmallBuffers = 64, TransmitPages = 64 });
                        await client.InstallFilterAsync($"ip.dst == {AppIp} && udp.dport == {Port}");
                        ready.SetResult();
                        int n = 0;
                        while (n < Frames)
                        {
                            await client.WaitToReceiveAsync(ctx.Stopping);
                            while (client.TryReceive(out Multikernel.Netd.Client.ReceivedFrame frame))
                            {
                                Multikernel.Netd.Client.TransmitBuffer tx = await client.GetTransmitBufferAsync(ctx.Stopping);
                                int length = frame.Span.Length;
                                frame.Span.CopyTo(tx.Span);
                                SwapAddresses(tx.Span[..length]);
                                client.Release(frame);
                                client.Transmit(tx, length);
                                n++;
                            }
                        }

                        echoed.SetResult();
                        await Task.Delay(Timeout.Infinite, ctx.Stopping);
                    }
                    catch (OperationCanceledException) when (ctx.Stopping.IsCancellationRequested)
                    {
                    }
                    catch (Exception ex)
                    {
                        ready.TrySetException(ex);
                        echoed.TrySetException(ex);
                    }
                });
                o.SpawnAtBoot("echo", core: 0);
            },
            device => gate = new GatedDevice((SwitchPort)device));
        await ready.Task.WaitAsync(Patience);
        await Eventually(() => Stats(rig) is { PostedSmall: 64 }, () => $"the client posted its small buffers ({Stats(rig)})");

        var frame = new byte[128];
        int length = BuildUdp(frame, rig.Host.Mac!.Value, AppIp, Port, 20);
        for (int k = 0; k < Frames; k++)
        {
            SendPaced(rig.Peer, frame.AsSpan(0, length));
        }

        CpuDriver.Kernel.CoreCounters app = rig.Runtime.Machine.Kernels[0].Counters;
        long sent0 = app.Sent(1);
        gate!.Open();
        await echoed.Task.WaitAsync(Patience);
        var buffer = new byte[rig.Peer.MaxFrameLength()];
        int back = 0;
        await Eventually(() =>
        {
            while (rig.Peer.ReceiveOne(buffer) > 0)
            {
                back++;
            }

            return back >= Frames && Stats(rig).PostedSmall == 64;
        }, () => $"{Frames} echoes at the peer and every buffer posted again (got {back}; {Stats(rig)})");

        // One repost and one transmit per frame would be 60 messages; runs and TransmitMany carry them
        // in a handful (what else core 0 sends core 1 meanwhile - channel credits - is a few more).
        long messages = app.Sent(1) - sent0;
        Assert.True(messages < Frames, $"the client sent {messages} messages to netd's core for {Frames} echoed frames");
        Assert.Equal(Frames, back);
        Assert.Equal(0, rig.Host.Counters!.TxRefused);
    }

    [Fact]
    public async Task NetdClient_ForwardsAReceivedPageAsItIs_AndThePageIsPostedAgainOnceSent_ASmallFrameCannotBeForwarded()
    {
        const ushort Port = 9000;
        const int Pages = 4;
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var outcome = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using Rig rig = await StartAsync(o =>
        {
            o.AddProgram("forward", async ctx =>
            {
                try
                {
                    await using Multikernel.Netd.Client.NetdClient client = await Multikernel.Netd.Client.NetdClient.ConnectAsync(ctx, new Multikernel.Netd.Client.NetdClientOptions { Address = AppIp, ReceivePages = Pages, SmallBuffers = 2, TransmitPages = 2 });
                    await client.InstallFilterAsync($"ip.dst == {AppIp} && udp.dport == {Port}");
                    ready.SetResult();
                    var seen = new List<string>();
                    int forwarded = 0;
                    while (forwarded < 3 * Pages)
                    {
                        await client.WaitToReceiveAsync(ctx.Stopping);
                        while (client.TryReceive(out Multikernel.Netd.Client.ReceivedFrame frame))
                        {
                            if (!Multikernel.Netd.Client.NetdClient.CanForward(in frame))
                            {
                                Multikernel.Netd.Client.ReceivedFrame small = frame;
                                seen.Add(Assert.Throws<ArgumentException>(() => client.Forward(in small, small.Span.Length)) is not null ? "small refused" : "?");
                                client.Release(frame);
                                continue;
                            }

                            int length = frame.Span.Length;
                            SwapAddresses(frame.WritableSpan[..length]);
                            client.Forward(in frame, length);
                            Multikernel.Netd.Client.ReceivedFrame again = frame;
                            Assert.Throws<ArgumentException>(() => client.Forward(in again, length)); // once
                            forwarded++;
                        }
                    }

                    seen.Add($"forwarded {forwarded}, refusals {client.TransmitRefusals}, free transmit pages {client.FreeTransmitBuffers}");
                    outcome.SetResult(string.Join("; ", seen));
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
            o.SpawnAtBoot("forward", core: 0);
        });
        await ready.Task.WaitAsync(Patience);
        var frame = new byte[1514];
        var buffer = new byte[rig.Peer.MaxFrameLength()];
        int small = BuildUdp(frame, rig.Host.Mac!.Value, AppIp, Port, 20);
        SendPaced(rig.Peer, frame.AsSpan(0, small));

        // Three times as many large frames as the client has pages, one at a time: each needs a
        // forwarded page to have come back as a receive buffer.
        for (int k = 0; k < 3 * Pages; k++)
        {
            int n = BuildUdp(frame, rig.Host.Mac!.Value, AppIp, Port, 1000 + k);
            SendPaced(rig.Peer, frame.AsSpan(0, n));
            byte[] echo = await ReceiveAsync(rig.Peer, f => EtherOf(f) == EtherType.Ipv4);
            Assert.Equal(n, echo.Length);
            Assert.Equal(WireError.None, EthernetFrame.TryParse(echo, out EthernetFrame eth));
            Assert.Equal(PeerMac, eth.Destination);
            Assert.Equal(WireError.None, Ipv4Packet.TryParse(eth.Payload, out Ipv4Packet ip));
            Assert.Equal(PeerIp, ip.Destination);
            Assert.Equal(AppIp, ip.Source);
            Assert.True(ip.Payload[8..].SequenceEqual(frame.AsSpan(42, 1000 + k)), "the forwarded frame's payload is the one received");
        }

        Assert.Equal($"small refused; forwarded {3 * Pages}, refusals 0, free transmit pages 2", await outcome.Task.WaitAsync(Patience));
        await Eventually(() => Stats(rig) is { PostedPages: Pages, PostedSmall: 2 }, () => $"every forwarded page posted again ({Stats(rig)})");
        Assert.Equal(0, rig.Host.Counters!.Dropped(RxDropReason.NoBuffer));
    }

    // Frames 0..9 fit a small slot (60..105 bytes), 10..12 need a page.
    private static int FrameLength(int k) => k < 10 ? 60 + (5 * k) : 600 + k;

    private static Message TransmitMany(ushort region, params (int Page, int Length)[] frames)
    {
        Span<ulong> words = stackalloc ulong[3];
        words.Clear();
        words[0] = region | ((ulong)frames.Length << 16);
        for (int i = 0; i < frames.Length; i++)
        {
            int bit = 32 * (i + 1);
            words[bit >> 6] |= ((ulong)(ushort)frames[i].Page | ((ulong)(ushort)frames[i].Length << 16)) << (bit & 63);
        }

        return Message.Create(NetdMessages.TransmitMany, words[0], words[1], words[2]);
    }

    // The protocol by hand: greet, register a region of HandPages pages (filter programs in page 0),
    // claim AppIp and install `filter` (when given).
    private static async Task<(DomainChannel Channel, ushort Region, FrameHandle Memory, WireMac Mac)> ConnectByHandAsync(DomainContext ctx, string? filter)
    {
        DomainChannel channel = await ctx.BindAsync(NetdMessages.ServiceName, Patience);
        CpuDriver.Channels.Endpoint endpoint = channel.Endpoint;
        Message hello = await endpoint.ReadAsync();
        int region = ctx.Capabilities.Retype(ctx.RamSlot, CapabilityType.Frame, HandPages);
        FrameHandle memory = ctx.Capabilities.GetFrame(region);
        await channel.SendCapabilityAsync(region, TransferMode.Copy, CapabilityRights.Read | CapabilityRights.Write);
        await endpoint.WriteAsync(Message.Create(NetdMessages.AddRegion, 1));
        ushort id = (ushort)(await endpoint.ReadAsync()).Word1;
        await endpoint.WriteAsync(Message.Create(NetdMessages.AddAddress, AppIp.Value));
        await endpoint.ReadAsync();
        if (filter is not null)
        {
            byte[] program = FilterBinary.Encode(FilterSyntax.Parse(filter));
            program.CopyTo(memory.Span);
            int filterSlot = ctx.Capabilities.Retype(ctx.RamSlot, CapabilityType.PacketFilter);
            await channel.SendCapabilityAsync(filterSlot, TransferMode.Copy, CapabilityRights.Read);
            await endpoint.WriteAsync(new Descriptor(id, DescriptorFlags.None, 0, (uint)program.Length, 0).ToMessage(NetdMessages.InstallFilter));
            Message installed = await endpoint.ReadAsync();
            if ((NetdStatus)installed.Word1 != NetdStatus.Ok)
            {
                throw new InvalidOperationException($"filter refused: {(NetdStatus)installed.Word1}");
            }
        }

        return (channel, id, memory, WireMac.FromUInt64(hello.Word0));
    }

    /// <summary>
    /// netd's switch port behind a gate: until <see cref="Open"/> netd receives nothing (and keeps
    /// its core awake, so it sees the frames at once when the gate opens); then it passes straight
    /// through, placing as the port does. Lets a test put many frames in netd's queue before netd
    /// looks, so they reach it in one receive burst.
    /// </summary>
    private sealed class GatedDevice(SwitchPort inner) : INetworkDevice, IFramePlacingDevice
    {
        private volatile bool _open;

        public void Open() => _open = true;

        public string Name => inner.Name;

        public WireMac MacAddress => inner.MacAddress;

        public int Mtu => inner.Mtu;

        public bool IsLinkUp => inner.IsLinkUp;

        public int WaitFileDescriptor => inner.WaitFileDescriptor;

        public bool CanPlace => inner.CanPlace;

        public int ReceivePlaced(IFramePlacer placer, int max) => _open ? inner.ReceivePlaced(placer, max) : 0;

        public int ReceiveBurst<TBuffers>(scoped ref TBuffers buffers, scoped Span<int> lengths)
            where TBuffers : IReceiveBuffers, allows ref struct => _open ? inner.ReceiveBurst(ref buffers, lengths) : 0;

        public int TransmitBurst<TFrames>(scoped ref TFrames frames)
            where TFrames : ITransmitFrames, allows ref struct => inner.TransmitBurst(ref frames);

        public bool PrepareToWait() => _open && inner.PrepareToWait();

        public void Dispose() => inner.Dispose();
    }
}
