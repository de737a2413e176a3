using System.Threading.Channels;
using Multikernel.CpuDriver.Capabilities;
using Multikernel.CpuDriver.Domains;
using Multikernel.CpuDriver.Urpc;
using Multikernel.Monitor;
using Multikernel.Monitor.Hosting;
using Multikernel.Netd.Capture;
using Multikernel.Netd.Drivers;
using Multikernel.Netd.Drivers.Tap;
using Multikernel.Netd.Filters;
using Multikernel.Netd.Wire;

namespace Multikernel.Netd.Daemon;

/// <summary>
/// The netd domain: opens the NIC, exports <see cref="NetdMessages.ServiceName"/>, admits
/// consumers and runs the data path on its core until the machine stops.
/// </summary>
public sealed class NetdProgram
{
    /// <summary>The program name netd is registered and spawned under.</summary>
    public const string ProgramName = "netd";

    private readonly NetdOptions _options;
    private readonly NetdHost _host;

    internal NetdProgram(NetdOptions options, NetdHost host)
    {
        _options = options;
        _host = host;
    }

    internal async Task RunAsync(DomainContext ctx)
    {
        CSpace caps = ctx.Capabilities;
        int poolSlot, scratchSlot;
        try
        {
            if (ctx.NicSlot < 0)
            {
                throw new InvalidOperationException($"netd needs the machine's Nic capability: it must be spawned once, on the Nic core (Multikernel:NicCore), as the NIC program (Multikernel:NicProgram = '{ProgramName}'); another domain holds it or the machine has no DeviceMemory.");
            }

            // The receive pool is device memory (DevFrames only the Nic holder can retype); a scratch
            // page for netd's own ARP and echo replies comes from its own RAM.
            poolSlot = caps.Retype(ctx.NicSlot, CapabilityType.DevFrame, _options.RxBurst);
            scratchSlot = caps.Retype(ctx.RamSlot, CapabilityType.Frame, 1);
        }
        catch (Exception ex)
        {
            // A bug or a misconfigured machine, not the user's device: Started says so, and the
            // domain faults (logged with its stack trace) as well.
            _host.Fail(ex);
            throw;
        }

        // The device is opened here, on netd's core, in its domain: a TAP's descriptor then joins
        // this core's epoll set, and it is closed (the kernel removes the interface) when this
        // domain ends, however it ends.
        INetworkDevice device;
        PcapWriter? capture = null;
        try
        {
            device = _host.OpenDevice(_options);
            try
            {
                capture = _options.Pcap is { } path ? CreateCapture(path, ctx.Time) : null;
            }
            catch
            {
                device.Dispose();
                throw;
            }
        }
        catch (Exception ex) when (ex is TapDeviceException or IOException or UnauthorizedAccessException or ArgumentException or PlatformNotSupportedException)
        {
            // One clear line for whoever started the machine (the CLI prints it and exits 2).
            if (_host.Fail(ex))
            {
                return;
            }

            throw;
        }

        using (device)
        using (capture)
        {
            var engine = new NetdEngine(device, new PacketClassifier(), _options, Ipv4Address.Parse(_options.NetdIp), caps.GetFrame(poolSlot), caps.GetFrame(scratchSlot), capture, ctx.Domain.Kernel.Sampler, ctx.Core);
            _host.Attach(engine, work => ctx.Domain.Kernel.RunAsync(work), ctx.DomainId);
            try
            {
                using ServiceListener listener = await ctx.ExportAsync(NetdMessages.ServiceName, backlog: 16);
                Task accepting = AcceptAsync(ctx, listener, engine);
                Task revocations = WatchRevocationsAsync(ctx, engine);
                await RunDataPathAsync(ctx, engine, device);
                listener.Dispose();
                try
                {
                    await accepting;
                }
                catch (OperationCanceledException) when (ctx.Stopping.IsCancellationRequested)
                {
                }
            }
            finally
            {
                _host.Detach(engine);
            }
        }
    }

