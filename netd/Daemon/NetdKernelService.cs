using Multikernel.CpuDriver.Domains;
using Multikernel.CpuDriver.Kernel;
using Multikernel.Netd.Drivers;
using Multikernel.Netd.Drivers.Tap;

namespace Multikernel.Netd.Daemon;

/// <summary>
/// netd's data path as a kernel service of its core: the loop runs a step between domain run
/// steps, and before the core parks it arms the device's wake signal, so an idle netd core sleeps
/// in <c>epoll_wait</c> on the device's descriptor (a TAP fd, a switch port's eventfd) and wakes at
/// once for a frame — no polling when idle, no reader thread.
/// </summary>
internal sealed class NetdKernelService(NetdEngine engine, INetworkDevice device) : IKernelService
{
    /// <summary>This service's place in the core's loop, with the device's descriptor in its epoll set.</summary>
    public DeviceRegistration? Registration { get; set; }

    private bool _watching = true;

    public int Poll()
    {
        int work = engine.Poll();
        if (_watching && Registration is not null && device is TapDevice { IsDetached: true })
        {
            // The interface was deleted from outside: its descriptor reports an error to epoll
            // forever (level-triggered), which would keep this core from ever sleeping. Nothing
            // will arrive on it again, so stop watching it; netd stays up without a NIC.
            Registration.StopWatching();
            _watching = false;
        }

        return work;
    }

    // Checked before the core parks: pending completions or transmits, or frames that arrived
    // between the last burst and arming the device's signal, keep it awake.
    public bool HasWork => engine.HasWork || !device.PrepareToWait();
}
