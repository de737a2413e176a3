using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using Multikernel.Cli.Bench.Report;
using Multikernel.CpuDriver.Urpc;
using Multikernel.Monitor;
using Multikernel.Monitor.Hosting;
using Multikernel.Netd.Client;
using Multikernel.Netd.Daemon;
using Multikernel.Netd.Drivers;
using Multikernel.Netd.Wire;

namespace Multikernel.Cli.Bench;

/// <summary>One size of <c>bench netd</c>.</summary>
/// <param name="Size">Ethernet frame bytes (no FCS).</param>
/// <param name="Packets">Frames that went NIC -> netd -> application -> netd -> NIC in the measured window.</param>
/// <param name="Lost">Frames sent in the window that never came back (dropped and counted somewhere).</param>
/// <param name="Seconds">Length of the measured window.</param>
/// <param name="AllocBytesPerPacket">Managed bytes allocated by the whole process per packet in the window.</param>
/// <param name="UrpcMessagesPerSecond">The same run's raw channel rate: one-way 64-byte messages/s between the same two cores.</param>
/// <param name="SmallDeliveries">netd's small (copied) deliveries in the window.</param>
/// <param name="PageDeliveries">netd's page deliveries in the window.</param>
/// <param name="NoBuffer">Frames netd dropped in the window because the application had no buffer posted.</param>
/// <param name="QueueFull">Frames the switch dropped in the window because a port's queue was full.</param>
/// <param name="NetdCoreAllocBytesPerPacket">Bytes allocated by netd's core thread per packet.</param>
/// <param name="AppCoreAllocBytesPerPacket">Bytes allocated by the application's core thread per packet (its NetdClient and echo loop).</param>
internal sealed record NetdBenchResult(int Size, long Packets, long Lost, double Seconds, double AllocBytesPerPacket, double UrpcMessagesPerSecond, long SmallDeliveries, long PageDeliveries, long NoBuffer, long QueueFull, double NetdCoreAllocBytesPerPacket, double AppCoreAllocBytesPerPacket)
{
    public double PacketsPerSecond => Packets / Seconds;

    public double VsUrpc => PacketsPerSecond / UrpcMessagesPerSecond;
}

/// <summary>
/// <c>multikernel bench netd</c>: packets through the in-memory NIC -> netd (core 1) -> an
/// application on another core (core 0) that echoes each one -> netd -> the NIC, for 64- and
/// 1500-byte frames, with a window of frames in flight; and, in the same run and machine, the raw
/// rate of one-way messages over a channel between the same two cores, the yardstick.
/// </summary>
/// <remarks>
/// The load generator is a switch port driven by the benchmark thread (not a core). Allocation is
/// the whole process's (<see cref="GC.GetTotalAllocatedBytes(bool)"/>) over the window, divided by
/// the packets. Frames above 128 bytes are today copied into the application's page buffer (the
/// page exchange of docs/netd-datapath.md waits for the capability layer's primitive), so the
/// 1500-byte rate includes that copy (and the echo's copy in the application).
/// </remarks>
internal static class NetdBench
{
    /// <summary>The scenario's name, file stem and command.</summary>
    public const string Scenario = "netd";

    private const int Window = 32;
    private const ushort Port = 9000;
    private const string UrpcService = "bench-urpc";
    private static readonly Ipv4Address GeneratorIp = Ipv4Address.Parse("10.77.0.1");
    private static readonly Ipv4Address AppIp = Ipv4Address.Parse("10.77.0.2");
    private static readonly MacAddress GeneratorMac = MacAddress.FromUInt64(0x02_00_00_00_00_01UL);

    public static readonly IReadOnlyList<BenchColumn<NetdBenchResult>> Columns =
    [
        new("size", r => r.Size),
        new("packets_per_s", r => r.PacketsPerSecond),
        new("alloc_bytes_per_packet", r => r.AllocBytesPerPacket),
        new("urpc_messages_per_s", r => r.UrpcMessagesPerSecond),
        new("vs_urpc", r => r.VsUrpc),
        new("packets", r => r.Packets),
        new("lost", r => r.Lost),
        new("small_deliveries", r => r.SmallDeliveries),
        new("page_deliveries", r => r.PageDeliveries),
        new("netd_core_alloc_bytes_per_packet", r => r.NetdCoreAllocBytesPerPacket),
        new("app_core_alloc_bytes_per_packet", r => r.AppCoreAllocBytesPerPacket),
        new("no_buffer_drops", r => r.NoBuffer),
        new("queue_full_drops", r => r.QueueFull),
    ];

