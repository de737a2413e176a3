using Multikernel.CpuDriver.Capabilities;
using Multikernel.CpuDriver.Memory;

namespace Multikernel.Tests.Capabilities;

/// <summary>The cross-core protocol driven by the deterministic simulation.</summary>
public sealed class DistributedCapabilityTests
{
    private static int Complete(CapabilitySimulation sim, CapabilitySimulation.PendingTransfer task)
    {
        sim.RunUntilQuiet();
        Assert.True(task.IsCompleted, "operation did not complete after the simulation quiesced");
        return CapabilitySimulation.Result(task);
    }

    /// <summary>Consumes a completed transfer whichever way it ended (delivered then revoked, or refused).</summary>
    private static void Outcome(CapabilitySimulation.PendingTransfer task)
    {
        try
        {
            // Delivered (the grant may have been revoked before it was taken) or refused.
            CapabilitySimulation.Result(task.Task);
            _ = task.Receiver?.TakeGrant(task.Channel);
        }
        catch (CapabilityException)
        {
        }
    }

    private static void Complete(CapabilitySimulation sim, ValueTask task)
    {
        sim.RunUntilQuiet();
        Assert.True(task.IsCompleted, "operation did not complete after the simulation quiesced");
        CapabilitySimulation.Result(task);
    }

    [Fact]
    public void CopyToAnotherCore_SharesTheFrame()
    {
        using var sim = new CapabilitySimulation(2, seed: 1);
        CSpace a = sim.Domains[0][1];
        CSpace b = sim.Domains[1][1];
        int frame = a.Retype(0, CapabilityType.Frame);
        a.GetFrame(frame).Span[10] = 42;

        int received = Complete(sim, sim.Send(a, frame, 1, b.Id, TransferMode.Copy, CapabilityRights.Read | CapabilityRights.Grant));

        FrameHandle remote = b.GetFrame(received);
        Assert.Equal(42, remote.ReadOnlySpan[10]);
        Assert.Equal(0, b.Inspect(received).OwnerCore);
        Assert.Throws<InsufficientRightsException>(() => remote.Span[0] = 1);
        Assert.False(a.IsEmpty(frame));
        sim.CheckInvariants();
    }

    [Fact]
    public void MoveToAnotherCore_IsGoneFromTheSender()
    {
        using var sim = new CapabilitySimulation(3, seed: 2);
        CSpace a = sim.Domains[0][1];
        CSpace b = sim.Domains[2][2];
        int frame = a.Retype(0, CapabilityType.Frame);
        FrameHandle senderHandle = a.GetFrame(frame);
        senderHandle.Span[0] = 9;

        CapabilitySimulation.PendingTransfer move = sim.Send(a, frame, 2, b.Id, TransferMode.Move);
        // From the moment the move starts the sender can no longer use it.
        Assert.Throws<EmptySlotException>(() => a.GetFrame(frame));
        Assert.Throws<CapabilityRevokedException>(() => senderHandle.Span[0] = 1);
        int received = Complete(sim, move);

        Assert.True(a.IsEmpty(frame));
        Assert.Equal(9, b.GetFrame(received).ReadOnlySpan[0]);
        sim.CheckInvariants();
    }

    [Fact]
    public void MoveToAFullCSpace_FailsAndTheSenderKeepsIt()
    {
        using var sim = new CapabilitySimulation(2, seed: 3);
        CSpace a = sim.Domains[0][1];
        CSpace b = sim.Domains[1][1];
        int filler = b.Retype(0, CapabilityType.Endpoint);
        for (int i = b.UsedSlots; i < b.SlotCount; i++)
        {
            b.Copy(filler);
        }

        int frame = a.Retype(0, CapabilityType.Frame);
        CapabilitySimulation.PendingTransfer move = sim.Send(a, frame, 1, b.Id, TransferMode.Move);
        sim.RunUntilQuiet();
        var error = Assert.Throws<CapabilityLimitException>(() => CapabilitySimulation.Result(move));
        Assert.Contains("full", error.Message, StringComparison.Ordinal);
        a.GetFrame(frame).Span[0] = 1;
        sim.CheckInvariants();
    }

    [Fact]
    public void TransferToAMissingDomain_Fails()
    {
        using var sim = new CapabilitySimulation(2, seed: 4);
        CSpace a = sim.Domains[0][1];
        int frame = a.Retype(0, CapabilityType.Frame);
        CapabilitySimulation.PendingTransfer copy = sim.Send(a, frame, 1, 7, TransferMode.Copy);
        sim.RunUntilQuiet();
        Assert.Throws<CapabilityException>(() => CapabilitySimulation.Result(copy));
        sim.CheckInvariants();
    }

