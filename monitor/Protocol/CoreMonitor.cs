using System.Diagnostics;
using Multikernel.CpuDriver.Capabilities;
using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Memory;
using Multikernel.CpuDriver.Diagnostics;
using Multikernel.CpuDriver.Domains;
using Multikernel.CpuDriver.Kernel;
using Multikernel.CpuDriver.Urpc;
using Multikernel.Monitor.Hosting;

namespace Multikernel.Monitor.Protocol;

/// <summary>
/// The monitor of one core: a privileged service that runs on the core's own scheduler and
/// talks to the other monitors only through its links. Core 0's monitor boots the other cores,
/// sequences the name table (which every monitor replicates by message) and runs the two-phase
/// shutdown. Every method runs on this core's thread.
/// </summary>
internal sealed class CoreMonitor
{
    private readonly MultikernelRuntime _runtime;
    private readonly CoreKernel _kernel;
    private readonly MonitorLink?[] _links;
    private readonly Dictionary<string, int> _names = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ServiceListener> _exports = new(StringComparer.Ordinal);
    private readonly Dictionary<uint, TaskCompletionSource<Message>> _pending = [];
    private uint _nextRequest;
    private bool _shuttingDown;

    // Core 0 only.
    private int _hellos;
    private int _stoppedReports;
    private int _abandonedDomains;
    private Activity? _shutdownSpan;
    private readonly List<DomainMemoryGauge> _memoryGauges = [];
    private bool _sampling;
    private Activity? _bootSpan;

    private readonly CoreCapabilities _capabilities;
    private readonly CSpace _space;
    private int _nicSlot;
    private Domain? _nicHolder;
    private int _nicHolderSlot = -1;
    private readonly int _ramSlot;
    private readonly Dictionary<ulong, TaskCompletionSource> _cleanedUp = [];

    public CoreMonitor(MultikernelRuntime runtime, int core, CoreCapabilities capabilities, FrameRange share)
    {
        _runtime = runtime;
        // The monitor holds this core's Kernel capability and all of its RAM; domains get RAM
        // retyped from it at spawn and give it back when they end (billed buffers, seed 002).
        _capabilities = capabilities;
        _kernel = runtime.Machine.Kernels[core];
        // Capability operations run on this core's kernel thread only; transfers reach the
        // domain that owns the receiving end of a channel.
        capabilities.AttachKernel(_kernel);
        capabilities.ChannelOwner = FindChannelOwner;
        _space = capabilities.CreateDomain("monitor");
        int kernelSlot = capabilities.CreateKernelCapability(_space);
        FrameRange ram = capabilities.RamShare;
        _ramSlot = ram.FrameCount > 0 ? capabilities.CreateRoot(_space, kernelSlot, _space, CapabilityType.Ram, ram.BaseFrame, ram.FrameCount) : -1;
        // The Nic core's monitor makes the machine's one Nic at boot (it covers the device region)
        // and holds it until the NIC program is spawned here; then it moves to that domain alone.
        _nicSlot = capabilities.DeviceRegion.FrameCount > 0 ? capabilities.CreateRoot(_space, kernelSlot, _space, CapabilityType.Nic) : -1;
        Core = core;
        _links = new MonitorLink?[runtime.Machine.Cores];
        for (int peer = 0; peer < _links.Length; peer++)
        {
            if (peer != core)
            {
                _links[peer] = new MonitorLink(runtime.Machine.MonitorLink(core, peer), runtime.Options.MonitorOutbox, runtime.Options.MaxPendingRequests + 2 * runtime.Machine.Cores);
            }
        }
    }

    public int Core { get; }

    public CoreKernel Kernel => _kernel;

    // The domain holding this core's end of a channel (endpoint id, generation included) receives what is sent on it.
    private CSpace? FindChannelOwner(uint endpoint)
    {
        foreach (Domain domain in _kernel.Domains)
        {
            foreach (Endpoint e in domain.Endpoints)
            {
                if (e.Id == endpoint)
                {
                    return domain.Capabilities;
                }
            }
        }

        return null;
    }

    public bool IsShuttingDown => _shuttingDown;

