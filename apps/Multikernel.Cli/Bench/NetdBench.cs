using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Multikernel.Cli.Bench.Report;
using Multikernel.CpuDriver.Kernel;
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
/// <param name="AppCoreAllocBytesPerPacket">Bytes allocated by the application's core thread per packet (its NetdClient, its echo loop and the load generator).</param>
/// <param name="NetdParksPerPacket">Times netd's core parked (slept in its wait set) per packet: the wake-ups a packet costs.</param>
/// <param name="AppParksPerPacket">Times the application's core parked per packet.</param>
/// <param name="PayloadCopies">Frames netd copied from one buffer into another in the window (small frames into small slots; large ones only when the device cannot place them).</param>
/// <param name="NetdWakesPerPacket">Times a sender rang netd's core's doorbell (an eventfd write: the core was parked or about to park) per packet.</param>
/// <param name="AppWakesPerPacket">The same for the application's core.</param>
/// <param name="AppToNetdMessagesPerPacket">Ring messages the application's core sent netd's core per packet (posts, transmits, credits).</param>
/// <param name="NetdToAppMessagesPerPacket">Ring messages netd's core sent the application's core per packet (completions, credits).</param>
internal sealed record NetdBenchResult(int Size, long Packets, long Lost, double Seconds, double AllocBytesPerPacket, double UrpcMessagesPerSecond, long SmallDeliveries, long PageDeliveries, long NoBuffer, long QueueFull, double NetdCoreAllocBytesPerPacket, double AppCoreAllocBytesPerPacket, double NetdParksPerPacket, double AppParksPerPacket, long PayloadCopies, double NetdWakesPerPacket = 0, double AppWakesPerPacket = 0, double AppToNetdMessagesPerPacket = 0, double NetdToAppMessagesPerPacket = 0)
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
/// The load generator is a switch port driven by a kernel service in core 0's loop (the
/// application's core), woken by the port's eventfd when frames come back: the benchmark uses
/// exactly the two cores the yardstick uses, and no third thread competes with them for the CPUs
/// (on a two-CPU machine a spinning generator thread starved the pinned cores). It keeps
/// <see cref="Window"/> frames in flight, refilled in bursts of <see cref="RefillBurst"/>, and
/// counts the echoes in the switch's queue without copying them. The machine keeps its default
/// channel window and ring, so the yardstick is the machine every other benchmark runs. Allocation is the
/// whole process's (<see cref="GC.GetTotalAllocatedBytes(bool)"/>) over the window, divided by the
/// packets. Frames above 128 bytes are placed by the device straight into the application's posted
/// page (docs/netd-datapath.md); the echo copies each one into a transmit page.
/// </remarks>
internal static class NetdBench
{
    /// <summary>The scenario's name, file stem and command.</summary>
    public const string Scenario = "netd";

    // Frames in flight. 256 (was 32): enough that netd and the application each find a batch to
    // work on whenever they run, rather than taking turns on two CPUs; docs/netd-running.md.
    private const int Window = 256;

    // Receive pages: a forwarded page (1500-byte echoes go back in the page they came in) is away
    // from delivery until netd has sent it and the client posted it again, while the generator
    // already refills its window: twice the window, so the echo never runs out of pages.
    private const int ReceivePages = 2 * Window;

    // The generator refills in bursts of at least this many frames (a quarter of the window).
    private const int RefillBurst = Window / 4;
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
        new("payload_copies", r => r.PayloadCopies),
        new("netd_core_alloc_bytes_per_packet", r => r.NetdCoreAllocBytesPerPacket),
        new("app_core_alloc_bytes_per_packet", r => r.AppCoreAllocBytesPerPacket),
        new("netd_core_parks_per_packet", r => r.NetdParksPerPacket),
        new("app_core_parks_per_packet", r => r.AppParksPerPacket),
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
        // Port queues that hold a whole window of the largest frames, so the bench measures netd,
        // not the switch's drops.
        using var host = new NetdHost(new VirtualSwitch(new VirtualSwitchOptions { QueueBytes = 1 << 20 }));
        using SwitchPort port = host.Switch!.AddPort("load", GeneratorMac, new SwitchPortOptions { WakeFileDescriptor = true });
        var echoReady = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var urpc = new UrpcStream();
        var options = new MultikernelOptions
        {
            Cores = "2",
            Memory = "128MiB",
            DomainMemory = "8MiB",
            ShutdownTimeout = TimeSpan.FromSeconds(10),
        };
        options.AddNetd(n =>
        {
            n.Core = 1;
            n.MaxTransmitsInFlight = Window;
            n.MaxPostedPerConsumer = ReceivePages;
        }, host);
        var appAllocated = new StrongBox<long>();
        options.AddProgram("bench-echo", ctx => EchoAsync(ctx, echoReady, appAllocated));
        options.AddProgram("bench-urpc-sink", ctx => SinkAsync(ctx, urpc));
        options.AddProgram("bench-urpc-source", ctx => SourceAsync(ctx, urpc));
        options.SpawnAtBoot("bench-echo", core: 0);
        var runtime = new MultikernelRuntime(options);
        var results = new List<NetdBenchResult>();
        LoadGenerator? generator = null;
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

