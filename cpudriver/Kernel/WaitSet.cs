using System.Runtime.InteropServices;

namespace Multikernel.CpuDriver.Kernel;

/// <summary>
/// Where a parked core sleeps: one <c>epoll</c> set over the core's eventfd doorbell, a timerfd
/// armed for the next timer (nanosecond resolution, so a 500 µs delay parks instead of spinning)
/// and the descriptors kernel services registered (netd's TAP device). Level-triggered: a
/// registered descriptor that stays readable keeps the core awake until its service drains it.
/// Owned by the core's thread.
/// </summary>
internal sealed unsafe class WaitSet : IDisposable
{
    private const ulong DoorbellToken = 0;
    private const ulong TimerToken = 1;
    private const int FirstSourceToken = 2;

    private readonly Doorbell _doorbell;
    private readonly int _epoll;
    private readonly int _timer;
    private readonly WakeSource?[] _sources;
    private readonly byte* _events;
    private readonly int _maxEvents;
    private int _sourceCount;
    private bool _timerArmed;
    private int _disposed;

    public WaitSet(Doorbell doorbell, int maxSources)
    {
        LinuxInterop.RequireLinux();
        _doorbell = doorbell;
        _sources = new WakeSource?[maxSources];
        _maxEvents = maxSources + 2;
        _events = (byte*)NativeMemory.AllocZeroed((nuint)(_maxEvents * LinuxInterop.EpollEventSize));
        _epoll = LinuxInterop.Check(LinuxInterop.epoll_create1(LinuxInterop.EpollCloexec), "epoll_create1");
        _timer = LinuxInterop.Check(LinuxInterop.timerfd_create(LinuxInterop.ClockMonotonic, LinuxInterop.TfdCloexec | LinuxInterop.TfdNonblock), "timerfd_create");
        Add(doorbell.Fd, DoorbellToken);
        Add(_timer, TimerToken);
    }

    /// <summary>Descriptors registered by services.</summary>
    public int SourceCount => _sourceCount;

    /// <summary>Times a park ended because a registered descriptor became readable.</summary>
    public long SourceWakes { get; private set; }

    /// <summary>Times a park ended on the timerfd.</summary>
    public long TimerWakes { get; private set; }

    /// <summary>Registers <paramref name="fd"/> (readable = <paramref name="service"/> has work).</summary>
    public WakeSource Register(int fd, SafeHandle? handle, IKernelService service)
    {
        int index = Array.IndexOf(_sources, null);
        if (index < 0)
        {
            throw new InvalidOperationException($"This core already watches {_sources.Length} descriptors (MaxWakeSources = {_sources.Length}).");
        }

        var source = new WakeSource(this, index, fd, handle, service);
        Add(fd, (ulong)(index + FirstSourceToken));
        _sources[index] = source;
        _sourceCount++;
        return source;
    }

    internal void Unregister(WakeSource source)
    {
        if (!ReferenceEquals(_sources[source.Index], source))
        {
            return;
        }

        _sources[source.Index] = null;
        _sourceCount--;
        _ = LinuxInterop.epoll_ctl(_epoll, LinuxInterop.EpollCtlDel, source.Fd, null);
    }

    /// <summary>
    /// Sleeps until the doorbell rings, a registered descriptor is readable or
    /// <paramref name="timeoutNanoseconds"/> pass (negative: no timeout). The caller has done
    /// <see cref="Doorbell.PrepareToPark"/> and re-checked its work; the doorbell is settled here.
    /// </summary>
    public void Wait(long timeoutNanoseconds)
    {
        ArmTimer(timeoutNanoseconds);
        int n = LinuxInterop.epoll_wait(_epoll, _events, _maxEvents, -1);
        for (int i = 0; i < n; i++)
        {
            ulong token = *(ulong*)(_events + (i * LinuxInterop.EpollEventSize) + LinuxInterop.EpollDataOffset);
            if (token == TimerToken)
            {
                ulong expirations;
                _ = LinuxInterop.read(_timer, &expirations, sizeof(ulong));
                _timerArmed = false;
                TimerWakes++;
            }
            else if (token >= FirstSourceToken)
            {
                SourceWakes++;
            }
        }

        // Ends the park either way: consumes the ringer's eventfd write, or clears the flag.
        _doorbell.CancelPark();
    }

    private void ArmTimer(long nanoseconds)
    {
        if (nanoseconds < 0 && !_timerArmed)
        {
            return;
        }

        var spec = new LinuxInterop.Itimerspec();
        if (nanoseconds >= 0)
        {
            spec.Value = LinuxInterop.FromNanoseconds(nanoseconds);
        }

        LinuxInterop.Check(LinuxInterop.timerfd_settime(_timer, 0, &spec, null), "timerfd_settime");
        _timerArmed = nanoseconds >= 0;
    }

    private void Add(int fd, ulong token)
    {
        byte* ev = stackalloc byte[16];
        new Span<byte>(ev, 16).Clear();
        *(uint*)ev = LinuxInterop.EpollIn;
        *(ulong*)(ev + LinuxInterop.EpollDataOffset) = token;
        LinuxInterop.Check(LinuxInterop.epoll_ctl(_epoll, LinuxInterop.EpollCtlAdd, fd, ev), $"epoll_ctl(ADD, fd {fd})");
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        foreach (WakeSource? source in _sources)
        {
            source?.Dispose();
        }

        _ = LinuxInterop.close(_timer);
        _ = LinuxInterop.close(_epoll);
        NativeMemory.Free(_events);
    }
}

/// <summary>
/// A descriptor a kernel service registered with its core (<see cref="CoreKernel.RegisterWakeSource(int, IKernelService)"/>):
/// a parked core wakes when it becomes readable. Dispose on the core's thread to stop watching it.
/// </summary>
public sealed class WakeSource : IDisposable
{
    private readonly WaitSet _set;
    private readonly SafeHandle? _handle;
    private bool _disposed;

    internal WakeSource(WaitSet set, int index, int fd, SafeHandle? handle, IKernelService service)
    {
        _set = set;
        Index = index;
        Fd = fd;
        _handle = handle;
        Service = service;
    }

    internal int Index { get; }

    /// <summary>The watched descriptor.</summary>
    public int Fd { get; }

    /// <summary>The service whose work the descriptor signals.</summary>
    public IKernelService Service { get; }

    /// <summary>Stops watching the descriptor (it is not closed: its owner closes it).</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _set.Unregister(this);
        _handle?.DangerousRelease();
    }
}