    private int Cores => _links.Length;

    // ------------------------------------------------------------------ boot

    /// <summary>Runs first on every core: listen on every link; core 0 then starts the others.</summary>
    public void Start()
    {
        for (int peer = 0; peer < Cores; peer++)
        {
            if (_links[peer] is { } link)
            {
                _ = ReceiveLoopAsync(peer, link.Endpoint);
            }
        }

        if (Core == 0)
        {
            _bootSpan = MessageTracing.StartProtocol(ProtocolSpanNames.Boot, Core);
            // Start() runs straight from the kernel loop: the span must not stay the core's
            // ambient current span, or every domain started later would join the boot trace.
            MessageTracing.Detach(_bootSpan);
            if (Cores == 1)
            {
                EndBoot();
                return;
            }

            for (int k = 1; k < Cores; k++)
            {
                // Holding the Kernel capability, core 0 starts the other kernels; each one's
                // monitor says Hello over the link the boot loader prepared.
                _runtime.Machine.StartCore(k);
            }
        }
        else
        {
            Send(0, Message.Create((ushort)MonitorMessage.Hello, (ulong)Core));
        }
    }

    private void EndBoot()
    {
        _bootSpan?.SetTag("multikernel.cores", Cores);
        _bootSpan?.Dispose();
        _bootSpan = null;
        _runtime.Metrics.RecordMonitorOperation(Core, ProtocolSpanNames.Boot);
        _runtime.OnBooted();
    }

    private async Task ReceiveLoopAsync(int peer, Endpoint endpoint)
    {
        while (true)
        {
            Message message;
            try
            {
                message = await endpoint.ReadAsync();
            }
            catch (System.Threading.Channels.ChannelClosedException)
            {
                return;
            }

            try
            {
                Handle(peer, in message);
            }
#pragma warning disable CA1031 // one bad request must not stop the monitor
            catch (Exception ex)
#pragma warning restore CA1031
            {
                _runtime.ReportMonitorError(Core, peer, ex);
            }
        }
    }

    // Replies and protocol notices: a peer depends on them, so they use the link's reserve; a
    // refusal (a faulted link, or a peer far past its own request bound) is reported, not thrown
    // into the handler that answers someone else.
    private void Send(int core, in Message message)
    {
        MonitorLink link = _links[core]!;
        if (!link.TrySend(in message, LinkTraffic.Reply))
        {
            _runtime.ReportMonitorError(Core, core, new MonitorException(MonitorStatus.Overloaded, $"Monitor {Core} could not send message 0x{message.Type:x4} to core {core}: {link.RefusalReason()}."));
        }
    }

    /// <summary>
    /// Sends request <paramref name="id"/> to <paramref name="core"/> and waits for its reply: at
    /// most <c>MonitorRequestTimeout</c>, or until <paramref name="cancellationToken"/>. The request
    /// fails at once (<see cref="MonitorStatus.Overloaded"/>) when the link refuses it. A reply that
    /// comes after the caller gave up finds no pending entry and is ignored.
    /// </summary>
    private async Task<Message> RequestAsync(int core, uint id, Message request, Task<Message> reply, string what, CancellationToken cancellationToken)
    {
        MonitorLink link = _links[core]!;
        if (!link.TrySend(in request, LinkTraffic.Request))
        {
            _pending.Remove(id);
            throw new MonitorException(MonitorStatus.Overloaded, $"Monitor {Core} could not send the {what} request to core {core}: {link.RefusalReason()}.");
        }

        TimeSpan timeout = _runtime.Options.MonitorRequestTimeout;
        try
        {
            // The await resumes on this core (its synchronization context), whichever thread the timer fired on.
            return await reply.WaitAsync(timeout, _runtime.Time, cancellationToken);
        }
        catch (TimeoutException)
        {
            _pending.Remove(id);
            throw new MonitorException(MonitorStatus.TimedOut, $"Core {core}'s monitor did not answer the {what} request within {timeout.TotalSeconds:0.###} s (MonitorRequestTimeout).");
        }
        catch (OperationCanceledException)
        {
            _pending.Remove(id);
            throw;
        }
    }

