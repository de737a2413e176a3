using System.Numerics;

namespace Multikernel.CpuDriver.Kernel;

/// <summary>Per-kernel limits. Every queue and table a kernel owns has its bound here.</summary>
public sealed class KernelOptions
{
    /// <summary>Slots per URPC ring (per ordered pair of cores). Power of two. Default 256 (16 KiB per ring).</summary>
    public int RingSlots { get; set; } = 256;

    /// <summary>Messages a channel may have in flight before its sender stalls (the receiver's queue size). Power of two. Default 64.</summary>
    public int ChannelWindow { get; set; } = 64;

    /// <summary>Idle loop iterations before a core parks. Default 2000 (a few microseconds of spinning).</summary>
    public int SpinBudget { get; set; } = 2000;

    /// <summary>Longest a parked core sleeps without a doorbell or due timer. Default 100 ms.</summary>
    public TimeSpan MaxPark { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>Channel endpoints per core. Default 4096 (at most 65535).</summary>
    public int MaxEndpointsPerCore { get; set; } = 4096;

    /// <summary>Domains per core. Default 256.</summary>
    public int MaxDomainsPerCore { get; set; } = 256;

    /// <summary>Pending timers per core. Default 4096.</summary>
    public int MaxTimersPerCore { get; set; } = 4096;

    /// <summary>Messages one inbound ring delivers per loop iteration before the kernel looks at other work. Default 64.</summary>
    public int ReceiveBatch { get; set; } = 64;

    /// <summary>
    /// Give the CPU away (Thread.Yield) instead of spinning while idle. The machine turns this on
    /// when kernels outnumber CPUs, so a spinning kernel does not starve the one sharing its CPU.
    /// Default false.
    /// </summary>
    public bool YieldWhenIdle { get; set; }

    /// <summary>
    /// Fraction of root message traces each core samples itself before asking the tracing SDK
    /// (see <see cref="Diagnostics.MessageSampler"/>). 1 leaves every decision to the SDK. Default 1.
    /// </summary>
    public double MessageTraceRatio { get; set; } = 1;

    /// <summary>Pin each kernel thread to a CPU with sched_setaffinity. Default true.</summary>
    public bool PinThreads { get; set; } = true;

    /// <summary>A copy of these options.</summary>
    public KernelOptions Clone() => (KernelOptions)MemberwiseClone();

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

        if (SpinBudget < 0)
        {
            yield return $"SpinBudget must not be negative (got {SpinBudget}).";
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

        if (MaxTimersPerCore < 1)
        {
            yield return $"MaxTimersPerCore must be at least 1 (got {MaxTimersPerCore}).";
        }

        if (ReceiveBatch < 1)
        {
            yield return $"ReceiveBatch must be at least 1 (got {ReceiveBatch}).";
        }

        if (double.IsNaN(MessageTraceRatio) || MessageTraceRatio < 0 || MessageTraceRatio > 1)
        {
            yield return $"MessageTraceRatio must be between 0 and 1 (got {MessageTraceRatio}).";
        }
    }
}
