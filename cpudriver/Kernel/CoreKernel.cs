using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Domains;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.CpuDriver.Kernel;

/// <summary>
/// One core's kernel (the CPU driver): a dedicated thread, pinned to a CPU, running a
/// single-threaded loop that polls the inbound URPC rings, runs the core's domains'
/// continuations, fires timers, retries stalled sends and parks after a spin budget.
/// Everything here is owned by this core's thread; the only memory another core touches is the
/// rings (and a doorbell to wake this core).
/// </summary>
public sealed class CoreKernel
{
    internal const ushort CreditMessage = 0xFFF0;
    internal const ushort CloseMessage = 0xFFF1;
    internal const ushort PeerGoneMessage = 0xFFF2;

    private readonly KernelOptions _options;
    private readonly TimeProvider _time;
    private readonly UrpcRing?[] _inbound;
    private readonly UrpcRing?[] _outbound;
    private readonly Doorbell[] _doorbells;
    private readonly bool[] _touched;
    private readonly int[] _touchedList;
    private int _touchedCount;

    private readonly Endpoint?[] _endpoints;
    private readonly ushort[] _endpointGenerations;
    private readonly Stack<int> _freeEndpoints;
    private readonly int _bootEndpoints;
    private int _bootCreated;

    private readonly Endpoint?[] _stalledHead;
    private readonly Endpoint?[] _stalledTail;
    private int _stalledCount;

    private WorkItem[] _runQueue = new WorkItem[256];
    private int _runHead;
    private int _runCount;
    private readonly ConcurrentQueue<WorkItem> _foreign = new();
    private int _foreignCount;

    private readonly PriorityQueue<CoreOperation<bool>, long> _timers = new();

    private readonly List<Domain> _domains = [];
    private IKernelService[] _services = [];
    private uint _nextDomain;

    private Thread? _thread;
    private int _threadId = -1;
    private volatile bool _haltRequested;
    private long _haltGraceStart;
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private readonly record struct WorkItem(Delegate Callback, object? State);

    internal CoreKernel(int id, int cpu, int cores, KernelOptions options, TimeProvider time, UrpcRing?[] inbound, UrpcRing?[] outbound, Doorbell[] doorbells)
    {
        Id = id;
        Cpu = cpu;
        CoreCount = cores;
        _options = options;
        _time = time;
        _inbound = inbound;
        _outbound = outbound;
        _doorbells = doorbells;
        _touched = new bool[cores];
        _touchedList = new int[cores];
        _endpoints = new Endpoint?[options.MaxEndpointsPerCore];
        _endpointGenerations = new ushort[options.MaxEndpointsPerCore];
        // The first indices belong to the links the boot loader creates (a monitor link and a
        // capability link to every other core); the rest are handed out at bind.
        _bootEndpoints = Math.Min(2 * cores, options.MaxEndpointsPerCore);
        _freeEndpoints = new Stack<int>(options.MaxEndpointsPerCore);
        for (int i = options.MaxEndpointsPerCore - 1; i >= _bootEndpoints; i--)
        {
            _freeEndpoints.Push(i);
        }

        _stalledHead = new Endpoint?[cores];
        _stalledTail = new Endpoint?[cores];
        Counters = new CoreCounters(cores);
        Sampler = new Diagnostics.MessageSampler(options.MessageTraceRatio, 0x9E3779B97F4A7C15UL * (ulong)(id + 1));
        SynchronizationContext = new CoreSynchronizationContext(this);
        Scheduler = new CoreTaskScheduler(this);
    }

    /// <summary>This core's number.</summary>
    public int Id { get; }

    /// <summary>The CPU the kernel thread is pinned to.</summary>
    public int Cpu { get; }

    /// <summary>Number of cores in the machine.</summary>
    public int CoreCount { get; }

    /// <summary>Kernel limits.</summary>
    public KernelOptions Options => _options;

    /// <summary>The time source for timers and accounting.</summary>
    public TimeProvider Time => _time;

    /// <summary>This core's head sampler for message traces.</summary>
    public Diagnostics.MessageSampler Sampler { get; }

    /// <summary>The core's counters (sends, receives, stalls, busy/idle time).</summary>
    public CoreCounters Counters { get; }

    /// <summary>The synchronization context domains on this core run under.</summary>
    public CoreSynchronizationContext SynchronizationContext { get; }

    /// <summary>A task scheduler that runs on this core.</summary>
    public TaskScheduler Scheduler { get; }

    /// <summary>Where a continuation or work item that threw is reported (default: rethrown on the thread pool).</summary>
    public Action<CoreKernel, Exception>? UnhandledException { get; set; }