    private void Broadcast(in Message message)
    {
        for (int k = 0; k < Cores; k++)
        {
            if (k != Core)
            {
                Send(k, in message);
            }
        }
    }

    private void Handle(int from, in Message m)
    {
        switch ((MonitorMessage)m.Type)
        {
            case MonitorMessage.Hello:
                if (++_hellos == Cores - 1)
                {
                    Broadcast(Message.Create((ushort)MonitorMessage.Welcome, (ulong)Cores));
                    EndBoot();
                }

                break;
            case MonitorMessage.Welcome:
                break;
            case MonitorMessage.Export:
                {
                    using Activity? span = MessageTracing.StartProtocol(ProtocolSpanNames.Export, Core, in m);
                    string name = ServiceName.Read(in m);
                    MonitorStatus status = RegisterName(name, from);
                    Send(from, Message.Create((ushort)MonitorMessage.ExportReply, m.Word2, (ulong)status));
                    break;
                }

            case MonitorMessage.NameAdded:
                _names[ServiceName.Read(in m)] = (int)m.Word2;
                break;
            case MonitorMessage.Unexport:
                RemoveName(ServiceName.Read(in m));
                break;
            case MonitorMessage.NameRemoved:
                _names.Remove(ServiceName.Read(in m));
                break;
            case MonitorMessage.Lookup:
                {
                    string name = ServiceName.Read(in m);
                    ulong core = _names.TryGetValue(name, out int c) ? (ulong)c : ulong.MaxValue;
                    Send(from, Message.Create((ushort)MonitorMessage.LookupReply, m.Word2, core));
                    break;
                }

            case MonitorMessage.Bind:
                {
                    using Activity? span = MessageTracing.StartProtocol(ProtocolSpanNames.Bind, Core, in m);
                    string name = ServiceName.Read(in m);
                    // Word2: request id (16 bits) | client's capability domain (16) | client endpoint (32).
                    (MonitorStatus status, uint serverEndpoint, int serverDomain) = AcceptBind(name, from, (uint)m.Word2, (int)((m.Word2 >> 32) & 0xFFFF));
                    Send(from, Message.Create((ushort)MonitorMessage.BindReply, m.Word2 >> 48, (ulong)status | ((ulong)(uint)serverDomain << 32), serverEndpoint));
                    break;
                }

            case MonitorMessage.Spawn:
                {
                    using Activity? span = MessageTracing.StartProtocol(ProtocolSpanNames.Spawn, Core, in m);
                    (MonitorStatus status, ulong domainId) = SpawnLocal((int)m.Word0, m.Word1);
                    Send(from, Message.Create((ushort)MonitorMessage.SpawnReply, m.Word2, (ulong)status, domainId));
                    break;
                }

            case MonitorMessage.ExportReply:
            case MonitorMessage.LookupReply:
            case MonitorMessage.BindReply:
            case MonitorMessage.SpawnReply:
                if (_pending.Remove((uint)m.Word0, out TaskCompletionSource<Message>? waiter))
                {
                    waiter.SetResult(m);
                }

                break;
            case MonitorMessage.StopDomains:
                {
                    using Activity? span = MessageTracing.StartProtocol(ProtocolSpanNames.Shutdown, Core, in m);
                    _ = StopDomainsAsync();
                    break;
                }
            case MonitorMessage.DomainsStopped:
                OnDomainsStopped((int)m.Word0);
                break;
            case MonitorMessage.Halt:
                _kernel.Halt();
                break;
            default:
                throw new InvalidDataException($"Monitor {Core} got unknown message type 0x{m.Type:x4} from core {from}.");
        }
    }

    private (uint Id, Task<Message> Reply) NewRequest()
    {
        if (_pending.Count >= _runtime.Options.MaxPendingRequests)
        {
            throw new MonitorException(MonitorStatus.NoResources, $"Monitor {Core} has {_pending.Count} requests in flight (MaxPendingRequests = {_runtime.Options.MaxPendingRequests}).");
        }

        // Ids are 16 bits (a bind packs one beside a domain and an endpoint id); skip live ones.
        uint id;
        do
        {
            _nextRequest = (_nextRequest % 0xFFFF) + 1;
            id = _nextRequest;
        }
        while (_pending.ContainsKey(id));
        var tcs = new TaskCompletionSource<Message>();
        _pending.Add(id, tcs);
        return (id, tcs.Task);
    }

