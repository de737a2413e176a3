using System.Runtime.CompilerServices;
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
public sealed partial class CoreKernel
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
    internal const nuint OwnStackBytes = KernelStackBytes / 2;

    /// <summary>The top of the window <see cref="IsCurrentThread"/> tests, while the loop runs (0 otherwise); CoreTimers keeps a copy for its own owner check.</summary>
    internal nint StackTop => Volatile.Read(ref _stackTop);

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
}
