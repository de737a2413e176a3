using System.Diagnostics;
using System.Runtime.CompilerServices;
using Multikernel.Monitor.Hosting;
using Multikernel.Netd.Client;
using Multikernel.Netd.Daemon;
using Multikernel.Netd.Drivers;
using Multikernel.Netd.Wire;
using WireMac = Multikernel.Netd.Wire.MacAddress;

namespace Multikernel.Tests.Netd.Daemon;

/// <summary>
/// netd in a real machine on the in-memory switch: a peer station on another switch port (driven
/// by the test thread) talks to netd itself (ARP, ping) and to consumers (application domains
/// with a NetdClient) through their filters and posted buffers.
/// </summary>
public sealed partial class NetdTests
{
    private static readonly Ipv4Address NetdIp = Ipv4Address.Parse("10.77.0.254");
    private static readonly Ipv4Address PeerIp = Ipv4Address.Parse("10.77.0.1");
    private static readonly Ipv4Address AppIp = Ipv4Address.Parse("10.77.0.2");
    private static readonly Ipv4Address OtherAppIp = Ipv4Address.Parse("10.77.0.3");
    private static readonly WireMac PeerMac = WireMac.FromUInt64(0x02_00_00_00_00_01UL);
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(15);

    private sealed class Rig : IAsyncDisposable
    {
        public required MultikernelRuntime Runtime { get; init; }

        public required NetdHost Host { get; init; }

        public required SwitchPort Peer { get; init; }

        public async ValueTask DisposeAsync()
        {
            try
            {
                await Runtime.StopCleanlyAsync();
            }
            finally
            {
                Peer.Dispose();
                Host.Dispose();
            }
        }
    }

