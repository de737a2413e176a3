using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Domains;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.CpuDriver.Kernel;

/// <summary>
/// One core's kernel (the CPU driver): a dedicated thread, pinned to a CPU, running a
/// single-threaded loop of steps — receive from the inbound rings, poll kernel services, take
/// work posted from other threads, run the core's domains' continuations, fire due timers,
/// retry stalled sends, ring the doorbells of the cores it sent to — and, once idle for its
/// spin time, park in its wait set until a doorbell, a descriptor or the next timer.
/// Everything here is owned by this core's thread; the only memory another core touches is the
/// rings (and a doorbell to wake this core). The parts live in their own types: the
/// <see cref="RunQueue"/>, <see cref="ForeignQueue"/>, <see cref="TimerWheel"/> (through
/// <see cref="CoreTimers"/>), <see cref="WaitSet"/>, <see cref="EndpointTable"/>,
/// <see cref="StalledSenders"/> and <see cref="LocalDelivery"/>.
/// </summary>
public sealed class CoreKernel
{
    internal const ushort CreditMessage = 0xFFF0;
    internal const ushort CloseMessage = 0xFFF1;
    internal const ushort PeerGoneMessage = 0xFFF2;
    internal const ushort GrantCreditMessage = 0xFFF3;

    private readonly KernelOptions _options;
    private readonly TimeProvider _time;
    private readonly UrpcRing?[] _inbound;
    private readonly UrpcRing?[] _outbound;
    private readonly Doorbell[] _doorbells;
    private readonly LocalDelivery _local;
    private readonly bool[] _touched;
    private readonly int[] _touchedList;
    private int _touchedCount;

    private readonly EndpointTable _endpoints;
    private readonly StalledSenders _stalled;
    private readonly RunQueue _runQueue;
    private readonly ForeignQueue _foreign;
    private readonly CoreTimers _timers;
    private readonly WaitSet _waitSet;
    private readonly long _spinTicks;
    private readonly long _maxParkNanoseconds;

    private readonly List<Domain> _domains = [];
    private IKernelService[] _services = [];
    private uint _nextDomain;