    [Theory]
    [InlineData(RevokeMode.Unicast, 2)]
    [InlineData(RevokeMode.Unicast, 8)]
    [InlineData(RevokeMode.Multicast, 3)]
    [InlineData(RevokeMode.Multicast, 8)]
    public void Revoke_FrameWithCopiesOnEveryCore_LeavesOnlyTheOriginal(RevokeMode mode, int cores)
    {
        using var sim = new CapabilitySimulation(cores, seed: cores);
        CSpace owner = sim.Domains[0][1];
        int frame = owner.Retype(0, CapabilityType.Frame);
        var handles = new List<FrameHandle>();
        var slots = new List<(CSpace, int)>();
        for (int c = 1; c < cores; c++)
        {
            for (int d = 1; d < CapabilitySimulation.DomainsPerCore; d++)
            {
                int s = Complete(sim, sim.Send(owner, frame, c, sim.Domains[c][d].Id, TransferMode.Copy));
                slots.Add((sim.Domains[c][d], s));
                handles.Add(sim.Domains[c][d].GetFrame(s));
                // A second-generation copy made on the remote core itself.
                int again = sim.Domains[c][d].Copy(s, CapabilityRights.Read);
                slots.Add((sim.Domains[c][d], again));
            }
        }

        FrameHandle ownerHandle = owner.GetFrame(frame);
        int objects = sim.Cores.Sum(c => c.ObjectCount);

        Complete(sim, owner.RevokeAsync(frame, mode));

        Assert.All(slots, s => Assert.True(s.Item1.IsEmpty(s.Item2)));
        Assert.All(handles, h => Assert.Throws<CapabilityRevokedException>(() => h.ReadOnlySpan[0]));
        ownerHandle.Span[0] = 3;
        Assert.Equal(objects, sim.Cores.Sum(c => c.ObjectCount));
        Assert.Equal(1, sim.Cores.Sum(c => c.InspectReferences().Count(r => r.Owner == 0 && r.Type == CapabilityType.Frame)));
        sim.CheckInvariants();
    }

    [Fact]
    public void RevokeRequestedByANonOwner_KeepsTheRequestersCopy()
    {
        using var sim = new CapabilitySimulation(4, seed: 5);
        CSpace owner = sim.Domains[0][1];
        int frame = owner.Retype(0, CapabilityType.Frame);
        int onOne = Complete(sim, sim.Send(owner, frame, 1, 1, TransferMode.Copy));
        int onTwo = Complete(sim, sim.Send(owner, frame, 2, 1, TransferMode.Copy));

        Complete(sim, sim.Domains[1][1].RevokeAsync(onOne, RevokeMode.Multicast));

        Assert.False(sim.Domains[1][1].IsEmpty(onOne));
        Assert.True(sim.Domains[2][1].IsEmpty(onTwo));
        Assert.True(owner.IsEmpty(frame));
        sim.Domains[1][1].GetFrame(onOne).Span[0] = 1;
        sim.CheckInvariants();
    }

    [Fact]
    public void RevokeRam_DeletesDerivedFramesOnEveryCore_AndReturnsTheMemory()
    {
        using var sim = new CapabilitySimulation(4, seed: 6);
        CSpace owner = sim.Domains[0][1];
        long free = owner.FreeRamFrames;
        int part = owner.Retype(0, CapabilityType.Ram, 8);
        var handles = new List<FrameHandle>();
        for (int i = 0; i < 8; i++)
        {
            int f = owner.Retype(part, CapabilityType.Frame);
            int c = 1 + (i % 3);
            int s = Complete(sim, sim.Send(owner, f, c, 2, TransferMode.Move));
            handles.Add(sim.Domains[c][2].GetFrame(s));
        }

        Complete(sim, owner.RevokeAsync(0));

        Assert.Equal(free, owner.FreeRamFrames);
        Assert.All(handles, h => Assert.False(h.IsValid));
        Assert.Equal(1, sim.Domains[1][2].UsedSlots);
        sim.CheckInvariants();
    }

