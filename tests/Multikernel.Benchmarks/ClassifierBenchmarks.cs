using BenchmarkDotNet.Attributes;
using Multikernel.Cli.Bench;
using Multikernel.Netd.Filters;

namespace Multikernel.Benchmarks;

/// <summary>
/// netd's classifier under BenchmarkDotNet with the memory diagnoser: the merged trie vs every
/// filter in turn, per packet, for 1 to 1000 installed filters (the same filters and frames as
/// <c>multikernel bench classify</c>). The Allocated column is the proof of "0 B per classify".
/// <c>dotnet run -c Release --project tests/Multikernel.Benchmarks -- --filter '*Classifier*'</c>.
/// </summary>
[MemoryDiagnoser]
public class ClassifierBenchmarks
{
    private const int Frames = 4096;

    private PacketClassifier _classifier = null!;
    private byte[][] _frames = null!;

    [Params(1, 10, 100, 1000)]
    public int Filters { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        (_classifier, _frames, _) = ClassifyBench.Setup(Filters);
        if (_frames.Length != Frames)
        {
            throw new InvalidOperationException("frame count changed");
        }
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Frames, Description = "each filter in turn")]
    public int Naive()
    {
        int sum = 0;
        foreach (byte[] frame in _frames)
        {
            sum += _classifier.ClassifyEachInTurn(frame);
        }

        return sum;
    }

    [Benchmark(OperationsPerInvoke = Frames, Description = "merged trie")]
    public int Trie()
    {
        int sum = 0;
        foreach (byte[] frame in _frames)
        {
            sum += _classifier.Classify(frame).FilterId;
        }

        return sum;
    }
}
