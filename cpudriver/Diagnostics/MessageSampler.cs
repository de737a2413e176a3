using System.Runtime.CompilerServices;

namespace Multikernel.CpuDriver.Diagnostics;

/// <summary>
/// Head sampling of message traces, decided by the sending core before anything is created.
/// With OpenTelemetry's ratio samplers the SDK still builds a propagation-only Activity for
/// every root it drops, which costs nearly as much as tracing the message; a core that decides
/// first creates nothing for the messages it skips. Roots it keeps carry the
/// <see cref="KernelSampledTag"/> so the SDK's sampler records them without deciding again.
/// One per core, used only by that core (no locks, no shared state).
/// </summary>
public sealed class MessageSampler
{
    /// <summary>Tag on a root span the kernel already sampled.</summary>
    public const string KernelSampledTag = "multikernel.sampled_by";

    /// <summary>Value of <see cref="KernelSampledTag"/>.</summary>
    public const string KernelSampledValue = "kernel";

    private readonly ulong _threshold;
    private ulong _state;

    /// <summary>Creates a sampler keeping <paramref name="ratio"/> of root messages (1 = let the SDK decide everything).</summary>
    public MessageSampler(double ratio, ulong seed)
    {
        if (double.IsNaN(ratio) || ratio < 0 || ratio > 1)
        {
            throw new ArgumentOutOfRangeException(nameof(ratio), ratio, "A sampling ratio is between 0 and 1.");
        }

        Ratio = ratio;
        _threshold = (ulong)(ratio * (1UL << 53));
        _state = seed | 1;
    }

    /// <summary>The fraction of root messages traced.</summary>
    public double Ratio { get; }

    /// <summary>True when this core decides for root messages (ratio below 1).</summary>
    public bool IsGating => Ratio < 1;

    /// <summary>Draws for one root message: true to trace it. Core thread only.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool SampleRoot()
    {
        // xorshift64*: a few cycles, good enough to pick 1 message in N.
        ulong x = _state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        _state = x;
        return ((x * 0x2545F4914F6CDD1DUL) >> 11) < _threshold;
    }
}