    [Fact]
    public void DeletingTheLastRemoteCopy_FreesTheObject()
    {
        using var sim = new CapabilitySimulation(2, seed: 7);
        CSpace a = sim.Domains[0][1];
        long free = a.FreeRamFrames;
        int frame = a.Retype(0, CapabilityType.Frame);
        int remote = Complete(sim, sim.Send(a, frame, 1, 1, TransferMode.Move));
        Assert.Equal(free - 1, a.FreeRamFrames);
        FrameHandle handle = sim.Domains[1][1].GetFrame(remote);

        sim.Domains[1][1].Delete(remote);
        Assert.False(handle.IsValid);
        sim.RunUntilQuiet();

        Assert.Equal(free, a.FreeRamFrames);
        sim.CheckInvariants();
    }

    [Fact]
    public void CopyDuringARevoke_IsRefusedOrRevoked_NeverSurvives()
    {
        using var sim = new CapabilitySimulation(3, seed: 8);
        CSpace owner = sim.Domains[0][1];
        int frame = owner.Retype(0, CapabilityType.Frame);
        int onOne = Complete(sim, sim.Send(owner, frame, 1, 1, TransferMode.Copy));

        ValueTask revoke = owner.RevokeAsync(frame);
        CapabilitySimulation.PendingTransfer copy = sim.Send(sim.Domains[1][1], onOne, 2, 1, TransferMode.Copy);
        sim.RunUntilQuiet();

        CapabilitySimulation.Result(revoke);
        Assert.Throws<CapabilityBusyException>(() => CapabilitySimulation.Result(copy));
        Assert.Equal(0, sim.Domains[2][1].UsedSlots - 1);
        sim.CheckInvariants();
    }

    [Fact]
    public void ConcurrentRevokesOfRelatedCapabilities_StayConsistent()
    {
        for (int seed = 0; seed < 30; seed++)
        {
            using var sim = new CapabilitySimulation(4, seed);
            CSpace owner = sim.Domains[0][1];
            int part = owner.Retype(0, CapabilityType.Ram, 4);
            int frame = owner.Retype(part, CapabilityType.Frame);
            int remote = Complete(sim, sim.Send(owner, frame, 1, 1, TransferMode.Copy));
            Complete(sim, sim.Send(owner, frame, 2, 1, TransferMode.Copy));

            var tasks = new List<ValueTask>
            {
                owner.RevokeAsync(part, RevokeMode.Multicast),
                sim.Domains[1][1].RevokeAsync(remote),
            };
            sim.Domains[0][1].Delete(frame);
            sim.RunUntilQuiet();
            foreach (ValueTask t in tasks)
            {
                Assert.True(t.IsCompleted);
                try
                {
                    CapabilitySimulation.Result(t);
                }
                catch (CapabilityException)
                {
                    // Busy (the other revoke covered it) or revoked meanwhile: both are legitimate outcomes.
                }
            }

            sim.CheckInvariants();
            Assert.Equal(0, sim.Cores.Sum(c => c.InspectReferences().Count(r => r.Owner == 0 && r.Type == CapabilityType.Frame)));
        }
    }

    [Theory]
    [InlineData(RevokeMode.Unicast)]
    [InlineData(RevokeMode.Multicast)]
    public void BigTreeRevoke_ThroughTinyRingsAndOutboxes_Completes(RevokeMode mode)
    {
        using var sim = new CapabilitySimulation(8, seed: 9, framesPerCore: 256, appRamFrames: 100, linkCapacity: 1, options: new CapabilityOptions
        {
            MaxObjectsPerCore = 512,
            MaxReferencesPerCore = 1024,
            MaxDomainsPerCore = 4,
            SlotsPerDomain = 128,
            MaxOperations = 4,
            OutboxCapacity = 64,
            MulticastFanout = 1,
        });
        CSpace owner = sim.Domains[0][1];
        for (int i = 0; i < 90; i++)
        {
            int f = owner.Retype(0, CapabilityType.Frame);
            for (int c = 1; c < 8; c += 1 + (i % 3))
            {
                Complete(sim, sim.Send(owner, f, c, 1 + (i % 2), TransferMode.Copy));
            }
        }

        sim.SlowCores = 0b1010_1000; // every other relay of the chain drains late
        Complete(sim, owner.RevokeAsync(0, mode));
        Assert.Equal(100, owner.FreeRamFrames);
        if (mode == RevokeMode.Multicast)
        {
            // A chain of relays (fanout 1) with one-slot rings: relays fill their outboxes and refuse
            // messages, which stay in the ring until there is room.
            Assert.True(sim.Refused > 0, "the relays never pushed back: the test did not exercise back-pressure");
        }

        sim.CheckInvariants();
    }

