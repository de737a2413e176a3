using System.Collections.Concurrent;
using System.Diagnostics;
using Multikernel.Cli.Display;
using Multikernel.CpuDriver.Diagnostics;
using Multikernel.Monitor.Hosting;
using Multikernel.Monitor.Telemetry;
using Multikernel.Netd.Client;
using Multikernel.Netd.Daemon;
using Multikernel.Netd.Drivers;
using Multikernel.Netd.Filters;
using Multikernel.Netd.Wire;
using Spectre.Console;
using WireMac = Multikernel.Netd.Wire.MacAddress;

namespace Multikernel.Tests.Netd.Daemon;

/// <summary>
/// netd's counters in the <c>Multikernel</c> meter, its filter list, the <c>run --stats</c> tables
/// and the sampled span of a packet's journey NIC -> netd -> application, in a real machine on
/// the in-memory switch with a peer station driven by the test.
/// </summary>
[Collection(Telemetry.TelemetryCollection.Name)]
public sealed class NetdObservabilityTests
{
    private const string Filter = "ip.dst == 10.77.0.2 && udp.dport == 9000";
    private static readonly Ipv4Address PeerIp = Ipv4Address.Parse("10.77.0.1");
    private static readonly Ipv4Address AppIp = Ipv4Address.Parse("10.77.0.2");
    private static readonly WireMac PeerMac = WireMac.FromUInt64(0x02_00_00_00_00_01UL);
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(15);

