using System.Numerics;

namespace Multikernel.Cli.Bench;

/// <summary>
/// What <see cref="UrpcBench.Run"/> measures and for how long. Every default is written in the
/// property's comment; <see cref="Validate"/> reports the first bad value.
/// </summary>
public sealed class UrpcBenchSettings
{
    /// <summary>CPU of the initiating/producing thread. Default 0.</summary>
    public int CpuA { get; init; }

    /// <summary>CPU of the echoing/consuming thread. Default 1.</summary>
    public int CpuB { get; init; } = 1;

    /// <summary>
    /// Pin the two threads (Linux sched_setaffinity). Default true. With fewer than two CPUs the
    /// run is unpinned whatever this says, and the results say so.
    /// </summary>
    public bool Pin { get; init; } = true;

    /// <summary>Measured runs per variant and mode; results are their medians. Default 7.</summary>
    public int Runs { get; init; } = 7;

    /// <summary>Length of one run (each variant also gets one unmeasured warm-up run). Default 250 ms.</summary>
    public TimeSpan RunDuration { get; init; } = TimeSpan.FromMilliseconds(250);

    /// <summary>
    /// Upper bound on the whole measurement. When runs x duration would exceed it, the run
    /// duration is shortened to fit. Default 110 s (the issue asks for under two minutes).
    /// </summary>
    public TimeSpan TimeBudget { get; init; } = TimeSpan.FromSeconds(110);

    /// <summary>
    /// Slots of the URPC ring, capacity of the bounded channel, and the in-flight window the
    /// unbounded queues are held to. Power of two, 2..65536. Default 256 (the kernel's default ring).
    /// </summary>
    public int RingSlots { get; init; } = 256;

    /// <summary>Messages per TryWriteBatch/TryReadBatch in the batched URPC variant. 1..RingSlots. Default 32.</summary>
    public int BatchSize { get; init; } = 32;

    /// <summary>Wake-ups of a parked receiver to sample for the wake-up cost. 1..100000. Default 300.</summary>
    public int WakeSamples { get; init; } = 300;

    /// <summary>Returns the first problem with these settings, or null.</summary>
    public string? Validate()
    {
        if (CpuA < 0 || CpuB < 0 || CpuA >= 1024 || CpuB >= 1024)
        {
            return $"CPUs must be between 0 and 1023 (got {CpuA} and {CpuB}).";
        }

        if (Pin && CpuA == CpuB && Environment.ProcessorCount > 1)
        {
            return $"The two threads need two different CPUs (both are {CpuA}).";
        }

        if (Runs is < 1 or > 101)
        {
            return $"Runs must be between 1 and 101 (got {Runs}).";
        }

        if (RunDuration < TimeSpan.FromMilliseconds(10) || RunDuration > TimeSpan.FromSeconds(10))
        {
            return $"RunDuration must be between 10 ms and 10 s (got {RunDuration}).";
        }

        if (TimeBudget < TimeSpan.FromSeconds(1))
        {
            return $"TimeBudget must be at least 1 s (got {TimeBudget}).";
        }

        if (RingSlots < 2 || RingSlots > 65536 || !BitOperations.IsPow2(RingSlots))
        {
            return $"RingSlots must be a power of two between 2 and 65536 (got {RingSlots}).";
        }

        if (BatchSize < 1 || BatchSize > RingSlots)
        {
            return $"BatchSize must be between 1 and RingSlots ({RingSlots}) (got {BatchSize}).";
        }

        if (WakeSamples is < 1 or > 100_000)
        {
            return $"WakeSamples must be between 1 and 100000 (got {WakeSamples}).";
        }

        return null;
    }
}
