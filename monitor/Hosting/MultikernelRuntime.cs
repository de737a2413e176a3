using System.Diagnostics;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Multikernel.CpuDriver.Capabilities;
using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Domains;
using Multikernel.CpuDriver.Memory;
using Multikernel.CpuDriver.Kernel;
using Multikernel.Monitor.Protocol;
using Multikernel.Monitor.Telemetry;

namespace Multikernel.Monitor.Hosting;

/// <summary>
/// A booted multikernel: the machine (kernels and rings) and a monitor per core. Boot starts
/// core 0 only; its monitor starts the rest. Stop runs the monitors' two-phase shutdown (stop
/// domains everywhere, then halt) and joins every kernel thread.
/// </summary>
public sealed class MultikernelRuntime : IAsyncDisposable
{
    private readonly ILogger _logger;
    private readonly CoreMonitor[] _monitors;
    private readonly TaskCompletionSource _booted = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource<int> _domainsStopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _state; // 0 new, 1 started, 2 stopping, 3 stopped
    private bool _threadsLeftRunning;
    private const int MaxRememberedFaults = 64;
    private readonly System.Collections.Concurrent.ConcurrentQueue<DomainFault> _faults = new();

    /// <summary>Creates the machine for the configured core count (nothing runs yet).</summary>
    public MultikernelRuntime(MultikernelOptions options, TimeProvider? time = null, ILogger? logger = null, int? cpuCount = null, IMeterFactory? meterFactory = null, double messageTraceRatio = 1)
    {
        ArgumentNullException.ThrowIfNull(options);
        string[] problems = [.. options.Validate()];
        if (problems.Length > 0)
        {
            throw new ArgumentException(string.Join(Environment.NewLine, problems), nameof(options));
        }

        Options = options;
        Time = time ?? TimeProvider.System;
        _logger = logger ?? NullLogger.Instance;
        Programs = options.Programs;
        Programs.Freeze();
        int cpus = Math.Max(1, cpuCount ?? Environment.ProcessorCount);
        KernelOptions kernelOptions = options.ToKernelOptions();
        kernelOptions.MessageTraceRatio = messageTraceRatio;
        Machine = new Machine(options.ResolveCores(cpus), kernelOptions, Time, cpus);
        // Physical memory: one arena, cut into frames and split among the cores as RAM
        // capabilities held by each core's monitor. Nothing is allocated per message after this.
        Memory = new PhysicalMemory(options.MemoryBytes);
        FrameRange[] shares = Memory.Split(Machine.Cores);
        CapabilityOptions capabilityOptions = options.ToCapabilityOptions(Machine.Cores);
        _capabilities = new CoreCapabilities[Machine.Cores];
        var services = new CapabilityService[Machine.Cores];
        for (int core = 0; core < Machine.Cores; core++)
        {
            _capabilities[core] = new CoreCapabilities(core, Machine.Cores, Memory, shares[core], capabilityOptions);
            var links = new Endpoint?[Machine.Cores];
            for (int peer = 0; peer < Machine.Cores; peer++)
            {
                links[peer] = Machine.CapabilityLink(core, peer);
            }

            services[core] = new CapabilityService(_capabilities[core], links);
            Machine.Kernels[core].AddService(services[core]);
        }

        Metrics = new MultikernelMetrics(Machine.Kernels, meterFactory, maxChannels: Math.Min(1 << 20, options.MaxEndpointsPerCore * Machine.Cores));
        foreach (CapabilityService service in services)
        {
            service.StepHandled = (core, step) => Metrics.RecordCapabilityOperation(core, step);
        }

        _monitors = new CoreMonitor[Machine.Cores];
        for (int core = 0; core < Machine.Cores; core++)
        {
            _monitors[core] = new CoreMonitor(this, core, _capabilities[core], shares[core]);
            Machine.Kernels[core].UnhandledException = (kernel, ex) => MultikernelLog.CoreUnhandled(_logger, kernel.Id, ex);
            Machine.Kernels[core].EndpointReleased = endpoint => Metrics.UnregisterChannel(endpoint);
        }
    }

    private readonly CoreCapabilities[] _capabilities;

    /// <summary>The physical memory arena allocated at boot.</summary>
    public PhysicalMemory Memory { get; }

    /// <summary>Core <paramref name="core"/>'s capability tables (read them only on that core, or after it stopped).</summary>
    public CoreCapabilities Capabilities(int core) => _capabilities[core];

    /// <summary>The options the machine was built from.</summary>
    public MultikernelOptions Options { get; }

    /// <summary>The time source of every kernel.</summary>
    public TimeProvider Time { get; }

    /// <summary>The kernels and rings.</summary>
    public Machine Machine { get; }

    /// <summary>Registered programs.</summary>
    public ProgramRegistry Programs { get; }

