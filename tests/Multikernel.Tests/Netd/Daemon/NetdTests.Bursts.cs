using Multikernel.Netd.Client;
using Multikernel.Netd.Daemon;
using Multikernel.Netd.Drivers;
using Multikernel.Netd.Wire;
using WireMac = Multikernel.Netd.Wire.MacAddress;

namespace Multikernel.Tests.Netd.Daemon;

/// <summary>
/// netd's transmit bursts: a consumer's transmits of one step reach the device together, as one
/// burst; a device that takes only part of a burst (a busy NIC, a full TAP queue) gets the rest,
/// in order, in later steps, and a refused descriptor inside a burst is returned without
/// disturbing the order of the others. Nothing is lost, duplicated or reordered on the wire.
/// </summary>
public sealed partial class NetdTests
{
    private const int BurstFrames = 40;

    [Theory]
    [InlineData(new int[0])]
    [InlineData(new[] { 0, 10, 11, 25, 39 })]
    public async Task TransmitBursts_ADeviceThatTakesPartOfEach_GetsTheRestInOrder_AndRefusedDescriptorsInsideABurstAreReturned(int[] spoofed)
    {
        BusyDevice? busy = null;
        var done = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using Rig rig = await StartAsync(
            o =>
            {
                o.AddProgram("burst", async ctx =>
                {
                    try
                    {
                        await using NetdClient client = await NetdClient.ConnectAsync(ctx, new NetdClientOptions { Address = AppIp, TransmitPages = 64 });
                        // All in one run step: they leave the client as one batch and netd reads them
                        // together, so they reach the device as one burst.
                        for (int i = 0; i < BurstFrames; i++)
                        {
                            if (!client.TryGetTransmitBuffer(out TransmitBuffer tx))
                            {
                                throw new InvalidOperationException("no free transmit page");
                            }

                            // A spoofed source is refused by netd (Forbidden): its page comes back with a refusal.
                            int length = BuildNumbered(tx.Span, client.Mac, Array.IndexOf(spoofed, i) >= 0 ? OtherAppIp : AppIp, (ushort)i);
                            client.Transmit(tx, length);
                        }

                        while (client.FreeTransmitBuffers < 64)
                        {
                            await ctx.Delay(TimeSpan.FromMilliseconds(1), ctx.Stopping);
                        }

                        done.SetResult(client.TransmitRefusals);
                    }
                    catch (Exception ex)
                    {
                        done.TrySetException(ex);
                    }
                });
            },
            device => busy = new BusyDevice(device, take: 3));
        await rig.Runtime.SpawnAsync(0, "burst");

        // What reaches the wire, in the order it arrives.
        var seen = new List<int>();
        var buffer = new byte[rig.Peer.MaxFrameLength()];
        int expected = BurstFrames - spoofed.Length;
        await Eventually(() =>
        {
            int n;
            while ((n = rig.Peer.ReceiveOne(buffer)) > 0)
            {
                seen.Add(NumberOf(buffer.AsSpan(0, n)));
            }

            return seen.Count >= expected;
        }, () => $"{expected} frames at the peer (got {seen.Count}: {string.Join(',', seen)})");

        long refusals = await done.Task.WaitAsync(Patience);
        Assert.Equal(Enumerable.Range(0, BurstFrames).Where(i => Array.IndexOf(spoofed, i) < 0), seen);
        Assert.Equal(spoofed.Length, refusals);
        Assert.True(busy!.PartialBursts > 0, "the device never refused part of a burst: the test did not exercise a busy device");
        Assert.True(busy.LargestBurst > 3, $"netd never offered the device more than one frame at a time (largest burst {busy.LargestBurst})");
        NetdCounters counters = rig.Host.Counters!;
        Assert.Equal(spoofed.Length, counters.TxRefused);
        Assert.Equal(expected, counters.TxPackets);
        Assert.Equal(0, counters.PendingTransmits);
        Assert.Equal(0, rig.Peer.ReceiveOne(buffer)); // nothing twice
    }

    // A UDP frame from `source` to the peer whose 2-byte payload is its number.
    private static int BuildNumbered(Span<byte> frame, WireMac from, Ipv4Address source, ushort number)
    {
        EthernetFrame.WriteHeader(frame, PeerMac, from, EtherType.Ipv4);
        Span<byte> ip = frame[EthernetFrame.HeaderLength..];
        Span<byte> udp = ip[Ipv4Packet.MinHeaderLength..];
        udp[8] = (byte)(number >> 8);
        udp[9] = (byte)number;
        int udpLength = UdpDatagram.Write(udp, source, PeerIp, 9000, 5555, 2);
        Ipv4Packet.WriteHeader(ip, source, PeerIp, IpProtocol.Udp, udpLength, identification: number, ttl: 64);
        return EthernetFrame.HeaderLength + Ipv4Packet.MinHeaderLength + udpLength;
    }

    private static int NumberOf(ReadOnlySpan<byte> frame)
    {
        Assert.Equal(WireError.None, EthernetFrame.TryParse(frame, out EthernetFrame eth));
        Assert.Equal(WireError.None, Ipv4Packet.TryParse(eth.Payload, out Ipv4Packet ip));
        Assert.Equal(AppIp, ip.Source);
        return (ip.Payload[8] << 8) | ip.Payload[9];
    }

    /// <summary>
    /// A NIC that is busy half the time, in front of the real switch port: every other transmit
    /// burst takes nothing, the others at most <c>take</c> frames (the switch sends those). What it
    /// does not take the caller keeps, as the interface says. Receive passes straight through.
    /// </summary>
    private sealed class BusyDevice(INetworkDevice inner, int take) : INetworkDevice
    {
        private int _calls;
        private int _partial;
        private int _largest;

        /// <summary>Bursts the device took only part of (netd's core writes, the test reads).</summary>
        public int PartialBursts => Volatile.Read(ref _partial);

        /// <summary>The most frames netd offered in one burst.</summary>
        public int LargestBurst => Volatile.Read(ref _largest);

        public string Name => inner.Name;

        public WireMac MacAddress => inner.MacAddress;

        public int Mtu => inner.Mtu;

        public bool IsLinkUp => inner.IsLinkUp;

        public int WaitFileDescriptor => inner.WaitFileDescriptor;

        public int ReceiveBurst<TBuffers>(scoped ref TBuffers buffers, scoped Span<int> lengths)
            where TBuffers : IReceiveBuffers, allows ref struct => inner.ReceiveBurst(ref buffers, lengths);

        public int TransmitBurst<TFrames>(scoped ref TFrames frames)
            where TFrames : ITransmitFrames, allows ref struct
        {
            int count = frames.Count;
            Volatile.Write(ref _largest, Math.Max(_largest, count));
            int n = _calls++ % 2 == 1 ? 0 : Math.Min(take, count);
            for (int i = 0; i < n; i++)
            {
                if (!inner.TransmitOne(frames[i]))
                {
                    return i;
                }
            }

            if (n < count)
            {
                Volatile.Write(ref _partial, _partial + 1);
            }

            return n;
        }

        public bool PrepareToWait() => inner.PrepareToWait();

        public void Dispose() => inner.Dispose();
    }
}