    private PcapWriter CreateCapture(string path, TimeProvider time)
    {
        try
        {
            return PcapWriter.Create(path, new PcapOptions { MaxBytes = _options.PcapMaxBytes }, time);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"netd cannot create the capture file '{path}': {ex.Message}", ex);
        }
    }

    // The data path runs as a kernel service of this core, woken by the device's descriptor
    // through the core's epoll set; this domain only waits for the machine to stop.
    private static async Task RunDataPathAsync(DomainContext ctx, NetdEngine engine, INetworkDevice device)
    {
        // Running in the kernel loop needs device authority: the Nic capability this domain holds.
        var service = new NetdKernelService(engine, device);
        DeviceRegistration registration = ctx.AddDeviceService(ctx.NicSlot, service, device.WaitFileDescriptor);
        service.Registration = registration;
        try
        {
            var stopped = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            using CancellationTokenRegistration stopping = ctx.Stopping.Register(static s => ((TaskCompletionSource)s!).TrySetResult(), stopped);
            await stopped.Task;
        }
        finally
        {
            registration.Dispose();
        }
    }

    // An installer that revokes its PacketFilter takes netd's copy: the notice lands in netd's own
    // CSpace and the filter goes (seed 003: the filter's life is its capability's).
    private static async Task WatchRevocationsAsync(DomainContext ctx, NetdEngine engine)
    {
        CSpace caps = ctx.Capabilities;
        try
        {
            while (!ctx.Stopping.IsCancellationRequested)
            {
                await caps.WaitForRevocationAsync(ctx.Stopping);
                while (caps.TryTakeRevocation(out CapabilityRevocation notice))
                {
                    if (notice.Type == CapabilityType.PacketFilter)
                    {
                        engine.OnFilterRevoked(notice.ObjectId);
                    }
                }

                if (caps.RevocationsLost > 0)
                {
                    engine.RemoveFiltersWithout(caps.IsEmpty);
                }
            }
        }
        catch (OperationCanceledException) when (ctx.Stopping.IsCancellationRequested)
        {
        }
    }

    private static async Task AcceptAsync(DomainContext ctx, ServiceListener listener, NetdEngine engine)
    {
        while (!ctx.Stopping.IsCancellationRequested)
        {
            DomainChannel channel = await listener.AcceptAsync(ctx.Stopping);
            Consumer? consumer = engine.Admit($"consumer on core {channel.RemoteCore}", channel.Endpoint);
            if (consumer is null)
            {
                channel.Endpoint.Close(); // MaxConsumers bound: the client sees its channel closed at once
                continue;
            }

            _ = ServeAsync(ctx, channel, consumer, engine);
        }
    }

    /// <summary>Most messages netd reads from one consumer's channel at once (a channel window).</summary>
    private const int ReadBatch = 64;

    // One consumer's requests, a batch at a time: everything the channel holds (up to what netd
    // may read now, Consumer.RequestRoom) is handled, then the batch's transmits leave as one device
    // burst and its completions as one channel batch (NetdEngine.EndBatch).
    private static async Task ServeAsync(DomainContext ctx, DomainChannel channel, Consumer consumer, NetdEngine engine)
    {
        CSpace caps = ctx.Capabilities;
        CpuDriver.Channels.Endpoint endpoint = channel.Endpoint;
        var batch = new Message[ReadBatch]; // once per consumer, reused for every batch
        int next = 0, read = 0; // batch[next..read) is read and not yet handled
        try
        {
            while (!ctx.Stopping.IsCancellationRequested)
            {
                int room = consumer.RequestRoom;
                if (room <= 0 || (next < read && NetdEngine.Cost(in batch[next]) > room))
                {
                    // The consumer sends without reading what netd owes it: stop reading it, so it
                    // stalls in its own sends (its channel window fills), until it takes its
                    // completions (its credits wake this wait) — or it went away (false).
                    engine.FlushOwed(consumer);
                    if (consumer.RequestRoom > room)
                    {
                        continue; // room came back at once
                    }

                    if (room > 0 && consumer.Owed.Count == 0 && !consumer.HasGathered)
                    {
                        // Nothing owed whose reading would make room, yet the run of posts does not
                        // fit beside the buffers netd holds: it comes back whole, refused.
                        engine.RefuseRun(consumer, in batch[next++]);
                        engine.EndBatch();
                        continue;
                    }

                    if (!await endpoint.WaitToWriteAsync(ctx.Stopping))
                    {
                        break;
                    }

                    continue;
                }

                if (next == read)
                {
                    if (endpoint.QueuedCount == 0 && !await endpoint.WaitToReadAsync(ctx.Stopping))
                    {
                        break; // the consumer completed its end
                    }

                    next = 0;
                    read = endpoint.TryReadBatch(batch.AsSpan(0, Math.Min(batch.Length, room)));
                }

                // Each message only while what it can add fits (a run of posts costs its slots).
                while (next < read && NetdEngine.Cost(in batch[next]) <= consumer.RequestRoom)
                {
                    Handle(caps, channel, consumer, engine, in batch[next++]);
                }

                engine.EndBatch();
            }
        }
        catch (ChannelClosedException)
        {
            // The consumer went away: fall through to forget it.
        }
        catch (OperationCanceledException) when (ctx.Stopping.IsCancellationRequested)
        {
        }
        finally
        {
            foreach (int slot in engine.Remove(consumer))
            {
                if (!caps.IsEmpty(slot))
                {
                    caps.Delete(slot);
                }
            }

            endpoint.Close();
        }
    }

    private static void Handle(CSpace caps, DomainChannel channel, Consumer consumer, NetdEngine engine, in Message m)
    {
        if (m.Type == NetdMessages.InstallFilter)
        {
            // The PacketFilter capability came first (the consumer waited until this core's
            // kernel installed it); a filter without one is refused.
            int filterSlot = channel.TryReceiveCapability(out int granted) ? granted : -1;
            ulong filterObject = 0;
            if (filterSlot >= 0)
            {
                CapabilityInfo info = caps.Inspect(filterSlot);
                if (info.Type != CapabilityType.PacketFilter)
                {
                    caps.Delete(filterSlot);
                    filterSlot = -1;
                }
                else
                {
                    filterObject = info.ObjectId;
                }
            }

            int refusedSlot = engine.OnInstallFilter(consumer, in m, filterSlot, filterObject);
            if (refusedSlot >= 0)
            {
                caps.Delete(refusedSlot);
            }

            return;
        }

        if (m.Type == NetdMessages.AddRegion)
        {
            // The consumer sent the region's capability first and waited until this core's
            // kernel installed it; the slot comes from that kernel, never from the message.
            OnGrant(caps, engine, consumer, channel.TryReceiveCapability(out int granted) ? granted : -1, m.Word0);
            return;
        }

        int retired = engine.OnMessage(consumer, in m);
        if (retired >= 0)
        {
            caps.Delete(retired);
        }
    }

    private static void OnGrant(CSpace caps, NetdEngine engine, Consumer consumer, int slot, ulong cookie)
    {
        CapabilityInfo info;
        try
        {
            info = caps.Inspect(slot);
        }
        catch (CapabilityException)
        {
            engine.OnRegionGranted(consumer, -1, default, cookie);
            return;
        }

        if (info.Type != CapabilityType.Frame)
        {
            caps.Delete(slot);
            engine.OnRegionGranted(consumer, -1, default, cookie);
            return;
        }

        engine.OnRegionGranted(consumer, slot, caps.GetFrame(slot), cookie);
    }
}