    public static readonly BenchPlot<NetdBenchResult> Plot = new(
        "netd: in-memory NIC -> netd -> application (another core) -> back",
        "frame bytes",
        "packets/s",
        r => r.Size,
        r => r.PacketsPerSecond,
        r => $"{r.Size} B",
        Bars: true);

    public static IReadOnlyList<NetdBenchResult> Run(bool quick, Action<string>? progress) => RunAsync(quick, progress).GetAwaiter().GetResult();

    private static async Task<IReadOnlyList<NetdBenchResult>> RunAsync(bool quick, Action<string>? progress)
    {
        TimeSpan warmup = quick ? TimeSpan.FromMilliseconds(100) : TimeSpan.FromMilliseconds(500);
        TimeSpan window = quick ? TimeSpan.FromMilliseconds(400) : TimeSpan.FromSeconds(3);
        using var host = new NetdHost(new VirtualSwitch());
        using SwitchPort generator = host.Switch!.AddPort("load", GeneratorMac);
        var echoReady = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var urpc = new UrpcStream();
        var options = new MultikernelOptions
        {
            Cores = "2",
            Memory = "64MiB",
            DomainMemory = "4MiB",
            ShutdownTimeout = TimeSpan.FromSeconds(10),
        };
        options.AddNetd(n => n.Core = 1, host);
        var appAllocated = new StrongBox<long>();
        options.AddProgram("bench-echo", ctx => EchoAsync(ctx, echoReady, appAllocated));
        options.AddProgram("bench-urpc-sink", ctx => SinkAsync(ctx, urpc));
        options.AddProgram("bench-urpc-source", ctx => SourceAsync(ctx, urpc));
        options.SpawnAtBoot("bench-echo", core: 0);
        var runtime = new MultikernelRuntime(options);
        var results = new List<NetdBenchResult>();
        try
        {
            await runtime.StartAsync();
            await echoReady.Task.WaitAsync(TimeSpan.FromSeconds(30));
            MacAddress netdMac = host.Mac ?? throw new InvalidOperationException("netd did not start.");

            // The yardstick first, in the same machine: one-way messages core 0 -> core 1.
            progress?.Invoke("netd: raw channel one-way messages/s, core 0 -> core 1");
            await runtime.SpawnAsync(1, "bench-urpc-sink");
            await runtime.SpawnAsync(0, "bench-urpc-source");
            await urpc.Started.Task.WaitAsync(TimeSpan.FromSeconds(30));
            double urpcRate = MeasureUrpc(urpc, warmup, window);
            urpc.Stop = true;

            foreach (int size in new[] { 64, 1500 })
            {
                progress?.Invoke(string.Create(CultureInfo.InvariantCulture, $"netd: {size}-byte frames, window {Window}"));
                results.Add(MeasureNetd(host, generator, netdMac, size, warmup, window, urpcRate, appAllocated));
            }
        }
        finally
        {
            urpc.Stop = true;
            await runtime.StopAsync();
        }

        return results;
    }

    // ------------------------------------------------------------------ netd

    private static NetdBenchResult MeasureNetd(NetdHost host, SwitchPort generator, MacAddress netdMac, int size, TimeSpan warmup, TimeSpan window, double urpcRate, StrongBox<long> appAllocated)
    {
        byte[] frame = BuildFrame(netdMac, size);
        var rx = new byte[Window * 2048];
        var lengths = new int[Window];
        NetdCounters counters = host.Counters!;
        long Dropped() => counters.Dropped(RxDropReason.NoBuffer) + counters.Dropped(RxDropReason.Unclaimed) + QueueFull(host, generator);
        var state = new PumpState { DroppedBefore = Dropped() };
        Pump(generator, frame, rx, lengths, state, warmup, Dropped);
        long small0 = counters.SmallDeliveries, pages0 = counters.PageDeliveries;
        long noBuffer0 = counters.Dropped(RxDropReason.NoBuffer);
        long queueFull0 = QueueFull(host, generator);
        long sent0 = state.Sent, got0 = state.Received;
        long netdCore0 = host.CoreAllocatedBytesAsync().GetAwaiter().GetResult();
        long app0 = Volatile.Read(ref appAllocated.Value);
        long alloc0 = GC.GetTotalAllocatedBytes(precise: true);
        long start = Stopwatch.GetTimestamp();
        Pump(generator, frame, rx, lengths, state, window, Dropped);
        double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        long alloc = GC.GetTotalAllocatedBytes(precise: true) - alloc0;
        long app = Volatile.Read(ref appAllocated.Value) - app0;
        long packets = state.Received - got0;
        long netdCore = host.CoreAllocatedBytesAsync().GetAwaiter().GetResult() - netdCore0;
        long lost = Math.Max(0, state.Sent - sent0 - packets - state.InFlight);
        Drain(generator, rx, lengths, state);
        return new NetdBenchResult(size, packets, lost, seconds, packets == 0 ? double.NaN : (double)alloc / packets, urpcRate,
            counters.SmallDeliveries - small0, counters.PageDeliveries - pages0,
            counters.Dropped(RxDropReason.NoBuffer) - noBuffer0, QueueFull(host, generator) - queueFull0,
            packets == 0 ? double.NaN : (double)netdCore / packets, packets == 0 ? double.NaN : (double)app / packets);
    }

