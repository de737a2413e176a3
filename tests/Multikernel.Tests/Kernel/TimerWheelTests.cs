using Multikernel.CpuDriver.Kernel;

namespace Multikernel.Tests.Kernel;

public sealed class TimerWheelTests
{
    private sealed class Probe(List<(Probe, long)> log) : WheelTimer
    {
        public int Fired;

        public long FiredAt;

        public long Clock;

        public TimerWheel? Wheel;

        public Action<Probe>? OnFire;

        internal override void Expire()
        {
            Fired++;
            OnFire?.Invoke(this);
            // The wheel processes one tick at a time and has moved past it when timers fire.
            FiredAt = Wheel is null ? Clock : Wheel.Now - 1;
            log.Add((this, FiredAt));
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void RandomArmsResetsCancels_FireExactlyOnce_InTheirTick_NeverEarly(int seed)
    {
        var random = new Random(seed);
        var log = new List<(Probe, long)>();
        var wheel = new TimerWheel(1001, 10_000); // ticks up to 1000 processed
        var probes = new List<Probe>();
        var expected = new Dictionary<Probe, long>();
        long now = 1000;
        for (int round = 0; round < 3000; round++)
        {
            int op = random.Next(10);
            if (op < 5 || probes.Count == 0)
            {
                var p = new Probe(log) { Wheel = wheel };
                probes.Add(p);
                long delta = random.Next(4) switch { 0 => random.Next(64), 1 => random.Next(5000), 2 => random.Next(1 << 22), _ => (long)random.Next() << random.Next(12) };
                wheel.Schedule(p, now + delta);
                expected[p] = Math.Max(now + delta, now + 1); // a tick already processed fires at the next one
            }
            else if (op < 7)
            {
                // A reset (earlier or later) of an armed timer, or an arm again of one that fired,
                // was cancelled, or was disarmed (and perhaps swept since).
                Probe p = probes[random.Next(probes.Count)];
                long delta = random.Next(1 << 20);
                wheel.Schedule(p, now + delta);
                expected[p] = Math.Max(now + delta, now + 1);
            }
            else if (op < 8)
            {
                Probe p = probes[random.Next(probes.Count)];
                // Both ways out: taken off its list now, or left there disarmed to be swept.
                if (random.Next(2) == 0 ? wheel.Cancel(p) : wheel.Disarm(p))
                {
                    expected.Remove(p);
                }
            }
            else
            {
                long step = random.Next(3) switch { 0 => random.Next(100), 1 => random.Next(100_000), _ => random.Next(1 << 26) };
                long target = now + step;
                foreach (Probe p in probes)
                {
                    p.Clock = target;
                }

                wheel.Advance(target);
                foreach ((Probe p, long firedAt) in log)
                {
                    Assert.True(expected.TryGetValue(p, out long due), "a cancelled or fired timer fired");
                    Assert.True(due <= target && due > now, $"due {due} fired in the advance ({now}, {target}]");
                    Assert.Equal(due, firedAt);
                    expected.Remove(p);
                }

                log.Clear();
                now = target;
                foreach ((Probe p, long due) in expected)
                {
                    Assert.True(due > now, $"a timer due at {due} had not fired by {now}");
                }
            }
        }

        Assert.Equal(expected.Count, wheel.Count);
    }

    [Fact]
    public void SingleTickSteps_FireInTheExactTick_AcrossCascades()
    {
        var log = new List<(Probe, long)>();
        var wheel = new TimerWheel(0, 100);
        long[] dues = [0, 1, 63, 64, 65, 4095, 4096, 4097, 262_143, 262_144, 300_001];
        var probes = dues.Select(d => { var p = new Probe(log); wheel.Schedule(p, d); return p; }).ToArray();
        for (long t = 0; t <= 300_001; t++)
        {
            if (wheel.NextEventTick() > t)
            {
                continue; // what the core does: sleep until the next event
            }

            foreach (Probe p in probes)
            {
                p.Clock = t;
            }

            wheel.Advance(t);
        }

        Assert.Equal(dues, probes.Select(p => p.FiredAt));
        Assert.All(probes, p => Assert.Equal(1, p.Fired));
    }

    [Fact]
    public void BeyondTheWheelsSpan_StillFiresOnTime()
    {
        var log = new List<(Probe, long)>();
        var wheel = new TimerWheel(5, 10);
        var p = new Probe(log) { Clock = 0 };
        long due = (1L << 42) + 12345; // past 64^7 us
        wheel.Schedule(p, due);
        long t = 5;
        int guard = 0;
        while (p.Fired == 0 && guard++ < 1000)
        {
            t = wheel.NextEventTick();
            p.Clock = t;
            wheel.Advance(t);
        }

        Assert.Equal(due, p.FiredAt);
    }

    [Fact]
    public void Capacity_IsEnforced_AndCancelFreesRoom()
    {
        var wheel = new TimerWheel(0, 2);
        var log = new List<(Probe, long)>();
        var a = new Probe(log);
        var b = new Probe(log);
        wheel.Schedule(a, 10);
        wheel.Schedule(b, 10);
        wheel.Schedule(a, 20); // a reset is not a new timer
        Assert.Throws<InvalidOperationException>(() => wheel.Schedule(new Probe(log), 5));
        Assert.True(wheel.Cancel(b));
        wheel.Schedule(new Probe(log), 5);
        Assert.Equal(2, wheel.Count);
    }

    [Fact]
    public void ACallbackCancellingTimersDueInTheSameTick_TheyDoNotFire_AndTheCountStaysRight()
    {
        var log = new List<(Probe, long)>();
        var wheel = new TimerWheel(0, 16);
        Probe[] probes = [.. Enumerable.Range(0, 5).Select(_ => new Probe(log) { Wheel = wheel })];
        foreach (Probe p in probes)
        {
            p.OnFire = self =>
            {
                foreach (Probe other in probes)
                {
                    if (other != self)
                    {
                        wheel.Cancel(other);
                    }
                }
            };
            wheel.Schedule(p, 100);
        }

        var bystander = new Probe(log) { Wheel = wheel };
        wheel.Schedule(bystander, 100 + 64); // same level-0 slot index, a later lap

        Assert.Equal(1, wheel.Advance(100));
        Assert.Equal(1, probes.Sum(p => p.Fired));
        Assert.Equal(1, wheel.Count);
        Assert.Equal(1, wheel.Advance(200));
        Assert.Equal(164, bystander.FiredAt);
        Assert.Equal(0, wheel.Count);
    }

    [Fact]
    public void ACallbackReArmingATimerDueInTheSameTick_MovesIt_ItFiresOnceAtItsNewTick()
    {
        var log = new List<(Probe, long)>();
        var wheel = new TimerWheel(0, 16);
        var a = new Probe(log) { Wheel = wheel };
        var b = new Probe(log) { Wheel = wheel };
        a.OnFire = _ => { if (b.IsArmed) { wheel.Schedule(b, 150); } };
        b.OnFire = _ => { if (a.IsArmed) { wheel.Schedule(a, 150); } };
        wheel.Schedule(a, 100);
        wheel.Schedule(b, 100);

        Assert.Equal(1, wheel.Advance(120));
        Assert.Equal(1, wheel.Count);
        Assert.Equal(1, wheel.Advance(150));
        Assert.Equal(1, a.Fired);
        Assert.Equal(1, b.Fired);
        Assert.Equal(150, Math.Max(a.FiredAt, b.FiredAt));
        Assert.Equal(100, Math.Min(a.FiredAt, b.FiredAt));
    }

    [Fact]
    public void ResetWithinTheSameBucket_KeepsTheNewExpiry()
    {
        var log = new List<(Probe, long)>();
        var wheel = new TimerWheel(0, 4);
        var p = new Probe(log) { Wheel = wheel };
        wheel.Schedule(p, 100_000);
        wheel.Schedule(p, 100_010); // level 2 (4096 µs slots): the same bucket
        long t = 0;
        while (p.Fired == 0)
        {
            t = wheel.NextEventTick();
            wheel.Advance(t);
        }

        Assert.Equal(100_010, p.FiredAt);
    }

    [Theory]
    [InlineData(5)] // level 0: pushed within the first 64 µs
    [InlineData(63)]
    [InlineData(5_000)] // level 2 (4096 µs slots)
    [InlineData(70_000_000)] // across the top levels
    public void PushedLaterOnEveryAck_FiresOnceAtItsLastDueTick_NeverAtAnEarlierOne(long step)
    {
        // The retransmission-timer pattern: re-armed later on every ACK. The wheel leaves such a
        // timer in its bucket (two stores) and places it again when the bucket comes up, so this
        // guards that the bucket's processing re-files it instead of firing it.
        var log = new List<(Probe, long)>();
        var wheel = new TimerWheel(0, 4);
        var p = new Probe(log) { Wheel = wheel };
        long due = 10;
        wheel.Schedule(p, due);
        for (int ack = 0; ack < 50; ack++)
        {
            due += step;
            wheel.Schedule(p, due);
            // Time moves on between ACKs, but never to the timer's due tick.
            long before = due - 1;
            wheel.Advance(Math.Min(before, wheel.Now + (step / 2)));
            Assert.Equal(0, p.Fired);
            Assert.Equal(1, wheel.Count);
        }

        while (p.Fired == 0)
        {
            long next = wheel.NextEventTick();
            Assert.True(next <= due, $"the wheel's next event {next} is after the timer's due tick {due}");
            wheel.Advance(next);
        }

        Assert.Equal(due, p.FiredAt);
        Assert.Equal(1, p.Fired);
        Assert.Equal(0, wheel.Count);
    }

    [Fact]
    public void PushedEarlier_MovesAtOnce_AndFiresAtTheEarlierTick()
    {
        var log = new List<(Probe, long)>();
        var wheel = new TimerWheel(0, 4);
        var p = new Probe(log) { Wheel = wheel };
        wheel.Schedule(p, 1_000_000);
        wheel.Schedule(p, 2_000_000); // later: stays in its bucket
        wheel.Schedule(p, 300);       // earlier than both: must move now, or it would fire late
        Assert.Equal(1, wheel.Advance(300));
        Assert.Equal(300, p.FiredAt);
        Assert.Equal(0, wheel.Advance(3_000_000));
        Assert.Equal(1, p.Fired);
    }

    [Fact]
    public void Disarmed_NeverFires_StopsCountingAtOnce_AndIsSweptWhenItsBucketComesUp()
    {
        var log = new List<(Probe, long)>();
        var wheel = new TimerWheel(0, 4);
        var p = new Probe(log) { Wheel = wheel }; // level 2: swept by its cascade
        var q = new Probe(log) { Wheel = wheel }; // level 0: swept when its slot comes due
        wheel.Schedule(p, 100_000);
        wheel.Schedule(q, 30);
        Assert.True(wheel.Disarm(p));
        Assert.True(wheel.Disarm(q));
        Assert.False(p.IsArmed);
        Assert.Equal(0, wheel.Count);
        Assert.False(wheel.Disarm(p));
        Assert.Equal(2, wheel.Linked); // still in their buckets
        while (wheel.Linked > 0)
        {
            wheel.Advance(wheel.NextEventTick());
        }

        Assert.Equal(0, p.Fired);
        Assert.Equal(0, q.Fired);
        Assert.True(wheel.Now <= 100_001, $"the sweep ran past the bucket ({wheel.Now})");
        Assert.Equal(long.MaxValue, wheel.NextEventTick());
    }

    [Theory]
    [InlineData(1)]     // re-armed later than before: stays in its bucket (two stores)
    [InlineData(-50_000)] // re-armed earlier: must move, or it would fire late
    public void DisarmedThenArmedAgain_FiresOnceAtTheNewTick(long shift)
    {
        var log = new List<(Probe, long)>();
        var wheel = new TimerWheel(0, 4);
        var p = new Probe(log) { Wheel = wheel };
        wheel.Schedule(p, 100_000);
        wheel.Disarm(p);
        wheel.Advance(10);
        long due = 100_000 + shift;
        wheel.Schedule(p, due);
        Assert.Equal(1, wheel.Count);
        Assert.Equal(1, wheel.Linked);
        while (p.Fired == 0)
        {
            long next = wheel.NextEventTick();
            Assert.True(next <= due, $"next event {next} after the due tick {due}");
            wheel.Advance(next);
        }

        Assert.Equal(due, p.FiredAt);
        Assert.Equal(0, wheel.Advance(10_000_000));
        Assert.Equal(1, p.Fired);
    }

    [Theory]
    [InlineData("cancelled")]
    [InlineData("swept")]
    [InlineData("fired")]
    public void OutOfTheWheel_ThenArmedAgainLater_FiresAtTheNewTick(string how)
    {
        // A timer with no node must never take the stores-only re-arm (there is no bucket to come
        // up): however it left the wheel, an arm later than where it last sat links it again.
        var log = new List<(Probe, long)>();
        var wheel = new TimerWheel(0, 4);
        var p = new Probe(log) { Wheel = wheel };
        wheel.Schedule(p, 100);
        switch (how)
        {
            case "cancelled":
                Assert.True(wheel.Cancel(p));
                break;
            case "swept":
                Assert.True(wheel.Disarm(p));
                Assert.Equal(0, wheel.Advance(200));
                break;
            default:
                Assert.Equal(1, wheel.Advance(200));
                break;
        }

        Assert.Equal(0, wheel.Linked);
        wheel.Schedule(p, 300);
        Assert.Equal(1, wheel.Linked);
        Assert.Equal(1, wheel.Advance(300));
        Assert.Equal(300, p.FiredAt);
    }

    [Fact]
    public void AFullTableOfDisarmedTimers_MakesRoomForNewOnes_ButArmedOnesStillCountAgainstTheCapacity()
    {
        var log = new List<(Probe, long)>();
        var wheel = new TimerWheel(0, 8);
        Probe[] first = [.. Enumerable.Range(0, 8).Select(_ => new Probe(log) { Wheel = wheel })];
        foreach (Probe p in first)
        {
            wheel.Schedule(p, 1_000_000);
            wheel.Disarm(p);
        }

        Assert.Equal(8, wheel.Linked);
        Probe[] second = [.. Enumerable.Range(0, 8).Select(_ => new Probe(log) { Wheel = wheel })];
        foreach (Probe p in second)
        {
            wheel.Schedule(p, 500); // every node is taken by a disarmed timer: swept to make room
        }

        Assert.Equal(8, wheel.Count);
        Assert.All(first, p => Assert.Equal(-1, p.Node));
        var extra = new Probe(log) { Wheel = wheel };
        Assert.Throws<InvalidOperationException>(() => wheel.Schedule(extra, 500));
        Assert.False(extra.IsArmed);
        Assert.Equal(8, wheel.Count);
        Assert.Equal(8, wheel.Advance(2_000_000));
        Assert.All(first, p => Assert.Equal(0, p.Fired));
    }

    [Fact]
    public void DisarmingATimerOnTheFiringList_FromACallbackInTheSameTick_KeepsItFromFiring()
    {
        var log = new List<(Probe, long)>();
        var wheel = new TimerWheel(0, 4);
        var a = new Probe(log) { Wheel = wheel };
        var b = new Probe(log) { Wheel = wheel };
        a.OnFire = _ => wheel.Disarm(b);
        b.OnFire = _ => wheel.Disarm(a);
        wheel.Schedule(a, 100);
        wheel.Schedule(b, 100);
        Assert.Equal(1, wheel.Advance(100));
        Assert.Equal(1, a.Fired + b.Fired);
        Assert.Equal(0, wheel.Count);
        Assert.Equal(0, wheel.Linked);
    }

    [Fact]
    public void NodeStorage_GrowsToTheCapacity_AndReusesFreedNodes()
    {
        var log = new List<(Probe, long)>();
        var wheel = new TimerWheel(0, 1000);
        Probe[] probes = [.. Enumerable.Range(0, 1000).Select(_ => new Probe(log) { Wheel = wheel })];
        for (int round = 0; round < 3; round++)
        {
            long start = wheel.Now;
            for (int i = 0; i < probes.Length; i++)
            {
                wheel.Schedule(probes[i], start + 10 + (i * 37 % 5000));
            }

            Assert.Throws<InvalidOperationException>(() => wheel.Schedule(new Probe(log), 1));
            Assert.Equal(1000, wheel.Count);
            Assert.Equal(1000, new HashSet<int>(probes.Select(p => p.Node)).Count);
            wheel.Advance(start + 6000);
            Assert.Equal(0, wheel.Count);
            Assert.All(probes, p => Assert.Equal(round + 1, p.Fired));
        }
    }
}
