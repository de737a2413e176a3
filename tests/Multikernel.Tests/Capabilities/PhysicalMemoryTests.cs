using Multikernel.CpuDriver.Capabilities;
using Multikernel.CpuDriver.Memory;

namespace Multikernel.Tests.Capabilities;

public sealed class PhysicalMemoryTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(-4096)]
    [InlineData(4095)]
    [InlineData(4096 + 1)]
    public void Constructor_RejectsSizesThatAreNotWholeFrames(long bytes)
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => new PhysicalMemory(bytes));
        Assert.Contains("multiple", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public unsafe void Arena_IsFrameAlignedAndZeroed()
    {
        using var memory = new PhysicalMemory(16 * PhysicalMemory.FrameSize);
        Assert.Equal(16, memory.FrameCount);
        Assert.Equal(0, (long)memory.Pointer(0) % PhysicalMemory.FrameSize);
        Assert.True(memory.Frames(0, 16).IndexOfAnyExcept((byte)0) < 0);
    }

    [Theory]
    [InlineData(10, 3)]
    [InlineData(16, 4)]
    [InlineData(7, 7)]
    [InlineData(65, 8)]
    public void Split_CoversEveryFrameExactlyOnce(int frames, int parts)
    {
        using var memory = new PhysicalMemory((long)frames * PhysicalMemory.FrameSize);
        FrameRange[] ranges = memory.Split(parts);
        Assert.Equal(parts, ranges.Length);
        int next = 0;
        foreach (FrameRange range in ranges)
        {
            Assert.Equal(next, range.BaseFrame);
            Assert.InRange(range.FrameCount, frames / parts, (frames / parts) + 1);
            next = range.EndFrame;
        }

        Assert.Equal(frames, next);
    }

    [Fact]
    public void Split_MorePartsThanFrames_Throws()
    {
        using var memory = new PhysicalMemory(2 * PhysicalMemory.FrameSize);
        Assert.Throws<ArgumentOutOfRangeException>(() => memory.Split(3));
    }

    [Fact]
    public void Handle_ReadsAndWrites_UntilTheFramesAreInvalidated()
    {
        using var memory = new PhysicalMemory(8 * PhysicalMemory.FrameSize);
        var handle = new FrameHandle(memory, 2, 2, memory.Generation(2), CapabilityRights.All, CapabilityType.Frame, 0, 5);
        Assert.Equal(2 * PhysicalMemory.FrameSize, handle.Length);
        handle.Span[0] = 42;
        handle.Span[^1] = 43;
        Assert.Equal(42, handle.ReadOnlySpan[0]);
        Assert.Equal(43, memory.Frames(3, 1)[^1]);
        Assert.True(handle.IsValid);

        memory.Invalidate(2, 2);

        Assert.False(handle.IsValid);
        var error = Assert.Throws<CapabilityRevokedException>(() => handle.Span[0] = 1);
        Assert.Contains("object 5", error.Message, StringComparison.Ordinal);
        Assert.Contains("frames 2..3", error.Message, StringComparison.Ordinal);
        Assert.Throws<CapabilityRevokedException>(() => handle.ReadOnlySpan[0]);
        Assert.Throws<CapabilityRevokedException>(() => handle.Memory);
    }

    [Fact]
    public void MemoryView_ChecksTheGenerationOnEveryAccess()
    {
        using var memory = new PhysicalMemory(4 * PhysicalMemory.FrameSize);
        var handle = new FrameHandle(memory, 1, 1, memory.Generation(1), CapabilityRights.All, CapabilityType.Frame, 0, 1);
        Memory<byte> view = handle.Memory;
        ReadOnlyMemory<byte> readView = handle.ReadOnlyMemory;
        view.Span[7] = 9;
        Assert.Equal(9, readView.Span[7]);
        Assert.Equal(9, view.Slice(7, 1).Span[0]);

        memory.Invalidate(1, 1);

        Assert.Throws<CapabilityRevokedException>(() => view.Span[7]);
        Assert.Throws<CapabilityRevokedException>(() => readView.Span[7]);
        Assert.Throws<CapabilityRevokedException>(() => view.Pin());
    }

    [Fact]
    public void Handle_WithoutWriteRight_CannotWrite()
    {
        using var memory = new PhysicalMemory(2 * PhysicalMemory.FrameSize);
        var handle = new FrameHandle(memory, 0, 1, memory.Generation(0), CapabilityRights.Read, CapabilityType.Frame, 0, 0);
        Assert.Equal(0, handle.ReadOnlySpan[0]);
        var error = Assert.Throws<InsufficientRightsException>(() => handle.Span[0] = 1);
        Assert.Contains("Write", error.Message, StringComparison.Ordinal);
        Assert.Throws<InsufficientRightsException>(() => handle.Memory);
    }

    [Fact]
    public void Handle_InvalidatedFrameReused_OldHandleStillFails()
    {
        using var memory = new PhysicalMemory(2 * PhysicalMemory.FrameSize);
        var old = new FrameHandle(memory, 0, 1, memory.Generation(0), CapabilityRights.All, CapabilityType.Frame, 0, 0);
        memory.Invalidate(0, 1);
        var fresh = new FrameHandle(memory, 0, 1, memory.Generation(0), CapabilityRights.All, CapabilityType.Frame, 0, 0);
        fresh.Span[0] = 77;
        Assert.Throws<CapabilityRevokedException>(() => old.ReadOnlySpan[0]);
        Assert.Equal(77, fresh.ReadOnlySpan[0]);
    }

    [Fact]
    public void DefaultHandle_GivesAClearError()
    {
        FrameHandle handle = default;
        Assert.False(handle.IsValid);
        var error = Assert.Throws<InvalidOperationException>(() => handle.Span.Length);
        Assert.Contains("default", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Dispose_InvalidatesEveryHandle()
    {
        var memory = new PhysicalMemory(2 * PhysicalMemory.FrameSize);
        var handle = new FrameHandle(memory, 0, 1, memory.Generation(0), CapabilityRights.All, CapabilityType.Frame, 0, 0);
        memory.Dispose();
        memory.Dispose();
        Assert.Throws<CapabilityRevokedException>(() => handle.Span.Length);
    }
}
