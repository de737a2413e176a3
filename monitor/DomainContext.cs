using Multikernel.CpuDriver.Capabilities;
using Multikernel.CpuDriver.Domains;
using Multikernel.CpuDriver.Kernel;
using Multikernel.Monitor.Protocol;

namespace Multikernel.Monitor;

/// <summary>
/// What a domain's code sees: its core, its stop signal, its own capability space, its own
/// channels and the monitor's services (export, bind, spawn). Nothing reachable from here leads
/// to the kernel, the machine or another domain: the dispatcher behind the context is internal,
/// and <c>Architecture/DomainSurfaceTests</c> walks every public member reachable from this type
/// to keep it so.
/// </summary>
public sealed class DomainContext
{
    private readonly CoreMonitor _monitor;

    internal DomainContext(Domain domain, CoreMonitor monitor, ulong argument, int nicSlot = -1)
    {
        Domain = domain;
        _monitor = monitor;
        Argument = argument;
        NicSlot = nicSlot;
    }

    /// <summary>
    /// The slot of the machine's one Nic capability when this domain is the NIC program spawned on
    /// the Nic core (netd), else -1. Only its holder can retype DevFrames from the device region.
    /// </summary>
    public int NicSlot { get; }

    /// <summary>The kernel-side dispatcher of this domain (kernel side only).</summary>
    internal Domain Domain { get; }

    /// <summary>This domain's machine-wide id (as <c>SpawnAsync</c> returned it; the host stops a domain by it).</summary>
    public ulong DomainId => Domain.Id;

    /// <summary>The core this domain runs on.</summary>
    public int Core => Domain.Core;

    /// <summary>Number of cores in the machine.</summary>
    public int CoreCount => Domain.Kernel.CoreCount;

    /// <summary>The domain's name (its program's name).</summary>
    public string Name => Domain.Name;

    /// <summary>The argument given at spawn.</summary>
    public ulong Argument { get; }

    /// <summary>Signalled when the machine shuts down or the domain is stopped.</summary>
    public CancellationToken Stopping => Domain.Stopping;

    /// <summary>The domain's capability space: it names capabilities only by slot.</summary>
    public CSpace Capabilities => Domain.Capabilities ?? throw new InvalidOperationException($"{Domain} has no capability space.");

    /// <summary>The slot of the RAM the domain was given at spawn (its budget for buffers; -1 with DomainMemory 0).</summary>
    public int RamSlot => Domain.RamSlot;

    /// <summary>
    /// This core's time: a timer wheel whose timers fire on this core's thread (a stack re-arms
    /// its retransmission timer on every ACK without allocating), clocked by the machine's time source.
    /// </summary>
    public TimeProvider Time => Domain.Kernel.Timers;

    /// <summary>
    /// Runs <paramref name="service"/> in this core's kernel loop, between domain run steps,
    /// woken when <paramref name="fileDescriptor"/> becomes readable (a TAP device's descriptor; -1:
    /// polled every loop iteration). Code in the kernel loop can stall the whole core, so this
    /// needs device authority: <paramref name="deviceSlot"/> must hold the machine's Nic capability
    /// (<see cref="NicSlot"/>). The service runs until the returned registration is disposed or
    /// this domain ends (also when it crashes). Core thread.
    /// </summary>
    public DeviceRegistration AddDeviceService(int deviceSlot, IKernelService service, int fileDescriptor = -1)
    {
        ArgumentNullException.ThrowIfNull(service);
        CapabilityInfo info = Capabilities.Inspect(deviceSlot);
        if (info.Type != CapabilityType.Nic)
        {
            throw new CapabilityTypeException($"Adding a device service to core {Core}'s loop needs the Nic capability; slot {deviceSlot} of {Domain} holds a {info.Type}.");
        }

        return Domain.AddDeviceService(service, fileDescriptor);
    }

    /// <summary>Exports a service name; other domains bind to it.</summary>
    public Task<ServiceListener> ExportAsync(string name, int backlog = 16, CancellationToken cancellationToken = default) =>
        _monitor.ExportAsync(Domain, name, backlog, cancellationToken);

    /// <summary>Binds to a service and returns this end of a fresh channel.</summary>
    public Task<DomainChannel> BindAsync(string name, CancellationToken cancellationToken = default) => _monitor.BindAsync(Domain, name, cancellationToken);

    /// <summary>
    /// Binds to a service that may not be exported yet (services start concurrently): retries
    /// every millisecond until it appears, <paramref name="waitForExport"/> passes (then throws
    /// the NotFound <see cref="MonitorException"/>), the domain is stopped or
    /// <paramref name="cancellationToken"/> is cancelled.
    /// </summary>
    public async Task<DomainChannel> BindAsync(string name, TimeSpan waitForExport, CancellationToken cancellationToken = default)
    {
        long deadline = Time.GetTimestamp() + (long)(waitForExport.TotalSeconds * Time.TimestampFrequency);
        while (true)
        {
            try
            {
                return await _monitor.BindAsync(Domain, name, cancellationToken);
            }
            catch (MonitorException ex) when (ex.Status == MonitorStatus.NotFound && Time.GetTimestamp() < deadline && !Stopping.IsCancellationRequested)
            {
                await Delay(TimeSpan.FromMilliseconds(1), cancellationToken.CanBeCanceled ? cancellationToken : Stopping);
            }
        }
    }

    /// <summary>Binds to a service (waiting up to <paramref name="waitForExport"/> for its export) and returns a typed channel of <typeparamref name="T"/>.</summary>
    public async Task<DomainChannel<T>> BindAsync<T>(string name, TimeSpan waitForExport, CancellationToken cancellationToken = default) where T : unmanaged =>
        (await BindAsync(name, waitForExport, cancellationToken)).As<T>();

    /// <summary>Starts program <paramref name="program"/> as a new domain on core <paramref name="core"/>.</summary>
    public Task<ulong> SpawnAsync(int core, string program, ulong argument = 0, CancellationToken cancellationToken = default) =>
        _monitor.SpawnAsync(core, program, argument, cancellationToken);

    /// <summary>Waits on this core's timer queue.</summary>
    public ValueTask Delay(TimeSpan delay, CancellationToken cancellationToken = default) => Domain.Kernel.Delay(delay, cancellationToken);

    /// <inheritdoc />
    public override string ToString() => Domain.ToString();
}
