using Multikernel.Netd.Drivers;
using static Multikernel.Tests.Netd.Drivers.Frames;

namespace Multikernel.Tests.Netd.Drivers;

/// <summary>Each fault kind, deterministic by seed: the same seed gives the same outcome, another seed a different one.</summary>
public sealed class FaultInjectionTests
{
    private const int FrameCount = 2000;

    private sealed record Run(List<byte[]> Frames, DeviceCounters Counters);

    /// <summary>Sends <see cref="FrameCount"/> frames a → b in chunks of 100 (draining b after each) and returns what b got.</summary>
    private static Run SendThrough(FaultInjectionOptions faults, TimeProvider? time = null)
    {
        using var sw = new VirtualSwitch(new VirtualSwitchOptions(), time);
        SwitchPort a = sw.AddPort("a", Mac(1));
        SwitchPort b = sw.AddPort("b", Mac(2), new SwitchPortOptions { Faults = faults });
        var received = new List<byte[]>();
        for (int chunk = 0; chunk < FrameCount / 100; chunk++)
        {
            for (int i = 0; i < 100; i++)
            {
                Send(a, Mac(2), Mac(1), (chunk * 100) + i, length: 100);
            }

            received.AddRange(ReceiveAll(b));
        }

        Assert.Equal(0, b.Counters.Dropped(DropReason.QueueFull));
        return new Run(received, b.Counters);
    }

    private static List<int> Seqs(Run run) => [.. run.Frames.Select(f => Sequence(f))];

    [Fact]
    public void Loss_DropsAboutTheConfiguredShare_ExactlyTheSameFramesForTheSameSeed()
    {
        Run first = SendThrough(new FaultInjectionOptions { Seed = 42, LossProbability = 0.3 });
        Run again = SendThrough(new FaultInjectionOptions { Seed = 42, LossProbability = 0.3 });
        Run other = SendThrough(new FaultInjectionOptions { Seed = 43, LossProbability = 0.3 });

        Assert.Equal(Seqs(first), Seqs(again));
        Assert.NotEqual(Seqs(first), Seqs(other));
        long lost = first.Counters.Dropped(DropReason.FaultLoss);
        Assert.Equal(FrameCount - first.Frames.Count, lost);
        Assert.InRange(lost, FrameCount * 0.25, FrameCount * 0.35);
        Assert.Equal(Seqs(first).Order(), Seqs(first)); // loss alone keeps order
    }

    [Fact]
    public void Duplication_DeliversSomeFramesTwiceBackToBack_Deterministically()
    {
        Run first = SendThrough(new FaultInjectionOptions { Seed = 7, DuplicateProbability = 0.2 });
        Run again = SendThrough(new FaultInjectionOptions { Seed = 7, DuplicateProbability = 0.2 });
        Run other = SendThrough(new FaultInjectionOptions { Seed = 8, DuplicateProbability = 0.2 });

        List<int> seqs = Seqs(first);
        Assert.Equal(seqs, Seqs(again));
        Assert.NotEqual(seqs, Seqs(other));
        Assert.Equal(Enumerable.Range(0, FrameCount), seqs.Distinct());
        int duplicates = seqs.Zip(seqs.Skip(1)).Count(p => p.First == p.Second);
        Assert.Equal(first.Counters.Duplicated, duplicates);
        Assert.Equal(FrameCount + duplicates, seqs.Count);
        Assert.InRange(duplicates, FrameCount * 0.1, FrameCount * 0.25);
    }

    [Fact]
    public void Reordering_SwapsNeighbours_LosesNothing_Deterministically()
    {
        Run first = SendThrough(new FaultInjectionOptions { Seed = 3, ReorderProbability = 0.2 });
        Run again = SendThrough(new FaultInjectionOptions { Seed = 3, ReorderProbability = 0.2 });
        Run other = SendThrough(new FaultInjectionOptions { Seed = 4, ReorderProbability = 0.2 });

        List<int> seqs = Seqs(first);
        Assert.Equal(seqs, Seqs(again));
        Assert.NotEqual(seqs, Seqs(other));
        Assert.Equal(Enumerable.Range(0, FrameCount), seqs.Order());
        int inversions = seqs.Zip(seqs.Skip(1)).Count(p => p.First > p.Second);
        Assert.Equal(first.Counters.Reordered, inversions);
        Assert.InRange(inversions, FrameCount * 0.1, FrameCount * 0.25);
    }

