using System.Collections.Concurrent;
using System.Diagnostics;

namespace Multikernel.Cli.Bench;

/// <summary>A read/write mix of the <c>scale</c> scenario.</summary>
/// <param name="Name">Its name in the rows (<c>read-heavy</c>, <c>write-heavy</c>).</param>
/// <param name="ReadPercent">Share of GETs; the rest are SETs.</param>
internal sealed record ScaleMix(string Name, int ReadPercent)
{
    public static readonly ScaleMix ReadHeavy = new("read-heavy", 90);
    public static readonly ScaleMix WriteHeavy = new("write-heavy", 10);
    public static readonly IReadOnlyList<ScaleMix> All = [ReadHeavy, WriteHeavy];
}

/// <summary>
/// The request stream every core of the <c>scale</c> scenario generates: uniformly random keys
/// from a fixed key space, GET or SET by the mix. A xorshift generator per worker, so generating a
/// request costs a few nanoseconds, allocates nothing and is the same for both modes.
/// </summary>
internal struct ScaleRequestStream(int seed, int keySpace, int readPercent)
{
    private ulong _state = 0x9E3779B97F4A7C15UL ^ (ulong)(uint)seed * 0xBF58476D1CE4E5B9UL | 1;

    /// <summary>The next request: its key and whether it is a read.</summary>
    public (long Key, bool Read) Next()
    {
        _state ^= _state << 13;
        _state ^= _state >> 7;
        _state ^= _state << 17;
        long key = (long)((_state >> 8) % (ulong)keySpace);
        bool read = (int)(_state & 0x7F) % 100 < readPercent;
        return (key, read);
    }
}

/// <summary>
/// The shared-memory way of the <c>scale</c> scenario: N threads, pinned round-robin to the CPUs,
/// on one <see cref="ConcurrentDictionary{TKey, TValue}"/> (what a .NET developer would write).
/// </summary>
internal static class SharedDictionaryScale
{
    public static double Run(int threads, ScaleMix mix, int keySpace, TimeSpan duration)
    {
        var table = new ConcurrentDictionary<long, long>(concurrencyLevel: Math.Max(threads, 1), capacity: keySpace);
        for (long k = 0; k < keySpace; k++)
        {
            table[k] = k;
        }

        var counts = new long[threads];
        var sinks = new long[threads];
        using var start = new ManualResetEventSlim(false);
        using var arrived = new CountdownEvent(threads);
        bool stop = false;
        var workers = new Thread[threads];
        for (int t = 0; t < threads; t++)
        {
            int index = t;
            workers[t] = new Thread(() =>
            {
                _ = Multikernel.CpuDriver.Kernel.CpuAffinity.TryPinCurrentThread(index % Environment.ProcessorCount, out _);
                var requests = new ScaleRequestStream(index + 1, keySpace, mix.ReadPercent);
                arrived.Signal();
                start.Wait();
                long ops = 0;
                long sink = 0;
                while (!Volatile.Read(ref stop))
                {
                    // Check the stop flag once per 64 requests: it is a shared line too.
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
                            table[key] = ops;
                        }
                    }

                    ops += 64;
                }

                counts[index] = ops;
                sinks[index] = sink; // the reads' results are used, so they are not optimised away
            }) { IsBackground = true, Name = $"scale-shared-{t}" };
        }

        try
        {
            foreach (Thread w in workers)
            {
                w.Start();
            }

            arrived.Wait(TimeSpan.FromSeconds(30));
            long begin = Stopwatch.GetTimestamp();
            start.Set();
            Thread.Sleep(duration);
            Volatile.Write(ref stop, true);
            foreach (Thread w in workers)
            {
                w.Join(TimeSpan.FromSeconds(30));
            }

            return counts.Sum() / Stopwatch.GetElapsedTime(begin).TotalSeconds;
        }
        finally
        {
            Volatile.Write(ref stop, true);
            start.Set();
            foreach (Thread w in workers)
            {
                if (w.IsAlive)
                {
                    w.Join(TimeSpan.FromSeconds(30));
                }
            }
        }
    }
}
