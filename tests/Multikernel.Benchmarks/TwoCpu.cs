using System.Runtime.InteropServices;
using Multikernel.CpuDriver.Kernel;

namespace Multikernel.Benchmarks;

/// <summary>64-byte struct carried by the channel and queue variants (a URPC ring slot is 64 bytes too).</summary>
[StructLayout(LayoutKind.Sequential, Size = 64)]
public readonly struct Msg64(long seq)
{
    public readonly long Seq = seq;

    public static Msg64 Stop => new(-1);
}

/// <summary>A long alone on its cache line (64 bytes of padding each side).</summary>
[StructLayout(LayoutKind.Explicit, Size = 192)]
public struct PaddedLong
{
    [FieldOffset(64)] public long Value;
}

/// <summary>A heap-held <see cref="PaddedLong"/>, shared by the two threads.</summary>
public sealed class SharedLine
{
    public PaddedLong Line;
}

/// <summary>
/// The two-CPU harness: the benchmark thread is pinned to CPU 0 and a partner thread (echo or
/// consumer) to CPU 1 for the lifetime of one benchmark case. With one CPU nothing is pinned and
/// waiting loops yield, or the two spinners would wait a time slice for each other.
/// </summary>
public sealed class Partner
{
    public const int BenchmarkCpu = 0;
    public const int PartnerCpu = 1;

    // Set when a partner thread fails, so the benchmark thread's waiting loops throw instead of
    // spinning forever. One benchmark case runs per process, so one flag per process is enough.
    private static volatile bool s_failed;

    private readonly Thread _thread;
    private Exception? _error;

    private Partner(Action body, string name)
    {
        _thread = new Thread(() =>
        {
            try
            {
                Pin(PartnerCpu);
                body();
            }
#pragma warning disable CA1031 // reported by Join
            catch (Exception e)
#pragma warning restore CA1031
            {
                _error = e;
                s_failed = true;
            }
        })
        { IsBackground = true, Name = name };
    }

    /// <summary>True when waiting loops must yield (fewer than two CPUs).</summary>
    public static bool MustYield { get; } = Environment.ProcessorCount < 2;

    /// <summary>Pins the benchmark thread (call from [GlobalSetup], which runs on it) and starts the partner.</summary>
    public static Partner Start(Action body, string name)
    {
        Pin(BenchmarkCpu);
        var partner = new Partner(body, name);
        partner._thread.Start();
        return partner;
    }

    /// <summary>Waits for the partner to finish after it was sent its stop message.</summary>
    public void Join()
    {
        if (!_thread.Join(TimeSpan.FromSeconds(10)))
        {
            throw new InvalidOperationException($"{_thread.Name}: the partner thread did not stop.");
        }

        if (_error is not null)
        {
            throw new InvalidOperationException($"{_thread.Name}: {_error.Message}", _error);
        }
    }

    public static void Spin()
    {
        if (s_failed)
        {
            throw new InvalidOperationException("the partner thread failed; see GlobalCleanup for its error");
        }

        if (MustYield)
        {
            Thread.Yield();
        }
    }

    public static void ThrowOrder(long expected, long got) =>
        throw new InvalidOperationException($"message out of order: expected {expected}, got {got}");

    private static void Pin(int cpu)
    {
        if (Environment.ProcessorCount >= 2 && !CpuAffinity.TryPinCurrentThread(cpu, out string? error))
        {
            throw new InvalidOperationException($"cannot pin to CPU {cpu}: {error}");
        }
    }
}

/// <summary>Runs async benchmark bodies on the pinned thread with the shared <see cref="Multikernel.Cli.Bench.SpinPump"/>.</summary>
internal static class PinnedPump
{
    public static void Run(Func<Task> body) => Multikernel.Cli.Bench.SpinPump.Run(body, Partner.Spin);
}
