using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace Multikernel.Cli.Bench;

/// <summary>A read/write mix of the <c>scale</c> scenario.</summary>
/// <param name="Name">Its name in the rows (<c>read-heavy</c>, <c>write-heavy</c>).</param>
/// <param name="ReadPercent">Share of GETs; the rest are SETs.</param>
internal sealed record ScaleMix(string Name, int ReadPercent)
{
    /// <summary>95 % GET, 5 % SET.</summary>
    public static readonly ScaleMix ReadHeavy = new("read-heavy", 95);

    /// <summary>50 % GET, 50 % SET.</summary>
    public static readonly ScaleMix WriteHeavy = new("write-heavy", 50);

    public static readonly IReadOnlyList<ScaleMix> All = [ReadHeavy, WriteHeavy];
}

/// <summary>
/// The request stream every core (or thread) of the <c>scale</c> scenario generates: uniformly
/// random keys from a fixed key space, GET or SET by the mix. A xorshift generator per worker, so
/// generating a request costs a few nanoseconds, allocates nothing, divides nothing and is the
/// same for both modes.
/// </summary>
internal struct ScaleRequestStream
{
    private readonly ulong _keySpace;
    private readonly ulong _readThreshold;
    private ulong _state;

    public ScaleRequestStream(int seed, int keySpace, int readPercent)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(keySpace, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan((uint)readPercent, 100u, nameof(readPercent));
        _keySpace = (ulong)keySpace;
        // A read when the low 32 bits fall below this: exactly readPercent % of 2^32 (no modulo bias).
        _readThreshold = ((ulong)readPercent << 32) / 100;
        _state = (0x9E3779B97F4A7C15UL ^ ((ulong)(uint)seed * 0xBF58476D1CE4E5B9UL)) | 1;
    }

    /// <summary>The next request: its key (in <c>[0, keySpace)</c>) and whether it is a read.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public (long Key, bool Read) Next()
    {
        _state ^= _state << 13;
        _state ^= _state >> 7;
        _state ^= _state << 17;
        // Multiply-shift maps the high 32 bits onto the key space uniformly without a division.
        long key = (long)(((_state >> 32) * _keySpace) >> 32);
        bool read = (_state & 0xFFFF_FFFFUL) < _readThreshold;
        return (key, read);
    }
}

/// <summary>
/// Which shard owns a key: <c>key mod shards</c>, computed with Lemire's fastmod (one multiply
/// and one multiply-high) instead of a division, exact for keys below 2^32.
/// </summary>
internal readonly struct ShardOf
{
    private readonly ulong _multiplier;
    private readonly uint _shards;

    public ShardOf(int shards)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(shards, 1);
        _shards = (uint)shards;
        _multiplier = (ulong.MaxValue / _shards) + 1;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Of(long key)
    {
        ulong low = _multiplier * (uint)key;
        return (int)Math.BigMul(low, _shards, out _);
    }
}

/// <summary>
/// The shared-memory way of the <c>scale</c> scenario: N threads, pinned round-robin to the CPUs,
/// on one <see cref="ConcurrentDictionary{TKey, TValue}"/> built the way a .NET developer builds
/// it (the default constructor, whose lock array grows with the table, so writers to different
/// keys rarely share a lock).
/// </summary>
internal static class SharedDictionaryScale
{
    /// <summary>The table holding every key of the key space, made once and reused by every run.</summary>
    public static ConcurrentDictionary<long, long> CreateTable(int keySpace)
    {
        var table = new ConcurrentDictionary<long, long>();
        for (long k = 0; k < keySpace; k++)
        {
            table[k] = k;
        }

        return table;
    }

    /// <summary>
    /// Runs <paramref name="threads"/> threads on <paramref name="table"/>: they work from the moment
    /// they start (warm-up) and count the requests they complete between
    /// <paramref name="warmup"/> and <paramref name="warmup"/> + <paramref name="duration"/>.
    /// Returns the requests per second of all threads together.
    /// </summary>
    public static (double OpsPerSecond, double CpusUsed) Run(ConcurrentDictionary<long, long> table, int threads, ScaleMix mix, int keySpace, TimeSpan warmup, TimeSpan duration)
    {
        var counts = new long[threads];
        var sinks = new long[threads];
        long start = Stopwatch.GetTimestamp() + (long)(warmup.TotalSeconds * Stopwatch.Frequency);
        long end = start + (long)(duration.TotalSeconds * Stopwatch.Frequency);
        var workers = new Thread[threads];
        for (int t = 0; t < threads; t++)
        {
            int index = t;
            workers[t] = new Thread(() =>
            {
                _ = Multikernel.CpuDriver.Kernel.CpuAffinity.TryPinCurrentThread(index % Environment.ProcessorCount, out _);
                var requests = new ScaleRequestStream(index + 1, keySpace, mix.ReadPercent);
                long ops = 0;
                long sink = 0;
                bool counting = false;
                while (true)
                {
                    // Read the clock once per 64 requests (tens of ns against a few µs of work).
                    for (int i = 0; i < 64; i++)
                    {
                        (long key, bool read) = requests.Next();
                        if (read)
                        {
                            table.TryGetValue(key, out long v);
                            sink += v;
                        }
                        else
                        {
                            table[key] = key;
                        }
                    }

                    ops += 64;
                    long now = Stopwatch.GetTimestamp();
                    if (!counting)
                    {
                        if (now >= start)
                        {
                            counting = true;
                            ops = 0;
                        }
                    }
                    else if (now >= end)
                    {
                        break;
                    }
                }

                counts[index] = ops;
                sinks[index] = sink; // the reads' results are used, so they are not optimised away
            }) { IsBackground = true, Name = $"scale-shared-{t}" };
        }

        double cpus;
        try
        {
            foreach (Thread w in workers)
            {
                w.Start();
            }

            cpus = CpuClock.CpusUsedBetween(start, end);
        }
        finally
        {
            foreach (Thread w in workers)
            {
                if (w.ThreadState != System.Threading.ThreadState.Unstarted && !w.Join(TimeSpan.FromSeconds(60)))
                {
                    throw new TimeoutException($"{w.Name} did not finish.");
                }
            }
        }

        GC.KeepAlive(sinks);
        return (counts.Sum() / duration.TotalSeconds, cpus);
    }
}

/// <summary>
/// How much CPU the process got while a run was counted: on a shared machine the figure that says
/// whether N threads really had N CPUs. Sampled by the (sleeping) host thread, so it costs the
/// workers nothing.
/// </summary>
internal static class CpuClock
{
    /// <summary>Sleeps until <paramref name="start"/>, then until <paramref name="end"/> (Stopwatch ticks); returns the process's CPU seconds per wall second in between.</summary>
    public static double CpusUsedBetween(long start, long end)
    {
        SleepUntil(start);
        using var self = Process.GetCurrentProcess();
        TimeSpan before = self.TotalProcessorTime;
        long began = Stopwatch.GetTimestamp();
        SleepUntil(end);
        self.Refresh();
        TimeSpan used = self.TotalProcessorTime - before;
        return used.TotalSeconds / Stopwatch.GetElapsedTime(began).TotalSeconds;
    }

    private static void SleepUntil(long timestamp)
    {
        long now = Stopwatch.GetTimestamp();
        if (timestamp > now)
        {
            Thread.Sleep(TimeSpan.FromSeconds((timestamp - now) / (double)Stopwatch.Frequency));
        }
    }
}