    [Fact]
    public void TooManyOperations_IsAClearError()
    {
        // Each domain has its own share of operations: exhausting it fails only that domain.
        using var sim = new CapabilitySimulation(2, seed: 10, options: new CapabilityOptions { MaxOperations = 8, OperationsPerDomain = 2, MaxDomainsPerCore = 4, SlotsPerDomain = 32 });
        CSpace a = sim.Domains[0][1];
        CSpace b = sim.Domains[0][2];
        int f = a.Retype(0, CapabilityType.Frame);
        int g = b.Retype(0, CapabilityType.Frame);
        CapabilitySimulation.PendingTransfer one = sim.Send(a, f, 1, 1, TransferMode.Copy);
        CapabilitySimulation.PendingTransfer two = sim.Send(a, f, 1, 1, TransferMode.Copy);
        var error = Assert.Throws<CapabilityLimitException>(() => sim.Send(a, f, 1, 1, TransferMode.Copy));
        Assert.Contains("OperationsPerDomain", error.Message, StringComparison.Ordinal);
        CapabilitySimulation.PendingTransfer other = sim.Send(b, g, 1, 2, TransferMode.Copy);
        sim.RunUntilQuiet();
        CapabilitySimulation.Result(one);
        CapabilitySimulation.Result(two);
        CapabilitySimulation.Result(other);
        sim.CheckInvariants();
    }

    [Fact]
    public void RemoteHolder_CannotAmplifyRights_WhenPassingItOn()
    {
        using var sim = new CapabilitySimulation(3, seed: 14);
        CSpace a = sim.Domains[0][1];
        CSpace b = sim.Domains[1][1];
        int frame = a.Retype(0, CapabilityType.Frame);
        int readGrant = Complete(sim, sim.Send(a, frame, 1, b.Id, TransferMode.Copy, CapabilityRights.Read | CapabilityRights.Grant));

        Assert.Throws<InsufficientRightsException>(() => sim.Send(b, readGrant, 2, 1, TransferMode.Copy, CapabilityRights.All));
        Assert.Throws<InsufficientRightsException>(() => sim.Send(b, readGrant, 2, 1, TransferMode.Move, CapabilityRights.Read | CapabilityRights.Write));
        Assert.Throws<InsufficientRightsException>(() => b.Copy(readGrant, CapabilityRights.Write));
        int moved = Complete(sim, sim.Send(b, readGrant, 2, 1, TransferMode.Move));
        Assert.Equal(CapabilityRights.Read | CapabilityRights.Grant, sim.Domains[2][1].Inspect(moved).Rights);
        Assert.Throws<InsufficientRightsException>(() => sim.Domains[2][1].GetFrame(moved).Span[0] = 1);
        sim.CheckInvariants();
    }

    [Fact]
    public void MemoryViewKeptAcrossARevoke_FailsOnTheNextAccess()
    {
        using var sim = new CapabilitySimulation(2, seed: 15);
        CSpace a = sim.Domains[0][1];
        CSpace b = sim.Domains[1][1];
        int frame = a.Retype(0, CapabilityType.Frame);
        int remote = Complete(sim, sim.Send(a, frame, 1, b.Id, TransferMode.Copy));
        Memory<byte> view = b.GetFrame(remote).Memory;
        view.Span[0] = 1;

        Complete(sim, a.RevokeAsync(frame, RevokeMode.Multicast));

        var error = Assert.Throws<CapabilityRevokedException>(() => view.Span[0] = 2);
        Assert.Contains("revoked", error.Message, StringComparison.Ordinal);
        Assert.Equal(1, a.GetFrame(frame).ReadOnlySpan[0]);
    }

