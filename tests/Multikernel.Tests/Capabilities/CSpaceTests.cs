using Multikernel.CpuDriver.Capabilities;
using Multikernel.CpuDriver.Memory;

namespace Multikernel.Tests.Capabilities;

/// <summary>Single-core capability operations, their accounting and their errors.</summary>
public sealed class CSpaceTests : IDisposable
{
    private readonly PhysicalMemory _memory = new(64 * PhysicalMemory.FrameSize);
    private readonly CoreCapabilities _core;
    private readonly CSpace _monitor;
    private readonly int _ram;
    private readonly int _kernel;

    public CSpaceTests()
    {
        _core = new CoreCapabilities(0, 1, _memory, new FrameRange(0, 64), new CapabilityOptions { SlotsPerDomain = 32, MaxOperations = 8 });
        _monitor = _core.CreateDomain("monitor");
        _kernel = _core.CreateKernelCapability(_monitor);
        _ram = _core.CreateRoot(_monitor, _kernel, _monitor, CapabilityType.Ram, 0, 64);
    }

    public void Dispose() => _memory.Dispose();

    private CSpace DomainWithRam(string name, int frames)
    {
        CSpace domain = _core.CreateDomain(name);
        int part = _monitor.Retype(_ram, CapabilityType.Ram, frames);
        _monitor.MoveTo(part, domain);
        return domain;
    }

    [Fact]
    public void Retype_Frame_GivesZeroedWritableMemory()
    {
        CSpace app = DomainWithRam("app", 8);
        int frame = app.Retype(0, CapabilityType.Frame, 2);
        FrameHandle handle = app.GetFrame(frame);
        Assert.Equal(2 * PhysicalMemory.FrameSize, handle.Length);
        Assert.True(handle.ReadOnlySpan.IndexOfAnyExcept((byte)0) < 0);
        handle.Span.Fill(0xAB);

        app.Delete(frame);
        int again = app.Retype(0, CapabilityType.Frame, 2);
        FrameHandle fresh = app.GetFrame(again);
        Assert.True(fresh.ReadOnlySpan.IndexOfAnyExcept((byte)0) < 0);
        Assert.Throws<CapabilityRevokedException>(() => handle.ReadOnlySpan[0]);
    }

    [Fact]
    public void Retype_AccountsExactly_AndReportsExhaustion()
    {
        CSpace app = DomainWithRam("app", 8);
        Assert.Equal(8, app.FreeRamFrames);
        int a = app.Retype(0, CapabilityType.Frame, 3);
        int b = app.Retype(0, CapabilityType.Frame, 5);
        Assert.Equal(0, app.FreeRamFrames);
        var error = Assert.Throws<OutOfRamException>(() => app.Retype(0, CapabilityType.Frame, 1));
        Assert.Contains("domain 'app'", error.Message, StringComparison.Ordinal);
        Assert.Contains("0 of 8 frames are free", error.Message, StringComparison.Ordinal);

        app.Delete(a);
        Assert.Equal(3, app.FreeRamFrames);
        Assert.Throws<OutOfRamException>(() => app.Retype(0, CapabilityType.Frame, 4));
        app.Retype(0, CapabilityType.Frame, 2);
        app.Retype(0, CapabilityType.Endpoint);
        Assert.Equal(0, app.FreeRamFrames);
        app.Delete(b);
        Assert.Equal(5, app.FreeRamFrames);
    }

