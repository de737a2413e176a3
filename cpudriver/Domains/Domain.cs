using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Kernel;

namespace Multikernel.CpuDriver.Domains;

/// <summary>
/// A domain's dispatcher on one core: cooperative async code that runs to completion on the
/// core's own scheduler and never blocks the kernel thread. The kernel keeps a bounded table
/// of them; the monitor creates and stops them.
/// </summary>
/// <remarks>
/// Domain code never holds this object: it sees its <c>DomainContext</c>. Everything here that
/// leads to the kernel, to other domains or to the domain's own lifecycle (<see cref="Kernel"/>,
/// <see cref="Endpoints"/>, <see cref="CreateEndpoint"/>, <see cref="RequestStop"/>,
/// <see cref="AttachCapabilities"/>) is internal to the kernel side (cpudriver, the monitor and the
/// assemblies named in its InternalsVisibleTo list), so a hostile domain cannot walk from its
/// context to another domain's capability space (issue 7, item 2).
/// </remarks>
public sealed class Domain
{
    private readonly CancellationTokenSource _stopping = new();
    private readonly List<Endpoint> _endpoints = [];
    private readonly List<DeviceRegistration> _deviceServices = [];
    private Task _completion = Task.CompletedTask;

    internal Domain(CoreKernel kernel, ulong id, string name)
    {
        Kernel = kernel;
        Id = id;
        Name = name;
    }

    /// <summary>Machine-wide domain id: the core in the high 32 bits, a per-core sequence number below.</summary>
    public ulong Id { get; }

    /// <summary>Program or service name.</summary>
    public string Name { get; }

    /// <summary>The kernel this dispatcher runs on (kernel side only: it reaches every domain of the core).</summary>
    internal CoreKernel Kernel { get; }

    /// <summary>The core this dispatcher runs on.</summary>
    public int Core => Kernel.Id;

    /// <summary>The domain's capability space (null until the monitor gives it one).</summary>
    internal Capabilities.CSpace? Capabilities { get; set; }

    /// <summary>The slot of the RAM capability the domain was given at spawn (-1 when none).</summary>
    public int RamSlot { get; internal set; } = -1;

    /// <summary>Signalled when the domain is asked to stop (shutdown or kill).</summary>
    public CancellationToken Stopping => _stopping.Token;

    /// <summary>Completes when the domain's main function has returned (or faulted).</summary>
    public Task Completion => _completion;

    /// <summary>Endpoints this domain owns (closed when it ends).</summary>
    internal IReadOnlyList<Endpoint> Endpoints => _endpoints;

    /// <summary>Creates an unconnected endpoint owned by this domain. Core thread only.</summary>
    internal Endpoint CreateEndpoint(string name)
    {
        Endpoint endpoint = Kernel.CreateEndpoint(name);
        endpoint.OwningDomain = this;
        _endpoints.Add(endpoint);
        return endpoint;
    }

    /// <summary>
    /// Runs <paramref name="service"/> in this core's kernel loop on the domain's behalf, woken when
    /// <paramref name="fileDescriptor"/> becomes readable (polled every iteration when -1). The
    /// caller (the monitor) has checked the domain's device authority. The registration goes when
    /// disposed or when the domain ends, so a crashed driver leaves nothing in the loop. Core thread.
    /// </summary>
    internal DeviceRegistration AddDeviceService(IKernelService service, int fileDescriptor)
    {
        WakeSource? wake = null;
        if (fileDescriptor >= 0)
        {
            wake = Kernel.RegisterWakeSource(fileDescriptor, service);
        }
        else
        {
            Kernel.AddService(service);
        }

        var registration = new DeviceRegistration(this, service, wake);
        _deviceServices.Add(registration);
        return registration;
    }

    internal void ForgetDeviceService(DeviceRegistration registration) => _deviceServices.Remove(registration);

    private void RemoveDeviceServices()
    {
        for (int i = _deviceServices.Count - 1; i >= 0; i--)
        {
            _deviceServices[i].Dispose();
        }
    }

    /// <summary>A closed endpoint leaves the domain's list (called by <see cref="Endpoint.Close"/>).</summary>
    internal void ForgetEndpoint(Endpoint endpoint) => _endpoints.Remove(endpoint);

    /// <summary>Gives the domain its capability space; the monitor does this before the domain runs.</summary>
    internal void AttachCapabilities(Capabilities.CSpace space, int ramSlot)
    {
        ArgumentNullException.ThrowIfNull(space);
        if (Capabilities is not null)
        {
            throw new InvalidOperationException($"{this} already has a capability space.");
        }

        Capabilities = space;
        RamSlot = ramSlot;
    }

    internal void Start(Func<Domain, Task> main)
    {
        var started = new TaskCompletionSource<Task>();
        Kernel.Post(static s =>
        {
            var (domain, entry, tcs) = ((Domain, Func<Domain, Task>, TaskCompletionSource<Task>))s!;
            // A domain starts outside any trace: whatever span the kernel thread last saw is not its parent.
            System.Diagnostics.Activity.Current = null;
            Task task;
            try
            {
                task = entry(domain);
            }
#pragma warning disable CA1031 // the fault is the domain's result
            catch (Exception ex)
#pragma warning restore CA1031
            {
                task = Task.FromException(ex);
            }

            tcs.SetResult(task);
        }, (this, main, started));
        _completion = started.Task.Unwrap().ContinueWith(
            static (t, s) =>
            {
                var domain = (Domain)s!;
                domain.Kernel.RemoveDomain(domain);
                domain.RemoveDeviceServices();
                // Close removes each endpoint from the list: walk it from the end.
                for (int i = domain._endpoints.Count - 1; i >= 0; i--)
                {
                    domain._endpoints[i].Close();
                }

                domain._endpoints.Clear();
                return t;
            },
            this,
            CancellationToken.None,
            TaskContinuationOptions.None,
            Kernel.Scheduler).Unwrap();
    }

    /// <summary>Asks the domain to stop. Any thread.</summary>
    internal void RequestStop() => _stopping.Cancel();

    /// <inheritdoc />
    public override string ToString() => $"{Name} (domain {Id >> 32}.{Id & 0xFFFFFFFF} on core {Core})";
}

/// <summary>
/// A device service in a core's kernel loop on a domain's behalf (<c>DomainContext.AddDeviceService</c>):
/// disposing it takes the service out of the loop (the domain ending does too).
/// </summary>
public sealed class DeviceRegistration : IDisposable
{
    private readonly Domain _domain;
    private readonly IKernelService _service;
    private WakeSource? _wake;
    private bool _disposed;

    internal DeviceRegistration(Domain domain, IKernelService service, WakeSource? wake)
    {
        _domain = domain;
        _service = service;
        _wake = wake;
    }

    /// <summary>
    /// Stops watching the descriptor while the service stays in the loop (a device whose
    /// descriptor reports an error forever, e.g. a TAP deleted from outside, would otherwise keep
    /// the core from ever sleeping). Core thread.
    /// </summary>
    public void StopWatching()
    {
        _domain.Kernel.CheckThread();
        _wake?.Dispose();
        _wake = null;
    }

    /// <summary>Takes the service out of the loop and stops watching its descriptor. Core thread.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _domain.Kernel.CheckThread();
        _disposed = true;
        _wake?.Dispose();
        _wake = null;
        _domain.Kernel.RemoveService(_service);
        _domain.ForgetDeviceService(this);
    }
}