    /// <summary>The runtime's meter: per-core, per-channel and monitor instruments.</summary>
    public MultikernelMetrics Metrics { get; }

    /// <summary>Number of cores.</summary>
    public int Cores => Machine.Cores;

    /// <summary>Domains that did not stop within the shutdown timeout (-1 until shutdown ran its protocol).</summary>
    public int AbandonedDomains => _domainsStopped.Task.IsCompletedSuccessfully ? _domainsStopped.Task.Result : -1;

    /// <summary>The first domains that failed (at most 64 are remembered; all are logged).</summary>
    public IReadOnlyCollection<DomainFault> DomainFaults => _faults;

    /// <summary>Completes when every core has booted.</summary>
    public Task Booted => _booted.Task;

    /// <summary>Boots core 0, which boots the others, and waits until all are up.</summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.CompareExchange(ref _state, 1, 0) != 0)
        {
            throw new InvalidOperationException("The machine was already started.");
        }

        long start = Stopwatch.GetTimestamp();
        MultikernelLog.Booting(_logger, Machine.Cores, Machine.Cpus, Machine.RingBytes);
        if (Machine.Oversubscribed)
        {
            MultikernelLog.Oversubscribed(_logger, Machine.Cores, Machine.Cpus);
        }

        // Each monitor's first act is queued before its kernel starts; core 0's runs now.
        for (int core = 0; core < Machine.Cores; core++)
        {
            CoreMonitor monitor = _monitors[core];
            Machine.Kernels[core].Post(static s => ((CoreMonitor)s!).Start(), monitor);
        }

        Machine.StartCore(0);
        await _booted.Task.WaitAsync(Options.BootTimeout, cancellationToken);
        foreach (CoreKernel kernel in Machine.Kernels)
        {
            if (kernel.PinningError is { } error)
            {
                MultikernelLog.PinningFailed(_logger, kernel.Id, kernel.Cpu, error);
            }
        }

        MultikernelLog.Booted(_logger, Machine.Cores, Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        foreach (Func<MultikernelRuntime, CancellationToken, Task> step in Options.BootSteps)
        {
            await step(this, cancellationToken);
        }

        foreach (StartupProgram program in Options.Startup)
        {
            if (program.Core is int core)
            {
                // A negative core counts from the end (-1: the last core), for services such as
                // netd that want a core of their own whatever the machine's size.
                await SpawnAsync(core < 0 ? Math.Max(0, Machine.Cores + core) : core, program.Program, program.Argument);
            }
            else
            {
                for (int k = 0; k < Machine.Cores; k++)
                {
                    await SpawnAsync(k, program.Program, program.Argument);
                }
            }
        }
    }

    /// <summary>Spawns a registered program as a domain on <paramref name="core"/> (asked of that core's monitor).</summary>
    public Task<ulong> SpawnAsync(int core, string program, ulong argument = 0)
    {
        return SpawnAsync(core, program, argument, CancellationToken.None);
    }

    /// <summary>Spawns a registered program as a domain on <paramref name="core"/>; <paramref name="cancellationToken"/> stops waiting for the monitor's answer.</summary>
    public Task<ulong> SpawnAsync(int core, string program, ulong argument, CancellationToken cancellationToken)
    {
        if ((uint)core >= (uint)Machine.Cores)
        {
            throw new ArgumentOutOfRangeException(nameof(core), core, $"There are {Machine.Cores} cores (0..{Machine.Cores - 1}).");
        }

        return RunOnCoreAsync(core, monitor => monitor.SpawnAsync(core, program, argument, cancellationToken));
    }

    /// <summary>Runs <paramref name="work"/> on <paramref name="core"/>'s thread and returns its result here.</summary>
    internal Task<T> RunOnCoreAsync<T>(int core, Func<CoreMonitor, Task<T>> work)
    {
        CheckRunning(core);
        CoreMonitor monitor = _monitors[core];
        return monitor.Kernel.RunAsync(() => work(monitor));
    }

    /// <summary>Runs <paramref name="work"/> on <paramref name="core"/>'s kernel (its awaits come back there) and returns its result here.</summary>
    internal Task<T> RunOnKernelAsync<T>(int core, Func<Task<T>> work)
    {
        CheckRunning(core);
        return Machine.Kernels[core].RunAsync(work);
    }

    private void CheckRunning(int core)
    {
        if ((uint)core >= (uint)Machine.Cores)
        {
            throw new ArgumentOutOfRangeException(nameof(core), core, $"There are {Machine.Cores} cores (0..{Machine.Cores - 1}).");
        }

        int state = Volatile.Read(ref _state);
        if (state != 1 && !(state == 2 && !Machine.Kernels[core].Stopped.IsCompleted))
        {
            throw new InvalidOperationException(state == 0
                ? "The machine is not started: call StartAsync (or start the host) first."
                : "The machine has stopped; no core runs work any more.");
        }
    }

