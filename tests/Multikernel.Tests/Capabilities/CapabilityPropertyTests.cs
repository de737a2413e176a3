using FsCheck;
using FsCheck.Fluent;
using Multikernel.CpuDriver.Capabilities;
using Multikernel.CpuDriver.Memory;

namespace Multikernel.Tests.Capabilities;

/// <summary>
/// FsCheck properties of the distributed derivation tree: random sequences of retype, copy,
/// transfer (copy and move), delete, revoke and swap across 2-8 cores, with messages delivered
/// in random order. Each operation is an int (shrinkable): it seeds the choice of what to do.
/// </summary>
public sealed class CapabilityPropertyTests
{
    /// <summary>A scenario: core count, delivery-order seed, and the operations.</summary>
    public sealed record Scenario(int Cores, int Seed, int[] Operations)
    {
        public override string ToString() => $"cores={Cores} seed={Seed} ops=[{string.Join(',', Operations)}]";
    }

    private static Arbitrary<Scenario> Scenarios(int maxOperations)
    {
        Gen<Scenario> gen =
            from cores in Gen.Choose(2, 8)
            from seed in Gen.Choose(0, int.MaxValue)
            from count in Gen.Choose(1, maxOperations)
            from ops in Gen.ArrayOf(Gen.Choose(0, int.MaxValue), count)
            select new Scenario(cores, seed, ops);
        return Arb.From(gen, Shrink);
    }

    private static IEnumerable<Scenario> Shrink(Scenario s)
    {
        for (int i = 0; i < s.Operations.Length; i++)
        {
            yield return s with { Operations = [.. s.Operations.Take(i), .. s.Operations.Skip(i + 1)] };
        }

        if (s.Cores > 2)
        {
            yield return s with { Cores = s.Cores - 1 };
        }
    }

    private readonly Stats _stats = new();

    /// <summary>What the workloads actually exercised, so a property cannot pass vacuously.</summary>
    internal sealed class Stats
    {
        public int RevokesWithRemoteVictims;
        public int Transfers;
        public int Deletes;
        public int Restarts;
        public int DevFrames;
        public int Filters;
        public int Mints;
    }

    private void AssertExercised()
    {
        Assert.True(_stats.RevokesWithRemoteVictims > 10, $"only {_stats.RevokesWithRemoteVictims} (transfers {_stats.Transfers}, deletes {_stats.Deletes}) successful revokes removed copies on other cores");
        Assert.True(_stats.Transfers > 50, $"only {_stats.Transfers} transfers completed");
        Assert.True(_stats.Deletes > 50, $"only {_stats.Deletes} deletes");
        Assert.True(_stats.Restarts > 5, $"only {_stats.Restarts} domain restarts");
        Assert.True(_stats.DevFrames > 5, $"only {_stats.DevFrames} DevFrames retyped");
        Assert.True(_stats.Filters > 5, $"only {_stats.Filters} PacketFilters retyped");
        Assert.True(_stats.Mints > 5, $"only {_stats.Mints} sub-copies minted");
    }

