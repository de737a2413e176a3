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

    /// <summary>Item 3: capability operations and frame accesses from a thread other than the core's fail clearly, and change nothing.</summary>
    [Fact]
    public void OperationsAndFrameAccess_FromAnotherThread_AreRefused()
    {
        using var sim = new CapabilitySimulation(2, seed: 31);
        CSpace app = sim.Domains[0][1];
        int frame = app.Retype(0, CapabilityType.Frame);
        FrameHandle handle = app.GetFrame(frame);
        long free = app.FreeRamFrames;

        var refused = new List<Exception>();
        var intruder = new Thread(() =>
        {
            void Try(Action action)
            {
                try
                {
                    action();
                }
                catch (WrongCoreThreadException e)
                {
                    refused.Add(e);
                }
            }

            Try(() => app.Retype(0, CapabilityType.Frame));
            Try(() => app.Delete(frame));
            Try(() => handle.Span[0] = 1);
            Try(() => _ = handle.ReadOnlySpan[0]);
            Try(() => sim.Cores[0].CreateDomain("intruder"));
        });
        intruder.Start();
        Assert.True(intruder.Join(TimeSpan.FromSeconds(10)));
        Assert.Equal(5, refused.Count); // every one refused, with the clear error

        Assert.Equal(free, app.FreeRamFrames);
        Assert.Equal(0, handle.ReadOnlySpan[0]);
    }

    /// <summary>Item 4: a pin taken before Delete never lets its pointer reach frames retyped for someone else.</summary>
    [Fact]
    public unsafe void PinnedFrame_DeletedAndRetyped_IsNotHandedOutUntilUnpinned()
    {
        using var sim = new CapabilitySimulation(1, seed: 32, appRamFrames: 2);
        CSpace app = sim.Domains[0][1];
        int frame = app.Retype(0, CapabilityType.Frame);
        int other = app.Retype(0, CapabilityType.Frame);
        System.Buffers.MemoryHandle pin = app.GetFrame(frame).Memory.Pin();
        int pinnedBase = app.GetFrame(frame).BaseFrame;
        app.Delete(frame);
        app.Delete(other);

        // Only the unpinned frame comes back; the pinned one stays out of circulation.
        int next = app.Retype(0, CapabilityType.Frame);
        Assert.NotEqual(pinnedBase, app.GetFrame(next).BaseFrame);
        Assert.Throws<OutOfRamException>(() => app.Retype(0, CapabilityType.Frame));
        *(byte*)pin.Pointer = 0x77; // writes only into the quarantined frame
        Assert.Equal(0, app.GetFrame(next).ReadOnlySpan[0]);

        pin.Dispose();
        int again = app.Retype(0, CapabilityType.Frame);
        Assert.Equal(pinnedBase, app.GetFrame(again).BaseFrame);
        Assert.Equal(0, app.GetFrame(again).ReadOnlySpan[0]); // zeroed by retype
        sim.CheckInvariants();
    }

    /// <summary>Item 4: pins are billed to the domain (bounded) and released when it is destroyed.</summary>
    [Fact]
    public void Pins_AreBoundedPerDomain_AndGoWithTheDomain()
    {
        using var sim = new CapabilitySimulation(1, seed: 33, options: new CapabilityOptions { MaxDomainsPerCore = 8, SlotsPerDomain = 64, PinsPerDomain = 2 });
        CSpace app = sim.Domains[0][1];
        int frame = app.Retype(0, CapabilityType.Frame);
        Memory<byte> memory = app.GetFrame(frame).Memory;
        _ = memory.Pin();
        _ = memory.Pin();
        Assert.Throws<CapabilityLimitException>(() => memory.Pin());
        int other = app.Retype(0, CapabilityType.Frame);
        Assert.Throws<CapabilityBusyException>(() => app.SwapFrames(frame, app, other));
        long free = sim.Domains[0][0].FreeRamFrames;
        sim.RestartDomain(0, 1); // its RAM comes back whole (no pinned frame holds it), and the successor gets as much
        Assert.Equal(free, sim.Domains[0][0].FreeRamFrames);
        sim.CheckInvariants();
    }

    /// <summary>Item 4: a Read-only copy never yields writable memory (no memory manager is built for it).</summary>
    [Fact]
    public void ReadOnlyCopy_YieldsNoWritableMemory()
    {
        using var sim = new CapabilitySimulation(1, seed: 34);
        CSpace app = sim.Domains[0][1];
        int frame = app.Retype(0, CapabilityType.Frame);
        int readOnly = app.Copy(frame, CapabilityRights.Read);
        FrameHandle h = app.GetFrame(readOnly);
        Assert.Throws<InsufficientRightsException>(() => h.ReadOnlyMemory);
        Assert.Throws<InsufficientRightsException>(() => h.Memory);
        Assert.Throws<InsufficientRightsException>(() => h.Span[0] = 1);
        app.GetFrame(frame).Span[3] = 9;
        var copy = new byte[4];
        h.CopyTo(0, copy);
        Assert.Equal(9, copy[3]);
        // A full copy's ReadOnlyMemory is only a narrower view of memory it may write anyway.
        Assert.Equal(9, app.GetFrame(frame).ReadOnlyMemory.Span[3]);
    }

    /// <summary>Item 5: the receiver learns slots from its own kernel: nothing to take unless something arrived, and a grant revoked before it was taken is not reported.</summary>
    [Fact]
    public void Grants_ComeFromTheReceiversKernel_AndARevokedGrantIsNotReported()
    {
        using var sim = new CapabilitySimulation(2, seed: 35);
        CSpace sender = sim.Domains[0][1];
        CSpace receiver = sim.Domains[1][1];
        uint channel = (uint)receiver.Id;
        Assert.Equal(-1, receiver.TakeGrant(channel)); // its own RAM slot is never "granted"

        int frame = sender.Retype(0, CapabilityType.Frame);
        CapabilitySimulation.PendingTransfer copy = sim.Send(sender, frame, 1, receiver.Id, TransferMode.Copy);
        sim.RunUntilQuiet();
        CapabilitySimulation.Result(copy.Task); // Ok: it was installed
        ValueTask revoke = sender.RevokeAsync(frame);
        sim.RunUntilQuiet();
        CapabilitySimulation.Result(revoke);
        Assert.Equal(-1, receiver.TakeGrant(channel)); // revoked before it was taken
        sim.CheckInvariants();
    }

    /// <summary>Item 6: revoke needs the Revoke right; a diminished copy cannot revoke the original.</summary>
    [Fact]
    public void DiminishedCopy_CannotRevokeTheOriginal()
    {
        using var sim = new CapabilitySimulation(2, seed: 36);
        CSpace owner = sim.Domains[0][1];
        int frame = owner.Retype(0, CapabilityType.Frame);
        int remote = CapabilitySimulation.Result(Run(sim, sim.Send(owner, frame, 1, 1, TransferMode.Copy, CapabilityRights.Read | CapabilityRights.Grant)));
        int local = owner.Copy(frame, CapabilityRights.Read);
        Assert.Throws<InsufficientRightsException>(() => sim.Domains[1][1].RevokeAsync(remote));
        Assert.Throws<InsufficientRightsException>(() => owner.RevokeAsync(local));
        sim.RunUntilQuiet();
        Assert.False(owner.IsEmpty(frame));
        owner.GetFrame(frame).Span[0] = 1;
        sim.CheckInvariants();
    }

    /// <summary>Item 6: a holder mints a revocable sub-copy per recipient and revokes one recipient without touching the others.</summary>
    [Fact]
    public void MintedSubCopies_AreRevokedOneRecipientAtATime()
    {
        using var sim = new CapabilitySimulation(3, seed: 37);
        CSpace netd = sim.Domains[0][1];
        int region = netd.Retype(0, CapabilityType.Frame);
        int forA = netd.Mint(region, CapabilityRights.Read | CapabilityRights.Write | CapabilityRights.Grant);
        int forB = netd.Mint(region, CapabilityRights.Read | CapabilityRights.Write | CapabilityRights.Grant);
        Assert.Equal(CapabilityRights.All, netd.Inspect(forA).Rights);
        int a = CapabilitySimulation.Result(Run(sim, sim.Send(netd, forA, 1, 1, TransferMode.Copy, CapabilityRights.Read | CapabilityRights.Grant)));
        int b = CapabilitySimulation.Result(Run(sim, sim.Send(netd, forB, 2, 1, TransferMode.Copy, CapabilityRights.Read | CapabilityRights.Grant)));
        netd.GetFrame(region).Span[0] = 5;
        Assert.Equal(5, sim.Domains[1][1].GetFrame(a).ReadOnlySpan[0]);

        ValueTask revoke = netd.RevokeAsync(forA);
        sim.RunUntilQuiet();
        CapabilitySimulation.Result(revoke);

        Assert.True(sim.Domains[1][1].IsEmpty(a));
        Assert.Equal(5, sim.Domains[2][1].GetFrame(b).ReadOnlySpan[0]);
        Assert.Equal(5, netd.GetFrame(region).ReadOnlySpan[0]); // the region itself lives on
        sim.CheckInvariants();
    }

    /// <summary>Item 6: a transfer reaches only the domain behind a channel the receiving core resolves; a domain has no public way to name (core, domain).</summary>
    [Fact]
    public void Transfers_NeedAChannel_NotCoreAndDomainIntegers()
    {
        using var sim = new CapabilitySimulation(2, seed: 38);
        CSpace sender = sim.Domains[0][1];
        int frame = sender.Retype(0, CapabilityType.Frame);
        CapabilitySimulation.PendingTransfer lost = sim.Send(sender, frame, 1, 7, TransferMode.Copy);
        sim.RunUntilQuiet();
        Assert.Throws<CapabilityException>(() => CapabilitySimulation.Result(lost.Task));

        string[] forbidden = ["TransferAsync", "CopyTo", "MoveTo"];
        Assert.DoesNotContain(typeof(CSpace).GetMethods(), m => forbidden.Contains(m.Name) && m.IsPublic);
        sim.CheckInvariants();
    }

    /// <summary>Item 7: a domain that fills its share of the reference table fails alone; its neighbour keeps copying.</summary>
    [Fact]
    public void ReferenceTable_IsSharedOut_ExhaustingItFailsOnlyThatDomain()
    {
        using var sim = new CapabilitySimulation(1, seed: 39, options: new CapabilityOptions { MaxDomainsPerCore = 4, SlotsPerDomain = 64, MaxReferencesPerCore = 64 });
        CSpace hog = sim.Domains[0][1];
        CSpace neighbour = sim.Domains[0][2];
        int frame = hog.Retype(0, CapabilityType.Frame);
        CapabilityLimitException? error = null;
        for (int i = 0; i < 1000 && error is null; i++)
        {
            try
            {
                hog.Copy(frame);
            }
            catch (CapabilityLimitException e)
            {
                error = e;
            }
        }

        Assert.NotNull(error);
        Assert.Contains("share", error.Message, StringComparison.Ordinal);
        int mine = neighbour.Retype(0, CapabilityType.Frame);
        neighbour.Copy(mine);
        neighbour.Copy(mine);
        sim.CheckInvariants();
    }

    /// <summary>Item 7: operations a domain never awaits hold only its own share, and go back to the pool with the domain.</summary>
    [Fact]
    public void NeverAwaitedOperations_DoNotLeakPastTheirDomain()
    {
        using var sim = new CapabilitySimulation(2, seed: 40, options: new CapabilityOptions { MaxDomainsPerCore = 8, SlotsPerDomain = 64, OperationsPerDomain = 2 });
        for (int round = 0; round < 5; round++)
        {
            CSpace app = sim.Domains[0][1];
            int frame = app.Retype(0, CapabilityType.Frame);
            _ = app.TransferAsync(frame, 1, 1, TransferMode.Copy); // never awaited
            _ = app.TransferAsync(frame, 1, 1, TransferMode.Copy);
            Assert.Throws<CapabilityLimitException>(() => app.TransferAsync(frame, 1, 1, TransferMode.Copy));
            sim.RunUntilQuiet();
            sim.TakeAllGrants();
            sim.RestartDomain(0, 1);
        }

        // The successor (same domain id) has its whole share.
        CSpace last = sim.Domains[0][1];
        int f = last.Retype(0, CapabilityType.Frame);
        ValueTask one = last.TransferAsync(f, 1, 1, TransferMode.Copy);
        ValueTask two = last.TransferAsync(f, 1, 1, TransferMode.Copy);
        sim.RunUntilQuiet();
        CapabilitySimulation.Result(one);
        CapabilitySimulation.Result(two);
        sim.TakeAllGrants();
        sim.CheckInvariants();
    }

    /// <summary>
    /// Item 8: the revoker's kept copy is named with its generation: a copy that reuses the
    /// kept copy's reference index after the kept copy was deleted is revoked, not kept.
    /// </summary>
    [Fact]
    public void KeptCopyDeleted_ItsRecycledIndexDoesNotSurviveTheRevoke()
    {
        using var sim = new CapabilitySimulation(2, seed: 41);
        CSpace owner = sim.Domains[0][1];
        CSpace holder = sim.Domains[1][1];
        int frame = owner.Retype(0, CapabilityType.Frame);
        int kept = CapabilitySimulation.Result(Run(sim, sim.Send(owner, frame, 1, holder.Id, TransferMode.Copy)));
        int other = holder.Copy(kept, CapabilityRights.Read | CapabilityRights.Grant);
        sim.RunUntilQuiet();

        sim.Hold(0, 1); // the MARK waits
        sim.QuietWhileHeld = true;
        ValueTask revoke = holder.RevokeAsync(kept);
        sim.RunUntilQuiet();
        (int keptIndex, _) = sim.Cores[1].InspectSlot(holder, kept);
        holder.Delete(kept);
        int reused = holder.Copy(other, CapabilityRights.Read);
        Assert.Equal(keptIndex, sim.Cores[1].InspectSlot(holder, reused).Index);
        sim.QuietWhileHeld = false;
        sim.ReleaseAll();
        sim.RunUntilQuiet();
        CapabilitySimulation.Result(revoke);

        Assert.True(holder.IsEmpty(reused));
        Assert.True(holder.IsEmpty(other));
        sim.CheckInvariants();
    }

    /// <summary>Kernel objects: one Nic root, DevFrames only from it, PacketFilters billed to their installer, and revoking a filter tells its holder's core.</summary>
    [Fact]
    public void Nic_DevFrames_AndPacketFilters_AreRealKernelObjects()
    {
        using var sim = new CapabilitySimulation(2, seed: 42, deviceFrames: 8);
        CoreCapabilities core0 = sim.Cores[0];
        CSpace monitor = sim.Domains[0][0];
        Assert.Equal(CapabilityType.Nic, monitor.Inspect(CapabilitySimulation.NicSlot).Type);
        Assert.Equal(8, monitor.Inspect(CapabilitySimulation.NicSlot).FrameCount);
        Assert.Throws<CapabilityException>(() => core0.CreateRoot(monitor, CapabilitySimulation.KernelSlot, monitor, CapabilityType.Nic));
        Assert.Throws<CapabilityTypeException>(() => sim.Cores[1].CreateRoot(sim.Domains[1][0], CapabilitySimulation.KernelSlot, sim.Domains[1][0], CapabilityType.Nic));
        Assert.Throws<CapabilityTypeException>(() => monitor.Copy(CapabilitySimulation.NicSlot));

        // netd gets the Nic; DevFrames come from it only.
        CSpace netd = sim.Domains[0][1];
        int nic = monitor.MoveTo(CapabilitySimulation.NicSlot, netd);
        int dev = netd.Retype(nic, CapabilityType.DevFrame);
        Assert.InRange(netd.GetFrame(dev).BaseFrame, core0.DeviceRegion.BaseFrame, core0.DeviceRegion.EndFrame - 1);
        Assert.Throws<CapabilityTypeException>(() => sim.Domains[0][2].Retype(0, CapabilityType.DevFrame));
        Assert.Throws<CapabilityTypeException>(() => netd.Retype(nic, CapabilityType.Frame));

        // An application installs a filter (billed to its RAM) and gives netd a copy.
        var revoked = new List<CapabilityRevocation>();
        sim.Cores[1].CopyRevoked = revoked.Add;
        CSpace app = sim.Domains[0][2];
        long before = app.FreeRamFrames;
        int filter = app.Retype(0, CapabilityType.PacketFilter);
        Assert.Equal(before - 1, app.FreeRamFrames);
        int atNetd = CapabilitySimulation.Result(Run(sim, sim.Send(app, filter, 1, 1, TransferMode.Copy, CapabilityRights.Read | CapabilityRights.Grant)));
        ValueTask revoke = app.RevokeAsync(filter);
        sim.RunUntilQuiet();
        CapabilitySimulation.Result(revoke);
        CapabilityRevocation note = Assert.Single(revoked);
        Assert.Equal((1, atNetd, CapabilityType.PacketFilter, app.Inspect(filter).ObjectId), (note.Domain, note.Slot, note.Type, note.ObjectId));

        // The holder itself (netd's domain, whose CSpace is all it can reach) gets the same notice,
        // and only it: the installer revoked, it did not lose anything.
        CSpace holder = sim.Domains[1][1];
        Assert.True(holder.WaitForRevocationAsync().IsCompleted);
        Assert.True(holder.TryTakeRevocation(out CapabilityRevocation own));
        Assert.Equal(note, own);
        Assert.False(holder.TryTakeRevocation(out _));
        Assert.False(app.TryTakeRevocation(out _));

        // A copy its holder deletes is no revocation: no notice.
        int again = CapabilitySimulation.Result(Run(sim, sim.Send(app, filter, 1, 1, TransferMode.Copy, CapabilityRights.Read)));
        holder.Delete(again);
        sim.RunUntilQuiet();
        Assert.False(holder.TryTakeRevocation(out _));
        Assert.Single(revoked);
        sim.CheckInvariants();
    }

    private static CapabilitySimulation.PendingTransfer Run(CapabilitySimulation sim, CapabilitySimulation.PendingTransfer task)
    {
        sim.RunUntilQuiet();
        return task;
    }
}
