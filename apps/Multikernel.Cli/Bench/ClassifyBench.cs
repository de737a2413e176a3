using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using Multikernel.Netd.Filters;

namespace Multikernel.Cli.Bench;

/// <summary>One row of bench classify: nanoseconds per packet with this many filters installed.</summary>
public sealed record ClassifyBenchResult(
    int Filters,
    double TrieNs,
    double NaiveNs,
    int TrieNodes,
    double MatchedFraction);

/// <summary>
/// netd's demultiplexing cost: the merged trie (<see cref="PacketClassifier.Classify"/>) against
/// evaluating every filter in turn until one matches (the pre-DPF way), on the same classifier,
/// the same frames and in the same run, interleaved. Filters are realistic and pairwise disjoint
/// (they are installed by different owners): a quarter each of <c>tcp.dport == P</c>,
/// <c>udp.dport == P</c>, <c>ip.dst == A &amp;&amp; tcp.dport == 80</c> and
/// <c>ip.dst == A &amp;&amp; udp.dport == 53</c>, with distinct ports and addresses. Nine frames in ten
/// are built to hit a random installed filter, one in ten matches none.
/// </summary>
public static class ClassifyBench
{
    public static readonly int[] FilterCounts = [1, 10, 100, 1000];

    private const int FrameCount = 4096;

    public static IReadOnlyList<ClassifyBenchResult> Run(bool quick, Action<string>? progress)
    {
        int runs = quick ? 3 : 9;
        TimeSpan budget = TimeSpan.FromMilliseconds(quick ? 20 : 100);
        var results = new List<ClassifyBenchResult>();

        // Warm up both paths to their final JIT tier first, so the 1-filter row is not the one
        // that pays for tier-0 code.
        (PacketClassifier warm, byte[][] warmFrames, _) = Setup(100);
        for (int i = 0; i < 5; i++)
        {
            Measure(warm, warmFrames, budget, naive: false);
            Measure(warm, warmFrames, budget, naive: true);
        }

        foreach (int count in FilterCounts)
        {
            (PacketClassifier classifier, byte[][] frames, double matched) = Setup(count);
            Verify(classifier, frames);
            Measure(classifier, frames, budget, naive: false);
            Measure(classifier, frames, budget, naive: true);
            var trie = new List<double>();
            var naive = new List<double>();
            for (int run = 0; run < runs; run++)
            {
                trie.Add(Measure(classifier, frames, budget, naive: false));
                naive.Add(Measure(classifier, frames, budget, naive: true));
            }

            var result = new ClassifyBenchResult(count, Median(trie), Median(naive), classifier.TrieNodes, matched);
            progress?.Invoke(string.Create(CultureInfo.InvariantCulture, $"{count} filters: trie {result.TrieNs:F1} ns, naive {result.NaiveNs:F1} ns per packet ({classifier.TrieNodes} trie nodes)"));
            results.Add(result);
        }

        return results;
    }

    /// <summary>Installs <paramref name="count"/> disjoint filters, one owner each, and builds the frames.</summary>
    internal static (PacketClassifier Classifier, byte[][] Frames, double Matched) Setup(int count)
    {
        var classifier = new PacketClassifier(new ClassifierOptions { MaxFilters = Math.Max(count, 1) });
        var targets = new List<(bool Tcp, uint Dst, ushort Port)>(count);
        for (int i = 0; i < count; i++)
        {
            uint address = 0x0A000000u | ((uint)(i / 250) << 16) | ((uint)(i % 250) << 8) | 1;
            (string text, bool tcp, uint dst, ushort port) = (i % 4) switch
            {
                0 => ($"tcp.dport == {10000 + i}", true, 0x0A630001u, (ushort)(10000 + i)),
                1 => ($"udp.dport == {10000 + i}", false, 0x0A630001u, (ushort)(10000 + i)),
                2 => ($"ip.dst == {Dotted(address)} && tcp.dport == 80", true, address, (ushort)80),
                _ => ($"ip.dst == {Dotted(address)} && udp.dport == 53", false, address, (ushort)53),
            };
            FilterInstallResult installed = classifier.Install(text, owner: i + 1);
            if (!installed.Succeeded)
            {
                throw new InvalidOperationException($"bench filter '{text}' refused: {installed}");
            }

            targets.Add((tcp, dst, port));
        }

        var random = new Random(20261201);
        var frames = new byte[FrameCount][];
        int hits = 0;
        for (int i = 0; i < FrameCount; i++)
        {
            if (random.Next(10) != 0)
            {
                (bool tcp, uint dst, ushort port) = targets[random.Next(targets.Count)];
                frames[i] = Frame(tcp, dst, port, random);
                hits++;
            }
            else
            {
                frames[i] = Frame(random.Next(2) == 0, 0xC0A80000u | (uint)random.Next(65536), 9, random);
            }
        }

        return (classifier, frames, (double)hits / FrameCount);
    }