    [Fact]
    public void Retype_NeverHandsOutOverlappingFrames()
    {
        CSpace app = DomainWithRam("app", 16);
        var rng = new Random(7);
        var live = new List<int>();
        for (int i = 0; i < 200; i++)
        {
            if (live.Count > 0 && rng.Next(3) == 0)
            {
                int victim = live[rng.Next(live.Count)];
                live.Remove(victim);
                app.Delete(victim);
                continue;
            }

            try
            {
                live.Add(app.Retype(0, CapabilityType.Frame, 1 + rng.Next(3)));
            }
            catch (OutOfRamException)
            {
            }

            var ranges = live.Select(s => app.GetFrame(s)).OrderBy(h => h.BaseFrame).ToList();
            for (int k = 1; k < ranges.Count; k++)
            {
                Assert.True(ranges[k - 1].BaseFrame + ranges[k - 1].FrameCount <= ranges[k].BaseFrame, "two frames overlap");
            }

            Assert.Equal(16 - live.Sum(s => app.Inspect(s).FrameCount), app.FreeRamFrames);
        }
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(32)]
    [InlineData(int.MaxValue)]
    public void SlotOutsideTheCSpace_CannotBeNamed(int slot)
    {
        CSpace app = DomainWithRam("app", 4);
        var error = Assert.Throws<InvalidSlotException>(() => app.GetFrame(slot));
        Assert.Contains("0..31", error.Message, StringComparison.Ordinal);
        Assert.Throws<InvalidSlotException>(() => app.Delete(slot));
        Assert.Throws<InvalidSlotException>(() => app.Copy(slot));
    }

    [Fact]
    public void EmptySlot_And_WrongType_GiveSpecificErrors()
    {
        CSpace app = DomainWithRam("app", 4);
        Assert.Throws<EmptySlotException>(() => app.GetFrame(5));
        Assert.Throws<EmptySlotException>(() => app.Delete(5));
        var type = Assert.Throws<CapabilityTypeException>(() => app.GetFrame(0));
        Assert.Contains("Ram", type.Message, StringComparison.Ordinal);
        int frame = app.Retype(0, CapabilityType.Frame);
        Assert.Throws<CapabilityTypeException>(() => app.Retype(frame, CapabilityType.Frame));
        Assert.Throws<CapabilityTypeException>(() => app.Retype(0, CapabilityType.Nic));
        Assert.Throws<CapabilityTypeException>(() => app.Retype(0, CapabilityType.Kernel));
        Assert.Throws<ArgumentOutOfRangeException>(() => app.Retype(0, CapabilityType.Endpoint, 2));
    }

    [Fact]
    public void OtherDomainsSlots_AreNotReachable()
    {
        CSpace a = DomainWithRam("a", 4);
        CSpace b = _core.CreateDomain("b");
        int secret = a.Retype(0, CapabilityType.Frame);
        a.GetFrame(secret).Span[0] = 99;
        // b names the same slot number in its own CSpace: nothing there.
        Assert.Throws<EmptySlotException>(() => b.GetFrame(secret));
        Assert.Throws<EmptySlotException>(() => b.Copy(secret));
    }

    [Fact]
    public void Rights_CanOnlyBeDiminished()
    {
        CSpace app = DomainWithRam("app", 4);
        int frame = app.Retype(0, CapabilityType.Frame);
        int readOnly = app.Copy(frame, CapabilityRights.Read);
        Assert.Equal(CapabilityRights.Read, app.Inspect(readOnly).Rights);
        var error = Assert.Throws<InsufficientRightsException>(() => app.Copy(readOnly, CapabilityRights.Read | CapabilityRights.Write));
        Assert.Contains("diminished", error.Message, StringComparison.Ordinal);
        Assert.Throws<InsufficientRightsException>(() => app.Copy(readOnly, CapabilityRights.All));
        FrameHandle handle = app.GetFrame(readOnly);
        Assert.Equal(0, handle.ReadOnlySpan[0]);
        Assert.Throws<InsufficientRightsException>(() => handle.Span[0] = 1);

        // Without Grant the copy can be used but not passed on.
        CSpace other = _core.CreateDomain("other");
        Assert.Throws<InsufficientRightsException>(() => app.CopyTo(readOnly, other, CapabilityRights.Read));
        Assert.Throws<InsufficientRightsException>(() => app.MoveTo(readOnly, other));
        Assert.Throws<InsufficientRightsException>(() => app.TransferAsync(readOnly, 0, (uint)other.Id, TransferMode.Copy, CapabilityRights.Read));
        Assert.True(other.IsEmpty(0));
    }

