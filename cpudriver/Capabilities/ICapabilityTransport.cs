using Multikernel.CpuDriver.Urpc;

namespace Multikernel.CpuDriver.Capabilities;

/// <summary>
/// How a core's capability protocol reaches other cores: normally the monitor-to-monitor URPC
/// ring. Must preserve FIFO order per ordered pair of cores (the protocol relies on it).
/// </summary>
public interface ICapabilityTransport
{
    /// <summary>Queues <paramref name="message"/> for <paramref name="core"/>; false when the ring is full (retry later).</summary>
    bool TrySend(int core, in Message message);
}