    private static async Task<Rig> StartAsync(Action<MultikernelOptions>? programs = null, Func<INetworkDevice, INetworkDevice>? wrapDevice = null, Action<NetdOptions>? netd = null)
    {
        var host = new NetdHost(new VirtualSwitch()) { WrapDevice = wrapDevice };
        SwitchPort peer = host.Switch!.AddPort("peer", PeerMac);
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.DomainMemory = "2MiB";
            o.AddNetd(
                n =>
                {
                    n.Core = 1;
                    netd?.Invoke(n);
                },
                host);
            programs?.Invoke(o);
        });
        try
        {
            await Eventually(() => host.Counters is not null, "netd runs");
        }
        catch
        {
            await runtime.StopAsync().WaitAsync(TestMachine.Patience); // a failed start leaves no machine running
            throw;
        }

        return new Rig { Runtime = runtime, Host = host, Peer = peer };
    }

    [Fact]
    public async Task Netd_AnswersArpAndPing_ForItsOwnAddress()
    {
        await using Rig rig = await StartAsync();
        var frame = new byte[1514];
        int n = BuildArpRequest(frame, NetdIp);
        Assert.True(rig.Peer.TransmitOne(frame.AsSpan(0, n)));
        byte[] reply = await ReceiveAsync(rig.Peer, f => EtherOf(f) == EtherType.Arp);
        Assert.Equal(ArpOperation.Reply, Arp(reply, out Ipv4Address sender, out WireMac senderMac));
        Assert.Equal(NetdIp, sender);
        Assert.Equal(rig.Host.Mac, senderMac);

        foreach (int size in new[] { 56, 1400 })
        {
            n = BuildEcho(frame, rig.Host.Mac!.Value, NetdIp, size, sequence: (ushort)size);
            Assert.True(rig.Peer.TransmitOne(frame.AsSpan(0, n)));
            byte[] echo = await ReceiveAsync(rig.Peer, f => EtherOf(f) == EtherType.Ipv4);
            Assert.Equal(WireError.None, EthernetFrame.TryParse(echo, out EthernetFrame eth));
            Assert.Equal(WireError.None, Ipv4Packet.TryParse(eth.Payload, out Ipv4Packet ip));
            Assert.Equal(PeerIp, ip.Destination);
            Assert.Equal(WireError.None, IcmpPacket.TryParse(ip.Payload, out IcmpPacket icmp));
            Assert.Equal(IcmpType.EchoReply, icmp.Type);
            Assert.Equal((ushort)size, icmp.SequenceNumber);
            Assert.Equal(size, icmp.Data.Length);
            Assert.True(InternetChecksum.IsValid(ip.Payload), "the echo reply's ICMP checksum is wrong");
        }

        Assert.Equal(1, rig.Host.Counters!.ArpReplies);
        Assert.Equal(2, rig.Host.Counters.EchoReplies);
    }

    [Fact]
    public async Task Consumer_ReceivesItsFilteredTraffic_SmallAndLarge_AndSendsAsItself()
    {
        var ready = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var done = new TaskCompletionSource<(int Small, int Large)>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using Rig rig = await StartAsync(o =>
        {
            o.AddProgram("udp-echo", async ctx =>
            {
                try
                {
                    await using NetdClient client = await NetdClient.ConnectAsync(ctx, new NetdClientOptions { Address = AppIp });
                    ready.SetResult(await client.InstallFilterAsync("ip.dst == 10.77.0.2 && udp.dport == 9000"));
                    int small = 0, large = 0;
                    while (small + large < 4)
                    {
                        await client.WaitToReceiveAsync(ctx.Stopping);
                        while (client.TryReceive(out ReceivedFrame frame))
                        {
                            if (frame.IsSmall)
                            {
                                small++;
                            }
                            else
                            {
                                large++;
                            }

                            TransmitBuffer tx = await client.GetTransmitBufferAsync(ctx.Stopping);
                            int length = frame.Span.Length;
                            frame.Span.CopyTo(tx.Span);
                            SwapAddresses(tx.Span[..length]);
                            client.Release(frame);
                            client.Transmit(tx, length);
                        }
                    }

                    done.SetResult((small, large));
                }
                catch (Exception ex)
                {
                    ready.TrySetException(ex);
                    done.TrySetException(ex);
                }
            });
            o.SpawnAtBoot("udp-echo", core: 0);
        });
        Assert.True(await ready.Task.WaitAsync(Patience) > 0);
        var frame = new byte[1514];
        WireMac netdMac = rig.Host.Mac!.Value;
        foreach (int payload in new[] { 10, 1000, 20, 1400 })
        {
            int n = BuildUdp(frame, netdMac, AppIp, 9000, payload);
            Assert.True(rig.Peer.TransmitOne(frame.AsSpan(0, n)));
            byte[] echoed = await ReceiveAsync(rig.Peer, f => EtherOf(f) == EtherType.Ipv4);
            Assert.Equal(n, echoed.Length);
            Assert.Equal(WireError.None, EthernetFrame.TryParse(echoed, out EthernetFrame eth));
            Assert.Equal(netdMac, eth.Source);
            Assert.Equal(WireError.None, Ipv4Packet.TryParse(eth.Payload, out Ipv4Packet ip));
            Assert.Equal(AppIp, ip.Source);
            Assert.Equal(PeerIp, ip.Destination);
        }

        (int small, int large) = await done.Task.WaitAsync(Patience);
        Assert.Equal(2, small); // 10 and 20 bytes of payload fit a 128-byte buffer
        Assert.Equal(2, large);
        Assert.Equal(2, rig.Host.Counters!.SmallDeliveries);
        Assert.Equal(2, rig.Host.Counters.PageDeliveries);
    }

    [Fact]
    public async Task AConsumerThatStopsReading_LosesOnlyItsOwnPackets()
    {
        const int Flood = 150;
        var bothReady = new CountdownEvent(2);
        var reader = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var readerTook = new StrongBox<int>(0); // how many frames the reader has taken and given back
        await using Rig rig = await StartAsync(o =>
        {
            o.AddProgram("stuck", async ctx =>
            {
                await using NetdClient client = await NetdClient.ConnectAsync(ctx, new NetdClientOptions { Address = OtherAppIp, ReceivePages = 8, SmallBuffers = 8 });
                await client.InstallFilterAsync("ip.dst == 10.77.0.3 && udp.dport == 9000");
                bothReady.Signal();
                await Task.Delay(Timeout.Infinite, ctx.Stopping).ContinueWith(_ => { }, TaskScheduler.Current); // never takes a frame
            });
            o.AddProgram("reader", async ctx =>
            {
                await using NetdClient client = await NetdClient.ConnectAsync(ctx, new NetdClientOptions { Address = AppIp, ReceivePages = 8, SmallBuffers = 8 });
                await client.InstallFilterAsync("ip.dst == 10.77.0.2 && udp.dport == 9000");
                bothReady.Signal();
                int got = 0;
                while (got < Flood)
                {
                    await client.WaitToReceiveAsync(ctx.Stopping);
                    while (client.TryReceive(out ReceivedFrame f))
                    {
                        got++;
                        client.Release(f);
                        Volatile.Write(ref readerTook.Value, got);
                    }
                }

                reader.SetResult(got);
                await Task.Delay(Timeout.Infinite, ctx.Stopping).ContinueWith(_ => { }, TaskScheduler.Current); // stay bound until the machine stops
            });
            o.SpawnAtBoot("stuck", core: 0);
            o.SpawnAtBoot("reader", core: 0);
        });
        Assert.True(bothReady.Wait(Patience));
        var frame = new byte[1514];
        WireMac netdMac = rig.Host.Mac!.Value;
        for (int i = 0; i < Flood; i++)
        {
            int n = BuildUdp(frame, netdMac, OtherAppIp, 9000, 200);
            SendPaced(rig.Peer, frame.AsSpan(0, n));
            n = BuildUdp(frame, netdMac, AppIp, 9000, 200);
            SendPaced(rig.Peer, frame.AsSpan(0, n));
            // One pair in flight at a time, so neither the switch queue nor the reader's buffers
            // are what drops: only the consumer that stopped reading runs out.
            long expected = (i + 1) + Math.Min(8, i + 1);
            int pair = i;
            if (!SpinUntil(() => rig.Host.Counters!.RxPackets == 2 * (pair + 1) && rig.Host.Counters.PageDeliveries == expected && Volatile.Read(ref readerTook.Value) == pair + 1))
            {
                NetdCounters c = rig.Host.Counters!;
                Assert.Fail($"pair {i} not handled: rx {c.RxPackets}, pages {c.PageDeliveries}, no-buffer {c.Dropped(RxDropReason.NoBuffer)}; " + string.Join("; ", await rig.Host.ConsumerStatsAsync()));
            }

        }

        Assert.Equal(Flood, await reader.Task.WaitAsync(Patience));
        ConsumerStats[] stats = await rig.Host.ConsumerStatsAsync();
        Assert.Equal(2, stats.Length);
        ConsumerStats good = Assert.Single(stats, s => s.RxPackets == Flood);
        Assert.Equal(0, good.DroppedNoBuffer);
        ConsumerStats stuck = Assert.Single(stats, s => s.Id != good.Id);
        Assert.Equal(8, stuck.RxPackets); // its 8 posted pages were filled, then nothing more
        Assert.Equal(Flood - 8, stuck.DroppedNoBuffer);
        Assert.Equal(stuck.DroppedNoBuffer, rig.Host.Counters!.Dropped(RxDropReason.NoBuffer)); // nobody else lost a frame
    }

    [Fact]
    public async Task AHostileConsumer_CannotClaimAnothersTraffic_NorSendAsAnother()
    {
        var outcome = new TaskCompletionSource<string[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using Rig rig = await StartAsync(o =>
        {
            o.AddProgram("hostile", async ctx =>
            {
                var seen = new List<string>();
                try
                {
                    try
                    {
                        await using NetdClient thief = await NetdClient.ConnectAsync(ctx, new NetdClientOptions { Address = NetdIp, ReceivePages = 2, SmallBuffers = 2, TransmitPages = 2 });
                        seen.Add("claimed netd's address");
                    }
                    catch (NetdException ex)
                    {
                        seen.Add($"address:{ex.Status}");
                    }

                    await using NetdClient client = await NetdClient.ConnectAsync(ctx, new NetdClientOptions { Address = OtherAppIp, ReceivePages = 2, SmallBuffers = 2, TransmitPages = 2 });
                    foreach (string filter in new[] { "ip.dst == 10.77.0.2 && udp.dport == 9000", "udp.dport == 9000", "ip.dst == 10.77.0.0/24" })
                    {
                        try
                        {
                            await client.InstallFilterAsync(filter);
                            seen.Add($"installed '{filter}'");
                        }
                        catch (NetdException ex)
                        {
                            seen.Add($"filter:{ex.Status}");
                        }
                    }

                    // A frame that claims to come from another consumer's address.
                    TransmitBuffer tx = await client.GetTransmitBufferAsync(ctx.Stopping);
                    int n = BuildUdp(tx.Span, PeerMac, PeerIp, 9000, 20);
                    SwapAddresses(tx.Span[..n]); // now from 10.77.0.1 (the peer's, not ours) with netd's... rewrite below
                    EthernetFrame.WriteHeader(tx.Span, PeerMac, client.Mac, EtherType.Ipv4);
                    AppIp.Write(tx.Span[26..]);
                    client.Transmit(tx, n);
                    while (client.TransmitRefusals == 0)
                    {
                        await ctx.Delay(TimeSpan.FromMilliseconds(1), ctx.Stopping);
                    }

                    seen.Add($"refused sends:{client.TransmitRefusals}");
                    outcome.SetResult([.. seen]);
                }
                catch (Exception ex)
                {
                    outcome.TrySetException(ex);
                }
            });
            o.SpawnAtBoot("hostile", core: 0);
        });
        string[] seen = await outcome.Task.WaitAsync(Patience);
        Assert.Equal(["address:Forbidden", "filter:Forbidden", "filter:Forbidden", "filter:Forbidden", "refused sends:1"], seen);
        Assert.Equal(1, rig.Host.Counters!.TxRefused);
        Assert.Equal(0, rig.Host.Counters.TxPackets); // nothing reached the wire
    }

    [Fact]
    public async Task TheNic_IsMadeAtBoot_AndGoesToOneHolderOnly()
    {
        var seen = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var options = new Action<MultikernelOptions>(o =>
        {
            o.DeviceMemory = "64KiB";
            o.NicCore = 1;
            o.NicProgram = "nic-holder";
            o.AddProgram("nic-holder", ctx =>
            {
                if (ctx.NicSlot < 0)
                {
                    seen.Enqueue("no nic");
                    return Task.CompletedTask;
                }

                CpuDriver.Capabilities.CapabilityInfo nic = ctx.Capabilities.Inspect(ctx.NicSlot);
                int devFrames = ctx.Capabilities.Retype(ctx.NicSlot, CpuDriver.Capabilities.CapabilityType.DevFrame, 16);
                seen.Enqueue($"{nic.Type} {nic.FrameCount} {ctx.Capabilities.Inspect(devFrames).Type} {ctx.Capabilities.GetFrame(devFrames).Length}");
                return Task.Delay(Timeout.Infinite, ctx.Stopping).ContinueWith(_ => { }, TaskScheduler.Current);
            });
        });
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, options);
        try
        {
            await runtime.SpawnAsync(1, "nic-holder");
            await Eventually(() => seen.Count == 1, "the first holder ran");
            await runtime.SpawnAsync(1, "nic-holder");
            await runtime.SpawnAsync(0, "nic-holder");
            await Eventually(() => seen.Count == 3, "the later ones ran");
            Assert.Equal(["Nic 16 DevFrame 65536", "no nic", "no nic"], seen.ToArray());
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }

    // ------------------------------------------------------------------ helpers

    private static void SendPaced(SwitchPort port, ReadOnlySpan<byte> frame)
    {
        var wait = Stopwatch.StartNew();
        while (!port.TransmitOne(frame))
        {
            if (wait.Elapsed > Patience)
            {
                Assert.Fail("the switch never took the frame");
            }

            Thread.Yield();
        }
    }

    private static async Task<byte[]> ReceiveAsync(SwitchPort port, Func<byte[], bool> match)
    {
        var buffer = new byte[port.MaxFrameLength()];
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < Patience)
        {
            int n = port.ReceiveOne(buffer);
            if (n > 0)
            {
                byte[] frame = buffer[..n];
                if (match(frame))
                {
                    return frame;
                }

                continue;
            }

            await Task.Delay(1);
        }

        Assert.Fail("no matching frame arrived at the peer");
        return [];
    }

    private static bool SpinUntil(Func<bool> condition) => SpinWait.SpinUntil(condition, Patience);

    private static Task Eventually(Func<bool> condition, string what) => Eventually(condition, () => what);

    private static async Task Eventually(Func<bool> condition, Func<string> what)
    {
        var deadline = Stopwatch.StartNew();
        while (!condition())
        {
            if (deadline.Elapsed > Patience)
            {
                Assert.Fail($"Timed out waiting for: {what()}");
            }

            await Task.Delay(2);
        }
    }

    private static EtherType EtherOf(byte[] frame) => EthernetFrame.TryParse(frame, out EthernetFrame eth) == WireError.None ? eth.EtherType : 0;

    private static ArpOperation Arp(byte[] frame, out Ipv4Address sender, out WireMac senderMac)
    {
        Assert.Equal(WireError.None, EthernetFrame.TryParse(frame, out EthernetFrame eth));
        Assert.Equal(WireError.None, ArpPacket.TryParse(eth.Payload, out ArpPacket arp));
        sender = arp.SenderIp;
        senderMac = arp.SenderMac;
        return arp.Operation;
    }

    private static int BuildArpRequest(Span<byte> frame, Ipv4Address target)
    {
        EthernetFrame.WriteHeader(frame, WireMac.Broadcast, PeerMac, EtherType.Arp);
        ArpPacket.Write(frame[EthernetFrame.HeaderLength..], ArpOperation.Request, PeerMac, PeerIp, WireMac.Zero, target);
        return EthernetFrame.HeaderLength + ArpPacket.Length;
    }

    private static int BuildEcho(Span<byte> frame, WireMac to, Ipv4Address target, int dataLength, ushort sequence)
    {
        EthernetFrame.WriteHeader(frame, to, PeerMac, EtherType.Ipv4);
        Span<byte> ip = frame[EthernetFrame.HeaderLength..];
        Span<byte> icmp = ip[Ipv4Packet.MinHeaderLength..];
        for (int i = 0; i < dataLength; i++)
        {
            icmp[IcmpPacket.HeaderLength + i] = (byte)i;
        }

        int icmpLength = IcmpPacket.WriteEcho(icmp, IcmpType.EchoRequest, 0x4D4B, sequence, dataLength);
        Ipv4Packet.WriteHeader(ip, PeerIp, target, IpProtocol.Icmp, icmpLength, identification: sequence, ttl: 64);
        return EthernetFrame.HeaderLength + Ipv4Packet.MinHeaderLength + icmpLength;
    }

    private static int BuildUdp(Span<byte> frame, WireMac to, Ipv4Address target, ushort port, int payload)
    {
        EthernetFrame.WriteHeader(frame, to, PeerMac, EtherType.Ipv4);
        Span<byte> ip = frame[EthernetFrame.HeaderLength..];
        Span<byte> udp = ip[Ipv4Packet.MinHeaderLength..];
        for (int i = 0; i < payload; i++)
        {
            udp[8 + i] = (byte)(i * 7);
        }

        int udpLength = UdpDatagram.Write(udp, PeerIp, target, 5555, port, payload);
        Ipv4Packet.WriteHeader(ip, PeerIp, target, IpProtocol.Udp, udpLength, identification: 1, ttl: 64);
        return EthernetFrame.HeaderLength + Ipv4Packet.MinHeaderLength + udpLength;
    }

    // Turn a received frame into its reply: swap MACs and IPs (checksums are unchanged by a swap).
    private static void SwapAddresses(Span<byte> frame)
    {
        Span<byte> tmp = stackalloc byte[6];
        frame[..6].CopyTo(tmp);
        frame[6..12].CopyTo(frame[..6]);
        tmp.CopyTo(frame[6..12]);
        frame[26..30].CopyTo(tmp);
        frame[30..34].CopyTo(frame[26..30]);
        tmp[..4].CopyTo(frame[30..34]);
    }
}
