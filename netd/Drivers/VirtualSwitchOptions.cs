using System.Numerics;

namespace Multikernel.Netd.Drivers;

/// <summary>Limits of a <see cref="VirtualSwitch"/>; each setter validates, so a switch never starts with a bad value.</summary>
public sealed class VirtualSwitchOptions
{
    private int _maxPorts = 16;
    private int _mtu = NetworkDevice.DefaultMtu;
    private int _queueBytes = 64 * 1024;
    private int _macTableCapacity = 1024;
    private TimeSpan _macAgingTime = TimeSpan.FromSeconds(300);

    /// <summary>Most ports the switch ever has (removed ports keep their number). Default 16; 2..256.</summary>
    public int MaxPorts
    {
        get => _maxPorts;
        set => _maxPorts = value is >= 2 and <= 256 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "A virtual switch has 2..256 ports.");
    }

    /// <summary>IP MTU of every port: frames are at most <c>Mtu + 14</c> bytes. Default 1500; 576..9000.</summary>
    public int Mtu
    {
        get => _mtu;
        set => _mtu = value is >= NetworkDevice.MinMtu and <= NetworkDevice.MaxMtu ? value : throw new ArgumentOutOfRangeException(nameof(value), value, $"The MTU is {NetworkDevice.MinMtu}..{NetworkDevice.MaxMtu} bytes.");
    }

    /// <summary>
    /// Bytes of the queue from one port to another (one SPSC ring per ordered pair that has
    /// talked, created on the first frame). A 64-byte frame takes 80 bytes, a 1514-byte frame
    /// 1536. Default 64 KiB; a power of two from 4 KiB to 16 MiB, and at least four maximum frames.
    /// </summary>
    public int QueueBytes
    {
        get => _queueBytes;
        set => _queueBytes = value is >= 4096 and <= 16 << 20 && BitOperations.IsPow2(value) ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "A port queue is a power of two from 4096 bytes to 16 MiB.");
    }

    /// <summary>Learned stations the table is sized for (rounded up to a power of two). Default 1024; 8..65536.</summary>
    public int MacTableCapacity
    {
        get => _macTableCapacity;
        set => _macTableCapacity = value is >= 8 and <= 65536 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "The MAC table holds 8..65536 stations.");
    }

    /// <summary>How long a learned station stays known without sending (Linux bridges: 300 s). Default 300 s; 1 ms..1 day.</summary>
    public TimeSpan MacAgingTime
    {
        get => _macAgingTime;
        set => _macAgingTime = value >= TimeSpan.FromMilliseconds(1) && value <= TimeSpan.FromDays(1) ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "MAC aging is 1 ms..1 day.");
    }

    internal void Validate()
    {
        if (FrameRing.RecordBytes(Mtu + NetworkDevice.EthernetHeaderLength) * 4 > QueueBytes)
        {
            throw new ArgumentException($"QueueBytes {QueueBytes} holds fewer than four frames of MTU {Mtu}; raise QueueBytes or lower the MTU.");
        }
    }
}

/// <summary>How one switch port behaves.</summary>
public sealed class SwitchPortOptions
{
    /// <summary>
    /// Create a Linux eventfd the port signals when frames arrive while its owner is parked, so
    /// the owner's kernel can wait on it with epoll (<see cref="INetworkDevice.WaitFileDescriptor"/>).
    /// Default false (the owner polls). Linux only.
    /// </summary>
    public bool WakeFileDescriptor { get; set; }

    /// <summary>Faults injected into the frames this port receives; null (the default) for a perfect link.</summary>
    public FaultInjectionOptions? Faults { get; set; }
}

/// <summary>
/// Seeded faults on a port's receive path, modelled on smoltcp's <c>FaultInjector</c>: every
/// decision comes from one pseudo-random sequence seeded here and drawn on the receiving thread,
/// so the same seed and the same arrivals give the same faults. Probabilities are per frame.
/// </summary>
public sealed class FaultInjectionOptions
{
    private double _loss;
    private double _duplicate;
    private double _reorder;
    private double _corrupt;
    private TimeSpan _delay;
    private long _rateLimitBytesPerSecond;
    private int _rateLimitBurstBytes;

    /// <summary>Seed of the fault sequence. Default 0.</summary>
    public ulong Seed { get; set; }

    /// <summary>Probability a frame is lost. Default 0.</summary>
    public double LossProbability { get => _loss; set => _loss = CheckProbability(value); }

    /// <summary>Probability a frame is delivered twice. Default 0.</summary>
    public double DuplicateProbability { get => _duplicate; set => _duplicate = CheckProbability(value); }

    /// <summary>Probability a frame is delivered after the next queued one (when one is queued). Default 0.</summary>
    public double ReorderProbability { get => _reorder; set => _reorder = CheckProbability(value); }

    /// <summary>Probability one random bit of a frame is flipped. Default 0.</summary>
    public double CorruptProbability { get => _corrupt; set => _corrupt = CheckProbability(value); }

    /// <summary>Fixed latency added to every frame (it stays queued until due, in order). Default 0; at most 10 s.</summary>
    public TimeSpan Delay
    {
        get => _delay;
        set => _delay = value >= TimeSpan.Zero && value <= TimeSpan.FromSeconds(10) ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "The delay is 0..10 s.");
    }

    /// <summary>
    /// Token-bucket shaping of the port's receive rate in bytes per second; frames over the rate
    /// stay queued (and are dropped as <see cref="DropReason.QueueFull"/> once the queue fills).
    /// Default 0 = unlimited; at most 100 GB/s.
    /// </summary>
    public long RateLimitBytesPerSecond
    {
        get => _rateLimitBytesPerSecond;
        set => _rateLimitBytesPerSecond = value is >= 0 and <= 100_000_000_000 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "The rate limit is 0 (off) .. 100 GB/s.");
    }

    /// <summary>Bucket depth in bytes (the largest burst at full speed). Default 0 = one tenth of a second at the rate, at least one maximum frame.</summary>
    public int RateLimitBurstBytes
    {
        get => _rateLimitBurstBytes;
        set => _rateLimitBurstBytes = value >= 0 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "The burst is a byte count (0 = default).");
    }

    private static double CheckProbability(double p) =>
        p is >= 0 and <= 1 ? p : throw new ArgumentOutOfRangeException(nameof(p), p, "A fault probability is 0..1.");
}