    // ------------------------------------------------------------------ host-facing calls

    /// <summary>
    /// Runs <paramref name="work"/> on core <paramref name="core"/> from any thread and returns its
    /// result. The work runs as the core's host domain (a domain the runtime starts on first use,
    /// with its own CSpace and RAM budget), so it can export, bind, spawn and use capabilities like
    /// any domain; its awaits come back to that core.
    /// </summary>
    public Task<T> InvokeAsync<T>(int core, Func<DomainContext, Task<T>> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        return RunOnCoreAsync(core, async monitor => await work(await monitor.HostContextAsync()));
    }

    /// <summary>Runs synchronous <paramref name="work"/> on core <paramref name="core"/> (see <see cref="InvokeAsync{T}(int, Func{DomainContext, Task{T}})"/>).</summary>
    public Task<T> InvokeAsync<T>(int core, Func<DomainContext, T> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        return RunOnCoreAsync(core, async monitor => work(await monitor.HostContextAsync()));
    }

    /// <summary>Runs <paramref name="work"/> on core <paramref name="core"/> and completes when it has (see <see cref="InvokeAsync{T}(int, Func{DomainContext, Task{T}})"/>).</summary>
    public Task InvokeAsync(int core, Func<DomainContext, Task> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        return RunOnCoreAsync(core, async monitor =>
        {
            await work(await monitor.HostContextAsync());
            return true;
        });
    }

    /// <summary>
    /// Starts a sharded service: one instance per core, made by <paramref name="factory"/> on that
    /// core inside a domain named <paramref name="name"/>, with a channel between every ordered
    /// pair of cores for its calls. The service stops with the machine.
    /// </summary>
    public async Task<Sharded<TService>> StartShardedAsync<TService>(string name, Func<DomainContext, TService> factory, CancellationToken cancellationToken = default) where TService : class
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(factory);
        var sharded = new Sharded<TService>(this, name);
        int cores = Machine.Cores;
        var clients = new Endpoint?[cores][];
        var servers = new Endpoint?[cores][];
        var created = new Task<bool>[cores];
        for (int k = 0; k < cores; k++)
        {
            int core = k;
            created[k] = RunOnCoreAsync(core, monitor =>
            {
                var ready = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
                (MonitorStatus status, _) = monitor.StartDomainLocal(name, async ctx =>
                {
                    try
                    {
                        (clients[core], servers[core]) = sharded.CreateShard(core, ctx, factory);
                        ready.TrySetResult(true);
                    }
                    catch (Exception ex)
                    {
                        ready.TrySetException(ex);
                        throw;
                    }

                    try
                    {
                        await CoreMonitor.UntilStoppedAsync(ctx.Stopping);
                    }
                    finally
                    {
                        sharded.StopShard(core);
                    }
                }, 0);
                return status == MonitorStatus.Ok ? ready.Task : throw new MonitorException(status, $"Starting shard {core} of '{name}' failed: {status}.");
            });
        }

