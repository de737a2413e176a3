using System.Numerics;

namespace Multikernel.CpuDriver.Kernel;

/// <summary>
/// Per-kernel limits. Every queue and table a kernel owns has its bound here. Each kernel takes
/// its own read-only snapshot (<see cref="Snapshot"/>) when it is created, so no two cores share
/// a mutable options object and nothing changes under a running core.
/// </summary>
public sealed class KernelOptions
{
    private int _ringSlots = 256;
    private int _channelWindow = 64;
    private int _spinBudget = 2000;
    private TimeSpan _spinTime = TimeSpan.FromMicroseconds(20);
    private TimeSpan _maxPark = TimeSpan.FromMilliseconds(100);
    private int _maxEndpointsPerCore = 4096;
    private int _maxDomainsPerCore = 256;
    private int _maxTimersPerCore = 4096;
    private int _receiveBatch = 64;
    private int _runQueueCapacity = 16384;
    private int _maxForeignWork = 65536;
    private int _maxWakeSources = 64;
    private int _maxWaitersPerEndpoint = 16;
    private int _channelGrantWindow = 4;
    private bool _yieldWhenIdle;
    private double _messageTraceRatio = 1;
    private bool _pinThreads = true;

    /// <summary>True for a kernel's snapshot: every setter throws.</summary>
    public bool IsReadOnly { get; private set; }

    /// <summary>Slots per URPC ring (per ordered pair of cores), also the bound of same-core delivery. Power of two. Default 256 (16 KiB per ring).</summary>
    public int RingSlots { get => _ringSlots; set => Set(ref _ringSlots, value); }

    /// <summary>Messages a channel may have in flight before its sender stalls (the receiver's queue size). Power of two. Default 64.</summary>
    public int ChannelWindow { get => _channelWindow; set => Set(ref _channelWindow, value); }

    /// <summary>
    /// At most this many idle loop iterations before a core parks; it parks earlier when
    /// <see cref="SpinTime"/> has passed. 0 parks at the first idle iteration. Default 2000.
    /// </summary>
    public int SpinBudget { get => _spinBudget; set => Set(ref _spinBudget, value); }

    /// <summary>How long an idle core keeps polling before it parks (measured in time, not iterations). Default 20 µs.</summary>
    public TimeSpan SpinTime { get => _spinTime; set => Set(ref _spinTime, value); }

    /// <summary>Longest a parked core sleeps without a doorbell, a readable descriptor or a due timer. Default 100 ms.</summary>
    public TimeSpan MaxPark { get => _maxPark; set => Set(ref _maxPark, value); }

    /// <summary>Channel endpoints per core. Default 4096 (at most 65535).</summary>
    public int MaxEndpointsPerCore { get => _maxEndpointsPerCore; set => Set(ref _maxEndpointsPerCore, value); }

    /// <summary>Domains per core. Default 256.</summary>
    public int MaxDomainsPerCore { get => _maxDomainsPerCore; set => Set(ref _maxDomainsPerCore, value); }

    /// <summary>Armed timers per core (delays and <see cref="CoreTimeProvider"/> timers); arming one more throws. Default 4096.</summary>
    public int MaxTimersPerCore { get => _maxTimersPerCore; set => Set(ref _maxTimersPerCore, value); }

    /// <summary>Messages one inbound ring delivers per loop iteration before the kernel looks at other work. Default 64.</summary>
    public int ReceiveBatch { get => _receiveBatch; set => Set(ref _receiveBatch, value); }

    /// <summary>
    /// Work items domains may have queued on their core's run queue (posts, continuations through
    /// the synchronization context, tasks on the core's scheduler). One more is refused with an
    /// <see cref="InvalidOperationException"/>. The kernel's own continuations have a reserve
    /// above this. Default 16384.
    /// </summary>
    public int RunQueueCapacity { get => _runQueueCapacity; set => Set(ref _runQueueCapacity, value); }

    /// <summary>
    /// Work items other threads may have posted to a core and not yet run (<c>Post</c>,
    /// <c>RunAsync</c>, the synchronization context from a pool thread). One more fails its
    /// caller at once. Default 65536.
    /// </summary>
    public int MaxForeignWork { get => _maxForeignWork; set => Set(ref _maxForeignWork, value); }

    /// <summary>File descriptors kernel services may register with one core's wait set. Default 64.</summary>
    public int MaxWakeSources { get => _maxWakeSources; set => Set(ref _maxWakeSources, value); }

    /// <summary>
    /// Capabilities a channel's sender may have granted that the receiver has not taken yet; one
    /// more send stalls (does not complete) until the receiver takes one, as data stalls on
    /// <see cref="ChannelWindow"/>. Default 4.
    /// </summary>
    public int ChannelGrantWindow { get => _channelGrantWindow; set => Set(ref _channelGrantWindow, value); }

