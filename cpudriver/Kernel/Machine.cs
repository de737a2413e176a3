using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.CpuDriver.Kernel;

/// <summary>
/// What the boot loader sets up before any kernel runs: one kernel per core, one URPC ring per
/// ordered pair of cores, one doorbell per core, and the monitor link endpoints (endpoint index
/// <c>j</c> on core <c>k</c> is the link from monitor <c>k</c> to monitor <c>j</c>, so monitors
/// can reach each other before they have a name service). Core 0's monitor then starts the
/// other cores through <see cref="StartCore"/>, which only core 0 may call (it holds the
/// Kernel capability).
/// </summary>
public sealed class Machine : IDisposable
{
    private readonly UrpcRing[] _rings;
    private readonly Doorbell[] _doorbells;
    private readonly CoreKernel[] _kernels;
    private readonly Endpoint[][] _monitorLinks;
    private readonly Endpoint[][] _capabilityLinks;
    private int _disposed;

    /// <summary>Creates the kernels and rings for <paramref name="cores"/> cores (not started).</summary>
    public Machine(int cores, KernelOptions options, TimeProvider time, int? cpuCount = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(time);
        if (cores < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(cores), cores, "A machine has at least one core.");
        }

        if (options.Validate() is { } problem)
        {
            throw new ArgumentException(problem, nameof(options));
        }

        if (options.MaxEndpointsPerCore < 2 * cores)
        {
            throw new ArgumentException($"MaxEndpointsPerCore ({options.MaxEndpointsPerCore}) must be at least twice the core count ({cores}) for the monitor and capability links.", nameof(options));
        }

        Cores = cores;
        Cpus = Math.Max(1, cpuCount ?? Environment.ProcessorCount);
        _doorbells = new Doorbell[cores];
        for (int i = 0; i < cores; i++)
        {
            _doorbells[i] = new Doorbell();
        }

        var inbound = new UrpcRing?[cores][];
        var outbound = new UrpcRing?[cores][];
        for (int i = 0; i < cores; i++)
        {
            inbound[i] = new UrpcRing?[cores];
            outbound[i] = new UrpcRing?[cores];
        }

        var rings = new List<UrpcRing>(cores * (cores - 1));
        for (int from = 0; from < cores; from++)
        {
            for (int to = 0; to < cores; to++)
            {
                if (from == to)
                {
                    continue;
                }

                var ring = new UrpcRing(options.RingSlots);
                rings.Add(ring);
                outbound[from][to] = ring;
                inbound[to][from] = ring;
            }
        }

        _rings = [.. rings];
        if (cores > Cpus && !options.YieldWhenIdle)
        {
            options = options.Clone();
            options.YieldWhenIdle = true;
        }

        // Each kernel takes its own read-only snapshot: no options object is shared between cores.
        _kernels = new CoreKernel[cores];
        for (int i = 0; i < cores; i++)
        {
            _kernels[i] = new CoreKernel(i, i % Cpus, cores, options, time, inbound[i], outbound[i], _doorbells);
        }

        _monitorLinks = new Endpoint[cores][];
        for (int k = 0; k < cores; k++)
        {
            _monitorLinks[k] = new Endpoint[cores];
            for (int j = 0; j < cores; j++)
            {
                if (j != k)
                {
                    _monitorLinks[k][j] = _kernels[k].CreateBootEndpoint(j, $"monitor {Math.Min(k, j)}-{Math.Max(k, j)}"); // both ends one name: messaging.destination.name
                }
            }
        }

        // A second link per pair for the capability protocol: its own credits and FIFO, so a
        // burst of revoke traffic never waits behind monitor requests (or the other way round).
        _capabilityLinks = new Endpoint[cores][];
        for (int k = 0; k < cores; k++)
        {
            _capabilityLinks[k] = new Endpoint[cores];
            for (int j = 0; j < cores; j++)
            {
                if (j != k)
                {
                    _capabilityLinks[k][j] = _kernels[k].CreateBootEndpoint(cores + j, $"capabilities {Math.Min(k, j)}-{Math.Max(k, j)}");
                }
            }
        }

        for (int k = 0; k < cores; k++)
        {
            for (int j = 0; j < cores; j++)
            {
                if (j != k)
                {
                    _monitorLinks[k][j].Connect(j, _monitorLinks[j][k].Id);
                    _capabilityLinks[k][j].Connect(j, _capabilityLinks[j][k].Id);
                }
            }
        }
    }

    /// <summary>Number of cores (kernels).</summary>
    public int Cores { get; }

    /// <summary>Number of CPUs the kernels are spread over.</summary>
    public int Cpus { get; }

    /// <summary>True when there are more kernels than CPUs (they share CPUs round-robin).</summary>
    public bool Oversubscribed => Cores > Cpus;

    /// <summary>The kernels, by core number.</summary>
    public IReadOnlyList<CoreKernel> Kernels => _kernels;

    /// <summary>Bytes of ring memory allocated at boot.</summary>
    public long RingBytes => _rings.Sum(r => r.SizeInBytes);

    /// <summary>The monitor link endpoint on core <paramref name="core"/> towards <paramref name="peer"/>.</summary>
    public Endpoint MonitorLink(int core, int peer) => _monitorLinks[core][peer];

    /// <summary>The capability-protocol link on core <paramref name="core"/> towards <paramref name="peer"/> (null for the own core).</summary>
    public Endpoint? CapabilityLink(int core, int peer) => core == peer ? null : _capabilityLinks[core][peer];

    /// <summary>Starts the kernel thread of <paramref name="core"/>. Called by core 0's monitor (and by the boot loader for core 0).</summary>
    public void StartCore(int core) => _kernels[core].Start();

    /// <summary>Halts every kernel and waits for the threads to exit.</summary>
    public bool HaltAll(TimeSpan timeout)
    {
        foreach (CoreKernel kernel in _kernels)
        {
            kernel.Halt();
        }

        return JoinAll(timeout);
    }

    /// <summary>Waits for every kernel thread to exit.</summary>
    public bool JoinAll(TimeSpan timeout)
    {
        DateTime deadline = DateTime.UtcNow + timeout;
        bool all = true;
        foreach (CoreKernel kernel in _kernels)
        {
            TimeSpan left = deadline - DateTime.UtcNow;
            all &= kernel.Join(left > TimeSpan.Zero ? left : TimeSpan.Zero);
        }

        return all;
    }

    /// <summary>Frees the rings. Call only after every kernel has stopped.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        foreach (CoreKernel kernel in _kernels)
        {
            kernel.ReleaseResources();
        }

        foreach (UrpcRing ring in _rings)
        {
            ring.Dispose();
        }

        foreach (Doorbell doorbell in _doorbells)
        {
            doorbell.Dispose();
        }
    }
}
