using System.Runtime.InteropServices;

namespace Multikernel.CpuDriver.Kernel;

/// <summary>Pins the calling OS thread to one CPU with Linux <c>sched_setaffinity</c>.</summary>
internal static partial class CpuAffinity
{
    // cpu_set_t is 1024 bits on glibc.
    private const int CpuSetBytes = 128;

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int sched_setaffinity(int pid, nuint cpusetsize, byte* mask);

    /// <summary>Pins the current thread to <paramref name="cpu"/>; returns false with the errno text when that fails or the OS is not Linux.</summary>
    public static unsafe bool TryPinCurrentThread(int cpu, out string? error)
    {
        if (!OperatingSystem.IsLinux())
        {
            error = "CPU pinning needs Linux sched_setaffinity";
            return false;
        }

        if (cpu < 0 || cpu >= CpuSetBytes * 8)
        {
            error = $"CPU {cpu} is outside cpu_set_t";
            return false;
        }

        byte* mask = stackalloc byte[CpuSetBytes];
        new Span<byte>(mask, CpuSetBytes).Clear();
        mask[cpu / 8] = (byte)(1 << (cpu % 8));
        // pid 0 = the calling thread.
        if (sched_setaffinity(0, CpuSetBytes, mask) != 0)
        {
            error = Marshal.GetLastPInvokeErrorMessage();
            return false;
        }

        error = null;
        return true;
    }
}