    /// <summary>Concurrent waiting readers (or write waiters) per endpoint; one more throws. Default 16.</summary>
    public int MaxWaitersPerEndpoint { get => _maxWaitersPerEndpoint; set => Set(ref _maxWaitersPerEndpoint, value); }

    /// <summary>
    /// Give the CPU away (Thread.Yield) instead of spinning while idle. The machine turns this on
    /// when kernels outnumber CPUs, so a spinning kernel does not starve the one sharing its CPU.
    /// Default false.
    /// </summary>
    public bool YieldWhenIdle { get => _yieldWhenIdle; set => Set(ref _yieldWhenIdle, value); }

    /// <summary>
    /// Fraction of root message traces each core samples itself before asking the tracing SDK
    /// (see <see cref="Diagnostics.MessageSampler"/>). 1 leaves every decision to the SDK. Default 1.
    /// </summary>
    public double MessageTraceRatio { get => _messageTraceRatio; set => Set(ref _messageTraceRatio, value); }

    /// <summary>Pin each kernel thread to a CPU with sched_setaffinity. Default true.</summary>
    public bool PinThreads { get => _pinThreads; set => Set(ref _pinThreads, value); }

    /// <summary>A writable copy of these options.</summary>
    public KernelOptions Clone()
    {
        var copy = (KernelOptions)MemberwiseClone();
        copy.IsReadOnly = false;
        return copy;
    }

    /// <summary>A read-only copy: what each kernel keeps.</summary>
    public KernelOptions Snapshot()
    {
        var copy = (KernelOptions)MemberwiseClone();
        copy.IsReadOnly = true;
        return copy;
    }

    /// <summary>Returns the first problem with these options, or null.</summary>
    public string? Validate() => Problems().FirstOrDefault();

    /// <summary>Every problem with these options, one clear line each naming the option.</summary>
    public IEnumerable<string> Problems()
    {
        if (RingSlots < 2 || !BitOperations.IsPow2(RingSlots) || RingSlots > (1 << 20))
        {
            yield return $"RingSlots must be a power of two between 2 and 1048576 (got {RingSlots}).";
        }

        if (ChannelWindow < 2 || !BitOperations.IsPow2(ChannelWindow) || ChannelWindow > 65536)
        {
            yield return $"ChannelWindow must be a power of two between 2 and 65536 (got {ChannelWindow}).";
        }

        if (ChannelGrantWindow < 1 || ChannelGrantWindow > 1024)
        {
            yield return $"ChannelGrantWindow must be between 1 and 1024 (got {ChannelGrantWindow}).";
        }

        if (SpinBudget < 0)
        {
            yield return $"SpinBudget must not be negative (got {SpinBudget}).";
        }

        if (SpinTime < TimeSpan.Zero || SpinTime > TimeSpan.FromSeconds(1))
        {
            yield return $"SpinTime must be between 0 and 1 s (got {SpinTime}).";
        }

        if (MaxPark <= TimeSpan.Zero)
        {
            yield return $"MaxPark must be positive (got {MaxPark}).";
        }

        if (MaxEndpointsPerCore is < 1 or > 65535)
        {
            yield return $"MaxEndpointsPerCore must be between 1 and 65535 (got {MaxEndpointsPerCore}).";
        }

        if (MaxDomainsPerCore < 1)
        {
            yield return $"MaxDomainsPerCore must be at least 1 (got {MaxDomainsPerCore}).";
        }

        if (MaxTimersPerCore is < 1 or > (1 << 24))
        {
            yield return $"MaxTimersPerCore must be between 1 and 16777216 (got {MaxTimersPerCore}).";
        }

        if (ReceiveBatch < 1)
        {
            yield return $"ReceiveBatch must be at least 1 (got {ReceiveBatch}).";
        }

        if (RunQueueCapacity is < 16 or > (1 << 24))
        {
            yield return $"RunQueueCapacity must be between 16 and 16777216 (got {RunQueueCapacity}).";
        }

        if (MaxForeignWork is < 1 or > (1 << 24))
        {
            yield return $"MaxForeignWork must be between 1 and 16777216 (got {MaxForeignWork}).";
        }

        if (MaxWakeSources is < 0 or > 4096)
        {
            yield return $"MaxWakeSources must be between 0 and 4096 (got {MaxWakeSources}).";
        }

        if (MaxWaitersPerEndpoint is < 1 or > 1024)
        {
            yield return $"MaxWaitersPerEndpoint must be between 1 and 1024 (got {MaxWaitersPerEndpoint}).";
        }

        if (double.IsNaN(MessageTraceRatio) || MessageTraceRatio < 0 || MessageTraceRatio > 1)
        {
            yield return $"MessageTraceRatio must be between 0 and 1 (got {MessageTraceRatio}).";
        }
    }

    private void Set<T>(ref T field, T value)
    {
        if (IsReadOnly)
        {
            throw new InvalidOperationException("These kernel options are a running kernel's snapshot; change a copy (Clone) before the machine is built.");
        }

        field = value;
    }
}
