using System.Runtime.InteropServices;

namespace Multikernel.CpuDriver.Kernel;

/// <summary>
/// How a sender wakes a parked core: one flag and one Linux eventfd per core. The core announces
/// that it is about to park, re-checks its rings, then sleeps in <c>epoll_wait</c> (its
/// <see cref="WaitSet"/> watches this eventfd); a sender that finds the flag set wins a
/// compare-and-swap and writes the eventfd once. Either side does a full fence between its write
/// and its read (Dekker), so a wake-up is never lost.
/// </summary>
/// <remarks>
/// The flag sits alone in the middle of a 256-byte block: senders on other cores read it on every
/// ring, and with adjacent-line prefetch a neighbour on the same 128-byte pair would bounce with it.
/// </remarks>
public sealed unsafe class Doorbell : IDisposable
{
    private const int Running = 0;
    private const int Parked = 1;

    [StructLayout(LayoutKind.Explicit, Size = 256)]
    private struct PaddedState
    {
        // Written by the owner on park/unpark and by the sender that wins the ring.
        [FieldOffset(128)] public int State;
    }

    private PaddedState _line;
    private long _rings;
    private int _fd;

    /// <summary>Creates the doorbell and its eventfd.</summary>
    public Doorbell()
    {
        LinuxInterop.RequireLinux();
        _fd = LinuxInterop.Check(LinuxInterop.eventfd(0, LinuxInterop.EfdCloexec | LinuxInterop.EfdNonblock), "eventfd");
    }

    /// <summary>The eventfd a sender writes; the owner's wait set watches it.</summary>
    internal int Fd => _fd;

    /// <summary>How many times a sender had to ring this doorbell (each one a kernel wake-up).</summary>
    public long Rings => Volatile.Read(ref _rings);

    /// <summary>True while the owning core is parked or about to park.</summary>
    public bool IsParked => Volatile.Read(ref _line.State) == Parked;

    /// <summary>Owner: announce the intent to park. Must be followed by a re-check of all work, then <see cref="Park"/> or <see cref="CancelPark"/>.</summary>
    public void PrepareToPark()
    {
        // Full fence: the flag is visible before the owner re-reads its rings.
        Interlocked.Exchange(ref _line.State, Parked);
    }

    /// <summary>Owner: work was found after <see cref="PrepareToPark"/> (or the park ended); stay awake.</summary>
    public void CancelPark()
    {
        if (Interlocked.CompareExchange(ref _line.State, Running, Parked) != Parked)
        {
            // A sender already flipped the flag and has written (or is about to write) the
            // eventfd; consume exactly that write so the next park is not a spurious wake.
            ConsumeRing();
        }
    }

    /// <summary>Owner: sleep until rung or until <paramref name="timeout"/> passes (a core parks in its <see cref="WaitSet"/> instead).</summary>
    public void Park(TimeSpan timeout)
    {
        var pfd = new LinuxInterop.PollFd { Fd = _fd, Events = LinuxInterop.PollIn };
        LinuxInterop.Timespec ts = LinuxInterop.FromNanoseconds((long)(Math.Max(0, timeout.TotalMilliseconds) * 1_000_000));
        _ = LinuxInterop.ppoll(&pfd, 1, timeout == Timeout.InfiniteTimeSpan ? null : &ts, null);
        CancelPark();
    }

    /// <summary>
    /// Sender: wake the owner if it is parked. The caller has already made its message visible
    /// (a release store); the full fence here orders that store before the flag read.
    /// </summary>
    public void Ring()
    {
        Interlocked.MemoryBarrier();
        if (Volatile.Read(ref _line.State) == Parked && Interlocked.CompareExchange(ref _line.State, Running, Parked) == Parked)
        {
            Interlocked.Increment(ref _rings);
            ulong one = 1;
            _ = LinuxInterop.write(_fd, &one, sizeof(ulong));
        }
    }

    /// <summary>
    /// Sender, without the fence: ring at once when the owner is already seen parked (a plain read
    /// of a line the owner rarely writes). A miss is caught by the fenced <see cref="Ring"/> the
    /// sender's kernel does at the end of its iteration.
    /// </summary>
    internal void RingIfParked()
    {
        if (Volatile.Read(ref _line.State) == Parked)
        {
            Ring();
        }
    }

    private void ConsumeRing()
    {
        ulong value;
        var spin = new SpinWait();
        // The winner of the CAS writes right after it; a nonblocking read sees it within a few spins.
        while (LinuxInterop.read(_fd, &value, sizeof(ulong)) != sizeof(ulong))
        {
            spin.SpinOnce(sleep1Threshold: -1);
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        int fd = Interlocked.Exchange(ref _fd, -1);
        if (fd >= 0)
        {
            _ = LinuxInterop.close(fd);
        }
    }
}