            CoreKernel core0 = runtime.Machine.Kernels[0];
            NetdCounters counters = host.Counters!;
            generator = new LoadGenerator(port, () => counters.Dropped(RxDropReason.NoBuffer) + counters.Dropped(RxDropReason.Unclaimed) + QueueFull(host, port));
            LoadGenerator g = generator;
            await core0.RunAsync(() => g.Attach(core0));
            foreach (int size in new[] { 64, 1500 })
            {
                progress?.Invoke(string.Create(CultureInfo.InvariantCulture, $"netd: {size}-byte frames, window {Window}"));
                results.Add(MeasureNetd(runtime, host, generator, port, netdMac, size, warmup, window, urpcRate, appAllocated));
            }
        }
        finally
        {
            urpc.Stop = true;
            if (generator is not null)
            {
                LoadGenerator g = generator;
                CoreKernel core0 = runtime.Machine.Kernels[0];
                await core0.RunAsync(() => g.Detach(core0));
            }

            await runtime.StopAsync();
        }

        return results;
    }

    // ------------------------------------------------------------------ netd

    private static NetdBenchResult MeasureNetd(MultikernelRuntime runtime, NetdHost host, LoadGenerator generator, SwitchPort port, MacAddress netdMac, int size, TimeSpan warmup, TimeSpan window, double urpcRate, StrongBox<long> appAllocated)
    {
        NetdCounters counters = host.Counters!;
        generator.Start(BuildFrame(netdMac, size));
        Thread.Sleep(warmup);
        CoreCounters netdCore = runtime.Machine.Kernels[1].Counters, appCore = runtime.Machine.Kernels[0].Counters;
        long small0 = counters.SmallDeliveries, pages0 = counters.PageDeliveries, copies0 = counters.PayloadCopies;
        long noBuffer0 = counters.Dropped(RxDropReason.NoBuffer);
        long queueFull0 = QueueFull(host, port);
        long sent0 = generator.Sent, got0 = generator.Received;
        long netdAlloc0 = host.CoreAllocatedBytesAsync().GetAwaiter().GetResult();
        long app0 = Volatile.Read(ref appAllocated.Value);
        long netdParks0 = netdCore.ParkCount, appParks0 = appCore.ParkCount;
        long netdRings0 = runtime.Machine.Kernels[1].DoorbellRings, appRings0 = runtime.Machine.Kernels[0].DoorbellRings;
        long toNetd0 = appCore.Sent(1), toApp0 = netdCore.Sent(0);
        long alloc0 = GC.GetTotalAllocatedBytes(precise: true);
        long start = Stopwatch.GetTimestamp();
        Thread.Sleep(window);
        long packets = generator.Received - got0;
        long sent = generator.Sent - sent0;
        double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        long alloc = GC.GetTotalAllocatedBytes(precise: true) - alloc0;
        long netdParks = netdCore.ParkCount - netdParks0, appParks = appCore.ParkCount - appParks0;
        long netdRings = runtime.Machine.Kernels[1].DoorbellRings - netdRings0, appRings = runtime.Machine.Kernels[0].DoorbellRings - appRings0;
        long toNetd = appCore.Sent(1) - toNetd0, toApp = netdCore.Sent(0) - toApp0;
        long app = Volatile.Read(ref appAllocated.Value) - app0;
        long netdAlloc = host.CoreAllocatedBytesAsync().GetAwaiter().GetResult() - netdAlloc0;
        long lost = Math.Max(0, sent - packets - Window);
        generator.Pause();
        double PerPacket(double value) => packets == 0 ? double.NaN : value / packets;
        return new NetdBenchResult(size, packets, lost, seconds, PerPacket(alloc), urpcRate,
            counters.SmallDeliveries - small0, counters.PageDeliveries - pages0,
            counters.Dropped(RxDropReason.NoBuffer) - noBuffer0, QueueFull(host, port) - queueFull0,
            PerPacket(netdAlloc), PerPacket(app), PerPacket(netdParks), PerPacket(appParks), counters.PayloadCopies - copies0,
            PerPacket(netdRings), PerPacket(appRings), PerPacket(toNetd), PerPacket(toApp));
    }

    private static long QueueFull(NetdHost host, SwitchPort generator) =>
        (host.DeviceCounters?.Dropped(DropReason.QueueFull) ?? 0) + generator.Counters.Dropped(DropReason.QueueFull);

    /// <summary>
    /// The load generator: a kernel service of core 0 that keeps <see cref="Window"/> frames in
    /// flight on its switch port (refilled in bursts of at least <see cref="RefillBurst"/>) and
    /// counts what comes back. It sleeps with the core (the port's
    /// eventfd is one of the core's wake sources) while the whole window is out. A frame dropped
    /// on the way is counted exactly (netd's no-buffer drops, the switch's full queues), so when
    /// replies pause the window is recomputed from those counts; after 500 ms of silence it is
    /// refilled from scratch. Benchmark harness state: written on core 0, read by the bench thread.
    /// </summary>
    private sealed class LoadGenerator(SwitchPort port, Func<long> dropped) : IKernelService, IFramePlacer
    {
        private byte[]? _frame;
        private volatile byte[]? _next;
        private volatile bool _paused = true;
        private int _inFlight;
        private long _sent;
        private long _received;
        private long _quietSince;
        private int _emptyPolls;
        private long _droppedBefore;
        private WakeSource? _wake;

        public long Sent => Volatile.Read(ref _sent);

        public long Received => Volatile.Read(ref _received);

        public int Attach(CoreKernel core)
        {
            _wake = core.RegisterWakeSource(port.WaitFileDescriptor, this);
            return 0;
        }

        public int Detach(CoreKernel core)
        {
            _wake?.Dispose();
            core.RemoveService(this);
            return 0;
        }

        /// <summary>Bench thread: start sending <paramref name="frame"/> (after the previous size drained).</summary>
        public void Start(byte[] frame)
        {
            _next = frame;
            _paused = false;
            port.SetLinkState(true);
        }

        /// <summary>Bench thread: stop sending; what is in flight drains.</summary>
        public void Pause() => _paused = true;

        public bool HasWork => (!_paused && (Window - _inFlight >= RefillBurst || _next is not null)) || !port.PrepareToWait();

        // The echoes are counted where the switch holds them and not copied anywhere (the
        // generator has no use for their bytes): the placer names no buffer.
        Span<byte> IFramePlacer.Place(ReadOnlySpan<byte> frame) => default;

        void IFramePlacer.Placed(int length)
        {
        }

        public int Poll()
        {
            int n = port.ReceivePlaced(this, Window);
            if (n > 0)
            {
                _inFlight = Math.Max(0, _inFlight - n);
                Volatile.Write(ref _received, _received + n);
                _quietSince = 0; // traffic: the next silence is timed from its first empty poll
            }

            if (_paused)
            {
                return n;
            }

            if (_next is { } next && _inFlight == 0)
            {
                _frame = next; // a new size starts once the last one's frames are back
                _next = null;
                _droppedBefore = dropped();
                _quietSince = 0;
            }

            if (_frame is null || _next is not null)
            {
                return n;
            }

            // The clock is read only while echoes are missing, and then every 16th poll: in a
            // VM a clock read is a visible share of a packet's cost on this core.
            if (_inFlight > 0 && n == 0 && (++_emptyPolls & 15) == 0)
            {
                long now = Stopwatch.GetTimestamp();
                if (_quietSince == 0)
                {
                    _quietSince = now;
                }
                else if (now - _quietSince > Stopwatch.Frequency / 200)
                {
                    // Replies paused: whatever was dropped on the way is counted; take it out of the window.
                    long gone = dropped() - _droppedBefore;
                    _inFlight = (int)Math.Clamp(_sent - _received - gone, 0, Window);
                    if (now - _quietSince > Stopwatch.Frequency / 2)
                    {
                        _inFlight = 0;
                    }
                }
            }

            // Refilled in bursts of at least a quarter of the window (as a packet generator sends
            // bursts), not a frame at a time as each echo comes back.
            int want = Window - _inFlight;
            if (want >= RefillBurst)
            {
                var frames = new RepeatedFrame(_frame, want);
                int sent = port.TransmitBurst(ref frames);
                _inFlight += sent;
                Volatile.Write(ref _sent, _sent + sent);
            }

            return n + (want >= RefillBurst ? want : 0);
        }
    }

    private readonly ref struct RepeatedFrame(ReadOnlySpan<byte> frame, int count) : ITransmitFrames
    {
        private readonly ReadOnlySpan<byte> _frame = frame;

        public int Count { get; } = count;

        public ReadOnlySpan<byte> this[int index] => _frame;
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
            await using NetdClient client = await NetdClient.ConnectAsync(ctx, new NetdClientOptions { Address = AppIp, ReceivePages = ReceivePages, SmallBuffers = Window, TransmitPages = Window });
            await client.InstallFilterAsync(string.Create(CultureInfo.InvariantCulture, $"ip.dst == {AppIp} && udp.dport == {Port}"));
            ready.TrySetResult();
            while (!ctx.Stopping.IsCancellationRequested)
            {
                await client.WaitToReceiveAsync(ctx.Stopping);
                while (client.TryReceive(out ReceivedFrame frame))
                {
                    if (NetdClient.CanForward(in frame))
                    {
                        // A page: its addresses swapped in place and the page itself sent back (no
                        // copy), as a forwarding application does with large frames.
                        int pageLength = frame.Span.Length;
                        SwapAddresses(frame.WritableSpan[..pageLength]);
                        client.Forward(in frame, pageLength);
                        continue;
                    }

                    // A small frame: copied into a transmit page (a copy of at most 128 bytes), its buffer given back at once.
                    TransmitBuffer tx = client.TryGetTransmitBuffer(out TransmitBuffer free) ? free : await client.GetTransmitBufferAsync(ctx.Stopping);
                    int length = Echo(frame, tx);
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

    // The frame copied into the transmit page with its addresses swapped. Each span is taken once
    // (every Span of a received frame or a transmit page checks the region's capability).
    private static int Echo(in ReceivedFrame frame, in TransmitBuffer tx)
    {
        ReadOnlySpan<byte> received = frame.Span;
        Span<byte> reply = tx.Span[..received.Length];
        received.CopyTo(reply);
        SwapAddresses(reply);
        return received.Length;
    }

    // Ethernet destination <-> source (bytes 0..5, 6..11) and IPv4 source <-> destination
    // (26..29, 30..33), as whole words: a few loads and stores, no copies through a scratch span.
    private static void SwapAddresses(Span<byte> frame)
    {
        ref byte b = ref MemoryMarshal.GetReference(frame[..34]);
        uint dst = Unsafe.ReadUnaligned<uint>(ref b);
        ushort dstTail = Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref b, 4));
        Unsafe.WriteUnaligned(ref b, Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref b, 6)));
        Unsafe.WriteUnaligned(ref Unsafe.Add(ref b, 4), Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref b, 10)));
        Unsafe.WriteUnaligned(ref Unsafe.Add(ref b, 6), dst);
        Unsafe.WriteUnaligned(ref Unsafe.Add(ref b, 10), dstTail);
        ulong ips = Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref b, 26));
        Unsafe.WriteUnaligned(ref Unsafe.Add(ref b, 26), (ips >> 32) | (ips << 32));
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
            text.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"       per 1000 packets: parks netd core {r.NetdParksPerPacket * 1000:F2}, app core {r.AppParksPerPacket * 1000:F2}; doorbell rings netd core {r.NetdWakesPerPacket * 1000:F2}, app core {r.AppWakesPerPacket * 1000:F2}; frames netd copied: {r.PayloadCopies}"));
            text.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"       ring messages per packet: app -> netd {r.AppToNetdMessagesPerPacket:F3}, netd -> app {r.NetdToAppMessagesPerPacket:F3}"));
        }

        NetdBenchResult? small = results.FirstOrDefault(r => r.Size == 64);
        NetdBenchResult? large = results.FirstOrDefault(r => r.Size == 1500);
        if (small is not null && large is not null)
        {
            text.AppendLine(string.Create(CultureInfo.InvariantCulture, $"1500/64-byte rate: {large.PacketsPerSecond / small.PacketsPerSecond:F3}x (the device places each frame straight into the application's posted buffer; netd copied {large.PayloadCopies} of the 1500-byte frames)"));
        }

        return text.ToString();
    }
}