    private static long QueueFull(NetdHost host, SwitchPort generator) =>
        (host.DeviceCounters?.Dropped(DropReason.QueueFull) ?? 0) + generator.Counters.Dropped(DropReason.QueueFull);

    private sealed class PumpState
    {
        public long Sent;
        public long Received;
        public int InFlight;
        public long DroppedBefore;
    }

    // Keeps Window frames in flight: sends while fewer are out, takes back what returned. A frame
    // dropped on the way is counted exactly (netd's no-buffer drops, the switch's full queues), so
    // when replies pause the window is recomputed from those counts instead of guessed; only after
    // 500 ms of silence is it refilled from scratch.
    private static void Pump(SwitchPort port, byte[] frame, byte[] rx, int[] lengths, PumpState state, TimeSpan duration, Func<long> dropped)
    {
        long end = Stopwatch.GetTimestamp() + (long)(duration.TotalSeconds * Stopwatch.Frequency);
        long quietSince = Stopwatch.GetTimestamp();
        long recount = Stopwatch.Frequency / 200;
        long giveUp = Stopwatch.Frequency / 2;
        while (true)
        {
            long now = Stopwatch.GetTimestamp();
            if (now >= end)
            {
                return;
            }

            while (state.InFlight < Window && port.TransmitOne(frame))
            {
                state.InFlight++;
                state.Sent++;
            }

            var buffers = new StridedFrameBuffers(rx, 2048, Window);
            int n = port.ReceiveBurst(ref buffers, lengths);
            if (n > 0)
            {
                state.InFlight = Math.Max(0, state.InFlight - n);
                state.Received += n;
                quietSince = now;
            }
            else if (now - quietSince > giveUp)
            {
                state.InFlight = 0;
                quietSince = now;
            }
            else if (now - quietSince > recount)
            {
                state.InFlight = (int)Math.Clamp(state.Sent - state.Received - (dropped() - state.DroppedBefore), 0, Window);
                Thread.Yield();
            }
            else
            {
                Thread.SpinWait(20);
            }
        }
    }

    private static void Drain(SwitchPort port, byte[] rx, int[] lengths, PumpState state)
    {
        long end = Stopwatch.GetTimestamp() + Stopwatch.Frequency / 10;
        while (state.InFlight > 0 && Stopwatch.GetTimestamp() < end)
        {
            var buffers = new StridedFrameBuffers(rx, 2048, Window);
            int n = port.ReceiveBurst(ref buffers, lengths);
            state.InFlight -= n;
            if (n == 0)
            {
                Thread.Yield();
            }
        }

        state.InFlight = 0;
    }

    private static byte[] BuildFrame(MacAddress netdMac, int size)
    {
        var frame = new byte[size];
        EthernetFrame.WriteHeader(frame, netdMac, GeneratorMac, EtherType.Ipv4);
        Span<byte> ip = frame.AsSpan(EthernetFrame.HeaderLength);
        int payload = size - EthernetFrame.HeaderLength - Ipv4Packet.MinHeaderLength - 8;
        Span<byte> udp = ip[Ipv4Packet.MinHeaderLength..];
        for (int i = 0; i < payload; i++)
        {
            udp[8 + i] = (byte)(i * 7);
        }

        int udpLength = UdpDatagram.Write(udp, GeneratorIp, AppIp, 5555, Port, payload);
        Ipv4Packet.WriteHeader(ip, GeneratorIp, AppIp, IpProtocol.Udp, udpLength, identification: 1, ttl: 64);
        return frame;
    }

