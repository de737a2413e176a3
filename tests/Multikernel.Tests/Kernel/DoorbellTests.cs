using System.Reflection;
using System.Runtime.InteropServices;
using Multikernel.CpuDriver.Kernel;
using Multikernel.CpuDriver.Urpc;

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
        })
        { IsBackground = true }; // a failed wake must not hold the test host for 5 minutes
        owner.Start();
        parked.Wait();
        while (!doorbell.IsParked)
        {
            Thread.Yield();
        }

        doorbell.Ring();
        Assert.True(owner.Join(TimeSpan.FromSeconds(15)), "the parked owner was not woken by the doorbell");
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
        })
        { IsBackground = true };
        owner.Start();
        var watch = System.Diagnostics.Stopwatch.StartNew();
        for (int i = 1; i <= Rounds; i++)
        {
            Volatile.Write(ref published, i);
            doorbell.Ring();
            while (Volatile.Read(ref seen) < i)
            {
                // A lost wake-up fails here, fast, instead of hanging the run.
                Assert.True(watch.Elapsed < TimeSpan.FromSeconds(60), $"round {i}: the owner did not wake (a lost wake-up)");
                Thread.SpinWait(16);
            }
        }

        Assert.True(owner.Join(TimeSpan.FromSeconds(15)));
        Assert.Equal(Rounds, Volatile.Read(ref seen));
    }

    [Fact]
    public void TheDoorbellFlag_SitsAloneOnItsOwn128BytePair()
    {
        Type line = typeof(Doorbell).GetNestedType("PaddedState", BindingFlags.NonPublic)!;
        FieldInfo state = line.GetField("State")!;
        int offset = state.GetCustomAttribute<FieldOffsetAttribute>()!.Value;
        int size = line.StructLayoutAttribute!.Size;
        // Whatever the object's alignment, every 128-byte-aligned block holding the flag lies
        // inside the padding: 128 bytes before it, at least 124 after it.
        Assert.True(offset >= 128, $"only {offset} bytes pad the doorbell flag before it");
        Assert.True(size - offset - sizeof(int) >= 124, $"only {size - offset - sizeof(int)} bytes pad it after");
        Assert.Single(line.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic));
    }

    [Fact]
    public unsafe void RingIndexLines_Are128ByteAligned_AndEachOnItsOwnPair()
    {
        using var ring = new UrpcRing(16);
        string[] lines = ["_producer", "_consumer", "_shared", "_stall"];
        var addresses = new List<long>();
        foreach (string name in lines)
        {
            FieldInfo field = typeof(UrpcRing).GetField(name, BindingFlags.Instance | BindingFlags.NonPublic)!;
            long address = (long)Pointer.Unbox(field.GetValue(ring)!);
            Assert.Equal(0, address % 128);
            Assert.Equal(128, field.FieldType.GetElementType()!.StructLayoutAttribute!.Size);
            addresses.Add(address);
        }

        long slots = (long)Pointer.Unbox(typeof(UrpcRing).GetField("_slots", BindingFlags.Instance | BindingFlags.NonPublic)!.GetValue(ring)!);
        addresses.Add(slots);
        for (int i = 1; i < addresses.Count; i++)
        {
            Assert.Equal(128, addresses[i] - addresses[i - 1]);
        }
    }
}