    [Fact]
    public void Corruption_FlipsExactlyOneBitInTheCountedFrames_Deterministically()
    {
        Run first = SendThrough(new FaultInjectionOptions { Seed = 11, CorruptProbability = 0.5 });
        Run again = SendThrough(new FaultInjectionOptions { Seed = 11, CorruptProbability = 0.5 });
        Run other = SendThrough(new FaultInjectionOptions { Seed = 12, CorruptProbability = 0.5 });

        Assert.Equal(first.Frames, again.Frames);
        Assert.NotEqual(first.Frames, other.Frames);
        Assert.Equal(FrameCount, first.Frames.Count);
        int corrupted = 0;
        for (int i = 0; i < FrameCount; i++)
        {
            byte[] sent = Build(Mac(2), Mac(1), i, 100);
            int bits = sent.Zip(first.Frames[i]).Sum(p => System.Numerics.BitOperations.PopCount((uint)(p.First ^ p.Second)));
            Assert.True(bits <= 1, $"frame {i} has {bits} flipped bits");
            corrupted += bits;
        }

        Assert.Equal(first.Counters.Corrupted, corrupted);
        Assert.InRange(corrupted, FrameCount * 0.4, FrameCount * 0.6);
    }

    [Fact]
    public void Delay_HoldsEveryFrameUntilDue_InOrder()
    {
        var time = new ManualTimeProvider();
        using var sw = new VirtualSwitch(null, time);
        SwitchPort a = sw.AddPort("a", Mac(1));
        SwitchPort b = sw.AddPort("b", Mac(2), new SwitchPortOptions { Faults = new FaultInjectionOptions { Delay = TimeSpan.FromMilliseconds(50) } });
        Send(a, Mac(2), Mac(1), 1);
        time.Advance(TimeSpan.FromMilliseconds(10));
        Send(a, Mac(2), Mac(1), 2);
        Assert.Empty(Sequences(b));
        Assert.True(b.HasPending());
        Assert.False(b.PrepareToWait());
        time.Advance(TimeSpan.FromMilliseconds(39));
        Assert.Empty(Sequences(b));
        time.Advance(TimeSpan.FromMilliseconds(1));   // 50 ms after the first
        Assert.Equal([1], Sequences(b));
        time.Advance(TimeSpan.FromMilliseconds(10));
        Assert.Equal([2], Sequences(b));
    }

    [Fact]
    public void RateLimit_TokenBucket_ShapesDeliveryWithoutLoss()
    {
        var time = new ManualTimeProvider();
        using var sw = new VirtualSwitch(null, time);
        SwitchPort a = sw.AddPort("a", Mac(1));
        var faults = new FaultInjectionOptions { RateLimitBytesPerSecond = 10_000, RateLimitBurstBytes = 1000 };
        SwitchPort b = sw.AddPort("b", Mac(2), new SwitchPortOptions { Faults = faults });
        for (int i = 0; i < 30; i++)
        {
            Send(a, Mac(2), Mac(1), i, length: 100);
        }

        Assert.Equal(Enumerable.Range(0, 10), Sequences(b));        // the full bucket: 1000 bytes
        Assert.Empty(Sequences(b));
        time.Advance(TimeSpan.FromMilliseconds(50));                // 500 bytes of tokens
        Assert.Equal(Enumerable.Range(10, 5), Sequences(b));
        time.Advance(TimeSpan.FromSeconds(5));                      // refill caps at the burst
        Assert.Equal(Enumerable.Range(15, 10), Sequences(b));
        time.Advance(TimeSpan.FromMilliseconds(100));
        Assert.Equal(Enumerable.Range(25, 5), Sequences(b));
        Assert.Equal(0, b.Counters.DroppedTotal);
    }
}