    private Thread? _thread;
    private int _threadId = -1;
    // The address of a local in Run's frame while the kernel thread runs, 0 otherwise: the top of
    // the part of the core's stack that IsCurrentThread recognises by address (see there).
    private nint _stackTop;
    private volatile bool _haltRequested;
    private long _haltGraceStart;
    private int _released;
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);

    internal CoreKernel(int id, int cpu, int cores, KernelOptions options, TimeProvider time, UrpcRing?[] inbound, UrpcRing?[] outbound, Doorbell[] doorbells)
    {
        Id = id;
        Cpu = cpu;
        CoreCount = cores;
        _options = options.Snapshot(); // its own, even when handed a read-only one: no options object is shared between cores
        _time = time;
        _inbound = inbound;
        _outbound = outbound;
        _doorbells = doorbells;
        _local = new LocalDelivery(_options.RingSlots);
        _touched = new bool[cores];
        _touchedList = new int[cores];
        // The first indices belong to the links the boot loader creates (a monitor link and a
        // capability link to every other core); the rest are handed out at bind.
        _endpoints = new EndpointTable(_options.MaxEndpointsPerCore, 2 * cores);
        _stalled = new StalledSenders(cores);
        // The kernel's own continuations: at most one per endpoint operation and per timer.
        int reserve = (_options.MaxEndpointsPerCore * (4 + _options.MaxWaitersPerEndpoint)) + _options.MaxTimersPerCore + 1024;
        _runQueue = new RunQueue(_options.RunQueueCapacity, reserve);
        _foreign = new ForeignQueue(_options.MaxForeignWork);
        _timers = new CoreTimers(this, time, _options.MaxTimersPerCore);
        Timers = new CoreTimeProvider(_timers, time);
        _waitSet = new WaitSet(doorbells[id], _options.MaxWakeSources);
        _spinTicks = (long)(_options.SpinTime.TotalSeconds * time.TimestampFrequency);
        _maxParkNanoseconds = (long)(_options.MaxPark.TotalMilliseconds * 1_000_000);
        Counters = new CoreCounters(cores);
        Sampler = new Diagnostics.MessageSampler(_options.MessageTraceRatio, 0x9E3779B97F4A7C15UL * (ulong)(id + 1));
        SynchronizationContext = new CoreSynchronizationContext(this);
        Scheduler = new CoreTaskScheduler(this);
    }

    /// <summary>This core's number.</summary>
    public int Id { get; }

    /// <summary>The CPU the kernel thread is pinned to.</summary>
    public int Cpu { get; }

    /// <summary>Number of cores in the machine.</summary>
    public int CoreCount { get; }

    /// <summary>This kernel's limits: its own read-only snapshot.</summary>
    public KernelOptions Options => _options;

    /// <summary>The clock (timestamps, wall time) the kernel was given; its timers are <see cref="Timers"/>.</summary>
    public TimeProvider Time => _time;

    /// <summary>
    /// This core's timers as a <see cref="TimeProvider"/>: <c>CreateTimer</c> timers live on the
    /// core's timer wheel and their callbacks run on this core's thread; <c>Change</c> re-arms in
    /// O(1) without allocating. What a domain's <c>Time</c> should be.
    /// </summary>
    public CoreTimeProvider Timers { get; }

    /// <summary>This core's head sampler for message traces.</summary>
    public Diagnostics.MessageSampler Sampler { get; }

    /// <summary>The core's counters (sends, receives, stalls, busy/idle time).</summary>
    public CoreCounters Counters { get; }

    /// <summary>The synchronization context domains on this core run under.</summary>
    public CoreSynchronizationContext SynchronizationContext { get; }

    /// <summary>A task scheduler that runs on this core.</summary>
    public TaskScheduler Scheduler { get; }

    /// <summary>Where a continuation or work item that threw is reported (default: written to stderr).</summary>
    public Action<CoreKernel, Exception>? UnhandledException { get; set; }

    /// <summary>Called on this core's thread when an endpoint is closed (metrics stop reporting it).</summary>
    public Action<Endpoint>? EndpointReleased { get; set; }

    /// <summary>Why pinning failed, when it did.</summary>
    public string? PinningError { get; private set; }

    /// <summary>Completes when the kernel thread has left its loop.</summary>
    public Task Stopped => _stopped.Task;

    /// <summary>True when the caller runs on this core's kernel thread.</summary>
    /// <remarks>
    /// Every timer re-arm and endpoint operation asks this, so it must cost next to nothing. The
    /// fast answer is the address of a local: a thread's stack is its own memory, so a local that
    /// lies within <see cref="OwnStackBytes"/> below the top of the kernel thread's stack belongs to
    /// that thread (one subtraction and compare; a managed-thread-id read costs several ns more). The
    /// window is a fraction of the stack the thread was created with, so it never reaches another
    /// thread's stack; a frame deeper than the window takes the thread-id comparison, which is
    /// always right. The top is cleared before the thread exits, so a later thread that reuses
    /// the stack's memory is not mistaken for the core.
    /// </remarks>
    public unsafe bool IsCurrentThread
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            byte probe = 0;
            if ((nuint)(_stackTop - (nint)(&probe)) < OwnStackBytes)
            {
                return true;
            }

            return Environment.CurrentManagedThreadId == Volatile.Read(ref _threadId);
        }
    }

    // The kernel thread's stack size, and how much of it below Run's frame counts as "on the core"
    // by address alone (half: Run's callers above it use a few KB, so the window stays inside).
    private const int KernelStackBytes = 2 * 1024 * 1024;
    private const nuint OwnStackBytes = KernelStackBytes / 2;

    /// <summary>True on the core's thread, or on any thread before the core starts (boot-time setup).</summary>
    internal bool IsOwnerThread => IsCurrentThread || _thread is null; // the core's own thread first: it is the hot case

    /// <summary>Endpoints in use on this core.</summary>
    public int EndpointCount => _endpoints.Count;

    /// <summary>Times another thread rang this core's doorbell while it was parked (each one a wake-up).</summary>
    public long DoorbellRings => _doorbells[Id].Rings;

    /// <summary>True while this core is parked (waiting in its wait set for a doorbell, a descriptor or a timer).</summary>
    internal bool IsParked => _doorbells[Id].IsParked;

    /// <summary>Descriptors kernel services registered with this core's wait set.</summary>
    public int WakeSourceCount => _waitSet.SourceCount;

    /// <summary>Depth of the outbound ring to <paramref name="core"/> (same-core deliveries waiting, for the own core).</summary>
    public int OutboundDepth(int core) => core == Id ? _local.Count : _outbound[core]?.Depth ?? 0;

    /// <summary>Runs <paramref name="work"/> on this core and returns its result to the caller's thread.</summary>
    public Task<T> RunAsync<T>(Func<T> work) => RunAsync(() => Task.FromResult(work()));

    /// <summary>
    /// Runs asynchronous <paramref name="work"/> on this core (its awaits come back here) and
    /// returns its result to the caller's thread. Fails at once (a faulted task, never a hang) when
    /// the core has halted or its queue of posted work is full.
    /// </summary>
    public Task<T> RunAsync<T>(Func<Task<T>> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        var result = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        PostResult posted = TryPost((Action<object?>)(static s =>
        {
            var (w, tcs) = ((Func<Task<T>>, TaskCompletionSource<T>))s!;
            _ = Forward(w, tcs);
        }), (work, result), kernelWork: false);
        if (posted != PostResult.Queued)
        {
            return Task.FromException<T>(PostFailure(posted));
        }

        return result.Task;

        static async Task Forward(Func<Task<T>> w, TaskCompletionSource<T> tcs)
        {
            try
            {
                tcs.SetResult(await w());
            }
#pragma warning disable CA1031 // handed to the caller
            catch (Exception ex)
#pragma warning restore CA1031
            {
                tcs.SetException(ex);
            }
        }
    }

    // ---------------------------------------------------------------- services and wake sources

    /// <summary>
    /// Adds kernel-level work polled every loop iteration: before the core starts from any
    /// thread, afterwards on the core's own thread (the monitor checks the caller's authority).
    /// </summary>
    public void AddService(IKernelService service)
    {
        ArgumentNullException.ThrowIfNull(service);
        CheckOwner("Kernel services are added before the core starts or on the core's own thread.");
        if (Array.IndexOf(_services, service) < 0)
        {
            _services = [.. _services, service];
        }
    }

    /// <summary>Stops polling <paramref name="service"/> (its wake sources stay until disposed). Core thread.</summary>
    public bool RemoveService(IKernelService service)
    {
        ArgumentNullException.ThrowIfNull(service);
        CheckOwner("Kernel services are removed on the core's own thread.");
        int index = Array.IndexOf(_services, service);
        if (index < 0)
        {
            return false;
        }

        _services = [.. _services.Where((_, i) => i != index)];
        return true;
    }

    /// <summary>
    /// Wakes this core when <paramref name="fd"/> becomes readable, for <paramref name="service"/>
    /// (added as a service when it is not one yet), e.g. netd's TAP device. The descriptor stays
    /// its owner's: disposing the returned registration stops watching it, nothing closes it.
    /// Before the core starts or on its thread; at most <c>MaxWakeSources</c> per core.
    /// </summary>
    public WakeSource RegisterWakeSource(int fd, IKernelService service)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(fd);
        ArgumentNullException.ThrowIfNull(service);
        CheckOwner("Wake sources are registered before the core starts or on the core's own thread.");
        WakeSource source = _waitSet.Register(fd, null, service);
        AddService(service);
        return source;
    }

    /// <summary>As <see cref="RegisterWakeSource(int, IKernelService)"/>; the handle is kept alive (add-ref'd) until the registration is disposed.</summary>
    public WakeSource RegisterWakeSource(SafeHandle handle, IKernelService service)
    {
        ArgumentNullException.ThrowIfNull(handle);
        ArgumentNullException.ThrowIfNull(service);
        CheckOwner("Wake sources are registered before the core starts or on the core's own thread.");
        bool added = false;
        handle.DangerousAddRef(ref added);
        try
        {
            WakeSource source = _waitSet.Register((int)handle.DangerousGetHandle(), handle, service);
            AddService(service);
            added = false; // released by the registration now
            return source;
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    /// <summary>Starts the kernel thread.</summary>
    internal void Start()
    {
        if (_thread is not null)
        {
            throw new InvalidOperationException($"Core {Id} is already running.");
        }

        _thread = new Thread(Run, KernelStackBytes) { IsBackground = true, Name = $"core {Id}" };
        _thread.Start();
    }

    /// <summary>Asks the loop to exit once it has no work left. Any thread.</summary>
    public void Halt()
    {
        _haltRequested = true;
        _doorbells[Id].Ring();
    }

    /// <summary>Waits for the kernel thread to exit.</summary>
    internal bool Join(TimeSpan timeout) => _thread is null || _thread.Join(timeout);

    /// <summary>Frees the wait set's descriptors (at loop exit, or by the machine for a core that never ran).</summary>
    internal void ReleaseResources()
    {
        if (Interlocked.Exchange(ref _released, 1) == 0)
        {
            _waitSet.Dispose();
        }
    }

    // ---------------------------------------------------------------- work queues

    /// <summary>
    /// Queues a callback to run on this core. From the core itself it costs no allocation. Throws
    /// <see cref="InvalidOperationException"/> when the run queue (<c>RunQueueCapacity</c>) or the
    /// queue of work from other threads (<c>MaxForeignWork</c>) is full, or the core has halted.
    /// </summary>
    public void Post(Action<object?> callback, object? state)
    {
        ArgumentNullException.ThrowIfNull(callback);
        PostResult result = TryPost(callback, state, kernelWork: false);
        if (result != PostResult.Queued)
        {
            throw PostFailure(result);
        }
    }

    /// <summary>As <see cref="Post"/>, returning false instead of throwing at a limit or after halt.</summary>
    public bool TryPost(Action<object?> callback, object? state)
    {
        ArgumentNullException.ThrowIfNull(callback);
        return TryPost(callback, state, kernelWork: false) == PostResult.Queued;
    }

    /// <summary>Queues a <see cref="SendOrPostCallback"/> to run on this core (the synchronization context).</summary>
    internal void PostCallback(SendOrPostCallback callback, object? state)
    {
        PostResult result = TryPost(callback, state, kernelWork: false);
        if (result != PostResult.Queued)
        {
            throw PostFailure(result);
        }
    }

    /// <summary>The kernel's own continuations (a completed operation wakes its awaiter): they use the reserve.</summary>
    internal void PostInternal(Action<object?> callback, object? state)
    {
        PostResult result = TryPost(callback, state, kernelWork: true);
        if (result != PostResult.Queued)
        {
            throw PostFailure(result);
        }
    }

    internal bool TryPostInternal(Action<object?> callback, object? state) => TryPost(callback, state, kernelWork: true) == PostResult.Queued;

    private PostResult TryPost(Delegate callback, object? state, bool kernelWork)
    {
        var item = new WorkItem(callback, state);
        if (IsCurrentThread)
        {
            if (_runQueue.TryEnqueue(in item, kernelWork))
            {
                return PostResult.Queued;
            }

            Counters.RefusedPosts++;
            return PostResult.Full;
        }

        // From another thread (a thread-pool timer, an I/O completion, the host).
        PostResult result = _foreign.TryEnqueue(in item);
        if (result == PostResult.Queued)
        {
            _doorbells[Id].Ring();
        }

        return result;
    }

    private InvalidOperationException PostFailure(PostResult result) => result switch
    {
        PostResult.Closed => new InvalidOperationException($"Core {Id} has halted; work posted to it would never run."),
        _ when IsCurrentThread => new InvalidOperationException($"Core {Id}'s run queue is full ({_runQueue.DomainLimit} items, RunQueueCapacity): its domains queued more work than the kernel allows."),
        _ => new InvalidOperationException($"Core {Id} already holds {_options.MaxForeignWork} items posted from other threads (MaxForeignWork); try again once it has caught up."),
    };

    // ---------------------------------------------------------------- domains

    /// <summary>Domains running on this core. Core thread only.</summary>
    public IReadOnlyList<Domain> Domains => _domains;

    /// <summary>
    /// Creates a domain's dispatcher on this core and starts <paramref name="main"/> on the
    /// core's scheduler. Core thread only (the monitor does this on request).
    /// </summary>
    public Domain StartDomain(string name, Func<Domain, Task> main) => StartDomain(name, main, prepare: null);

    /// <summary>As <see cref="StartDomain(string, Func{Domain, Task})"/>, running <paramref name="prepare"/> (give it capabilities) before the domain's first step.</summary>
    public Domain StartDomain(string name, Func<Domain, Task> main, Action<Domain>? prepare)
    {
        ArgumentNullException.ThrowIfNull(main);
        CheckThread();
        if (_domains.Count >= _options.MaxDomainsPerCore)
        {
            throw new InvalidOperationException($"Core {Id} already runs {_domains.Count} domains (MaxDomainsPerCore = {_options.MaxDomainsPerCore}).");
        }

        var domain = new Domain(this, ((ulong)(uint)Id << 32) | ++_nextDomain, name);
        prepare?.Invoke(domain);
        _domains.Add(domain);
        domain.Start(main);
        return domain;
    }

    internal void RemoveDomain(Domain domain) => _domains.Remove(domain);

    // ---------------------------------------------------------------- endpoints

    internal Endpoint CreateEndpoint(string name)
    {
        CheckThread();
        if (!_endpoints.TryAllocate(out uint id))
        {
            throw new InvalidOperationException($"Core {Id} has no free channel endpoint (MaxEndpointsPerCore = {_options.MaxEndpointsPerCore}).");
        }

        var endpoint = new Endpoint(this, id, name, _options.ChannelWindow);
        _endpoints.Set(endpoint);
        return endpoint;
    }

    /// <summary>Creates the endpoint with a fixed index during boot (monitor links), before the thread runs.</summary>
    internal Endpoint CreateBootEndpoint(int index, string name)
    {
        if (_thread is not null)
        {
            throw new InvalidOperationException("Boot endpoints are created before the core starts.");
        }

        if (!_endpoints.TryAllocateBoot(index, out uint id))
        {
            throw new ArgumentOutOfRangeException(nameof(index), index, $"Boot endpoints are the unused indices below {_endpoints.BootEndpoints}.");
        }

        var endpoint = new Endpoint(this, id, name, _options.ChannelWindow);
        _endpoints.Set(endpoint);
        return endpoint;
    }

    internal void ReleaseEndpoint(Endpoint endpoint)
    {
        if (_endpoints.Release(endpoint))
        {
            EndpointReleased?.Invoke(endpoint);
        }
    }

    internal Endpoint? FindEndpoint(uint id) => _endpoints.Find(id);

    // ---------------------------------------------------------------- sending

    /// <summary>
    /// Tries to put <paramref name="message"/> on the way to <paramref name="core"/>. Fails only
    /// when the ring is full or other senders to that core are already waiting (FIFO fairness).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TrySend(int core, in Message message)
    {
        // Behind senders already waiting for this ring (FIFO), or first in line.
        if (_stalled.HasWaiters(core) || !TrySendFromStall(core, in message))
        {
            Counters.StallsTo[core]++;
            return false;
        }

        return true;
    }

    /// <summary>
    /// Sends ahead of stalled domain traffic: for the stalled-list flush (already first in line)
    /// and for kernel services, whose protocol messages (a revoke's MARK/COMMIT) must not wait
    /// behind a domain's bulk stream to the same core. Services run before the flush in each
    /// loop iteration, so they get the first free slots. Same-core messages are queued and
    /// dispatched by the receive step, never inside this call.
    /// </summary>
    internal bool TrySendFromStall(int core, in Message message)
    {
        if (core == Id)
        {
            if (!_local.TryWrite(in message))
            {
                return false;
            }

            Counters.SentTo[core]++;
            return true;
        }

        if (!_outbound[core]!.TryWrite(in message))
        {
            return false;
        }

        Counters.SentTo[core]++;
        Touch(core);
        // A parked receiver is rung now, not at the end of this iteration (a plain read; the
        // fenced ring at the end of the iteration catches a receiver that parks meanwhile).
        _doorbells[core].RingIfParked();
        return true;
    }

    /// <summary>
    /// Sends a batch addressed to endpoint <paramref name="remoteId"/> on <paramref name="core"/>:
    /// as many as fit, with one check for ring space, behind nobody (false-free: returns the count,
    /// 0 when senders to that core are already waiting).
    /// </summary>
    internal int TrySendBatch(int core, ReadOnlySpan<Message> messages, uint remoteId)
    {
        if (_stalled.HasWaiters(core))
        {
            Counters.StallsTo[core]++;
            return 0;
        }

        int n;
        if (core == Id)
        {
            n = 0;
            foreach (ref readonly Message message in messages)
            {
                Message m = message;
                m.Endpoint = remoteId;
                m.Flags &= ~(MessageFlags.Control | MessageFlags.HasTraceContext | MessageFlags.TraceSampled);
                if (!_local.TryWrite(in m))
                {
                    break;
                }

                n++;
            }
        }
        else
        {
            n = _outbound[core]!.TryWriteBatchAddressed(messages, remoteId);
            if (n > 0)
            {
                Touch(core);
                _doorbells[core].RingIfParked();
            }
        }

        Counters.SentTo[core] += n;
        if (n < messages.Length)
        {
            Counters.StallsTo[core]++;
        }

        return n;
    }

    /// <summary>True when a send to <paramref name="core"/> would succeed now (nobody waiting ahead, and room).</summary>
    internal bool CanSendNow(int core) => !_stalled.HasWaiters(core) && HasRoom(core);

    /// <summary>True when the ring (or same-core queue) to <paramref name="core"/> has a free slot. Producer side.</summary>
    internal bool HasRoom(int core) => core == Id ? !_local.IsFull : !_outbound[core]!.IsFullForProducer;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Touch(int core)
    {
        if (!_touched[core])
        {
            _touched[core] = true;
            _touchedList[_touchedCount++] = core;
        }
    }

    internal void EnqueueStalled(Endpoint endpoint) => _stalled.Enqueue(endpoint);

    private int FlushStalled()
    {
        if (_stalled.StalledCores == 0)
        {
            return 0;
        }

        int progress = 0;
        for (int core = 0; core < CoreCount; core++)
        {
            while (_stalled.Head(core) is { } endpoint)
            {
                if (!endpoint.FlushOwed(firstInLine: true))
                {
                    break; // ring still full: keep FIFO order, try again next iteration
                }

                progress++;
                _stalled.PopHead(core);
            }
        }

        return progress;
    }

    // ---------------------------------------------------------------- receiving

    private int PollInbound()
    {
        int total = PollLocal();
        int batch = _options.ReceiveBatch;
        for (int core = 0; core < _inbound.Length; core++)
        {
            UrpcRing? ring = _inbound[core];
            if (ring is null)
            {
                continue;
            }

            int n = 0;
            while (n < batch)
            {
                ref readonly Message message = ref ring.Peek();
                if (Unsafe.IsNullRef(in message))
                {
                    break;
                }

                Dispatch(in message);
                ring.Advance();
                n++;
            }

            if (n > 0)
            {
                Counters.ReceivedFrom[core] += n;
                ring.PublishConsumed();
                // The producer is rung only when it marked that it waits for room.
                if (ring.TakeProducerStall())
                {
                    _doorbells[core].Ring();
                }

                total += n;
            }
        }

        return total;
    }

    private int PollLocal()
    {
        // Only what was queued before this step: a handler that answers on the same core is
        // answered next iteration, so a same-core ping-pong cannot starve the other rings.
        int n = Math.Min(_local.Count, _options.ReceiveBatch);
        for (int i = 0; i < n; i++)
        {
            Message message = _local.Peek();
            _local.Advance();
            Dispatch(in message);
        }

        Counters.ReceivedFrom[Id] += n;
        return n;
    }

    private void Dispatch(in Message message)
    {
        Endpoint? endpoint = FindEndpoint(message.Endpoint);
        if (endpoint is null)
        {
            Counters.DroppedToClosedEndpoint++;
            return;
        }

        endpoint.OnMessage(in message);
    }

    // ---------------------------------------------------------------- timers

    /// <summary>Completes after <paramref name="delay"/> of <see cref="Time"/>, on this core (a pooled timer-wheel entry). Core thread only.</summary>
    public ValueTask Delay(TimeSpan delay, CancellationToken cancellationToken = default)
    {
        CheckThread();
        return _timers.Delay(delay, cancellationToken);
    }

    // ---------------------------------------------------------------- the loop

    private unsafe void Run()
    {
        Volatile.Write(ref _threadId, Environment.CurrentManagedThreadId);
        byte top = 0;
        Volatile.Write(ref _stackTop, (nint)(&top));
        if (_options.PinThreads && !CpuAffinity.TryPinCurrentThread(Cpu, out string? error))
        {
            PinningError = error;
        }

        System.Threading.SynchronizationContext.SetSynchronizationContext(SynchronizationContext);
        _timers.SetCaching(true);
        int idle = 0;
        long idleStart = 0;
        long phaseStart = _time.GetTimestamp();
        bool busy = true;
        try
        {
            while (true)
            {
                _timers.Invalidate(); // after a park or a long iteration, arms read the clock afresh
                int work = PollInbound();
                work += PollServices();
                work += DrainForeign();
                work += RunLocal();
                work += _timers.Fire();
                work += FlushStalled();
                RingTouchedDoorbells();
                Counters.Iterations++;

                if (work > 0)
                {
                    if (!busy)
                    {
                        long now = _time.GetTimestamp();
                        Counters.IdleTicks += now - phaseStart;
                        phaseStart = now;
                        busy = true;
                    }

                    idle = 0;
                    continue;
                }

                if (busy)
                {
                    long now = _time.GetTimestamp();
                    Counters.BusyTicks += now - phaseStart;
                    phaseStart = now;
                    busy = false;
                }

                if (_haltRequested && (_stalled.StalledCores == 0 || HaltGraceExpired()))
                {
                    break;
                }

                if (idle++ == 0)
                {
                    idleStart = _time.GetTimestamp();
                }

                // Spin for a time budget (tens of µs), capped by an iteration budget, then park.
                if (idle <= _options.SpinBudget && _time.GetTimestamp() - idleStart < _spinTicks)
                {
                    if (_options.YieldWhenIdle)
                    {
                        Thread.Yield();
                    }
                    else
                    {
                        Thread.SpinWait(4);
                    }

                    continue;
                }

                idle = 0;
                ParkUntilWork();
            }
        }
        finally
        {
            _timers.SetCaching(false);
            // Work posted before this point runs; later posts fail their callers.
            _foreign.Close();
            _foreign.DrainClosed(item => Invoke(in item));
            RunLocal();
            long end = _time.GetTimestamp();
            if (busy)
            {
                Counters.BusyTicks += end - phaseStart;
            }
            else
            {
                Counters.IdleTicks += end - phaseStart;
            }

            ReleaseResources();
            Volatile.Write(ref _stackTop, 0); // before the thread (and its stack) can be reused
            _stopped.TrySetResult();
        }
    }

    // A halting core keeps retrying stalled sends for a while; a peer that already halted with a
    // full ring would otherwise keep it alive forever.
    private bool HaltGraceExpired()
    {
        if (_haltGraceStart == 0)
        {
            _haltGraceStart = _time.GetTimestamp();
            return false;
        }

        return _time.GetElapsedTime(_haltGraceStart) > TimeSpan.FromSeconds(1);
    }

    private void ParkUntilWork()
    {
        Doorbell doorbell = _doorbells[Id];
        doorbell.PrepareToPark();
        // Re-check every source of work after announcing the park (the Dekker half on this side).
        if (HasWork())
        {
            doorbell.CancelPark();
            return;
        }

        Counters.Parks++;
        long timeout = _timers.NanosecondsUntilNext();
        if (timeout < 0 || timeout > _maxParkNanoseconds)
        {
            timeout = _maxParkNanoseconds;
        }

        _waitSet.Wait(timeout);
    }

    private bool HasWork()
    {
        if (_runQueue.Count > 0 || _foreign.Count > 0 || _haltRequested || _local.Count > 0)
        {
            return true;
        }

        foreach (IKernelService service in _services)
        {
            if (service.HasWork)
            {
                return true;
            }
        }

        foreach (UrpcRing? ring in _inbound)
        {
            if (ring is not null && ring.HasPending)
            {
                return true;
            }
        }

        if (_stalled.StalledCores > 0)
        {
            for (int core = 0; core < CoreCount; core++)
            {
                // Mark the stall so the consumer rings us when it frees room; look once more.
                if (_stalled.HasWaiters(core) && (core == Id || _outbound[core]!.MarkProducerStalled()))
                {
                    return true;
                }
            }
        }

        return _timers.HasDue;
    }

    private int PollServices()
    {
        int work = 0;
        foreach (IKernelService service in _services)
        {
            work += service.Poll();
        }

        return work;
    }

    private void RingTouchedDoorbells()
    {
        if (_touchedCount == 0)
        {
            return;
        }

        for (int i = 0; i < _touchedCount; i++)
        {
            int core = _touchedList[i];
            _touched[core] = false;
            _doorbells[core].Ring();
        }

        _touchedCount = 0;
    }

    private int DrainForeign()
    {
        // Bounded per iteration, so a flood from other threads cannot starve the rings.
        int n = 0;
        int limit = _options.ReceiveBatch * 4;
        while (n < limit && _foreign.Count > 0 && _foreign.TryDequeue(out WorkItem item))
        {
            Invoke(in item);
            n++;
        }

        return n;
    }

    private int RunLocal()
    {
        // Run what is queued now; what those items queue runs on the next iteration, so inbound
        // rings are polled between rounds and a chatty domain cannot starve them.
        int n = _runQueue.Count;
        for (int i = 0; i < n; i++)
        {
            WorkItem item = _runQueue.Dequeue();
            Invoke(in item);
        }

        return n;
    }

    private void Invoke(in WorkItem item)
    {
        Counters.WorkItems++;
        try
        {
            if (item.Callback is Action<object?> action)
            {
                action(item.State);
            }
            else
            {
                ((SendOrPostCallback)item.Callback)(item.State);
            }
        }
#pragma warning disable CA1031 // a domain's fault must not take the core down with it
        catch (Exception ex)
#pragma warning restore CA1031
        {
            ReportUnhandled(ex);
        }

        // A timer armed by the next item counts from a fresh clock read (CoreTimers, the cached now).
        _timers.Invalidate();
    }

    internal void ReportUnhandled(Exception ex)
    {
        if (UnhandledException is { } handler)
        {
            handler(this, ex);
        }
        else
        {
            Console.Error.WriteLine($"core {Id}: unhandled exception in a domain: {ex}");
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void CheckThread()
    {
        if (!IsCurrentThread && _thread is not null)
        {
            ThrowWrongThread();
        }
    }

    private void CheckOwner(string rule)
    {
        if (!IsOwnerThread)
        {
            throw new InvalidOperationException($"Core {Id}: {rule}");
        }
    }

    private void ThrowWrongThread() =>
        throw new InvalidOperationException($"This object belongs to core {Id} and is used only from that core's thread (a domain must not leave its core with ConfigureAwait(false) or Task.Run).");
}
