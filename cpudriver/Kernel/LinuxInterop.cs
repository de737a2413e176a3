using System.Runtime.InteropServices;

namespace Multikernel.CpuDriver.Kernel;

/// <summary>
/// The few Linux system calls a parked core needs: epoll over an eventfd doorbell, a timerfd for
/// the next timer and the descriptors kernel services register. Hand-written P/Invoke into libc
/// (no package): each call is one syscall, made only when a core parks or is woken.
/// </summary>
internal static unsafe partial class LinuxInterop
{
    public const int EpollCloexec = 0x80000;
    public const int EpollCtlAdd = 1;
    public const int EpollCtlDel = 2;
    public const uint EpollIn = 0x001;
    public const uint EpollErr = 0x008;
    public const uint EpollHup = 0x010;
    public const int EfdCloexec = 0x80000;
    public const int EfdNonblock = 0x800;
    public const int ClockMonotonic = 1;
    public const int TfdCloexec = 0x80000;
    public const int TfdNonblock = 0x800;
    public const short PollIn = 0x001;
    public const int Eintr = 4;
    public const int Eagain = 11;

    /// <summary>
    /// Bytes of one <c>struct epoll_event</c>: packed (12) on x86-64, where the kernel ABI packs
    /// it; naturally aligned (16) elsewhere. The data word follows the events word.
    /// </summary>
    public static readonly int EpollEventSize = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 12 : 16;

    /// <summary>Offset of the 64-bit data word in <c>struct epoll_event</c>.</summary>
    public static readonly int EpollDataOffset = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 4 : 8;

    [StructLayout(LayoutKind.Sequential)]
    public struct Timespec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Itimerspec
    {
        public Timespec Interval;
        public Timespec Value;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    [LibraryImport("libc", SetLastError = true)]
    public static partial int epoll_create1(int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int epoll_ctl(int epfd, int op, int fd, byte* ev);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int epoll_wait(int epfd, byte* events, int maxevents, int timeout);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int eventfd(uint initval, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int timerfd_create(int clockid, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int timerfd_settime(int fd, int flags, Itimerspec* newValue, Itimerspec* oldValue);

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint read(int fd, void* buf, nint count);

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint write(int fd, void* buf, nint count);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int close(int fd);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int ppoll(PollFd* fds, nuint nfds, Timespec* timeout, void* sigmask);

    /// <summary>A nonblocking eventfd (for benchmarks and tests standing in for a device).</summary>
    public static int CreateEventFd() => Check(eventfd(0, EfdCloexec | EfdNonblock), "eventfd");

    /// <summary>Adds one to an eventfd's counter.</summary>
    public static bool SignalEventFd(int fd)
    {
        ulong one = 1;
        return write(fd, &one, sizeof(ulong)) == sizeof(ulong);
    }

    /// <summary>Reads and clears an eventfd's counter; false when it was zero.</summary>
    public static bool TryDrainEventFd(int fd, out ulong value)
    {
        ulong v;
        bool ok = read(fd, &v, sizeof(ulong)) == sizeof(ulong);
        value = ok ? v : 0;
        return ok;
    }

    /// <summary>Throws with errno's text when a call that must succeed failed.</summary>
    public static int Check(int result, string what)
    {
        if (result < 0)
        {
            ThrowErrno(what);
        }

        return result;
    }

    public static void ThrowErrno(string what) =>
        throw new InvalidOperationException($"{what} failed: {Marshal.GetLastPInvokeErrorMessage()} (errno {Marshal.GetLastPInvokeError()}).");

    /// <summary>A relative timespec for <paramref name="nanoseconds"/> (at least 1 ns: zero would disarm a timerfd).</summary>
    public static Timespec FromNanoseconds(long nanoseconds)
    {
        nanoseconds = Math.Max(1, nanoseconds);
        return new Timespec { Seconds = nanoseconds / 1_000_000_000, Nanoseconds = nanoseconds % 1_000_000_000 };
    }

    /// <summary>Throws <see cref="PlatformNotSupportedException"/> off Linux: parking needs epoll, eventfd and timerfd.</summary>
    public static void RequireLinux()
    {
        if (!OperatingSystem.IsLinux())
        {
            throw new PlatformNotSupportedException("Multikernel cores park in Linux epoll over an eventfd and a timerfd; this OS has neither.");
        }
    }
}
