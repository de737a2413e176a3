using System.Runtime.InteropServices;

namespace Multikernel.CpuDriver.Kernel;

// CoreKernel, part: services the loop polls and the descriptors it parks on.
public sealed partial class CoreKernel
{
    // ---------------------------------------------------------------- services and wake sources

    /// <summary>
    /// Adds kernel-level work polled every loop iteration: before the core starts from any
    /// thread, afterwards on the core's own thread (the monitor checks the caller's authority).
    /// </summary>
    public void AddService(IKernelService service)
    {
        ArgumentNullException.ThrowIfNull(service);
        CheckOwner("Kernel services are added before the core starts or on the core's own thread.");
        if (Array.IndexOf(_services, service) < 0)
        {
            _services = [.. _services, service];
        }
    }

    /// <summary>Stops polling <paramref name="service"/> (its wake sources stay until disposed). Core thread.</summary>
    public bool RemoveService(IKernelService service)
    {
        ArgumentNullException.ThrowIfNull(service);
        CheckOwner("Kernel services are removed on the core's own thread.");
        int index = Array.IndexOf(_services, service);
        if (index < 0)
        {
            return false;
        }

        _services = [.. _services.Where((_, i) => i != index)];
        return true;
    }

    /// <summary>
    /// Wakes this core when <paramref name="fd"/> becomes readable, for <paramref name="service"/>
    /// (added as a service when it is not one yet), e.g. netd's TAP device. The descriptor stays
    /// its owner's: disposing the returned registration stops watching it, nothing closes it.
    /// Before the core starts or on its thread; at most <c>MaxWakeSources</c> per core.
    /// </summary>
    public WakeSource RegisterWakeSource(int fd, IKernelService service)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(fd);
        ArgumentNullException.ThrowIfNull(service);
        CheckOwner("Wake sources are registered before the core starts or on the core's own thread.");
        WakeSource source = _waitSet.Register(fd, null, service);
        AddService(service);
        return source;
    }

    /// <summary>As <see cref="RegisterWakeSource(int, IKernelService)"/>; the handle is kept alive (add-ref'd) until the registration is disposed.</summary>
    public WakeSource RegisterWakeSource(SafeHandle handle, IKernelService service)
    {
        ArgumentNullException.ThrowIfNull(handle);
        ArgumentNullException.ThrowIfNull(service);
        CheckOwner("Wake sources are registered before the core starts or on the core's own thread.");
        bool added = false;
        handle.DangerousAddRef(ref added);
        try
        {
            WakeSource source = _waitSet.Register((int)handle.DangerousGetHandle(), handle, service);
            AddService(service);
            added = false; // released by the registration now
            return source;
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    /// <summary>Starts the kernel thread.</summary>
    internal void Start()
    {
        if (_thread is not null)
        {
            throw new InvalidOperationException($"Core {Id} is already running.");
        }

        _thread = new Thread(Run, KernelStackBytes) { IsBackground = true, Name = $"core {Id}" };
        _thread.Start();
    }

    /// <summary>Asks the loop to exit once it has no work left. Any thread.</summary>
    public void Halt()
    {
        _haltRequested = true;
        _doorbells[Id].Ring();
    }

    /// <summary>Waits for the kernel thread to exit.</summary>
    internal bool Join(TimeSpan timeout) => _thread is null || _thread.Join(timeout);

    /// <summary>Frees the wait set's descriptors (at loop exit, or by the machine for a core that never ran).</summary>
    internal void ReleaseResources()
    {
        if (Interlocked.Exchange(ref _released, 1) == 0)
        {
            _waitSet.Dispose();
        }
    }
}
