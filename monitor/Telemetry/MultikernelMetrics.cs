using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Diagnostics;
using Multikernel.CpuDriver.Kernel;

namespace Multikernel.Monitor.Telemetry;

/// <summary>
/// The <c>Multikernel</c> meter: per core-pair URPC traffic, ring-full stalls and ring depth,
/// per-core busy/idle time, per-channel traffic of registered channels, monitor and capability
/// operations, and memory in use per domain.
/// </summary>
/// <remarks>
/// <para>Observable instruments are read when a reader collects, on the reader's thread, never a
/// core's: they read only the kernels' racy counters (<see cref="CoreCounters"/> uses volatile
/// reads; endpoint counts are single 64-bit fields written by one core), so a value may be a few
/// messages stale but is never torn and nothing on the cores waits.</para>
/// <para>Registration tables are per core, like everything a core writes: a channel or a domain is
/// registered (and unregistered) by its own core's thread into that core's table, in O(1) and
/// without a lock, so a bind or close on one core never touches a line another core writes. The
/// exporter reads every core's table racily (each slot is published with a release write).
/// Each core's tables are bounded (<c>maxChannels</c>, <c>maxDomains</c> per core); at the limit a
/// registration is refused and counted in <see cref="RejectedRegistrations"/>, and the kernel
/// carries on untouched.</para>
/// <para>Instrument names (unit): <c>multikernel.urpc.messages.sent</c>, <c>.received</c>
/// ({message}; tags <c>multikernel.core.source</c>, <c>multikernel.core.destination</c>),
/// <c>multikernel.urpc.stalls</c> ({stall}), <c>multikernel.channel.window_waits</c> ({wait}),
/// <c>multikernel.urpc.ring.depth</c> ({message}),
/// <c>multikernel.core.time</c> (s; <c>multikernel.core</c>, <c>multikernel.core.state</c> = busy|idle),
/// <c>multikernel.core.parks</c>, <c>multikernel.core.work_items</c>,
/// <c>multikernel.core.dropped_messages</c>, <c>multikernel.core.endpoints</c>,
/// <c>multikernel.channel.messages.sent</c> / <c>.received</c> / <c>multikernel.channel.queue.depth</c>
/// (<c>multikernel.channel</c>, <c>multikernel.core</c>, <c>multikernel.core.destination</c>),
/// <c>multikernel.monitor.operations</c>, <c>multikernel.capability.operations</c>
/// ({operation}; <c>multikernel.core</c>, the operation, <c>multikernel.outcome</c>) and
/// <c>multikernel.domain.memory.usage</c> (By; <c>multikernel.domain</c>, <c>multikernel.core</c>).</para>
/// </remarks>
public sealed class MultikernelMetrics : IDisposable
{
    /// <summary>Name of the meter.</summary>
    public const string MeterName = "Multikernel";

    /// <summary>Default bound on registered channels per core.</summary>
    public const int DefaultMaxChannels = 4096;

    /// <summary>Default bound on registered domains per core.</summary>
    public const int DefaultMaxDomains = 4096;

    private readonly IReadOnlyList<CoreKernel> _kernels;
    private readonly object[] _boxedCores;
    private readonly bool _ownsMeter;
    private readonly CoreTable<Endpoint>[] _channels;
    private readonly CoreTable<DomainMemory>[] _domains;
    private readonly Counter<long> _monitorOperations;
    private readonly Counter<long> _capabilityOperations;