/// <summary>
/// What the host side knows of netd: how to open its device (the in-memory switch the host
/// owns, or a TAP device), whether it started, and where its counters, filters and consumers
/// are, for <c>run --stats</c>, the <c>Multikernel</c> meter and tests.
/// </summary>
public sealed class NetdHost : IDisposable
{
    private readonly TaskCompletionSource _started = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private NetdEngine? _engine;
    private Func<Func<ConsumerStats[]>, Task<ConsumerStats[]>>? _onCore;
    private ulong _domainId;
    private int _starts;
    private int _metricsRegistered;

    /// <summary>A host for the in-memory switch <paramref name="switch"/> (null: TAP or a switch made here).</summary>
    public NetdHost(VirtualSwitch? @switch = null) => Switch = @switch;

    /// <summary>The in-memory NIC's switch (null for TAP until netd opens it).</summary>
    public VirtualSwitch? Switch { get; private set; }

    /// <summary>True once <c>AddNetd</c> added netd to a machine with this host.</summary>
    public bool IsAdded { get; internal set; }

    /// <summary>The options netd was added with (null until then).</summary>
    public NetdOptions? Options { get; internal set; }

    /// <summary>
    /// Completes when netd first opened its device and runs; faults with the reason (a
    /// <see cref="TapDeviceException"/> naming what is missing, an <see cref="IOException"/> for
    /// the capture file, ...) when it could not start.
    /// </summary>
    public Task Started => _started.Task;

