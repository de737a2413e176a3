using Microsoft.Extensions.Logging;

namespace Multikernel.Monitor.Hosting;

/// <summary>Source-generated log messages of the runtime, with stable event ids.</summary>
internal static partial class MultikernelLog
{
    [LoggerMessage(1, LogLevel.Information, "Booting {Cores} cores on {Cpus} CPUs ({RingBytes} bytes of URPC rings)")]
    public static partial void Booting(ILogger logger, int cores, int cpus, long ringBytes);

    [LoggerMessage(2, LogLevel.Warning, "{Cores} kernels share {Cpus} CPUs round-robin: the machine is oversubscribed, so figures from it are not scalability figures")]
    public static partial void Oversubscribed(ILogger logger, int cores, int cpus);

    [LoggerMessage(3, LogLevel.Warning, "Core {Core} could not be pinned to CPU {Cpu}: {Error}")]
    public static partial void PinningFailed(ILogger logger, int core, int cpu, string error);

    [LoggerMessage(4, LogLevel.Information, "All {Cores} cores booted in {Milliseconds:F1} ms")]
    public static partial void Booted(ILogger logger, int cores, double milliseconds);

    [LoggerMessage(5, LogLevel.Information, "Shutting down: stopping domains on every core")]
    public static partial void ShuttingDown(ILogger logger);

    [LoggerMessage(6, LogLevel.Information, "All cores halted in {Milliseconds:F1} ms; {Abandoned} domains abandoned")]
    public static partial void Halted(ILogger logger, double milliseconds, int abandoned);

    [LoggerMessage(7, LogLevel.Warning, "{Count} domains on core {Core} did not stop within the shutdown timeout and were abandoned")]
    public static partial void Abandoned(ILogger logger, int core, int count);

    [LoggerMessage(8, LogLevel.Error, "Domain {Domain} failed")]
    public static partial void DomainFaulted(ILogger logger, string domain, Exception exception);

    [LoggerMessage(9, LogLevel.Error, "Monitor {Core} could not handle a message from core {Peer}")]
    public static partial void MonitorError(ILogger logger, int core, int peer, Exception exception);

    [LoggerMessage(10, LogLevel.Error, "Unhandled exception on core {Core}")]
    public static partial void CoreUnhandled(ILogger logger, int core, Exception exception);

    [LoggerMessage(11, LogLevel.Error, "Cores did not halt within {Seconds} s; kernel threads were left running and their rings were not freed")]
    public static partial void HaltTimeout(ILogger logger, double seconds);

    [LoggerMessage(12, LogLevel.Warning, "The NIC program on core {Core} ended without its Nic capability ({Reason}); the machine has no Nic to give a restarted NIC program")]
    public static partial void NicLost(ILogger logger, int core, string reason);
}