    [Fact]
    public void RevokedRamReused_OldHandlesNeverSeeTheNewContents()
    {
        using var sim = new CapabilitySimulation(2, seed: 16);
        CSpace a = sim.Domains[0][1];
        CSpace b = sim.Domains[1][1];
        int part = a.Retype(0, CapabilityType.Ram, 1);
        int frame = a.Retype(part, CapabilityType.Frame);
        int remote = Complete(sim, sim.Send(a, frame, 1, b.Id, TransferMode.Move));
        FrameHandle stale = b.GetFrame(remote);
        Complete(sim, a.RevokeAsync(part));
        int reused = a.Retype(part, CapabilityType.Frame);
        FrameHandle fresh = a.GetFrame(reused);
        Assert.Equal(stale.BaseFrame, fresh.BaseFrame);
        fresh.Span[0] = 0x5A;
        Assert.Throws<CapabilityRevokedException>(() => stale.ReadOnlySpan[0]);
        Assert.Throws<CapabilityRevokedException>(() => stale.Span[0] = 1);
        Assert.Equal(0x5A, fresh.ReadOnlySpan[0]);
        sim.CheckInvariants();
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void SenderDestroyedDuringAMove_NothingLeaks(bool receiverHasRoom)
    {
        using var sim = new CapabilitySimulation(2, seed: 17);
        CSpace monitor = sim.Domains[0][0];
        CSpace sender = sim.Cores[0].CreateDomain("sender");
        CSpace b = sim.Domains[1][1];
        long monitorFree = monitor.FreeRamFrames;
        if (!receiverHasRoom)
        {
            int filler = b.Retype(0, CapabilityType.Endpoint);
            for (int i = b.UsedSlots; i < b.SlotCount; i++)
            {
                b.Copy(filler);
            }
        }

        int usedBefore = b.UsedSlots;
        // The frame is billed to the monitor's RAM, so it outlives the sender.
        int frame = monitor.MoveTo(monitor.Retype(CapabilitySimulation.RootRamSlot, CapabilityType.Frame), sender);
        CapabilitySimulation.PendingTransfer move = sim.Send(sender, frame, 1, b.Id, TransferMode.Move);
        sim.Cores[0].DestroyDomain(sender);
        sim.RunUntilQuiet();

        if (receiverHasRoom)
        {
            int received = CapabilitySimulation.Result(move);
            Assert.Equal(usedBefore + 1, b.UsedSlots);
            b.GetFrame(received).Span[0] = 1;
            Assert.Equal(monitorFree - 1, monitor.FreeRamFrames);
        }
        else
        {
            Assert.Throws<CapabilityLimitException>(() => CapabilitySimulation.Result(move));
            // The sender is gone, so nobody holds the frame any more: it went back to the monitor's RAM.
            Assert.Equal(monitorFree, monitor.FreeRamFrames);
        }

        sim.CheckInvariants();
    }

    [Fact]
    public void SenderDestroyedWithItsRam_TheFrameInTransitGoesToo()
    {
        using var sim = new CapabilitySimulation(2, seed: 18);
        CSpace monitor = sim.Domains[0][0];
        CSpace sender = sim.Cores[0].CreateDomain("sender");
        long monitorFree = monitor.FreeRamFrames;
        monitor.MoveTo(monitor.Retype(CapabilitySimulation.RootRamSlot, CapabilityType.Ram, 4), sender);
        int frame = sender.Retype(0, CapabilityType.Frame);
        CapabilitySimulation.PendingTransfer move = sim.Send(sender, frame, 1, 1, TransferMode.Move);
        sim.Cores[0].DestroyDomain(sender);
        sim.RunUntilQuiet();
        Assert.Throws<CapabilityRevokedException>(() => CapabilitySimulation.Result(move));
        Assert.Equal(monitorFree, monitor.FreeRamFrames);
        sim.CheckInvariants();
    }

    // Regression (found by the concurrent property): a transfer to the owner core itself used to
    // install through the owner's outbox, so a revoke started in between missed the new copy.
    [Fact]
    public void CopyToTheOwnerCore_RacingARevoke_IsStillRevoked()
    {
        using var sim = new CapabilitySimulation(2, seed: 19);
        CSpace owner = sim.Domains[0][1];
        CSpace third = sim.Domains[0][2];
        int frame = owner.Retype(0, CapabilityType.Frame);
        int remote = Complete(sim, sim.Send(owner, frame, 1, 1, TransferMode.Copy));
        int thirdSlots = third.UsedSlots;

        CapabilitySimulation.PendingTransfer back = sim.Send(sim.Domains[1][1], remote, 0, third.Id, TransferMode.Copy);
        Assert.True(sim.Deliver(1, 0)); // the copy request reaches the owner
        ValueTask revoke = owner.RevokeAsync(frame);
        sim.RunUntilQuiet();

        CapabilitySimulation.Result(revoke);
        Outcome(back);
        Assert.Equal(thirdSlots, third.UsedSlots);
        Assert.Equal(1, sim.Cores.Sum(c => c.InspectReferences().Count(r => r.Owner == 0 && r.Type == CapabilityType.Frame)));
        sim.CheckInvariants();
    }

    // Regression (found by the concurrent property): in a multicast revoke a MARK relayed through
    // another core could overtake an INSTALL the owner had sent directly, and the copy escaped.
    [Fact]
    public void MulticastRevoke_WithAnInstallInFlight_StillReachesTheNewCopy()
    {
        using var sim = new CapabilitySimulation(4, seed: 20);
        CSpace owner = sim.Domains[0][1];
        int frame = owner.Retype(0, CapabilityType.Frame);
        int onThree = 0;
        for (int c = 1; c < 4; c++)
        {
            onThree = Complete(sim, sim.Send(owner, frame, c, 1, TransferMode.Copy));
        }

        CapabilitySimulation.PendingTransfer toTwo = sim.Send(sim.Domains[3][1], onThree, 2, 2, TransferMode.Copy);
        Assert.True(sim.Deliver(3, 0)); // request reaches the owner, which sends INSTALL to core 2
        ValueTask revoke = owner.RevokeAsync(frame, RevokeMode.Multicast);
        // Let the relay path run first: owner -> core 1 -> core 2, before the owner's INSTALL to core 2.
        while (sim.Deliver(0, 1) || sim.Deliver(1, 2))
        {
        }

        sim.RunUntilQuiet();
        CapabilitySimulation.Result(revoke);
        Outcome(toTwo);
        Assert.Equal(1, sim.Cores.Sum(c => c.InspectReferences().Count(r => r.Owner == 0 && r.Type == CapabilityType.Frame)));
        sim.CheckInvariants();
    }

    [Fact]
    public void DeletingTheLastCopyOfAPacketFilter_TellsTheOwnerCoreOnce()
    {
        using var sim = new CapabilitySimulation(2, seed: 21);
        var deleted = new List<CapabilityObject>();
        sim.Cores[0].ObjectDeleted = deleted.Add;
        CSpace installer = sim.Domains[0][1];
        long ram = installer.FreeRamFrames;
        int filter = installer.Retype(0, CapabilityType.PacketFilter);
        Assert.Equal(ram - 1, installer.FreeRamFrames); // billed to the installer
        ulong id = installer.Inspect(filter).ObjectId;
        int app = Complete(sim, sim.Send(installer, filter, 1, 1, TransferMode.Copy, CapabilityRights.Read | CapabilityRights.Grant));
        Assert.Equal(id, sim.Domains[1][1].Inspect(app).ObjectId);

        Complete(sim, installer.RevokeAsync(filter));
        Assert.Empty(deleted);
        CapabilityInfo info = installer.Inspect(filter);
        installer.Delete(filter);
        sim.RunUntilQuiet();

        Assert.Single(deleted);
        Assert.Equal(CapabilityType.PacketFilter, deleted[0].Type);
        Assert.Equal(ram, installer.FreeRamFrames);
        Assert.Equal(CapabilityType.PacketFilter, info.Type);
        sim.CheckInvariants();
    }

    [Fact]
    public void AnotherCoresKernelCapability_CannotCreateRootsHere()
    {
        using var sim = new CapabilitySimulation(2, seed: 22);
        CSpace monitor0 = sim.Domains[0][0];
        CSpace app1 = sim.Domains[1][1];
        int foreignKernel = Complete(sim, sim.Send(monitor0, CapabilitySimulation.KernelSlot, 1, app1.Id, TransferMode.Copy));
        var error = Assert.Throws<InsufficientRightsException>(() => sim.Cores[1].CreateRoot(app1, foreignKernel, app1, CapabilityType.Nic));
        Assert.Contains("core 0's Kernel capability", error.Message, StringComparison.Ordinal);
        sim.CheckInvariants();
    }

    [Fact]
    public void MalformedProtocolMessages_AreRejectedWithAClearError()
    {
        using var sim = new CapabilitySimulation(2, seed: 23);
        CoreCapabilities core = sim.Cores[0];
        int objects = core.ObjectCount;
        var release = Multikernel.CpuDriver.Urpc.Message.Create(0x0205, 1_000_000);
        var error = Assert.Throws<ArgumentException>(() => core.TryHandle(1, in release));
        Assert.Contains("Malformed", error.Message, StringComparison.Ordinal);
        var ack = Multikernel.CpuDriver.Urpc.Message.Create(0x0211, 0, 200);
        Assert.Throws<ArgumentException>(() => core.TryHandle(1, in ack));
        var foreign = Multikernel.CpuDriver.Urpc.Message.Create(0x0100);
        Assert.Throws<ArgumentException>(() => core.TryHandle(1, in foreign));
        Assert.Throws<ArgumentOutOfRangeException>(() => core.TryHandle(5, in release));
        Assert.Equal(objects, core.ObjectCount);
        sim.CheckInvariants();
    }
}