    [Fact]
    public async Task Meter_FilterList_AndStatsTables_CountPacketsDropsMatchesAndQueueDepths()
    {
        var ready = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = new NetdHost(new VirtualSwitch());
        using SwitchPort peer = host.Switch!.AddPort("peer", PeerMac);
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.DomainMemory = "2MiB";
            o.AddNetd(n => n.Core = 1, host);
            o.AddProgram("sleeper", async ctx =>
            {
                // Posts 4 pages and 4 small buffers, installs its filter, then never takes a frame.
                await using NetdClient client = await NetdClient.ConnectAsync(ctx, new NetdClientOptions { Address = AppIp, ReceivePages = 4, SmallBuffers = 4, TransmitPages = 2 });
                ready.SetResult(await client.InstallFilterAsync(Filter));
                await Task.Delay(Timeout.Infinite, ctx.Stopping).ContinueWith(_ => { }, TaskScheduler.Current);
            });
            o.SpawnAtBoot("sleeper", core: 0);
        });
        try
        {
            int filterId = await ready.Task.WaitAsync(Patience);
            host.RegisterMetrics(runtime.Metrics.Meter);
            host.RegisterMetrics(runtime.Metrics.Meter); // once per host: a second call adds nothing
            using var reader = new MetricsSnapshotReader();
            var frame = new byte[1514];
            WireMac netdMac = host.Mac!.Value;
            for (int i = 0; i < 5; i++)
            {
                Assert.True(peer.TransmitOne(frame.AsSpan(0, BuildUdp(frame, netdMac, 9000, 200))));   // 4 fit its pages, the 5th has none
            }

            Assert.True(peer.TransmitOne(frame.AsSpan(0, BuildUdp(frame, netdMac, 9999, 20))));       // nobody claims it
            await Eventually(() => host.Counters!.RxPackets == 6 && host.Counters.Dropped(RxDropReason.Unclaimed) == 1, "netd took all six frames");

            IReadOnlyList<MetricValue> values = reader.Collect();
            Assert.Equal(6, Value(values, NetdMetrics.Packets, NetdTags.Direction, "received"));
            Assert.Equal(5 * 242 + 62, Value(values, NetdMetrics.Bytes, NetdTags.Direction, "received"));
            Assert.Equal(0, Value(values, NetdMetrics.Packets, NetdTags.Direction, "transmitted"));
            Assert.Equal(1, Value(values, NetdMetrics.Drops, NetdTags.Reason, "no_buffer"));
            Assert.Equal(1, Value(values, NetdMetrics.Drops, NetdTags.Reason, "unclaimed"));
            Assert.Equal(0, Value(values, NetdMetrics.Drops, NetdTags.Reason, "device_queue_full"));
            Assert.Equal(4, Value(values, NetdMetrics.Deliveries, NetdTags.Kind, "page"));
            Assert.Equal(0, Value(values, NetdMetrics.Deliveries, NetdTags.Kind, "small"));
            MetricValue matches = Assert.Single(values, v => v.Instrument == NetdMetrics.FilterMatches);
            Assert.Equal(5, matches.Value);
            Assert.Equal(filterId, matches.Tag(NetdTags.Filter));
            Assert.Equal(5 * 242, Value(values, NetdMetrics.FilterBytes, NetdTags.Filter, filterId));
            Assert.Equal(0, Value(values, NetdMetrics.ConsumerPosted, NetdTags.Kind, "page"));     // all four pages hold frames now
            Assert.Equal(4, Value(values, NetdMetrics.ConsumerPosted, NetdTags.Kind, "small"));
            Assert.Equal(1, Value(values, NetdMetrics.ConsumerDrops, null, null));
            Assert.Equal(0, Value(values, NetdMetrics.TransmitPending, null, null));
            Assert.All(values.Where(v => v.Instrument.StartsWith("multikernel.netd.", StringComparison.Ordinal)), v => Assert.Equal("netd", v.Tag(NetdTags.Device)));
            Assert.Single(values, v => v.Instrument == NetdMetrics.Drops && Equals(v.Tag(NetdTags.Reason), "no_buffer"));

            IReadOnlyList<FilterInfo> filters = await host.FiltersAsync();
            FilterInfo listed = Assert.Single(filters);
            Assert.Equal(filterId, listed.Id);
            Assert.Equal(5, listed.Matches);
            Assert.Equal(5 * 242, listed.Bytes);
            ConsumerStats consumer = Assert.Single(await host.ConsumerStatsAsync());
            Assert.Equal(consumer.Id, listed.Owner);
            Assert.Equal(matches.Tag(NetdTags.FilterText), listed.Filter);

            string tables = Render(NetdStatsRenderer.Render(values, filters, [consumer]));
            Assert.Contains("netd (netd)", tables, StringComparison.Ordinal);
            Assert.Contains(listed.Filter, tables, StringComparison.Ordinal);
            Assert.Matches(@"no_buffer\s*│\s*1\b", tables);
            Assert.Matches(@"received packets\s*│\s*6\b", tables);
            Assert.Matches(@"delivered in pages\s*│\s*4\b", tables);
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }

    [Fact]
    public async Task ADeliveredPacket_IsOneTrace_NetdReceive_ThenTheChannelsSendAndTheApplicationsProcess()
    {
        var spans = new ConcurrentQueue<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name is ActivitySources.NetdName or ActivitySources.UrpcName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = spans.Enqueue,
        };
        ActivitySource.AddActivityListener(listener);
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var got = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = new NetdHost(new VirtualSwitch());
        using SwitchPort peer = host.Switch!.AddPort("peer", PeerMac);
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.DomainMemory = "2MiB";
            o.AddNetd(n => n.Core = 1, host);
            o.AddProgram("reader", async ctx =>
            {
                await using NetdClient client = await NetdClient.ConnectAsync(ctx, new NetdClientOptions { Address = AppIp, ReceivePages = 4, SmallBuffers = 4, TransmitPages = 2 });
                await client.InstallFilterAsync(Filter);
                ready.SetResult();
                await client.WaitToReceiveAsync(ctx.Stopping);
                Assert.True(client.TryReceive(out ReceivedFrame frame));
                got.SetResult(frame.Span.Length);
                client.Release(frame);
                await Task.Delay(Timeout.Infinite, ctx.Stopping).ContinueWith(_ => { }, TaskScheduler.Current);
            });
            o.SpawnAtBoot("reader", core: 0);
        });
        try
        {
            await ready.Task.WaitAsync(Patience);
            var frame = new byte[1514];
            int n = BuildUdp(frame, host.Mac!.Value, 9000, 300);
            Assert.True(peer.TransmitOne(frame.AsSpan(0, n)));
            Assert.Equal(n, await got.Task.WaitAsync(Patience));

            Activity journey = null!;
            await Eventually(() => (journey = spans.FirstOrDefault(s => s.OperationName == NetdEngine.JourneySpanName)!) is not null, "netd's journey span ended");
            Assert.Equal(ActivitySources.NetdName, journey.Source.Name);
            Assert.Equal(ActivityKind.Consumer, journey.Kind);
            Assert.Equal(1, journey.GetTagItem(TelemetryTags.Core));
            Assert.Equal(n, journey.GetTagItem(NetdTags.FrameLength));
            Assert.Equal("netd", journey.GetTagItem(NetdTags.Device));
            Assert.Equal(default, journey.ParentSpanId); // a root: the packet's trace starts at the NIC

            // Its child: the channel's send of the completion to core 0, then core 0's process span.
            Activity send = null!;
            await Eventually(() => (send = spans.FirstOrDefault(s => s.TraceId == journey.TraceId && s.ParentSpanId == journey.SpanId)!) is not null, "the completion's send span");
            Assert.Equal(MessageTracing.SendName(0), send.OperationName);
            await Eventually(() => spans.Any(s => s.TraceId == journey.TraceId && s.ParentSpanId == send.SpanId && s.OperationName == MessageTracing.ProcessName(0)), "the application core's process span");
            Assert.Single(spans, s => s.OperationName == NetdEngine.JourneySpanName); // one frame, one journey
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }

    [Fact]
    public async Task JourneySpans_FollowTheCoresHeadSampling_RatioZeroTracesNoPacket()
    {
        var spans = new ConcurrentQueue<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name is ActivitySources.NetdName or ActivitySources.UrpcName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = spans.Enqueue,
        };
        ActivitySource.AddActivityListener(listener);
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var got = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = new NetdHost(new VirtualSwitch());
        using SwitchPort peer = host.Switch!.AddPort("peer", PeerMac);
        MultikernelRuntime runtime = await TestMachine.StartAsync(
            2,
            o =>
            {
                o.DomainMemory = "2MiB";
                o.AddNetd(n => n.Core = 1, host);
                o.AddProgram("reader", async ctx =>
                {
                    await using NetdClient client = await NetdClient.ConnectAsync(ctx, new NetdClientOptions { Address = AppIp, ReceivePages = 8, SmallBuffers = 8, TransmitPages = 2 });
                    await client.InstallFilterAsync(Filter);
                    ready.SetResult();
                    int n = 0;
                    while (n < 5)
                    {
                        await client.WaitToReceiveAsync(ctx.Stopping);
                        while (client.TryReceive(out ReceivedFrame frame))
                        {
                            n++;
                            client.Release(frame);
                        }
                    }

                    got.SetResult(n);
                    await Task.Delay(Timeout.Infinite, ctx.Stopping).ContinueWith(_ => { }, TaskScheduler.Current);
                });
                o.SpawnAtBoot("reader", core: 0);
            },
            messageTraceRatio: 0);
        try
        {
            await ready.Task.WaitAsync(Patience);
            var frame = new byte[1514];
            for (int i = 0; i < 5; i++)
            {
                Assert.True(peer.TransmitOne(frame.AsSpan(0, BuildUdp(frame, host.Mac!.Value, 9000, 300 + i))));
            }

            Assert.Equal(5, await got.Task.WaitAsync(Patience));
            Assert.Equal(5, host.Counters!.PageDeliveries);
            Assert.DoesNotContain(spans, s => s.OperationName == NetdEngine.JourneySpanName);
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }

    private static double Value(IReadOnlyList<MetricValue> values, string instrument, string? tag, object? tagValue) =>
        values.Where(v => v.Instrument == instrument && (tag is null || Equals(v.Tag(tag), tagValue))).Sum(v => v.Value);

    private static string Render(Spectre.Console.Rendering.IRenderable renderable)
    {
        var writer = new StringWriter();
        IAnsiConsole console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(writer), Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors });
        console.Profile.Width = 1000;
        console.Write(renderable);
        return writer.ToString();
    }

    private static int BuildUdp(Span<byte> frame, WireMac to, ushort port, int payload)
    {
        EthernetFrame.WriteHeader(frame, to, PeerMac, EtherType.Ipv4);
        Span<byte> ip = frame[EthernetFrame.HeaderLength..];
        Span<byte> udp = ip[Ipv4Packet.MinHeaderLength..];
        udp.Slice(8, payload).Fill(0x5A);
        int udpLength = UdpDatagram.Write(udp, PeerIp, AppIp, 5555, port, payload);
        Ipv4Packet.WriteHeader(ip, PeerIp, AppIp, IpProtocol.Udp, udpLength, identification: 1, ttl: 64);
        return EthernetFrame.HeaderLength + Ipv4Packet.MinHeaderLength + udpLength;
    }

    private static async Task Eventually(Func<bool> condition, string what)
    {
        var deadline = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(deadline.Elapsed < Patience, $"timed out waiting for: {what}");
            await Task.Delay(5);
        }
    }
}