    // ------------------------------------------------------------------ name service

    private MonitorStatus RegisterName(string name, int core)
    {
        // Core 0 sequences the name table; every other monitor holds a replica.
        if (_shuttingDown)
        {
            return MonitorStatus.ShuttingDown;
        }

        if (!_names.TryAdd(name, core))
        {
            return MonitorStatus.Duplicate;
        }

        var added = Message.Create((ushort)MonitorMessage.NameAdded, 0, 0, (ulong)core);
        ServiceName.Write(ref added, name);
        added.Word2 = (ulong)core;
        Broadcast(in added);
        return MonitorStatus.Ok;
    }

    private void RemoveName(string name)
    {
        if (_names.Remove(name))
        {
            var removed = Message.Create((ushort)MonitorMessage.NameRemoved);
            ServiceName.Write(ref removed, name);
            Broadcast(in removed);
        }
    }

    public Task<ServiceListener> ExportAsync(Domain domain, string name, int backlog, CancellationToken cancellationToken = default) =>
        TracedAsync(ProtocolSpanNames.Export, _ => ExportCoreAsync(domain, name, backlog, cancellationToken));

    // Every monitor request a domain makes: a client span for it, and its outcome counted.
    private async Task<T> TracedAsync<T>(string operation, Func<Activity?, Task<T>> request)
    {
        using Activity? span = MessageTracing.StartProtocol(operation, Core, ActivityKind.Client);
        try
        {
            T result = await request(span);
            _runtime.Metrics.RecordMonitorOperation(Core, operation);
            return result;
        }
        catch (Exception ex)
        {
            span?.SetStatus(ActivityStatusCode.Error, ex.Message);
            _runtime.Metrics.RecordMonitorOperation(Core, operation, ex is MonitorException me ? me.Status.ToString() : "error");
            throw;
        }
    }

    private async Task<ServiceListener> ExportCoreAsync(Domain domain, string name, int backlog, CancellationToken cancellationToken)
    {
        ServiceName.Validate(name);
        cancellationToken.ThrowIfCancellationRequested();
        if (backlog < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(backlog), backlog, "The accept backlog must be at least 1.");
        }

        if (_exports.ContainsKey(name))
        {
            throw new MonitorException(MonitorStatus.Duplicate, $"The service '{name}' is already exported.");
        }

        MonitorStatus status;
        if (Core == 0)
        {
            status = RegisterName(name, Core);
        }
        else
        {
            (uint id, Task<Message> reply) = NewRequest();
            var request = Message.Create((ushort)MonitorMessage.Export, 0, 0, id);
            ServiceName.Write(ref request, name);
            request.Word2 = id;
            Message answer = await RequestAsync(0, id, request, reply, ProtocolSpanNames.Export, cancellationToken);
            status = (MonitorStatus)answer.Word1;
            if (status == MonitorStatus.Ok)
            {
                _names[name] = Core;
            }
        }

        if (status != MonitorStatus.Ok)
        {
            throw new MonitorException(status, status == MonitorStatus.Duplicate
                ? $"The service '{name}' is already exported by another domain."
                : $"Exporting '{name}' failed: {status}.");
        }

