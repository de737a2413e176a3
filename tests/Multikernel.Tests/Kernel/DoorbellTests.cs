using Multikernel.CpuDriver.Kernel;

namespace Multikernel.Tests.Kernel;

public sealed class DoorbellTests
{
    [Fact]
    public void Ring_WakesAParkedOwner()
    {
        using var doorbell = new Doorbell();
        using var parked = new ManualResetEventSlim();
        bool woke = false;
        var owner = new Thread(() =>
        {
            doorbell.PrepareToPark();
            parked.Set();
            doorbell.Park(TimeSpan.FromMinutes(5));
            woke = true;
        });
        owner.Start();
        parked.Wait();
        while (!doorbell.IsParked)
        {
            Thread.Yield();
        }

        doorbell.Ring();
        Assert.True(owner.Join(TimeSpan.FromMinutes(1)), "the parked owner was not woken by the doorbell");
        Assert.True(woke);
        Assert.Equal(1, doorbell.Rings);
        Assert.False(doorbell.IsParked);
    }

    [Fact]
    public void Ring_WhenOwnerIsRunning_CostsNoWakeUp()
    {
        using var doorbell = new Doorbell();
        for (int i = 0; i < 1000; i++)
        {
            doorbell.Ring();
        }

        Assert.Equal(0, doorbell.Rings);
    }

    [Fact]
    public void RingBetweenPrepareAndCancel_IsConsumed_SoTheNextParkIsNotSpurious()
    {
        using var doorbell = new Doorbell();
        doorbell.PrepareToPark();
        doorbell.Ring();          // a sender saw the flag and released
        doorbell.CancelPark();    // the owner found work anyway and must swallow that release
        doorbell.PrepareToPark();
        var watch = System.Diagnostics.Stopwatch.StartNew();
        doorbell.Park(TimeSpan.FromMilliseconds(50));
        // Behaviour, not speed: the park ran into its timeout instead of returning on a stale release.
        Assert.True(watch.Elapsed >= TimeSpan.FromMilliseconds(40), $"park returned after {watch.Elapsed.TotalMilliseconds} ms on a stale release");
    }

    [Fact]
    public void ManyParksAndRings_NeverLoseAWakeUp()
    {
        // Owner parks repeatedly; each round the sender publishes a value and rings. A lost
        // wake-up would leave the owner asleep for the full 5-minute timeout.
        using var doorbell = new Doorbell();
        long published = 0;
        long seen = 0;
        const int Rounds = 20_000;
        var owner = new Thread(() =>
        {
            while (Volatile.Read(ref seen) < Rounds)
            {
                if (Volatile.Read(ref published) > seen)
                {
                    Volatile.Write(ref seen, seen + 1);
                    continue;
                }

                doorbell.PrepareToPark();
                if (Volatile.Read(ref published) > seen)
                {
                    doorbell.CancelPark();
                    continue;
                }

                doorbell.Park(TimeSpan.FromMinutes(5));
            }
        });
        owner.Start();
        for (int i = 1; i <= Rounds; i++)
        {
            Volatile.Write(ref published, i);
            doorbell.Ring();
            while (Volatile.Read(ref seen) < i)
            {
                Thread.SpinWait(16);
            }
        }

        Assert.True(owner.Join(TimeSpan.FromMinutes(1)));
        Assert.Equal(Rounds, Volatile.Read(ref seen));
    }
}