    /// <summary>
    /// True when whoever started the machine reports <see cref="Started"/>'s failure itself (the
    /// CLI prints it as one line): netd then ends quietly instead of also faulting its domain
    /// (a fault is logged with its stack trace). Default false.
    /// </summary>
    public bool ReportsStartFailures { get; set; }

    /// <summary>netd's counters, once it runs.</summary>
    public NetdCounters? Counters => Volatile.Read(ref _engine)?.Counters;

    /// <summary>The device's own counters (driver-level packets, bytes and drops by reason), once netd runs.</summary>
    public DeviceCounters? DeviceCounters => Volatile.Read(ref _engine)?.DeviceCounters;

    /// <summary>The device's name once netd runs (<c>netd</c> on the switch, the TAP interface's name).</summary>
    public string? DeviceName => Volatile.Read(ref _engine)?.DeviceName;

    /// <summary>The capture writer (<c>--pcap</c>) once netd runs, or null.</summary>
    public PcapWriter? Capture => Volatile.Read(ref _engine)?.Capture;

    /// <summary>netd's station address, once it runs.</summary>
    public Wire.MacAddress? Mac => Volatile.Read(ref _engine)?.Mac;

    internal INetworkDevice OpenDevice(NetdOptions options)
    {
        if (!NetdOptions.TryParseNic(options.Nic, out string? tap, out string? problem))
        {
            throw new ArgumentException(problem);
        }

        INetworkDevice device;
        if (tap is not null)
        {
            var tapOptions = new TapOptions { Name = tap, HostAddress = options.HostIp };
            device = TapDevice.Create(tapOptions);
        }
        else
        {
            Switch ??= new VirtualSwitch();
            // An eventfd the switch signals when a frame arrives, so netd's core can sleep on it.
            device = Switch.AddPort(NetdProgram.ProgramName, Wire.MacAddress.FromUInt64(0x02_00_00_4E_44_01UL), new SwitchPortOptions { WakeFileDescriptor = true });
        }

        return WrapDevice is { } wrap ? wrap(device) : device;
    }

    /// <summary>
    /// Tests only: puts a driver of the test's between netd and the device it opened (one that
    /// takes part of a transmit burst, as a busy NIC or a full TAP queue does). Null: the device itself.
    /// </summary>
    internal Func<INetworkDevice, INetworkDevice>? WrapDevice { get; set; }

    /// <summary>Each bound consumer's counters, read on netd's core (its tables belong to that core).</summary>
    public Task<ConsumerStats[]> ConsumerStatsAsync()
    {
        NetdEngine? engine = Volatile.Read(ref _engine);
        Func<Func<ConsumerStats[]>, Task<ConsumerStats[]>>? onCore = Volatile.Read(ref _onCore);
        return engine is null || onCore is null ? Task.FromResult(Array.Empty<ConsumerStats>()) : onCore(() => [.. engine.ConsumerStats()]);
    }