        var listener = new ServiceListener(this, name, domain, backlog);
        _exports.Add(name, listener);
        return listener;
    }

    public void Unexport(ServiceListener listener)
    {
        if (!_exports.Remove(listener.Name))
        {
            return;
        }

        if (Core == 0)
        {
            RemoveName(listener.Name);
        }
        else if (!_shuttingDown)
        {
            _names.Remove(listener.Name);
            var request = Message.Create((ushort)MonitorMessage.Unexport);
            ServiceName.Write(ref request, listener.Name);
            Send(0, in request);
        }
    }

    public Task<DomainChannel> BindAsync(Domain domain, string name, CancellationToken cancellationToken = default) =>
        TracedAsync(ProtocolSpanNames.Bind, async _ =>
        {
            DomainChannel channel = await BindCoreAsync(domain, name, cancellationToken);
            _runtime.Metrics.TryRegisterChannel(channel.Endpoint);
            return channel;
        });

    private async Task<DomainChannel> BindCoreAsync(Domain domain, string name, CancellationToken cancellationToken)
    {
        ServiceName.Validate(name);
        cancellationToken.ThrowIfCancellationRequested();
        if (!_names.TryGetValue(name, out int serverCore))
        {
            if (Core == 0)
            {
                throw new MonitorException(MonitorStatus.NotFound, $"No domain exports the service '{name}'.");
            }

            // The replica may lag the sequencer: ask core 0.
            (uint lookupId, Task<Message> lookupReply) = NewRequest();
            var lookup = Message.Create((ushort)MonitorMessage.Lookup);
            ServiceName.Write(ref lookup, name);
            lookup.Word2 = lookupId;
            Message answer = await RequestAsync(0, lookupId, lookup, lookupReply, "lookup", cancellationToken);
            if (answer.Word1 == ulong.MaxValue)
            {
                throw new MonitorException(MonitorStatus.NotFound, $"No domain exports the service '{name}'.");
            }

            serverCore = (int)answer.Word1;
        }

        // Both ends carry the service's name: it is the channel's messaging.destination.name, the
        // same on a send span and on its process span.
        Endpoint endpoint = domain.CreateEndpoint(name);
        int clientDomain = domain.Capabilities?.Id ?? -1;
        int serverDomain;
        if (serverCore == Core)
        {
            (MonitorStatus status, uint serverEndpoint, serverDomain) = AcceptBind(name, Core, endpoint.Id, clientDomain);
            if (status != MonitorStatus.Ok)
            {
                endpoint.Close();
                throw BindFailed(name, status);
            }

            endpoint.Connect(Core, serverEndpoint);
        }
        else
        {
            (uint id, Task<Message> reply) = NewRequest();
            var request = Message.Create((ushort)MonitorMessage.Bind);
            ServiceName.Write(ref request, name);
            request.Word2 = ((ulong)id << 48) | ((ulong)(ushort)clientDomain << 32) | endpoint.Id;
            Message answer;
            try
            {
                answer = await RequestAsync(serverCore, id, request, reply, ProtocolSpanNames.Bind, cancellationToken);
            }
            catch
            {
                endpoint.Close();
                throw;
            }

            var status = (MonitorStatus)(uint)answer.Word1;
            if (status != MonitorStatus.Ok)
            {
                endpoint.Close();
                throw BindFailed(name, status);
            }

            serverDomain = (int)(answer.Word1 >> 32);
            endpoint.Connect(serverCore, (uint)answer.Word2);
        }

        return new DomainChannel(endpoint, name, domain, serverDomain);
    }

    private static MonitorException BindFailed(string name, MonitorStatus status) => new(status, status switch
    {
        MonitorStatus.NotFound => $"No domain exports the service '{name}'.",
        MonitorStatus.Refused => $"The service '{name}' refused the bind: its accept backlog is full.",
        MonitorStatus.NoResources => $"The server core of '{name}' has no free endpoint.",
        _ => $"Binding to '{name}' failed: {status}.",
    });

    private (MonitorStatus Status, uint ServerEndpoint, int ServerDomain) AcceptBind(string name, int clientCore, uint clientEndpoint, int clientDomain)
    {
        if (_shuttingDown)
        {
            return (MonitorStatus.ShuttingDown, 0, -1);
        }

        if (!_exports.TryGetValue(name, out ServiceListener? listener))
        {
            return (MonitorStatus.NotFound, 0, -1);
        }

        Endpoint endpoint;
        try
        {
            endpoint = listener.Domain.CreateEndpoint(name);
        }
        catch (InvalidOperationException)
        {
            return (MonitorStatus.NoResources, 0, -1);
        }

        endpoint.Connect(clientCore, clientEndpoint);
        if (!listener.TryEnqueue(endpoint, clientDomain == 0xFFFF ? -1 : clientDomain))
        {
            endpoint.Close();
            return (MonitorStatus.Refused, 0, -1);
        }

        _runtime.Metrics.TryRegisterChannel(endpoint);
        return (MonitorStatus.Ok, endpoint.Id, listener.Domain.Capabilities?.Id ?? -1);
    }

    // ------------------------------------------------------------------ spawn

    public Task<ulong> SpawnAsync(int core, string program, ulong argument, CancellationToken cancellationToken = default) =>
        TracedAsync(ProtocolSpanNames.Spawn, span =>
        {
            span?.SetTag("multikernel.program", program);
            span?.SetTag(TelemetryTags.CoreDestination, core);
            return SpawnCoreAsync(core, program, argument, cancellationToken);
        });

    private async Task<ulong> SpawnCoreAsync(int core, string program, ulong argument, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if ((uint)core >= (uint)Cores)
        {
            throw new ArgumentOutOfRangeException(nameof(core), core, $"There are {Cores} cores (0..{Cores - 1}).");
        }

        int index = _runtime.Programs.IndexOf(program);
        if (index < 0)
        {
            throw new MonitorException(MonitorStatus.UnknownProgram, $"No program named '{program}' is registered (known: {string.Join(", ", _runtime.Programs.Names)}).");
        }

        MonitorStatus status;
        ulong domainId;
        if (core == Core)
        {
            (status, domainId) = SpawnLocal(index, argument);
        }
        else
        {
            (uint id, Task<Message> reply) = NewRequest();
            Message answer = await RequestAsync(core, id, Message.Create((ushort)MonitorMessage.Spawn, (ulong)index, argument, id), reply, ProtocolSpanNames.Spawn, cancellationToken);
            (status, domainId) = ((MonitorStatus)answer.Word1, answer.Word2);
        }

        if (status != MonitorStatus.Ok)
        {
            throw new MonitorException(status, $"Spawning '{program}' on core {core} failed: {status}.");
        }

        return domainId;
    }

    private (MonitorStatus Status, ulong DomainId) SpawnLocal(int programIndex, ulong argument)
    {
        if (_shuttingDown)
        {
            return (MonitorStatus.ShuttingDown, 0);
        }

        if ((uint)programIndex >= (uint)_runtime.Programs.Count)
        {
            return (MonitorStatus.UnknownProgram, 0);
        }

        DomainProgram program = _runtime.Programs[programIndex];
        return StartDomainLocal(program.Name, program.Main, argument);
    }

    /// <summary>
    /// Starts a domain on this core outside the program registry (the host's per-core domain,
    /// one shard of a sharded service): its own CSpace and RAM budget like a spawned program.
    /// Core thread only.
    /// </summary>
    public (MonitorStatus Status, ulong DomainId) StartDomainLocal(string name, Func<DomainContext, Task> main, ulong argument)
    {
        if (_shuttingDown)
        {
            return (MonitorStatus.ShuttingDown, 0);
        }

        if (_kernel.Domains.Count >= _kernel.Options.MaxDomainsPerCore)
        {
            return (MonitorStatus.NoResources, 0);
        }

        CSpace space;
        int ramSlot = -1;
        try
        {
            space = _capabilities.CreateDomain(name);
        }
        catch (CapabilityException)
        {
            return (MonitorStatus.NoResources, 0);
        }

        int frames = _runtime.Options.DomainFrames;
        if (frames > 0)
        {
            try
            {
                // The domain's budget: RAM retyped from the monitor's share and moved to it.
                ramSlot = _space.MoveTo(_space.Retype(_ramSlot, CapabilityType.Ram, frames), space);
            }
            catch (CapabilityException)
            {
                _capabilities.DestroyDomain(space);
                return (MonitorStatus.OutOfMemory, 0);
            }
        }

        int nicSlot = -1;
        if (_nicSlot >= 0 && string.Equals(name, _runtime.Options.NicProgram, StringComparison.Ordinal))
        {
            nicSlot = _space.MoveTo(_nicSlot, space); // one holder: a later spawn finds no Nic here
            _nicSlot = -1;
        }

        Domain domain = _kernel.StartDomain(name, d => main(new DomainContext(d, this, argument, nicSlot)), d => d.AttachCapabilities(space, ramSlot));
        if (nicSlot >= 0)
        {
            _nicHolder = domain;
            _nicHolderSlot = nicSlot;
        }

        _cleanedUp[domain.Id] = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var gauge = new DomainMemoryGauge(space, frames);
        _memoryGauges.Add(gauge);
        gauge.Registration = _runtime.Metrics.TryRegisterDomainMemory(domain.ToString(), Core, gauge.Read);
        if (!_sampling)
        {
            _sampling = true;
            _ = SampleMemoryAsync();
        }

        _ = ObserveAsync(domain, gauge);
        return (MonitorStatus.Ok, domain.Id);
    }

    private async Task ObserveAsync(Domain domain, DomainMemoryGauge gauge)
    {
        try
        {
            await domain.Completion;
        }
        catch (OperationCanceledException) when (domain.Stopping.IsCancellationRequested)
        {
            // stopped on request: a normal end
        }
#pragma warning disable CA1031 // a domain's fault is reported, never rethrown into the kernel
        catch (Exception ex)
#pragma warning restore CA1031
        {
            _runtime.ReportDomainFault(domain, ex);
        }

        foreach (ServiceListener listener in _exports.Values.Where(l => l.Domain == domain).ToList())
        {
            listener.Dispose();
        }

        _memoryGauges.Remove(gauge);
        gauge.Registration?.Dispose();
        if (domain.Capabilities is { IsDestroyed: false } space)
        {
            if (ReferenceEquals(domain, _nicHolder))
            {
                await ReclaimNicAsync(space);
            }

            // Everything the domain held goes: its RAM returns to the monitor, copies it passed
            // on stay with their holders only if derived elsewhere. Nothing is orphaned.
            await DestroyCapabilitiesAsync(space);
        }

        if (_cleanedUp.Remove(domain.Id, out TaskCompletionSource? cleanedUp))
        {
            cleanedUp.TrySetResult();
        }
    }

    /// <summary>
    /// The NIC program ended (or crashed): the Nic comes back to this monitor, and a revoke of it
    /// takes every DevFrame derived from it from wherever it went, so no domain keeps a window
    /// into device memory the next NIC program will receive into (seed 003: netd restarts). A
    /// later spawn of the NIC program gets the Nic again.
    /// </summary>
    private async Task ReclaimNicAsync(CSpace holder)
    {
        int slot = _nicHolderSlot;
        _nicHolder = null;
        _nicHolderSlot = -1;
        try
        {
            _nicSlot = holder.MoveTo(slot, _space);
        }
        catch (CapabilityException ex)
        {
            // The holder deleted or moved it on: the machine has no Nic to give again.
            MultikernelLog.NicLost(_runtime.Logger, Core, ex.Message);
            return;
        }

        await _space.RevokeAsync(_nicSlot);
    }

    /// <summary>Stops domain <paramref name="id"/> on this core and waits until it ended and its capabilities went back (its RAM, the Nic). False when no such domain runs here.</summary>
    public async Task<bool> StopDomainAsync(ulong id)
    {
        Domain? domain = _kernel.Domains.FirstOrDefault(d => d.Id == id);
        if (domain is null || !_cleanedUp.TryGetValue(id, out TaskCompletionSource? cleanedUp))
        {
            return false;
        }

        domain.RequestStop();
        await cleanedUp.Task;
        return true;
    }

    // The meter reads domain memory from its own thread; the tables belong to this core. So the
    // monitor samples them here, on its core, and the gauge only reads the sampled number.
    private async Task SampleMemoryAsync()
    {
        while (!_shuttingDown)
        {
            foreach (DomainMemoryGauge gauge in _memoryGauges)
            {
                gauge.Sample();
            }

            await _kernel.Delay(TimeSpan.FromMilliseconds(500));
        }

        _sampling = false;
    }

    private sealed class DomainMemoryGauge(CSpace space, int budgetFrames)
    {
        private long _bytes;

        public IDisposable? Registration { get; set; }

        public void Sample()
        {
            if (!space.IsDestroyed)
            {
                Volatile.Write(ref _bytes, (budgetFrames - space.FreeRamFrames) * (long)PhysicalMemory.FrameSize);
            }
        }

        public long Read() => Volatile.Read(ref _bytes);
    }

    private async Task DestroyCapabilitiesAsync(CSpace space)
    {
        while (true)
        {
            try
            {
                _capabilities.DestroyDomain(space);
                return;
            }
            catch (CapabilityBusyException)
            {
                // The protocol outbox is full right now: the kernel loop flushes it; try again.
                await _kernel.Delay(TimeSpan.FromMilliseconds(1));
            }
        }
    }

    private Task<DomainContext>? _host;

    /// <summary>The context of this core's host domain (started on first use), in which host code's <c>InvokeAsync</c> work runs. Core thread only.</summary>
    public Task<DomainContext> HostContextAsync()
    {
        if (_host is { IsFaulted: false } host)
        {
            return host;
        }

        var ready = new TaskCompletionSource<DomainContext>();
        (MonitorStatus status, _) = StartDomainLocal("host", async ctx =>
        {
            ready.TrySetResult(ctx);
            await UntilStoppedAsync(ctx.Stopping);
        }, 0);
        if (status != MonitorStatus.Ok)
        {
            return Task.FromException<DomainContext>(new MonitorException(status, $"Core {Core} could not start its host domain: {status}."));
        }

        _host = ready.Task;
        return _host;
    }

    /// <summary>Completes when <paramref name="stopping"/> is signalled (a domain that only serves until shutdown).</summary>
    public static async Task UntilStoppedAsync(CancellationToken stopping)
    {
        var stopped = new TaskCompletionSource();
        using (stopping.UnsafeRegister(static s => ((TaskCompletionSource)s!).TrySetResult(), stopped))
        {
            await stopped.Task;
        }
    }

    /// <summary>The monitor's own capability space (holds the Kernel capability and the core's free RAM).</summary>
    public CSpace Space => _space;

    // ------------------------------------------------------------------ shutdown

    /// <summary>Core 0: start the two-phase shutdown (stop domains everywhere, then halt).</summary>
    public void BeginShutdown()
    {
        if (_shuttingDown)
        {
            return;
        }

        _shutdownSpan = MessageTracing.StartProtocol(ProtocolSpanNames.Shutdown, Core);
        Broadcast(Message.Create((ushort)MonitorMessage.StopDomains));
        MessageTracing.Detach(_shutdownSpan); // kept open until every core reported, not ambient
        _ = StopDomainsAsync();
        _runtime.Metrics.RecordMonitorOperation(Core, ProtocolSpanNames.Shutdown);
    }

    private async Task StopDomainsAsync()
    {
        _shuttingDown = true;
        var domains = _kernel.Domains.ToList();
        foreach (Domain domain in domains)
        {
            domain.RequestStop();
        }

        Task all = Task.WhenAll(domains.Select(d => d.Completion));
        Task timeout = _kernel.Delay(_runtime.Options.ShutdownTimeout).AsTask();
        await Task.WhenAny(all, timeout);
        int abandoned = domains.Count(d => !d.Completion.IsCompleted);
        if (abandoned > 0)
        {
            _runtime.ReportAbandoned(Core, abandoned);
        }

        if (Core == 0)
        {
            OnDomainsStopped(abandoned);
        }
        else
        {
            Send(0, Message.Create((ushort)MonitorMessage.DomainsStopped, (ulong)abandoned));
        }
    }

    private void OnDomainsStopped(int abandoned)
    {
        _abandonedDomains += abandoned;
        if (++_stoppedReports < Cores)
        {
            return;
        }

        // Every core's domains are done: halt the others, then this core. Each kernel leaves
        // its loop only once its rings and stalled sends are drained.
        if (_shutdownSpan is { } span)
        {
            span.SetTag("multikernel.domains.abandoned", _abandonedDomains);
        }

        Broadcast(Message.Create((ushort)MonitorMessage.Halt));
        _shutdownSpan?.Dispose();
        _runtime.OnDomainsStopped(_abandonedDomains);
        _kernel.Halt();
    }
}