        await Task.WhenAll(created).WaitAsync(cancellationToken);
        // Every end exists: connect them (each core its own), then serve. No message flows
        // before both phases are done on every core, since no call can be made yet.
        await Task.WhenAll(Enumerable.Range(0, cores).Select(k => RunOnCoreAsync(k, _ =>
        {
            sharded.ConnectShard(k, clients, servers);
            return Task.FromResult(true);
        }))).WaitAsync(cancellationToken);
        await Task.WhenAll(Enumerable.Range(0, cores).Select(k => RunOnCoreAsync(k, _ =>
        {
            sharded.ServeShard(k, servers);
            return Task.FromResult(true);
        }))).WaitAsync(cancellationToken);
        return sharded;
    }

    // The nesting level of sharded calls in the current flow (0 outside any sharded handler). An
    // instance field: one machine's calls never count against another's.
    private readonly AsyncLocal<int> _shardedDepth = new();

    internal int ShardedDepth => _shardedDepth.Value;

    /// <summary>
    /// The caller's execution context with the sharded nesting level set to <paramref name="depth"/>,
    /// captured once: a server runs each handler under the cached context of its level instead of
    /// setting the AsyncLocal per call (a set allocates a new context every time; restoring a
    /// captured one allocates nothing). The caller's own context is left as it was.
    /// </summary>
    internal ExecutionContext CaptureShardedDepth(int depth)
    {
        int previous = _shardedDepth.Value;
        _shardedDepth.Value = depth;
        ExecutionContext captured = ExecutionContext.Capture() ?? throw new InvalidOperationException("Sharded services need execution-context flow (it is suppressed here).");
        _shardedDepth.Value = previous;
        return captured;
    }

    /// <summary>The core whose kernel thread runs the caller (on this machine), or -1.</summary>
    internal int CurrentCore() =>
        SynchronizationContext.Current is CoreSynchronizationContext context
        && (uint)context.CoreId < (uint)Machine.Cores
        && ReferenceEquals(Machine.Kernels[context.CoreId].SynchronizationContext, context)
        && Machine.Kernels[context.CoreId].IsCurrentThread
            ? context.CoreId
            : -1;

    /// <summary>
    /// Stops domain <paramref name="domainId"/> (as <see cref="SpawnAsync(int, string, ulong)"/> returned it)
    /// and waits until it ended and everything it held went back: its RAM, its channels, and the Nic
    /// when it was the NIC program (then every DevFrame derived from the Nic is revoked, and the
    /// next spawn of the NIC program gets it again). False when no such domain runs.
    /// </summary>
    public Task<bool> StopDomainAsync(ulong domainId)
    {
        int core = (int)(domainId >> 32);
        if ((uint)core >= (uint)Machine.Cores)
        {
            return Task.FromResult(false);
        }

        return RunOnCoreAsync(core, monitor => monitor.StopDomainAsync(domainId));
    }

    /// <summary>Frames of RAM core <paramref name="core"/>'s monitor has left to give out (read on that core).</summary>
    public Task<long> FreeRamFramesAsync(int core) => RunOnCoreAsync(core, m => Task.FromResult(m.Space.FreeRamFrames));

    /// <summary>Domains running on <paramref name="core"/> (snapshot taken on that core).</summary>
    public Task<IReadOnlyList<string>> ListDomainsAsync(int core) =>
        RunOnCoreAsync<IReadOnlyList<string>>(core, m => Task.FromResult<IReadOnlyList<string>>([.. m.Kernel.Domains.Select(d => d.ToString())]));

    /// <summary>
    /// Shuts the machine down: every monitor stops its domains (they see their Stopping token),
    /// reports to core 0, and core 0 halts everyone; each kernel drains its rings and stalled
    /// sends before its thread exits. Then the rings are freed.
    /// </summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        int previous = Interlocked.CompareExchange(ref _state, 2, 1);
        if (previous != 1)
        {
            if (previous == 0)
            {
                Interlocked.Exchange(ref _state, 3);
                Machine.Dispose();
                Memory.Dispose();
            }

            return;
        }

        long start = Stopwatch.GetTimestamp();
        MultikernelLog.ShuttingDown(_logger);
        Machine.Kernels[0].Post(static s => ((CoreMonitor)s!).BeginShutdown(), _monitors[0]);
        TimeSpan budget = Options.ShutdownTimeout + TimeSpan.FromSeconds(5);
        Task allStopped = Task.WhenAll(Machine.Kernels.Select(k => k.Stopped));
        try
        {
            await allStopped.WaitAsync(budget, cancellationToken);
        }
        catch (Exception ex) when (ex is TimeoutException or OperationCanceledException)
        {
            // A core did not answer the protocol: halt every kernel directly.
            if (!Machine.HaltAll(TimeSpan.FromSeconds(5)))
            {
                _threadsLeftRunning = true;
                MultikernelLog.HaltTimeout(_logger, budget.TotalSeconds);
            }
        }

        Machine.JoinAll(TimeSpan.FromSeconds(5));
        int abandoned = _domainsStopped.Task.IsCompletedSuccessfully ? _domainsStopped.Task.Result : -1;
        MultikernelLog.Halted(_logger, Stopwatch.GetElapsedTime(start).TotalMilliseconds, abandoned);
        Interlocked.Exchange(ref _state, 3);
        if (!_threadsLeftRunning)
        {
            Metrics.Dispose();
            Machine.Dispose();
            Memory.Dispose();
        }
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync() => await StopAsync();

    internal void OnBooted() => _booted.TrySetResult();

    internal void OnDomainsStopped(int abandoned) => _domainsStopped.TrySetResult(abandoned);

    /// <summary>The machine's logger (monitors log through it).</summary>
    internal ILogger Logger => _logger;

    internal void ReportDomainFault(Domain domain, Exception ex)
    {
        MultikernelLog.DomainFaulted(_logger, domain.ToString(), ex);
        if (_faults.Count < MaxRememberedFaults)
        {
            _faults.Enqueue(new DomainFault(domain.ToString(), ex));
        }
    }

    internal void ReportAbandoned(int core, int count) => MultikernelLog.Abandoned(_logger, core, count);

    internal void ReportMonitorError(int core, int peer, Exception ex) => MultikernelLog.MonitorError(_logger, core, peer, ex);
}

/// <summary>A domain that ended with an exception.</summary>
/// <param name="Domain">The domain.</param>
/// <param name="Exception">What it threw.</param>
public sealed record DomainFault(string Domain, Exception Exception);
