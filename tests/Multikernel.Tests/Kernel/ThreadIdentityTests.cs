using Multikernel.CpuDriver.Kernel;

namespace Multikernel.Tests.Kernel;

/// <summary>
/// <see cref="CoreKernel.IsCurrentThread"/> recognises the core's thread by the address of a
/// local on its stack (the cheap path every timer re-arm takes). It must never say yes to another
/// thread — another core's kernel thread (whose stack may sit right next to this one's), a pool
/// thread, a thread of the host — and must still say yes deep in the core's own stack, past the
/// window the address check covers.
/// </summary>
public sealed class ThreadIdentityTests
{
    [Fact]
    public async Task OnlyTheCoresOwnThread_IsTheCurrentThread_ByAddressOrById()
    {
        using var rig = new KernelRig(3);
        Assert.True(await rig.On(0, () => rig[0].IsCurrentThread));
        Assert.False(await rig.On(1, () => rig[0].IsCurrentThread));
        Assert.False(await rig.On(2, () => rig[0].IsCurrentThread));
        Assert.False(await rig.On(0, () => rig[1].IsCurrentThread));
        Assert.False(await Task.Run(() => rig[0].IsCurrentThread));
        Assert.False(rig[0].IsCurrentThread);

        bool onOther = true;
        var thread = new Thread(() => onOther = rig[0].IsCurrentThread, 16 * 1024 * 1024);
        thread.Start();
        Assert.True(thread.Join(KernelRig.Patience));
        Assert.False(onOther);
    }

    [Fact]
    public async Task DeepInTheCoresStack_PastTheAddressWindow_ItIsStillTheCurrentThread()
    {
        using var rig = new KernelRig(1);
        (bool deep, long depthBytes) = await rig.On(0, () =>
        {
            long top = StackAddress();
            return Recurse(rig[0], 96, top);
        });
        Assert.True(depthBytes > 1024 * 1024, $"the probe reached only {depthBytes} bytes deep; it must pass the 1 MiB window");
        Assert.True(deep);
    }

    private static unsafe long StackAddress()
    {
        byte probe = 0;
        return (long)(&probe);
    }

    // 16 KB per frame: 96 frames go about 1.5 MiB below the top, past the 1 MiB address window
    // and inside the kernel thread's 2 MiB stack.
    private static unsafe (bool, long) Recurse(CoreKernel kernel, int frames, long top)
    {
        Span<byte> pad = stackalloc byte[16 * 1024];
        pad[0] = (byte)frames;
        if (frames > 0)
        {
            (bool inner, long depth) = Recurse(kernel, frames - 1, top);
            return (inner, depth + pad[0] - pad[0]);
        }

        return (kernel.IsCurrentThread, top - StackAddress());
    }
}