    /// <summary>Creates the meter and its instruments over <paramref name="kernels"/> (index = core id).</summary>
    /// <param name="kernels">Every core's kernel, in core order.</param>
    /// <param name="meterFactory">Creates the meter (the host's factory); null creates a meter this object owns and disposes.</param>
    /// <param name="maxChannels">Bound on registered channels per core.</param>
    /// <param name="maxDomains">Bound on registered domain memory sources per core.</param>
    public MultikernelMetrics(IReadOnlyList<CoreKernel> kernels, IMeterFactory? meterFactory = null, int maxChannels = DefaultMaxChannels, int maxDomains = DefaultMaxDomains)
    {
        ArgumentNullException.ThrowIfNull(kernels);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxChannels, 0);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxDomains, 0);
        for (int i = 0; i < kernels.Count; i++)
        {
            if (kernels[i] is null || kernels[i].Id != i)
            {
                throw new ArgumentException($"kernels[{i}] must be the kernel of core {i}.", nameof(kernels));
            }
        }

        _kernels = kernels;
        _channels = new CoreTable<Endpoint>[kernels.Count];
        _domains = new CoreTable<DomainMemory>[kernels.Count];
        for (int i = 0; i < kernels.Count; i++)
        {
            _channels[i] = new CoreTable<Endpoint>(maxChannels);
            _domains[i] = new CoreTable<DomainMemory>(maxDomains);
        }

        _boxedCores = new object[kernels.Count];
        for (int i = 0; i < _boxedCores.Length; i++)
        {
            _boxedCores[i] = i;
        }

        if (meterFactory is not null)
        {
            Meter = meterFactory.Create(new MeterOptions(MeterName) { Version = ActivitySources.Version });
        }
        else
        {
            Meter = new Meter(MeterName, ActivitySources.Version);
            _ownsMeter = true;
        }

        Meter.CreateObservableCounter("multikernel.urpc.messages.sent", ObserveSent, "{message}", "Messages sent from a core to a core (same core: local deliveries).");
        Meter.CreateObservableCounter("multikernel.urpc.messages.received", ObserveReceived, "{message}", "Messages a core received from a core.");
        Meter.CreateObservableCounter("multikernel.urpc.stalls", ObserveStalls, "{stall}", "Sends that found the ring to a core full (or others already waiting) and stalled.");
        Meter.CreateObservableCounter("multikernel.channel.window_waits", () => PerPair(static (c, to) => c.WindowStalls(to), fromIsSource: true), "{wait}", "Sends from a core to a core that waited for their channel's credits (the receiver was behind).");
        Meter.CreateObservableGauge("multikernel.urpc.ring.depth", ObserveRingDepth, "{message}", "Messages in the ring from a core to a core.");
        Meter.CreateObservableCounter("multikernel.core.time", ObserveCoreTime, "s", "Time a core's kernel spent busy or idle.");
        Meter.CreateObservableCounter("multikernel.core.parks", () => PerCore(c => c.ParkCount), "{park}", "Times a core parked.");
        Meter.CreateObservableCounter("multikernel.core.work_items", () => PerCore(c => c.WorkItemsRun), "{item}", "Continuations and work items a core ran.");
        Meter.CreateObservableCounter("multikernel.core.dropped_messages", () => PerCore(c => c.Dropped), "{message}", "Messages that arrived for an endpoint that no longer exists.");
        Meter.CreateObservableGauge("multikernel.core.endpoints", ObserveEndpoints, "{endpoint}", "Channel endpoints in use on a core.");
        Meter.CreateObservableCounter("multikernel.channel.messages.sent", () => ObserveChannels(static e => e.SentCount), "{message}", "Messages sent through a registered channel end.");
        Meter.CreateObservableCounter("multikernel.channel.messages.received", () => ObserveChannels(static e => e.ReceivedCount), "{message}", "Messages received by a registered channel end.");
        Meter.CreateObservableGauge("multikernel.channel.queue.depth", () => ObserveChannels(static e => e.QueuedCount), "{message}", "Messages waiting to be read at a registered channel end.");
        Meter.CreateObservableUpDownCounter("multikernel.domain.memory.usage", ObserveDomainMemory, "By", "Memory a domain holds (RAM it was granted and has in use).");
        _monitorOperations = Meter.CreateCounter<long>("multikernel.monitor.operations", "{operation}", "Monitor protocol operations (bind, spawn, revoke, ...) by core and outcome.");
        _capabilityOperations = Meter.CreateCounter<long>("multikernel.capability.operations", "{operation}", "Capability operations (copy, retype, delete, revoke) by core and outcome.");
    }

    /// <summary>The meter (for readers and tests).</summary>
    public Meter Meter { get; }

    /// <summary>Registrations refused because a table was full (the sum of the cores' racy counts).</summary>
    public long RejectedRegistrations
    {
        get
        {
            long rejected = 0;
            for (int i = 0; i < _kernels.Count; i++)
            {
                rejected += _channels[i].Rejected + _domains[i].Rejected;
            }

            return rejected;
        }
    }

    /// <summary>True when some listener collects the operation counters (tests: the no-listener path is only measurable without one).</summary>
    internal bool OperationCountersEnabled => _monitorOperations.Enabled || _capabilityOperations.Enabled;

    /// <summary>Channels registered now (the sum of the cores' racy counts).</summary>
    public int ChannelCount
    {
        get
        {
            int count = 0;
            foreach (CoreTable<Endpoint> table in _channels)
            {
                count += table.Count;
            }

            return count;
        }
    }

    // ------------------------------------------------------------------ registration (the owning core's thread)

    /// <summary>
    /// Reports <paramref name="endpoint"/>'s traffic and queue depth from now on. Called on the
    /// endpoint's core's thread (the monitor does at bind), or before that core starts; O(1),
    /// no lock. False, and counted, when that core has <c>maxChannels</c> registered already;
    /// registering twice is a no-op that returns true.
    /// </summary>
    /// <exception cref="InvalidOperationException">Called from another thread while the core runs.</exception>
    public bool TryRegisterChannel(Endpoint endpoint)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        return TableOf(_channels, endpoint.Core).TryAdd(endpoint) >= 0;
    }

    /// <summary>Stops reporting <paramref name="endpoint"/> (its core calls this when it is closed). False when it was not registered. Same thread rule as <see cref="TryRegisterChannel"/>.</summary>
    public bool UnregisterChannel(Endpoint endpoint)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        return TableOf(_channels, endpoint.Core).Remove(endpoint);
    }

    /// <summary>
    /// Reports the memory a domain holds. <paramref name="bytesInUse"/> is called on the metric
    /// reader's thread, so it must read a racy counter (a volatile long the domain's core updates),
    /// never walk the core's structures. Called on <paramref name="core"/>'s thread (or before it
    /// starts), like disposing the registration when the domain exits. Returns null, and counts it,
    /// when that core's table is full.
    /// </summary>
    /// <exception cref="InvalidOperationException">Called from another thread while the core runs.</exception>
    public IDisposable? TryRegisterDomainMemory(string domain, int core, Func<long> bytesInUse)
    {
        ArgumentException.ThrowIfNullOrEmpty(domain);
        ArgumentNullException.ThrowIfNull(bytesInUse);
        CheckCore(core);
        var registration = new DomainMemory(this, domain, core, bytesInUse);
        return TableOf(_domains, core).TryAdd(registration) >= 0 ? registration : null;
    }

    private CoreTable<T> TableOf<T>(CoreTable<T>[] tables, int core)
        where T : class
    {
        CheckCore(core);
        if (!_kernels[core].IsOwnerThread)
        {
            ThrowNotOwner(core);
        }

        return tables[core];
    }

    private static void ThrowNotOwner(int core) =>
        throw new InvalidOperationException($"Metrics registrations for core {core} are made on core {core}'s thread (each core owns its own table).");

    // ------------------------------------------------------------------ operations (core threads)

    /// <summary>Counts one monitor operation (<see cref="ProtocolSpanNames"/>) on <paramref name="core"/>. Allocation-free.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void RecordMonitorOperation(int core, string operation, string outcome = "ok")
    {
        if (_monitorOperations.Enabled)
        {
            Record(_monitorOperations, TelemetryTags.MonitorOperation, core, operation, outcome);
        }
    }

    /// <summary>Counts one capability operation (copy, retype, delete, revoke) on <paramref name="core"/>. Allocation-free.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void RecordCapabilityOperation(int core, string operation, string outcome = "ok")
    {
        if (_capabilityOperations.Enabled)
        {
            Record(_capabilityOperations, TelemetryTags.CapabilityOperation, core, operation, outcome);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void Record(Counter<long> counter, string operationTag, int core, string operation, string outcome)
    {
        CheckCore(core);
        counter.Add(
            1,
            new KeyValuePair<string, object?>(TelemetryTags.Core, _boxedCores[core]),
            new KeyValuePair<string, object?>(operationTag, operation),
            new KeyValuePair<string, object?>(TelemetryTags.Outcome, outcome));
    }

    /// <summary>Disposes the meter when this object created it (a factory's meters belong to the factory).</summary>
    public void Dispose()
    {
        if (_ownsMeter)
        {
            Meter.Dispose();
        }
    }

    // ------------------------------------------------------------------ observation (reader thread)

    private IEnumerable<Measurement<long>> ObserveSent() => PerPair(static (c, to) => c.Sent(to), fromIsSource: true);

    private IEnumerable<Measurement<long>> ObserveReceived() => PerPair(static (c, from) => c.Received(from), fromIsSource: false);

    private IEnumerable<Measurement<long>> ObserveStalls() => PerPair(static (c, to) => c.Stalls(to), fromIsSource: true);

    /// <summary>
    /// One measurement per ordered core pair with a non-zero count. <paramref name="fromIsSource"/>:
    /// the kernel whose counter is read is the source (sent, stalls) or the destination (received).
    /// </summary>
    private List<Measurement<long>> PerPair(Func<CoreCounters, int, long> read, bool fromIsSource)
    {
        var measurements = new List<Measurement<long>>();
        for (int k = 0; k < _kernels.Count; k++)
        {
            CoreCounters counters = _kernels[k].Counters;
            for (int other = 0; other < _kernels.Count; other++)
            {
                long value = read(counters, other);
                if (value == 0)
                {
                    continue; // keeps the series count to the pairs that talk
                }

                (int source, int destination) = fromIsSource ? (k, other) : (other, k);
                measurements.Add(new Measurement<long>(value, Pair(source, destination)));
            }
        }

        return measurements;
    }

    private List<Measurement<int>> ObserveRingDepth()
    {
        var measurements = new List<Measurement<int>>();
        for (int k = 0; k < _kernels.Count; k++)
        {
            for (int other = 0; other < _kernels.Count; other++)
            {
                if (other != k)
                {
                    measurements.Add(new Measurement<int>(_kernels[k].OutboundDepth(other), Pair(k, other)));
                }
            }
        }

        return measurements;
    }

    private List<Measurement<double>> ObserveCoreTime()
    {
        var measurements = new List<Measurement<double>>(_kernels.Count * 2);
        foreach (CoreKernel kernel in _kernels)
        {
            double frequency = kernel.Time.TimestampFrequency;
            measurements.Add(new Measurement<double>(kernel.Counters.Busy / frequency, CoreTag(kernel.Id), new(TelemetryTags.CoreState, "busy")));
            measurements.Add(new Measurement<double>(kernel.Counters.Idle / frequency, CoreTag(kernel.Id), new(TelemetryTags.CoreState, "idle")));
        }

        return measurements;
    }

    private List<Measurement<long>> PerCore(Func<CoreCounters, long> read)
    {
        var measurements = new List<Measurement<long>>(_kernels.Count);
        foreach (CoreKernel kernel in _kernels)
        {
            measurements.Add(new Measurement<long>(read(kernel.Counters), CoreTag(kernel.Id)));
        }

        return measurements;
    }

    private List<Measurement<int>> ObserveEndpoints()
    {
        var measurements = new List<Measurement<int>>(_kernels.Count);
        foreach (CoreKernel kernel in _kernels)
        {
            measurements.Add(new Measurement<int>(kernel.EndpointCount, CoreTag(kernel.Id)));
        }

        return measurements;
    }

    private List<Measurement<long>> ObserveChannels(Func<Endpoint, long> read)
    {
        var channels = new List<Endpoint>();
        foreach (CoreTable<Endpoint> table in _channels)
        {
            table.CopyTo(channels);
        }

        var measurements = new List<Measurement<long>>(channels.Count);
        foreach (Endpoint endpoint in channels)
        {
            // Racy by design: single-writer fields of the endpoint's core, read without a fence.
            measurements.Add(new Measurement<long>(
                read(endpoint),
                new(TelemetryTags.Channel, endpoint.Name),
                CoreTag(endpoint.Core),
                new(TelemetryTags.CoreDestination, endpoint.RemoteCore >= 0 && endpoint.RemoteCore < _boxedCores.Length ? _boxedCores[endpoint.RemoteCore] : endpoint.RemoteCore)));
        }

        return measurements;
    }

    private List<Measurement<long>> ObserveDomainMemory()
    {
        var domains = new List<DomainMemory>();
        foreach (CoreTable<DomainMemory> table in _domains)
        {
            table.CopyTo(domains);
        }

        var measurements = new List<Measurement<long>>(domains.Count);
        foreach (DomainMemory domain in domains)
        {
            measurements.Add(new Measurement<long>(domain.Read(), new(TelemetryTags.Domain, domain.Name), CoreTag(domain.Core)));
        }

        return measurements;
    }

    private KeyValuePair<string, object?> CoreTag(int core) => new(TelemetryTags.Core, _boxedCores[core]);

    private KeyValuePair<string, object?>[] Pair(int source, int destination) =>
        [new(TelemetryTags.CoreSource, _boxedCores[source]), new(TelemetryTags.CoreDestination, _boxedCores[destination])];

    private void CheckCore(int core)
    {
        if ((uint)core >= (uint)_boxedCores.Length)
        {
            ThrowBadCore(core);
        }
    }

    private void ThrowBadCore(int core) =>
        throw new ArgumentOutOfRangeException(nameof(core), core, $"Core must be between 0 and {_boxedCores.Length - 1}.");

    private sealed class DomainMemory(MultikernelMetrics owner, string name, int core, Func<long> read) : IDisposable
    {
        public string Name { get; } = name;

        public int Core { get; } = core;

        public long Read() => read();

        public void Dispose() => owner.TableOf(owner._domains, Core).Remove(this);
    }

    /// <summary>
    /// One core's registrations: written only by that core's thread (a slot array, a stack of
    /// free slots and an index, all O(1)), read by the exporter without a lock — each slot is
    /// published with a release write and read with an acquire read, so the reader sees either
    /// nothing or a whole registration, at worst one collection late.
    /// </summary>
    private sealed class CoreTable<T>
        where T : class
    {
        private readonly T?[] _slots;
        private readonly int[] _free;
        private readonly Dictionary<T, int> _index = new(ReferenceEqualityComparer.Instance);
        private int _freeCount;
        private int _used; // high-water mark: the reader scans [0, _used)
        private int _count;
        private long _rejected;

        public CoreTable(int capacity)
        {
            _slots = new T?[capacity];
            _free = new int[capacity];
        }

        public int Count => Volatile.Read(ref _count);

        public long Rejected => Volatile.Read(ref _rejected);

        /// <summary>The item's slot, or -1 (counted) when full.</summary>
        public int TryAdd(T item)
        {
            if (_index.TryGetValue(item, out int existing))
            {
                return existing;
            }

            int slot;
            if (_freeCount > 0)
            {
                slot = _free[--_freeCount];
            }
            else if (_used < _slots.Length)
            {
                slot = _used;
                Volatile.Write(ref _used, _used + 1);
            }
            else
            {
                Volatile.Write(ref _rejected, _rejected + 1);
                return -1;
            }

            _index.Add(item, slot);
            Volatile.Write(ref _slots[slot], item);
            Volatile.Write(ref _count, _count + 1);
            return slot;
        }

        public bool Remove(T item)
        {
            if (!_index.Remove(item, out int slot))
            {
                return false;
            }

            Volatile.Write(ref _slots[slot], null);
            _free[_freeCount++] = slot;
            Volatile.Write(ref _count, _count - 1);
            return true;
        }

        /// <summary>The exporter's racy read.</summary>
        public void CopyTo(List<T> into)
        {
            int used = Volatile.Read(ref _used);
            for (int i = 0; i < used; i++)
            {
                if (Volatile.Read(ref _slots[i]) is { } item)
                {
                    into.Add(item);
                }
            }
        }
    }
}
