using System.Runtime.InteropServices;
using Multikernel.CpuDriver.Kernel;

namespace Multikernel.Tests.Kernel;

public sealed partial class WakeSourceTests
{
    [LibraryImport("libc", SetLastError = true)]
    private static partial int eventfd(uint initval, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial nint read(int fd, void* buf, nint count);

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial nint write(int fd, void* buf, nint count);

    [LibraryImport("libc")]
    private static partial int close(int fd);

    private static unsafe nint Signal(int fd)
    {
        ulong one = 1;
        return write(fd, &one, 8);
    }

    /// <summary>A kernel service draining an eventfd (a stand-in device: the kernel sees only a readable descriptor).</summary>
    private sealed unsafe class FdService(int fd) : IKernelService
    {
        public long Events;

        public bool HasWork => false;

        public int Poll()
        {
            ulong value;
            if (read(fd, &value, 8) == 8)
            {
                Volatile.Write(ref Events, Events + (long)value);
                return 1;
            }

            return 0;
        }
    }

    [Fact]
    public async Task AParkedCore_WakesForARegisteredDescriptor_AddedWhileItRuns()
    {
        int fd = eventfd(0, 0x800 /* EFD_NONBLOCK */);
        Assert.True(fd >= 0);
        try
        {
            using var rig = new KernelRig(1, o => o.MaxPark = TimeSpan.FromSeconds(30));
            var service = new FdService(fd);
            // Added on the running core's own thread (the monitor layers the authority check).
            WakeSource source = await rig.On(0, () => rig[0].RegisterWakeSource(fd, service));
            Assert.Equal(1, rig[0].WakeSourceCount);
            // Parked now (its MaxPark is 30 s: only the descriptor can wake it in time).
            var parkDeadline = System.Diagnostics.Stopwatch.StartNew();
            while (!rig[0].IsParked)
            {
                Assert.True(parkDeadline.Elapsed < KernelRig.Patience, "the idle core never parked");
                await Task.Delay(1);
            }

            long parks = rig[0].Counters.ParkCount;
            Assert.True(parks > 0, "the idle core parked");
            var watch = System.Diagnostics.Stopwatch.StartNew();
            Assert.Equal(8, Signal(fd));

            while (Volatile.Read(ref service.Events) == 0)
            {
                Assert.True(watch.Elapsed < TimeSpan.FromSeconds(10), "the parked core did not wake for its descriptor");
                await Task.Delay(1);
            }

            Assert.Equal(1, Volatile.Read(ref service.Events));
            await rig.On(0, () => { source.Dispose(); return 0; });
            Assert.Equal(0, rig[0].WakeSourceCount);
        }
        finally
        {
            _ = close(fd);
        }
    }

    [Fact]
    public async Task AddService_FromAnotherThreadWhileRunning_IsRefused()
    {
        using var rig = new KernelRig(1);
        await rig.On(0, () => 0);
        var ex = Assert.Throws<InvalidOperationException>(() => rig[0].AddService(new FdService(-1)));
        Assert.Contains("core's own thread", ex.Message, StringComparison.Ordinal);
    }
}
