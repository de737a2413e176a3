namespace Multikernel.CpuDriver.Kernel;

/// <summary>
/// Kernel-level work a core's loop runs between domain run steps, every iteration (the
/// capability protocol, later netd's driver rings). Runs on the core's thread only.
/// </summary>
public interface IKernelService
{
    /// <summary>Does what is ready; returns how much (0 = nothing, so the core may park).</summary>
    int Poll();

    /// <summary>True when the service has work the core must not sleep through (checked before parking).</summary>
    bool HasWork { get; }
}