    private static void Verify(PacketClassifier classifier, byte[][] frames)
    {
        foreach (byte[] frame in frames)
        {
            int trie = classifier.Classify(frame).FilterId;
            int naive = classifier.ClassifyEachInTurn(frame);
            if (trie != naive)
            {
                throw new InvalidOperationException($"trie and naive disagree on {Convert.ToHexString(frame)}: {trie} vs {naive}");
            }
        }
    }

    private static double Measure(PacketClassifier classifier, byte[][] frames, TimeSpan budget, bool naive)
    {
        long packets = 0;
        int sink = 0;
        long start = Stopwatch.GetTimestamp();
        long deadline = start + (long)(budget.TotalSeconds * Stopwatch.Frequency);
        long now;
        do
        {
            sink += naive ? RoundNaive(classifier, frames) : RoundTrie(classifier, frames);
            packets += frames.Length;
            now = Stopwatch.GetTimestamp();
        }
        while (now < deadline);

        GC.KeepAlive(sink);
        return (now - start) * 1e9 / Stopwatch.Frequency / packets;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static int RoundTrie(PacketClassifier classifier, byte[][] frames)
    {
        int sum = 0;
        foreach (byte[] frame in frames)
        {
            sum += classifier.Classify(frame).FilterId;
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static int RoundNaive(PacketClassifier classifier, byte[][] frames)
    {
        int sum = 0;
        foreach (byte[] frame in frames)
        {
            sum += classifier.ClassifyEachInTurn(frame);
        }

        return sum;
    }

    /// <summary>An Ethernet + IPv4 (20-byte header) + TCP or UDP frame with a small random payload.</summary>
    internal static byte[] Frame(bool tcp, uint dst, ushort dport, Random random)
    {
        int transport = tcp ? 20 : 8;
        byte[] f = new byte[14 + 20 + transport + random.Next(0, 64)];
        Span<byte> s = f;
        s[..6].Fill(0x02);
        s[6..12].Fill(0x04);
        BinaryPrimitives.WriteUInt16BigEndian(s[12..], 0x0800);
        s[14] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(s[16..], (ushort)(f.Length - 14));
        BinaryPrimitives.WriteUInt16BigEndian(s[20..], 0x4000); // don't fragment, offset 0
        s[22] = 64;
        s[23] = (byte)(tcp ? 6 : 17);
        BinaryPrimitives.WriteUInt32BigEndian(s[26..], 0xC0A80001u + (uint)random.Next(256));
        BinaryPrimitives.WriteUInt32BigEndian(s[30..], dst);
        BinaryPrimitives.WriteUInt16BigEndian(s[34..], (ushort)random.Next(1024, 65536));
        BinaryPrimitives.WriteUInt16BigEndian(s[36..], dport);
        if (tcp)
        {
            s[46] = 0x50; // data offset 5
        }

        return f;
    }

    public static string Render(IReadOnlyList<ClassifyBenchResult> results)
    {
        var text = new StringBuilder();
        text.AppendLine("ns per packet: merged trie vs every filter in turn (median of interleaved runs)");
        text.AppendLine("filters   trie_ns   naive_ns   naive/trie   trie nodes");
        foreach (ClassifyBenchResult r in results)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"{r.Filters,7}   {r.TrieNs,7:F1}   {r.NaiveNs,8:F1}   {r.NaiveNs / r.TrieNs,9:F1}x   {r.TrieNodes,10}");
        }

        if (results.Count > 1)
        {
            ClassifyBenchResult first = results[0];
            ClassifyBenchResult last = results[^1];
            text.AppendLine(CultureInfo.InvariantCulture, $"trie cost from {first.Filters} to {last.Filters} filters: {last.TrieNs / first.TrieNs:F2}x (goal <= 4x); at {last.Filters}: {last.NaiveNs / last.TrieNs:F1}x faster than naive (goal >= 10x)");
        }

        return text.ToString();
    }

    /// <summary>About how long <see cref="Run"/> takes: the warm-up and, per filter count, two settling and 2 × runs timed passes of each way.</summary>
    public static TimeSpan EstimatedDuration(bool quick)
    {
        int runs = quick ? 3 : 9;
        TimeSpan budget = TimeSpan.FromMilliseconds(quick ? 20 : 100);
        return (budget * 10) + (budget * (FilterCounts.Length * (2 + (2 * runs)))) + TimeSpan.FromMilliseconds(300);
    }

    private static double Median(List<double> values)
    {
        values.Sort();
        return values[values.Count / 2];
    }

    private static string Dotted(uint a) => string.Create(CultureInfo.InvariantCulture, $"{a >> 24}.{(a >> 16) & 0xFF}.{(a >> 8) & 0xFF}.{a & 0xFF}");
}
