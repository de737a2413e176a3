using Multikernel.CpuDriver.Capabilities;
using Multikernel.CpuDriver.Memory;

namespace Multikernel.Tests.Capabilities;

/// <summary>
/// One regression test per hole of issue 7 ("isolation you can rely on"), each reproducing the
/// attack or the schedule that broke the old code.
/// </summary>
public sealed class IsolationRegressionTests
{
    private static readonly CapabilityOptions s_fanoutOne = new()
    {
        MaxObjectsPerCore = 512,
        MaxReferencesPerCore = 1024,
        MaxDomainsPerCore = 8,
        SlotsPerDomain = 64,
        MaxOperations = 16,
        OutboxCapacity = 256,
        MulticastFanout = 1,
    };

    /// <summary>
    /// Item 1: a participant copies its copy (an AddRef goes to the owner over the
    /// participant->owner link) just before a multicast revoke; that link is starved while the
    /// relay tree runs. The owner must not count the copy the AddRef has not announced yet and
    /// free the root its revoker keeps.
    /// </summary>
    [Fact]
    public void MulticastRevoke_WithAnAddRefStarvedOnItsLink_KeepsTheRevokersRoot()
    {
        // Core 0 owns the frame; with fanout 1 the tree is 0 -> 1 -> 2, so core 2 is reached
        // (and, before the fix, acknowledged) through core 1, not over the link 2 -> 0.
        using var sim = new CapabilitySimulation(3, seed: 7, options: s_fanoutOne);
        CSpace owner = sim.Domains[0][1];
        CSpace participant = sim.Domains[2][1];
        int frame = owner.Retype(0, CapabilityType.Frame);
        int copy = CapabilitySimulation.Result(Run(sim, sim.Send(owner, frame, 2, participant.Id, TransferMode.Copy)));
        int relayCopy = CapabilitySimulation.Result(Run(sim, sim.Send(owner, frame, 1, sim.Domains[1][1].Id, TransferMode.Copy)));

        sim.Hold(2, 0);
        sim.QuietWhileHeld = true;
        participant.Copy(copy); // AddRef 2 -> 0, held back
        ValueTask revoke = owner.RevokeAsync(frame, RevokeMode.Multicast);
        sim.RunUntilQuiet();
        sim.QuietWhileHeld = false;
        sim.ReleaseAll();
        sim.RunUntilQuiet();
        CapabilitySimulation.Result(revoke);

        // The revoker's capability still names a live object: its frames are not handed out again.
        FrameHandle kept = owner.GetFrame(frame);
        int next = owner.Retype(0, CapabilityType.Frame);
        Assert.NotEqual(kept.BaseFrame, owner.GetFrame(next).BaseFrame);
        kept.Span[0] = 0x5A;
        Assert.Equal(0, owner.GetFrame(next).ReadOnlySpan[0]);
        Assert.True(participant.IsEmpty(copy));
        Assert.True(sim.Domains[1][1].IsEmpty(relayCopy));
        sim.CheckInvariants();
    }

    private static CapabilitySimulation.PendingTransfer Run(CapabilitySimulation sim, CapabilitySimulation.PendingTransfer task)
    {
        sim.RunUntilQuiet();
        return task;
    }
}
