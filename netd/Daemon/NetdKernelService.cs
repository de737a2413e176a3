using Multikernel.CpuDriver.Kernel;
using Multikernel.Netd.Drivers;

namespace Multikernel.Netd.Daemon;

/// <summary>
/// netd's data path as a kernel service of its core: the loop runs a step between domain run
/// steps, and before the core parks it arms the device's wake signal, so an idle netd core sleeps
/// in <c>epoll_wait</c> on the device's descriptor (a TAP fd, a switch port's eventfd) and wakes at
/// once for a frame — no polling when idle, no reader thread.
/// </summary>
internal sealed class NetdKernelService(NetdEngine engine, INetworkDevice device) : IKernelService
{
    public int Poll() => engine.Poll();

    // Checked before the core parks: pending completions or transmits, or frames that arrived
    // between the last burst and arming the device's signal, keep it awake.
    public bool HasWork => engine.HasWork || !device.PrepareToWait();
}