    /// <summary>Called on this core's thread when an endpoint is closed (metrics stop reporting it).</summary>
    public Action<Endpoint>? EndpointReleased { get; set; }

    /// <summary>Why pinning failed, when it did.</summary>
    public string? PinningError { get; private set; }

    /// <summary>Completes when the kernel thread has left its loop.</summary>
    public Task Stopped => _stopped.Task;

    /// <summary>True when the caller runs on this core's kernel thread.</summary>
    public bool IsCurrentThread => Environment.CurrentManagedThreadId == Volatile.Read(ref _threadId);

    /// <summary>Endpoints in use on this core.</summary>
    public int EndpointCount => _options.MaxEndpointsPerCore - _freeEndpoints.Count - (_bootEndpoints - _bootCreated);

    /// <summary>Depth of the outbound ring to <paramref name="core"/> (0 for the own core).</summary>
    public int OutboundDepth(int core) => _outbound[core]?.Depth ?? 0;

    /// <summary>Runs <paramref name="work"/> on this core and returns its result to the caller's thread.</summary>
    public Task<T> RunAsync<T>(Func<T> work) => RunAsync(() => Task.FromResult(work()));

    /// <summary>Runs asynchronous <paramref name="work"/> on this core (its awaits come back here) and returns its result to the caller's thread.</summary>
    public Task<T> RunAsync<T>(Func<Task<T>> work)
    {
        var result = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        Post(static s =>
        {
            var (w, tcs) = ((Func<Task<T>>, TaskCompletionSource<T>))s!;
            _ = Forward(w, tcs);
        }, (work, result));
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

    /// <summary>Adds kernel-level work polled every loop iteration. Only before the core starts.</summary>
    public void AddService(IKernelService service)
    {
        ArgumentNullException.ThrowIfNull(service);
        if (_thread is not null)
        {
            throw new InvalidOperationException("Kernel services are added before the core starts.");
        }

        _services = [.. _services, service];
    }

    /// <summary>Starts the kernel thread.</summary>
    internal void Start()
    {
        if (_thread is not null)
        {
            throw new InvalidOperationException($"Core {Id} is already running.");
        }

        _thread = new Thread(Run) { IsBackground = true, Name = $"core {Id}" };
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

    // ---------------------------------------------------------------- work queue

    /// <summary>Queues a callback to run on this core. From the core itself it costs no allocation.</summary>
    public void Post(Action<object?> callback, object? state) => Post((Delegate)callback, state);

    /// <summary>Queues a <see cref="SendOrPostCallback"/> to run on this core.</summary>
    internal void PostCallback(SendOrPostCallback callback, object? state) => Post((Delegate)callback, state);

    private void Post(Delegate callback, object? state)
    {
        if (IsCurrentThread)
        {
            if (_runCount == _runQueue.Length)
            {
                GrowRunQueue();
            }

            _runQueue[(_runHead + _runCount) & (_runQueue.Length - 1)] = new WorkItem(callback, state);
            _runCount++;
            return;
        }

        // From another thread (a thread-pool timer, an I/O completion, the host): the one
        // multi-producer queue a core has. Each entry is a continuation of an operation that
        // a domain of this core started, so it is bounded by their outstanding operations.
        _foreign.Enqueue(new WorkItem(callback, state));
        Interlocked.Increment(ref _foreignCount);
        _doorbells[Id].Ring();
    }

    private void GrowRunQueue()
    {
        var bigger = new WorkItem[_runQueue.Length * 2];
        for (int i = 0; i < _runCount; i++)
        {
            bigger[i] = _runQueue[(_runHead + i) & (_runQueue.Length - 1)];
        }

        _runQueue = bigger;
        _runHead = 0;
    }

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
        if (!_freeEndpoints.TryPop(out int index))
        {
            throw new InvalidOperationException($"Core {Id} has no free channel endpoint (MaxEndpointsPerCore = {_options.MaxEndpointsPerCore}).");
        }

        ushort generation = ++_endpointGenerations[index];
        uint id = ((uint)generation << 16) | (uint)index;
        var endpoint = new Endpoint(this, id, name, _options.ChannelWindow);
        _endpoints[index] = endpoint;
        return endpoint;
    }

    /// <summary>Creates the endpoint with a fixed index during boot (monitor links), before the thread runs.</summary>
    internal Endpoint CreateBootEndpoint(int index, string name)
    {
        if (_thread is not null)
        {
            throw new InvalidOperationException("Boot endpoints are created before the core starts.");
        }

        if ((uint)index >= (uint)_bootEndpoints || _endpoints[index] is not null)
        {
            throw new ArgumentOutOfRangeException(nameof(index), index, $"Boot endpoints are the unused indices below {_bootEndpoints}.");
        }

        _bootCreated++;

        ushort generation = ++_endpointGenerations[index];
        var endpoint = new Endpoint(this, ((uint)generation << 16) | (uint)index, name, _options.ChannelWindow);
        _endpoints[index] = endpoint;
        return endpoint;
    }

    internal void ReleaseEndpoint(Endpoint endpoint)
    {
        int index = (int)(endpoint.Id & 0xFFFF);
        if (ReferenceEquals(_endpoints[index], endpoint))
        {
            _endpoints[index] = null;
            _freeEndpoints.Push(index);
            EndpointReleased?.Invoke(endpoint);
        }
    }

    internal Endpoint? FindEndpoint(uint id)
    {
        int index = (int)(id & 0xFFFF);
        if ((uint)index >= (uint)_endpoints.Length)
        {
            return null;
        }

        Endpoint? endpoint = _endpoints[index];
        return endpoint is not null && endpoint.Id == id ? endpoint : null;
    }

    // ---------------------------------------------------------------- sending

    /// <summary>
    /// Tries to put <paramref name="message"/> on the way to <paramref name="core"/>. Fails only
    /// when the ring is full or other senders to that core are already waiting (FIFO fairness).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TrySend(int core, in Message message)
    {
        // Behind senders already waiting for this ring (FIFO), or first in line.
        if ((core != Id && _stalledHead[core] is not null) || !TrySendFromStall(core, in message))
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
    /// loop iteration, so they get the first free slots.
    /// </summary>
    internal bool TrySendFromStall(int core, in Message message)
    {
        if (core == Id)
        {
            DeliverLocal(in message);
            return true;
        }

        if (!_outbound[core]!.TryWrite(in message))
        {
            return false;
        }

        Counters.SentTo[core]++;
        Touch(core);
        return true;
    }

    private void DeliverLocal(in Message message)
    {
        Counters.SentTo[Id]++;
        Counters.ReceivedFrom[Id]++;
        Dispatch(in message);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Touch(int core)
    {
        if (!_touched[core])
        {
            _touched[core] = true;
            _touchedList[_touchedCount++] = core;
        }
    }

    internal void EnqueueStalled(Endpoint endpoint)
    {
        if (endpoint.InStalledList)
        {
            return;
        }

        int core = endpoint.RemoteCore;
        endpoint.InStalledList = true;
        endpoint.NextStalled = null;
        if (_stalledTail[core] is { } tail)
        {
            tail.NextStalled = endpoint;
        }
        else
        {
            _stalledHead[core] = endpoint;
            _stalledCount++;
        }

        _stalledTail[core] = endpoint;
    }

    private int FlushStalled()
    {
        if (_stalledCount == 0)
        {
            return 0;
        }

        int progress = 0;
        for (int core = 0; core < CoreCount; core++)
        {
            Endpoint? endpoint = _stalledHead[core];
            while (endpoint is not null)
            {
                if (!endpoint.FlushOwed(firstInLine: true))
                {
                    break; // ring still full: keep FIFO order, try again next iteration
                }

                progress++;
                Endpoint? next = endpoint.NextStalled;
                endpoint.NextStalled = null;
                endpoint.InStalledList = false;
                _stalledHead[core] = next;
                if (next is null)
                {
                    _stalledTail[core] = null;
                    _stalledCount--;
                }

                endpoint = next;
            }
        }

        return progress;
    }

    // ---------------------------------------------------------------- receiving

    private int PollInbound()
    {
        int total = 0;
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
                // The sender may be parked waiting for space: check its doorbell at the end of the iteration.
                Touch(core);
                total += n;
            }
        }

        return total;
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

    /// <summary>Completes after <paramref name="delay"/> of <see cref="Time"/>, on this core.</summary>
    public ValueTask Delay(TimeSpan delay, CancellationToken cancellationToken = default)
    {
        CheckThread();
        cancellationToken.ThrowIfCancellationRequested();
        if (_timers.Count >= _options.MaxTimersPerCore)
        {
            throw new InvalidOperationException($"Core {Id} has {_timers.Count} pending timers (MaxTimersPerCore = {_options.MaxTimersPerCore}).");
        }

        var op = new CoreOperation<bool>(this);
        op.Reset();
        long due = _time.GetTimestamp() + (long)(Math.Max(0, delay.TotalSeconds) * _time.TimestampFrequency);
        _timers.Enqueue(op, due);
        if (cancellationToken.CanBeCanceled)
        {
            short version = op.Version;
            cancellationToken.UnsafeRegister(static (s, ct) =>
            {
                var (kernel, operation, v) = ((CoreKernel, CoreOperation<bool>, short))s!;
                kernel.Post(static x =>
                {
                    var (o, ver, token) = ((CoreOperation<bool>, short, CancellationToken))x!;
                    if (o.IsPending && o.Version == ver)
                    {
                        o.SetException(new OperationCanceledException(token));
                    }
                }, (operation, v, ct));
            }, (this, op, version));
        }

        return op.AsValueTaskNonGeneric();
    }

    private int FireTimers()
    {
        if (_timers.Count == 0)
        {
            return 0;
        }

        long now = _time.GetTimestamp();
        int fired = 0;
        while (_timers.TryPeek(out CoreOperation<bool>? op, out long due) && due <= now)
        {
            _timers.Dequeue();
            if (op.IsPending)
            {
                op.SetResult(true);
            }

            fired++;
        }

        return fired;
    }

    private TimeSpan NextParkTimeout()
    {
        TimeSpan max = _options.MaxPark;
        if (_timers.TryPeek(out _, out long due))
        {
            long now = _time.GetTimestamp();
            TimeSpan untilDue = due <= now ? TimeSpan.Zero : TimeSpan.FromSeconds((due - now) / (double)_time.TimestampFrequency);
            return untilDue < max ? untilDue : max;
        }

        return max;
    }

    // ---------------------------------------------------------------- the loop

    private void Run()
    {
        Volatile.Write(ref _threadId, Environment.CurrentManagedThreadId);
        if (_options.PinThreads && !CpuAffinity.TryPinCurrentThread(Cpu, out string? error))
        {
            PinningError = error;
        }

        System.Threading.SynchronizationContext.SetSynchronizationContext(SynchronizationContext);
        Doorbell doorbell = _doorbells[Id];
        int idle = 0;
        long phaseStart = _time.GetTimestamp();
        bool busy = true;
        try
        {
            while (true)
            {
                int work = PollInbound();
                work += PollServices();
                work += DrainForeign();
                work += RunLocal();
                work += FireTimers();
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

                if (_haltRequested && (_stalledCount == 0 || HaltGraceExpired()))
                {
                    break;
                }

                if (++idle < _options.SpinBudget)
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
                ParkUntilWork(doorbell);
            }
        }
        finally
        {
            long end = _time.GetTimestamp();
            if (busy)
            {
                Counters.BusyTicks += end - phaseStart;
            }
            else
            {
                Counters.IdleTicks += end - phaseStart;
            }

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

    private void ParkUntilWork(Doorbell doorbell)
    {
        doorbell.PrepareToPark();
        // Re-check every source of work after announcing the park (the Dekker half on this side).
        if (HasWork())
        {
            doorbell.CancelPark();
            return;
        }

        Counters.Parks++;
        doorbell.Park(_stalledCount > 0 ? TimeSpan.FromMilliseconds(1) : NextParkTimeout());
    }

    private bool HasWork()
    {
        if (_runCount > 0 || Volatile.Read(ref _foreignCount) > 0 || _haltRequested)
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

        if (_stalledCount > 0)
        {
            for (int core = 0; core < CoreCount; core++)
            {
                if (_stalledHead[core] is not null && !_outbound[core]!.IsFullForProducer)
                {
                    return true;
                }
            }
        }

        return _timers.TryPeek(out _, out long due) && due <= _time.GetTimestamp();
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
        if (Volatile.Read(ref _foreignCount) == 0)
        {
            return 0;
        }

        int n = 0;
        while (_foreign.TryDequeue(out WorkItem item))
        {
            Interlocked.Decrement(ref _foreignCount);
            Invoke(item);
            n++;
        }

        return n;
    }

    private int RunLocal()
    {
        // Run what is queued now; what those items queue runs on the next iteration, so inbound
        // rings are polled between rounds and a chatty domain cannot starve them.
        int n = _runCount;
        for (int i = 0; i < n; i++)
        {
            WorkItem item = _runQueue[_runHead];
            _runQueue[_runHead] = default;
            _runHead = (_runHead + 1) & (_runQueue.Length - 1);
            _runCount--;
            Invoke(item);
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
    }

    private void ReportUnhandled(Exception ex)
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

    private void ThrowWrongThread() =>
        throw new InvalidOperationException($"This object belongs to core {Id} and is used only from that core's thread (a domain must not leave its core with ConfigureAwait(false) or Task.Run).");
}