    // The application: every frame its filter claims goes back with addresses swapped.
    private static async Task EchoAsync(DomainContext ctx, TaskCompletionSource ready, StrongBox<long> allocated)
    {
        try
        {
            await using NetdClient client = await NetdClient.ConnectAsync(ctx, new NetdClientOptions { Address = AppIp, ReceivePages = 64, SmallBuffers = 128, TransmitPages = 64 });
            await client.InstallFilterAsync(string.Create(CultureInfo.InvariantCulture, $"ip.dst == {AppIp} && udp.dport == {Port}"));
            ready.TrySetResult();
            while (!ctx.Stopping.IsCancellationRequested)
            {
                await client.WaitToReceiveAsync(ctx.Stopping);
                while (client.TryReceive(out ReceivedFrame frame))
                {
                    TransmitBuffer tx = client.TryGetTransmitBuffer(out TransmitBuffer free) ? free : await client.GetTransmitBufferAsync(ctx.Stopping);
                    int length = frame.Span.Length;
                    frame.Span.CopyTo(tx.Span);
                    SwapAddresses(tx.Span[..length]);
                    client.Release(frame);
                    client.Transmit(tx, length);
                }

                // This core thread's allocations so far (the echo loop and its NetdClient), for the report.
                Volatile.Write(ref allocated.Value, GC.GetAllocatedBytesForCurrentThread());
            }
        }
        catch (OperationCanceledException) when (ctx.Stopping.IsCancellationRequested)
        {
        }
        catch (Exception ex)
        {
            ready.TrySetException(ex);
            throw;
        }
    }

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

    // ------------------------------------------------------------------ raw channel yardstick

    /// <summary>Harness state between the bench thread and the two stream domains (benchmark code, not kernel state).</summary>
    private sealed class UrpcStream
    {
        public readonly TaskCompletionSource Started = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private volatile bool _stop;
        public long Received;

        public bool Stop
        {
            get => _stop;
            set => _stop = value;
        }
    }

    private static double MeasureUrpc(UrpcStream stream, TimeSpan warmup, TimeSpan window)
    {
        Thread.Sleep(warmup);
        long before = Volatile.Read(ref stream.Received);
        long start = Stopwatch.GetTimestamp();
        Thread.Sleep(window);
        long after = Volatile.Read(ref stream.Received);
        return (after - before) / Stopwatch.GetElapsedTime(start).TotalSeconds;
    }

    private static async Task SinkAsync(DomainContext ctx, UrpcStream stream)
    {
        using ServiceListener listener = await ctx.ExportAsync(UrpcService);
        await using DomainChannel channel = await listener.AcceptAsync(ctx.Stopping);
        long n = 0;
        try
        {
            while (await channel.Endpoint.WaitToReadAsync(ctx.Stopping))
            {
                while (channel.Endpoint.TryRead(out _))
                {
                    n++;
                }

                Volatile.Write(ref stream.Received, n);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or System.Threading.Channels.ChannelClosedException)
        {
        }
    }

    private static async Task SourceAsync(DomainContext ctx, UrpcStream stream)
    {
        await using DomainChannel channel = await ctx.BindAsync(UrpcService, TimeSpan.FromSeconds(10), ctx.Stopping);
        stream.Started.TrySetResult();
        Message m = Message.Create(1, 1, 2, 3);
        try
        {
            while (!stream.Stop && !ctx.Stopping.IsCancellationRequested)
            {
                if (!channel.Endpoint.TryWrite(in m))
                {
                    await channel.Endpoint.WaitToWriteAsync(ctx.Stopping);
                }
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or System.Threading.Channels.ChannelClosedException)
        {
        }
    }

    public static string Render(IReadOnlyList<NetdBenchResult> results)
    {
        var text = new StringBuilder();
        if (results.Count == 0)
        {
            return "no results";
        }

        text.AppendLine(string.Create(CultureInfo.InvariantCulture, $"netd round trip, in-memory NIC -> netd (core 1) -> application (core 0) -> back, window {Window}; raw channel one-way: {results[0].UrpcMessagesPerSecond / 1e6:F3} M messages/s"));
        text.AppendLine("size   packets/s     vs raw channel   alloc B/packet (process / netd core / app core)   lost   small/page deliveries   drops no-buffer/queue-full");
        foreach (NetdBenchResult r in results)
        {
            text.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"{r.Size,4}   {r.PacketsPerSecond,10:F0}   {r.VsUrpc,12:F3}x   {r.AllocBytesPerPacket,10:F2} / {r.NetdCoreAllocBytesPerPacket,6:F2} / {r.AppCoreAllocBytesPerPacket,6:F2}               {r.Lost,4}   {r.SmallDeliveries}/{r.PageDeliveries}   {r.NoBuffer}/{r.QueueFull}"));
        }

        NetdBenchResult? small = results.FirstOrDefault(r => r.Size == 64);
        NetdBenchResult? large = results.FirstOrDefault(r => r.Size == 1500);
        if (small is not null && large is not null)
        {
            text.AppendLine(string.Create(CultureInfo.InvariantCulture, $"1500/64-byte rate: {large.PacketsPerSecond / small.PacketsPerSecond:F3}x (frames above 128 bytes are still copied into the application's page: no page exchange yet)"));
        }

        return text.ToString();
    }
}