    [Fact]
    public void Ram_CannotBeCopied()
    {
        CSpace app = DomainWithRam("app", 4);
        var error = Assert.Throws<CapabilityTypeException>(() => app.Copy(0));
        Assert.Contains("billed", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Move_EmptiesTheSenderSlot_AndKillsItsHandles()
    {
        CSpace a = DomainWithRam("a", 4);
        CSpace b = _core.CreateDomain("b");
        int frame = a.Retype(0, CapabilityType.Frame);
        FrameHandle senderHandle = a.GetFrame(frame);
        senderHandle.Span[0] = 5;
        int received = a.MoveTo(frame, b);
        Assert.True(a.IsEmpty(frame));
        Assert.Throws<EmptySlotException>(() => a.GetFrame(frame));
        Assert.Throws<CapabilityRevokedException>(() => senderHandle.Span[0] = 6);
        Assert.Equal(5, b.GetFrame(received).ReadOnlySpan[0]);
    }

    [Fact]
    public void DeletingOneCopy_LeavesOtherHoldersAlone()
    {
        CSpace a = DomainWithRam("a", 4);
        CSpace b = _core.CreateDomain("b");
        int frame = a.Retype(0, CapabilityType.Frame);
        int copy = a.CopyTo(frame, b);
        FrameHandle aHandle = a.GetFrame(frame);
        FrameHandle bHandle = b.GetFrame(copy);
        b.Delete(copy);
        Assert.Throws<CapabilityRevokedException>(() => bHandle.ReadOnlySpan[0]);
        aHandle.Span[0] = 1;
        Assert.Equal(3, a.FreeRamFrames);
        a.Delete(frame);
        Assert.Equal(4, a.FreeRamFrames);
        Assert.Throws<CapabilityRevokedException>(() => aHandle.ReadOnlySpan[0]);
    }

    [Fact]
    public void Revoke_RemovesEveryCopy_KeepsTheRevokersCapability()
    {
        CSpace a = DomainWithRam("a", 4);
        CSpace b = _core.CreateDomain("b");
        CSpace c = _core.CreateDomain("c");
        int frame = a.Retype(0, CapabilityType.Frame);
        int inB = a.CopyTo(frame, b);
        int inC = b.CopyTo(inB, c, CapabilityRights.Read);
        int second = a.Copy(frame);
        FrameHandle bHandle = b.GetFrame(inB);
        FrameHandle cHandle = c.GetFrame(inC);
        FrameHandle aHandle = a.GetFrame(frame);
        int refsBefore = _core.ReferenceCount;

        ValueTask revoke = a.RevokeAsync(frame);

        Assert.True(revoke.IsCompletedSuccessfully);
        Assert.True(b.IsEmpty(inB));
        Assert.True(c.IsEmpty(inC));
        Assert.True(a.IsEmpty(second));
        Assert.False(a.IsEmpty(frame));
        Assert.Equal(refsBefore - 3, _core.ReferenceCount);
        Assert.Throws<CapabilityRevokedException>(() => bHandle.ReadOnlySpan[0]);
        Assert.Throws<CapabilityRevokedException>(() => cHandle.ReadOnlySpan[0]);
        aHandle.Span[0] = 1;
        Assert.Equal(1, a.GetFrame(frame).ReadOnlySpan[0]);
    }

    [Fact]
    public async Task RevokeRam_DeletesEverythingDerived_AndReturnsTheMemory()
    {
        CSpace a = DomainWithRam("a", 8);
        CSpace b = _core.CreateDomain("b");
        int half = a.Retype(0, CapabilityType.Ram, 4);
        var handles = new List<FrameHandle>();
        for (int i = 0; i < 4; i++)
        {
            int f = a.Retype(half, CapabilityType.Frame);
            handles.Add(a.GetFrame(f));
            a.MoveTo(f, b);
        }

        int endpoint = a.Retype(0, CapabilityType.Endpoint);
        int objects = _core.ObjectCount;
        Assert.Equal(3, a.FreeRamFrames);

        await a.RevokeAsync(0);

        Assert.Equal(0, b.UsedSlots);
        Assert.True(a.IsEmpty(half));
        Assert.True(a.IsEmpty(endpoint));
        Assert.Equal(objects - 6, _core.ObjectCount);
        Assert.Equal(8, a.FreeRamFrames);
        Assert.All(handles, h => Assert.False(h.IsValid));
    }

    [Fact]
    public void DeletingTheLastCopyOfRam_DeletesItsDescendantsEverywhere()
    {
        CSpace a = DomainWithRam("a", 8);
        CSpace b = _core.CreateDomain("b");
        int objects = _core.ObjectCount;
        int frame = a.Retype(0, CapabilityType.Frame);
        int inB = a.CopyTo(frame, b);
        FrameHandle handle = b.GetFrame(inB);
        a.Delete(0);
        Assert.True(b.IsEmpty(inB));
        Assert.False(handle.IsValid);
        Assert.Equal(objects - 1, _core.ObjectCount);
        Assert.Equal(64, _monitor.FreeRamFrames);
    }

    [Fact]
    public void DestroyDomain_ReturnsAllOfItsMemory()
    {
        long before = _monitor.FreeRamFrames;
        int objects = _core.ObjectCount;
        int refs = _core.ReferenceCount;
        CSpace app = DomainWithRam("app", 16);
        for (int i = 0; i < 8; i++)
        {
            app.Retype(0, CapabilityType.Frame);
        }

        _core.DestroyDomain(app);
        Assert.Equal(before, _monitor.FreeRamFrames);
        Assert.Equal(objects, _core.ObjectCount);
        Assert.Equal(refs, _core.ReferenceCount);
        Assert.Throws<CapabilityException>(() => app.Retype(0, CapabilityType.Frame));
    }

    [Fact]
    public void FullCSpace_IsAClearError_AndNothingLeaks()
    {
        CSpace app = DomainWithRam("app", 63);
        int objects = _core.ObjectCount;
        for (int i = 1; i < 32; i++)
        {
            app.Retype(0, CapabilityType.Frame);
        }

        long free = app.FreeRamFrames;
        var error = Assert.Throws<CapabilityLimitException>(() => app.Retype(0, CapabilityType.Frame));
        Assert.Contains("full", error.Message, StringComparison.Ordinal);
        Assert.Equal(free, app.FreeRamFrames);
        Assert.Equal(objects + 31, _core.ObjectCount);
    }

    [Fact]
    public void CSpaceOfAnotherCore_IsRefused()
    {
        using var memory = new PhysicalMemory(8 * PhysicalMemory.FrameSize);
        var other = new CoreCapabilities(1, 2, memory, new FrameRange(4, 4), new CapabilityOptions());
        CSpace foreign = other.CreateDomain("foreign");
        CSpace a = DomainWithRam("a", 2);
        int frame = a.Retype(0, CapabilityType.Frame);
        var error = Assert.Throws<CapabilityException>(() => a.CopyTo(frame, foreign));
        Assert.Contains("core 1", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void CreateRoot_RejectsMemoryOutsideTheShareOrOverlapping()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => _core.CreateRoot(_monitor, _kernel, _monitor, CapabilityType.Frame, 60, 8));
        var error = Assert.Throws<CapabilityException>(() => _core.CreateRoot(_monitor, _kernel, _monitor, CapabilityType.Frame, 10, 2));
        Assert.Contains("overlap", error.Message, StringComparison.Ordinal);
        // DevFrames come only from the Nic, PacketFilters only from RAM.
        Assert.Throws<CapabilityTypeException>(() => _core.CreateRoot(_monitor, _kernel, _monitor, CapabilityType.DevFrame, 60, 2));
        Assert.Throws<CapabilityTypeException>(() => _core.CreateRoot(_monitor, _kernel, _monitor, CapabilityType.PacketFilter, objectId: 77));
    }

    [Fact]
    public void CreateRoot_NeedsTheKernelCapability()
    {
        CSpace app = DomainWithRam("app", 2);
        var error = Assert.Throws<CapabilityTypeException>(() => _core.CreateRoot(app, 0, app, CapabilityType.Ram, 40, 4));
        Assert.Contains("Kernel capability", error.Message, StringComparison.Ordinal);
        Assert.Throws<EmptySlotException>(() => _core.CreateRoot(app, 5, app, CapabilityType.Nic));
        Assert.Throws<CapabilityException>(() => _core.CreateKernelCapability(app));
        Assert.Throws<CapabilityTypeException>(() => _core.CreateRoot(_monitor, _kernel, app, CapabilityType.Kernel));
        // The monitor can delegate its authority by copy; a domain holding a copy can then create roots.
        int delegated = _monitor.CopyTo(_kernel, app);
        int nic = _core.CreateRoot(app, delegated, app, CapabilityType.Nic);
        Assert.Equal(CapabilityType.Nic, app.Inspect(nic).Type);
    }

    [Fact]
    public void SwapFrames_ExchangesHolders_WithoutCopying()
    {
        CSpace netd = DomainWithRam("netd", 4);
        CSpace app = DomainWithRam("app", 4);
        int full = netd.Retype(0, CapabilityType.Frame);
        int empty = app.Retype(0, CapabilityType.Frame);
        FrameHandle netdHandle = netd.GetFrame(full);
        FrameHandle appHandle = app.GetFrame(empty);
        int fullBase = netdHandle.BaseFrame;
        int emptyBase = appHandle.BaseFrame;
        netdHandle.Span[..5].Fill(7);

        // Without the other side's consent (its posted frame) a swap takes nothing.
        Assert.Throws<InsufficientRightsException>(() => netd.SwapFrames(full, app, empty));
        Assert.Equal(emptyBase, app.GetFrame(empty).BaseFrame);
        app.PostFrame(empty);
        netd.SwapFrames(full, app, empty);
        // The offer was used up.
        Assert.Throws<InsufficientRightsException>(() => netd.SwapFrames(full, app, empty));

        FrameHandle received = app.GetFrame(empty);
        FrameHandle returned = netd.GetFrame(full);
        Assert.Equal(fullBase, received.BaseFrame);
        Assert.Equal(emptyBase, returned.BaseFrame);
        Assert.Equal(7, received.ReadOnlySpan[4]);
        Assert.Throws<CapabilityRevokedException>(() => netdHandle.Span[0] = 1);
        Assert.Throws<CapabilityRevokedException>(() => appHandle.Span[0] = 1);
        // Storage is conserved on both sides: each still holds one frame.
        Assert.Equal(1, app.UsedSlots - 1);
        Assert.Equal(1, netd.UsedSlots - 1);
    }

    [Fact]
    public void SwapFrames_RefusesDifferentSizesAndNonFrames()
    {
        CSpace a = DomainWithRam("a", 8);
        CSpace b = DomainWithRam("b", 8);
        int one = a.Retype(0, CapabilityType.Frame);
        int two = b.Retype(0, CapabilityType.Frame, 2);
        b.PostFrame(two);
        Assert.Throws<CapabilityException>(() => a.SwapFrames(one, b, two));
        Assert.Throws<CapabilityTypeException>(() => a.SwapFrames(one, b, 0));
        int readOnly = b.Copy(b.Retype(0, CapabilityType.Frame), CapabilityRights.Read);
        Assert.Throws<InsufficientRightsException>(() => a.SwapFrames(one, b, readOnly));
    }
}