    [Fact]
    public void Sequential_EveryRevokeLeavesNoDescendant_AccountingAddsUp()
    {
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(150), Prop.ForAll(Scenarios(60), scenario => RunSequential(scenario, _stats)));
        AssertExercised();
    }

    internal static void RunSequential(Scenario scenario, Stats stats)
    {
        using var sim = new CapabilitySimulation(scenario.Cores, scenario.Seed, deviceFrames: 16);
        var workload = new Workload(sim, stats);
        foreach (int op in scenario.Operations)
        {
            workload.Apply(op, sequential: true);
            if (sim.Random.Next(3) == 0)
            {
                // Starve a link until nothing else can move (then the scheduler lets it go).
                sim.StarveRandomLink();
            }

            sim.RunUntilQuiet();
            workload.CompleteSequential();
            sim.CheckInvariants();
        }
    }

    [Fact]
    public void Concurrent_OperationsInterleaved_StayConsistent()
    {
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(150), Prop.ForAll(Scenarios(80), scenario => RunConcurrent(scenario, _stats)));
        AssertExercised();
    }

    internal static void RunConcurrent(Scenario scenario, Stats stats)
    {
        {
            // A third of the runs use tight limits: one-slot rings, a small outbox and few
            // operation slots, so back-pressure, refusals and deferred deletes are exercised.
            using var sim = scenario.Seed % 3 != 0
                ? new CapabilitySimulation(scenario.Cores, scenario.Seed, deviceFrames: 16)
                : new CapabilitySimulation(scenario.Cores, scenario.Seed, linkCapacity: 1, options: new CapabilityOptions
                {
                    DeviceFrames = 8,
                    MaxObjectsPerCore = 512,
                    MaxReferencesPerCore = 1024,
                    MaxDomainsPerCore = 8,
                    SlotsPerDomain = 64,
                    MaxOperations = 2,
                    OutboxCapacity = 64,
                    MulticastFanout = 1 + (scenario.Seed % 4),
                });
            if (scenario.Seed % 3 == 0)
            {
                sim.SlowCores = (ulong)(scenario.Seed >> 8) & ((1UL << scenario.Cores) - 1);
            }

            var workload = new Workload(sim, stats);
            foreach (int op in scenario.Operations)
            {
                workload.Apply(op, sequential: false);
                // Adversarial schedules: hold links back (an AddRef, an INSTALL, an ack behind
                // them) while the rest of the machine runs, and release them later.
                int schedule = sim.Random.Next(8);
                if (schedule == 0)
                {
                    sim.StarveRandomLink();
                }
                else if (schedule == 1)
                {
                    sim.ReleaseAll();
                }

                int steps = sim.Random.Next(4);
                for (int i = 0; i < steps; i++)
                {
                    sim.Step();
                    workload.Poll();
                }
            }

            while (sim.Step())
            {
                workload.Poll();
            }

            sim.ReleaseAll();
            sim.RunUntilQuiet();
            workload.Poll();
            Assert.Equal(0, workload.Pending);
            sim.CheckInvariants();
        }
    }

    /// <summary>Interprets operation codes against the simulation and tracks what each revoke must have removed.</summary>
    private sealed class Workload(CapabilitySimulation sim, Stats stats)
    {
        private readonly List<(ValueTask Task, List<(int Core, int Index, uint Generation)> MustDie, (int Core, CSpace Cs, int Slot, int Index, uint Gen) Keep, List<(FrameHandle Handle, int Core, int Index, uint Gen)> Handles)> _revokes = [];
        private readonly List<CapabilitySimulation.PendingTransfer> _transfers = [];

        public int Pending => _revokes.Count + _transfers.Count;

        public void Apply(int code, bool sequential)
        {
            var r = new Random(code);
            int core = r.Next(sim.CoreCount);
            CSpace cs = sim.Domains[core][r.Next(CapabilitySimulation.DomainsPerCore)];
            var occupied = Enumerable.Range(0, cs.SlotCount).Where(s => !cs.IsEmpty(s)).ToList();
            int kind = r.Next(100);
            int extra = r.Next(100);
            try
            {
                if (extra < 3 && cs.Id != 0)
                {
                    // Domain destruction mid-flight: everything it held goes, its id is reused.
                    sim.RestartDomain(core, cs.Id);
                    stats.Restarts++;
                    return;
                }

                if (kind < 20)
                {
                    var rams = occupied.Where(s => cs.Inspect(s).Type is CapabilityType.Ram or CapabilityType.Nic && !(cs.Id == 0 && s == CapabilitySimulation.RootRamSlot && r.Next(2) == 0)).ToList();
                    if (rams.Count > 0)
                    {
                        int from = rams[r.Next(rams.Count)];
                        if (cs.Inspect(from).Type == CapabilityType.Nic)
                        {
                            cs.Retype(from, CapabilityType.DevFrame, 1 + r.Next(2));
                            stats.DevFrames++;
                            return;
                        }

                        int what = r.Next(10);
                        if (what == 0)
                        {
                            cs.Retype(from, CapabilityType.Ram, 2 + r.Next(3));
                        }
                        else if (what == 1)
                        {
                            cs.Retype(from, CapabilityType.PacketFilter);
                            stats.Filters++;
                        }
                        else
                        {
                            cs.Retype(from, CapabilityType.Frame, 1 + r.Next(2));
                        }
                    }

                    return;
                }

                if (occupied.Count == 0)
                {
                    return;
                }

                // Mostly act on non-RAM capabilities (RAM can only be retyped, moved locally or deleted).
                var objects = occupied.Where(s => cs.Inspect(s).Type != CapabilityType.Ram).ToList();
                List<int> pool = objects.Count > 0 && r.Next(4) != 0 ? objects : occupied;
                int slot = pool[r.Next(pool.Count)];
                CapabilityInfo info = cs.Inspect(slot);
                if (extra < 8 && info.Type is CapabilityType.Frame or CapabilityType.DevFrame or CapabilityType.PacketFilter && info.OwnerCore == core)
                {
                    // A revocable sub-copy (netd's per-application copies).
                    cs.Mint(slot, info.Rights & ~CapabilityRights.Revoke);
                    stats.Mints++;
                    return;
                }

                if (kind < 50)
                {
                    int toCore = r.Next(sim.CoreCount);
                    int toDomain = r.Next(CapabilitySimulation.DomainsPerCore);
                    var mode = r.Next(3) != 0 ? TransferMode.Copy : TransferMode.Move;
                    CapabilityRights rights = r.Next(5) == 0 ? info.Rights & (CapabilityRights)r.Next(8) : CapabilityRights.All;
                    if (mode == TransferMode.Copy && rights == CapabilityRights.All)
                    {
                        rights = info.Rights;
                    }

                    _transfers.Add(sim.Send(cs, slot, toCore, toDomain, mode, rights));
                }
                else if (kind < 60)
                {
                    cs.Copy(slot, info.Rights & (CapabilityRights)r.Next(8));
                }
                else if (kind < 75)
                {
                    if (cs.Id == 0 && slot == CapabilitySimulation.RootRamSlot)
                    {
                        return; // keep each core's boot RAM, so the workload has something to work with
                    }

                    cs.Delete(slot);
                    stats.Deletes++;
                }
                else if (kind < 95)
                {
                    (int owner, int obj) = sim.Cores[core].InspectTarget(cs, slot);
                    (int index, uint gen) = sim.Cores[core].InspectSlot(cs, slot);
                    List<(int, int, uint)> mustDie = sim.ReferencesInTree(owner, obj, (core, index));
                    var handles = new List<(FrameHandle, int, int, uint)>();
                    if (sequential)
                    {
                        for (int c = 0; c < sim.CoreCount; c++)
                        {
                            foreach (ReferenceView v in sim.Cores[c].InspectReferences())
                            {
                                if (v.Type == CapabilityType.Frame && (v.Rights & CapabilityRights.Read) != 0)
                                {
                                    handles.Add((sim.Domains[c][v.Domain].GetFrame(v.Slot), c, v.Index, v.Generation));
                                }
                            }
                        }
                    }

                    ValueTask revoke = cs.RevokeAsync(slot, r.Next(2) == 0 ? RevokeMode.Unicast : RevokeMode.Multicast);
                    _revokes.Add((revoke, mustDie, (core, cs, slot, index, gen), handles));
                }
                else
                {
                    CSpace other = sim.Domains[core][r.Next(CapabilitySimulation.DomainsPerCore)];
                    var frames = Enumerable.Range(0, other.SlotCount).Where(s => !other.IsEmpty(s) && other.Inspect(s).Type == CapabilityType.Frame).ToList();
                    if (info.Type == CapabilityType.Frame && frames.Count > 0)
                    {
                        int theirs = frames[r.Next(frames.Count)];
                        if (r.Next(4) != 0)
                        {
                            other.PostFrame(theirs);
                        }

                        cs.SwapFrames(slot, other, theirs);
                    }
                }
            }
            catch (CapabilityException)
            {
                // Refused operations (rights, types, exhaustion, busy) are part of the workload;
                // the invariants must hold whatever was refused.
            }
            catch (ArgumentOutOfRangeException)
            {
            }
        }

        /// <summary>Checks completed revokes: nothing that existed in the revoked tree survives.</summary>
        public void Poll()
        {
            for (int i = _revokes.Count - 1; i >= 0; i--)
            {
                var (task, mustDie, keep, _) = _revokes[i];
                if (!task.IsCompleted)
                {
                    continue;
                }

                _revokes.RemoveAt(i);
                bool ok = Succeeded(task);
                if (ok)
                {
                    if (mustDie.Any(v => v.Core != keep.Core))
                    {
                        stats.RevokesWithRemoteVictims++;
                    }

                    foreach ((int c, int index, uint gen) in mustDie)
                    {
                        Assert.False(sim.Cores[c].ReferenceAlive(index, gen), $"reference {c}/{index} survived a completed revoke");
                    }
                }
            }

            for (int i = _transfers.Count - 1; i >= 0; i--)
            {
                if (_transfers[i].IsCompleted)
                {
                    try
                    {
                        CapabilitySimulation.Result(_transfers[i].Task);
                        _ = _transfers[i].Receiver?.TakeGrant(_transfers[i].Channel); // may have been revoked before it was taken
                        stats.Transfers++;
                    }
                    catch (CapabilityException)
                    {
                    }

                    _transfers.RemoveAt(i);
                }
            }
        }

        /// <summary>After a quiesced sequential step: the strong revoke property and the handle property.</summary>
        public void CompleteSequential()
        {
            foreach (var (task, mustDie, keep, handles) in _revokes.ToList())
            {
                Assert.True(task.IsCompleted, "revoke did not complete although the simulation is quiet");
                _revokes.Clear();
                if (!Succeeded(task))
                {
                    continue;
                }

                if (mustDie.Any(v => v.Core != keep.Core))
                {
                    stats.RevokesWithRemoteVictims++;
                }

                foreach ((int c, int index, uint gen) in mustDie)
                {
                    Assert.False(sim.Cores[c].ReferenceAlive(index, gen), $"reference {c}/{index} survived the revoke");
                }

                if (sim.Cores[keep.Core].ReferenceAlive(keep.Index, keep.Gen))
                {
                    // The kept capability is now the only copy, and nothing derives from it.
                    (int owner, int obj) = sim.Cores[keep.Core].InspectTarget(keep.Cs, keep.Slot);
                    Assert.Single(sim.ReferencesInTree(owner, obj, (-1, -1)));
                }

                foreach ((FrameHandle handle, int c, int index, uint gen) in handles)
                {
                    bool alive = sim.Cores[c].ReferenceAlive(index, gen);
                    Assert.Equal(alive, handle.IsValid);
                    if (!alive)
                    {
                        Assert.Throws<CapabilityRevokedException>(() => handle.ReadOnlySpan[0]);
                    }
                }
            }

            Poll();
        }

        private static bool Succeeded(ValueTask task)
        {
            try
            {
                CapabilitySimulation.Result(task);
                return true;
            }
            catch (CapabilityException)
            {
                return false;
            }
        }
    }
}