    /// <summary>The installed filters with their match counters (packets, bytes), read on netd's core; empty while netd is not running.</summary>
    public async Task<IReadOnlyList<FilterInfo>> FiltersAsync()
    {
        NetdEngine? engine = Volatile.Read(ref _engine);
        Func<Func<ConsumerStats[]>, Task<ConsumerStats[]>>? onCore = Volatile.Read(ref _onCore);
        if (engine is null || onCore is null)
        {
            return [];
        }

        IReadOnlyList<FilterInfo> filters = [];
        await onCore(() =>
        {
            filters = engine.Filters();
            return [];
        });
        return filters;
    }

    /// <summary>
    /// Managed bytes allocated so far by netd's core thread (its data path, its domain's
    /// continuations), read on that core: what benchmarks divide by packets to show the data path
    /// allocates nothing per packet. -1 while netd is not running.
    /// </summary>
    public async Task<long> CoreAllocatedBytesAsync()
    {
        Func<Func<ConsumerStats[]>, Task<ConsumerStats[]>>? onCore = Volatile.Read(ref _onCore);
        if (Volatile.Read(ref _engine) is null || onCore is null)
        {
            return -1;
        }

        long bytes = -1;
        await onCore(() =>
        {
            bytes = GC.GetAllocatedBytesForCurrentThread();
            return [];
        });
        return bytes;
    }

    /// <summary>
    /// Adds netd's instruments to <paramref name="meter"/> (the runtime's <c>Multikernel</c> meter:
    /// <c>MultikernelRuntime.Metrics.Meter</c>). Once per host; later calls do nothing.
    /// </summary>
    public void RegisterMetrics(System.Diagnostics.Metrics.Meter meter)
    {
        ArgumentNullException.ThrowIfNull(meter);
        if (Interlocked.Exchange(ref _metricsRegistered, 1) == 0)
        {
            NetdMetrics.Register(meter, this);
        }
    }

    internal NetdEngine? Engine => Volatile.Read(ref _engine);

    /// <summary>The running netd's domain id (0 when none runs).</summary>
    public ulong DomainId => Volatile.Read(ref _domainId);

    /// <summary>Times netd was started (1 after boot; each restart adds one).</summary>
    public int Starts => Volatile.Read(ref _starts);

    /// <summary>
    /// Stops netd and starts it again on its core while applications run (seed 003): its Nic comes
    /// back to the monitor, every DevFrame and region mapping it had is revoked, and the new
    /// instance gets the Nic again. Applications see their channel close and bind again
    /// (<see cref="Client.NetdClientOptions.Reconnect"/>). Completes when the new netd runs.
    /// </summary>
    public async Task RestartAsync(MultikernelRuntime runtime, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(runtime);
        ulong id = DomainId;
        if (id == 0)
        {
            throw new InvalidOperationException("netd is not running.");
        }

        int starts = Starts;
        int core = (int)(id >> 32);
        await runtime.StopDomainAsync(id);
        await runtime.SpawnAsync(core, NetdProgram.ProgramName);
        using var deadline = new CancellationTokenSource(timeout);
        while (Starts == starts || DomainId == 0)
        {
            await Task.Delay(1, deadline.Token);
        }
    }

    internal void Attach(NetdEngine engine, Func<Func<ConsumerStats[]>, Task<ConsumerStats[]>> onCore, ulong domainId)
    {
        Volatile.Write(ref _domainId, domainId);
        Interlocked.Increment(ref _starts);
        Volatile.Write(ref _onCore, onCore);
        Volatile.Write(ref _engine, engine);
        _started.TrySetResult();
    }

    internal void Detach(NetdEngine engine)
    {
        if (ReferenceEquals(Interlocked.CompareExchange(ref _engine, null, engine), engine))
        {
            Volatile.Write(ref _domainId, 0);
        }
    }

    /// <summary>netd could not start; true when the failure is reported through <see cref="Started"/> alone.</summary>
    internal bool Fail(Exception reason)
    {
        bool first = _started.TrySetException(reason);
        return first && ReportsStartFailures;
    }

    /// <summary>Disposes the switch this host made.</summary>
    public void Dispose() => Switch?.Dispose();
}
