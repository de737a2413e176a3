using System.Globalization;
using Multikernel.CpuDriver.Kernel;

namespace Multikernel.Monitor.Hosting;

/// <summary>
/// Options of a multikernel machine, bound from the <c>Multikernel</c> configuration section
/// (appsettings.json, <c>MULTIKERNEL__*</c> environment variables, the command line).
/// </summary>
public sealed class MultikernelOptions
{
    /// <summary>The configuration section name.</summary>
    public const string SectionName = "Multikernel";

    /// <summary>Number of cores (kernels) to boot, or <c>auto</c> for one per CPU. Default <c>auto</c>.</summary>
    public string Cores { get; set; } = "auto";

    /// <summary>The most cores a machine may be configured with. Default 64 (the capability protocol's core masks are 64 bits).</summary>
    public int MaxCores { get; set; } = 64;

    /// <summary>Physical memory arena allocated at boot and split among the cores as RAM capabilities, e.g. <c>256MiB</c>. Default <c>64MiB</c>.</summary>
    public string Memory { get; set; } = "64MiB";

    /// <summary>
    /// RAM each spawned domain receives from its core's share (it pays for its buffers from it),
    /// e.g. <c>1MiB</c>. Default <c>2MiB</c>: what a domain with its own network stack needs (its
    /// netd region of 256 receive pages, small buffers and 64 transmit pages is 1.3 MiB).
    /// </summary>
    public string DomainMemory { get; set; } = "2MiB";

    /// <summary>
    /// Device memory reserved at boot from the Nic core's share for the NIC's receive buffers, e.g.
    /// <c>256KiB</c>; the machine's one Nic capability covers it and only its holder can retype
    /// DevFrames from it. Default <c>0</c> (no NIC).
    /// </summary>
    public string DeviceMemory { get; set; } = "0";

    /// <summary>The core whose monitor creates the Nic at boot; -1 = the last core. Default -1.</summary>
    public int NicCore { get; set; } = -1;

    /// <summary>The program that receives the Nic capability when it is spawned on the Nic core (netd). Default none.</summary>
    public string? NicProgram { get; set; }

    /// <summary>Frames of <see cref="DeviceMemory"/>.</summary>
    public int DeviceFrames => (int)Math.Min(int.MaxValue, (ByteSize.Parse(DeviceMemory) + 4095) / 4096);

    /// <summary>Capability slots per domain CSpace. Default 1024.</summary>
    public int CapabilitySlotsPerDomain { get; set; } = 1024;

    /// <summary>Capability objects (derivation-tree nodes) per core. Default 65536.</summary>
    public int MaxCapabilityObjectsPerCore { get; set; } = 65536;

    /// <summary>Relays per level of a multicast revoke tree. Default 2.</summary>
    public int RevokeMulticastFanout { get; set; } = 2;

    /// <summary>Slots per URPC ring (per ordered pair of cores), a power of two. Default 256 (16 KiB per ring).</summary>
    public int RingSlots { get; set; } = 256;

    /// <summary>Messages a channel may have in flight before its sender stalls, a power of two. Default 64.</summary>
    public int ChannelWindow { get; set; } = 64;

    /// <summary>
    /// Capabilities a channel's sender may have passed that the receiver has not taken yet; the
    /// next capability send stalls until the receiver takes one. At most the receiver's
    /// GrantsPerDomain share. Default 4.
    /// </summary>
    public int ChannelGrantWindow { get; set; } = 4;

    /// <summary>Idle loop iterations before a core parks. Default 2000.</summary>
    public int SpinBudget { get; set; } = 2000;

    /// <summary>How long an idle core keeps polling before it parks (measured in time; <see cref="SpinBudget"/> caps the iterations). Between 0 and 1 s. Default 20 µs.</summary>
    public TimeSpan SpinTime { get; set; } = TimeSpan.FromMicroseconds(20);

    /// <summary>Longest a parked core sleeps without a doorbell or a due timer. Default 100 ms.</summary>
    public TimeSpan MaxPark { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>Work items domains may have queued on their core (posts, continuations); one more is refused. Between 16 and 16777216. Default 16384.</summary>
    public int RunQueueCapacity { get; set; } = 16384;

    /// <summary>Work items other threads may have posted to a core and not yet run; one more fails its caller. Between 1 and 16777216. Default 65536.</summary>
    public int MaxForeignWork { get; set; } = 65536;

    /// <summary>File descriptors kernel services may register with one core's wait set. Between 0 and 4096. Default 64.</summary>
    public int MaxWakeSources { get; set; } = 64;

    /// <summary>Concurrent waiting readers (or write waiters) per endpoint; one more throws. Between 1 and 1024. Default 16.</summary>
    public int MaxWaitersPerEndpoint { get; set; } = 16;

    /// <summary>Channel endpoints per core. Default 4096.</summary>
    public int MaxEndpointsPerCore { get; set; } = 4096;

    /// <summary>Domains per core. Default 256.</summary>
    public int MaxDomainsPerCore { get; set; } = 256;

    /// <summary>Pending timers per core. Default 4096.</summary>
    public int MaxTimersPerCore { get; set; } = 4096;

    /// <summary>Pin kernel threads to CPUs. Default true.</summary>
    public bool PinThreads { get; set; } = true;

    /// <summary>Unsent messages a monitor link may hold before a request fails. Default 1024.</summary>
    public int MonitorOutbox { get; set; } = 1024;

    /// <summary>Monitor requests (bind, spawn, export) in flight per core. Default 1024.</summary>
    public int MaxPendingRequests { get; set; } = 1024;

    /// <summary>
    /// How long a monitor request (export, bind, spawn) waits for its reply before it fails with
    /// <see cref="MonitorStatus.TimedOut"/>. Default 30 s.
    /// </summary>
    public TimeSpan MonitorRequestTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Cross-core requests a sharded service lets one core have in flight to one other core, per
    /// nesting level (<see cref="Sharded{TService}"/>); a caller past it waits for a reply. Default 32.
    /// </summary>
    public int ShardedRequestsInFlight { get; set; } = 32;

    /// <summary>
    /// How deep sharded calls may nest (a handler that calls another core, whose handler calls
    /// again...); each level has its own budget so nested calls cannot deadlock, and a call past
    /// the deepest level fails with a clear error. Default 4.
    /// </summary>
    public int ShardedMaxNesting { get; set; } = 4;

    /// <summary>Callers of a sharded service that may wait for a budget slot per core and destination before further calls fail. Default 4096.</summary>
    public int ShardedMaxWaiting { get; set; } = 4096;

    /// <summary>How long to wait for all cores to boot. Default 30 s.</summary>
    public TimeSpan BootTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How long domains get to stop at shutdown before they are abandoned. Default 10 s.</summary>
    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Programs that can be spawned as domains (registered in code, not configuration).</summary>
    public ProgramRegistry Programs { get; } = new();

    /// <summary>Programs to spawn once the machine has booted.</summary>
    public IList<StartupProgram> Startup { get; } = [];

    /// <summary>
    /// Steps run once every core has booted, in order, before the <see cref="Startup"/> programs
    /// spawn: host-side set-up those programs rely on, such as a sharded service they all use.
    /// A step that fails fails the start.
    /// </summary>
    public IList<Func<MultikernelRuntime, CancellationToken, Task>> BootSteps { get; } = [];

    /// <summary>Adds a <see cref="BootSteps"/> entry.</summary>
    public MultikernelOptions OnBooted(Func<MultikernelRuntime, CancellationToken, Task> step)
    {
        ArgumentNullException.ThrowIfNull(step);
        BootSteps.Add(step);
        return this;
    }

    /// <summary>Registers a program that monitors can spawn by name.</summary>
    public MultikernelOptions AddProgram(string name, Func<DomainContext, Task> main)
    {
        Programs.Add(name, main);
        return this;
    }

    /// <summary>Spawns <paramref name="program"/> at boot on <paramref name="core"/> (or on every core when null).</summary>
    public MultikernelOptions SpawnAtBoot(string program, int? core = null, ulong argument = 0)
    {
        Startup.Add(new StartupProgram(program, core, argument));
        return this;
    }

    /// <summary>The core count <see cref="Cores"/> asks for on a machine with <paramref name="cpus"/> CPUs.</summary>
    public int ResolveCores(int cpus)
    {
        if (string.Equals(Cores?.Trim(), "auto", StringComparison.OrdinalIgnoreCase))
        {
            return Math.Min(Math.Max(1, cpus), MaxCores);
        }

        return int.Parse(Cores!, NumberStyles.None, CultureInfo.InvariantCulture);
    }

    /// <summary>Bytes of the physical memory arena.</summary>
    public long MemoryBytes => ByteSize.Parse(Memory);

    /// <summary>Frames of RAM each spawned domain receives.</summary>
    public int DomainFrames => (int)Math.Min(int.MaxValue, (ByteSize.Parse(DomainMemory) + 4095) / 4096);

    /// <summary>The capability-layer limits these options describe.</summary>
    public CpuDriver.Capabilities.CapabilityOptions ToCapabilityOptions(int cores) => new()
    {
        DeviceFrames = DeviceFrames,
        NicCore = NicCore < 0 ? Math.Max(0, cores + NicCore) : NicCore,
        MaxDomainsPerCore = MaxDomainsPerCore + 1, // the monitor's own CSpace
        SlotsPerDomain = CapabilitySlotsPerDomain,
        MaxObjectsPerCore = MaxCapabilityObjectsPerCore,
        MaxReferencesPerCore = MaxCapabilityObjectsPerCore,
        MulticastFanout = RevokeMulticastFanout,
    };

    /// <summary>The kernel limits these options describe.</summary>
    public KernelOptions ToKernelOptions() => new()
    {
        RingSlots = RingSlots,
        ChannelWindow = ChannelWindow,
        ChannelGrantWindow = ChannelGrantWindow,
        SpinBudget = SpinBudget,
        SpinTime = SpinTime,
        MaxPark = MaxPark,
        RunQueueCapacity = RunQueueCapacity,
        MaxForeignWork = MaxForeignWork,
        MaxWakeSources = MaxWakeSources,
        MaxWaitersPerEndpoint = MaxWaitersPerEndpoint,
        MaxEndpointsPerCore = MaxEndpointsPerCore,
        MaxDomainsPerCore = MaxDomainsPerCore,
        MaxTimersPerCore = MaxTimersPerCore,
        PinThreads = PinThreads,
    };

    // What the process may use (the machine's memory, or a container's limit): an arena larger
    // than this cannot be allocated, so it is refused up front instead of failing at boot.
    private static long MachineMemoryBytes() => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    /// <summary>Every problem with these options, each one clear line naming the option.</summary>
    public IEnumerable<string> Validate()
    {
        string cores = Cores?.Trim() ?? string.Empty;
        if (MaxCores < 1)
        {
            yield return $"MaxCores must be at least 1 (got {MaxCores}).";
        }
        else if (!string.Equals(cores, "auto", StringComparison.OrdinalIgnoreCase))
        {
            if (!int.TryParse(cores, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n < 1)
            {
                yield return $"--cores must be a positive whole number or 'auto' (got '{Cores}').";
            }
            else if (n > MaxCores)
            {
                yield return $"--cores {n} is more than the configured maximum of {MaxCores} (Multikernel:MaxCores).";
            }
        }

        if (MaxCores > 64)
        {
            yield return $"MaxCores can be at most 64 (got {MaxCores}): the capability protocol tracks cores in 64-bit masks.";
        }

        long memory = 0;
        if (!ByteSize.TryParse(Memory, out memory) || memory < 4096)
        {
            yield return $"--memory must be a size such as 256MiB, 1GiB or 65536 (at least one 4 KiB frame; got '{Memory}').";
        }
        else if (memory > (1L << 40))
        {
            yield return $"--memory {Memory} is more than 1 TiB.";
        }
        else if (ByteSize.TryParse(Memory, out long arena) && arena > MachineMemoryBytes())
        {
            yield return $"--memory {Memory} is more than this machine has ({MachineMemoryBytes() / (double)(1L << 30):0.#} GiB available to the process).";
        }

        if (!ByteSize.TryParse(DeviceMemory, out long deviceMemory) || deviceMemory < 0)
        {
            yield return $"DeviceMemory must be a size such as 256KiB or 0 (got '{DeviceMemory}').";
        }

        if (NicCore < -1 || NicCore >= MaxCores)
        {
            yield return $"NicCore must be -1 (the last core) or a core number (got {NicCore}).";
        }

        if (!ByteSize.TryParse(DomainMemory, out long domainMemory) || domainMemory < 0)
        {
            yield return $"DomainMemory must be a size such as 1MiB or 0 (got '{DomainMemory}').";
        }
        else if (memory > 0 && domainMemory > memory)
        {
            yield return $"DomainMemory ({DomainMemory}) is more than the whole arena ({Memory}).";
        }

        if (CapabilitySlotsPerDomain < 1)
        {
            yield return $"CapabilitySlotsPerDomain must be at least 1 (got {CapabilitySlotsPerDomain}).";
        }

        if (MaxCapabilityObjectsPerCore < 16)
        {
            yield return $"MaxCapabilityObjectsPerCore must be at least 16 (got {MaxCapabilityObjectsPerCore}).";
        }

        if (RevokeMulticastFanout < 1)
        {
            yield return $"RevokeMulticastFanout must be at least 1 (got {RevokeMulticastFanout}).";
        }

        // The kernel's own limits are checked where they are defined.
        foreach (string problem in ToKernelOptions().Problems())
        {
            yield return problem;
        }

        if (ChannelGrantWindow > new CpuDriver.Capabilities.CapabilityOptions().GrantsPerDomain)
        {
            yield return $"ChannelGrantWindow must not exceed a receiver's GrantsPerDomain share ({new CpuDriver.Capabilities.CapabilityOptions().GrantsPerDomain}), or one channel could fill it (got {ChannelGrantWindow}).";
        }

        if (MonitorOutbox < 1)
        {
            yield return $"MonitorOutbox must be at least 1 (got {MonitorOutbox}).";
        }

        if (MaxPendingRequests < 1)
        {
            yield return $"MaxPendingRequests must be at least 1 (got {MaxPendingRequests}).";
        }

        if (MonitorRequestTimeout <= TimeSpan.Zero)
        {
            yield return $"MonitorRequestTimeout must be positive (got {MonitorRequestTimeout}).";
        }

        if (ShardedRequestsInFlight < 1 || ShardedRequestsInFlight > 1024)
        {
            yield return $"ShardedRequestsInFlight must be between 1 and 1024 (got {ShardedRequestsInFlight}).";
        }

        if (ShardedMaxNesting < 1 || ShardedMaxNesting > 16)
        {
            yield return $"ShardedMaxNesting must be between 1 and 16 (got {ShardedMaxNesting}).";
        }

        if (ShardedMaxWaiting < 0)
        {
            yield return $"ShardedMaxWaiting must be at least 0 (got {ShardedMaxWaiting}).";
        }

        if (BootTimeout <= TimeSpan.Zero)
        {
            yield return $"BootTimeout must be positive (got {BootTimeout}).";
        }

        if (ShutdownTimeout <= TimeSpan.Zero)
        {
            yield return $"ShutdownTimeout must be positive (got {ShutdownTimeout}).";
        }

        foreach (StartupProgram start in Startup)
        {
            if (Programs.IndexOf(start.Program) < 0)
            {
                yield return $"Startup program '{start.Program}' is not registered.";
            }
        }
    }
}

/// <summary>A program to spawn at boot.</summary>
/// <param name="Program">Registered program name.</param>
/// <param name="Core">The core, or null for every core.</param>
/// <param name="Argument">Argument passed to the domain.</param>
public sealed record StartupProgram(string Program, int? Core, ulong Argument);

/// <summary>A program that can be spawned as a domain.</summary>
/// <param name="Name">Program name.</param>
/// <param name="Main">Its entry point, run on the domain's core.</param>
public sealed record DomainProgram(string Name, Func<DomainContext, Task> Main);

/// <summary>
/// The programs monitors can spawn, by name. Filled during configuration and read-only once the
/// machine boots: every core reads the same immutable table, the way Barrelfish spawns from its
/// boot image by name.
/// </summary>
public sealed class ProgramRegistry
{
    private readonly List<DomainProgram> _programs = [];
    private bool _frozen;

    /// <summary>Number of programs.</summary>
    public int Count => _programs.Count;

    /// <summary>Program by index.</summary>
    public DomainProgram this[int index] => _programs[index];

    /// <summary>Program names.</summary>
    public IEnumerable<string> Names => _programs.Select(p => p.Name);

    /// <summary>Adds a program.</summary>
    public void Add(string name, Func<DomainContext, Task> main)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(main);
        if (_frozen)
        {
            throw new InvalidOperationException("Programs are registered before the machine boots.");
        }

        if (IndexOf(name) >= 0)
        {
            throw new ArgumentException($"A program named '{name}' is already registered.", nameof(name));
        }

        _programs.Add(new DomainProgram(name, main));
    }

    /// <summary>Index of the program, or -1.</summary>
    public int IndexOf(string name) => _programs.FindIndex(p => string.Equals(p.Name, name, StringComparison.Ordinal));

    internal void Freeze() => _frozen = true;
}

/// <summary>Sizes written the way people write them: <c>65536</c>, <c>64KiB</c>, <c>256MiB</c>, <c>1GiB</c> (also KB/MB/GB as powers of 1024).</summary>
public static class ByteSize
{
    /// <summary>Parses a size; false for anything else.</summary>
    public static bool TryParse(string? text, out long bytes)
    {
        bytes = 0;
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        string t = text.Trim();
        int end = 0;
        while (end < t.Length && char.IsAsciiDigit(t[end]))
        {
            end++;
        }

        if (end == 0 || !long.TryParse(t.AsSpan(0, end), NumberStyles.None, CultureInfo.InvariantCulture, out long value))
        {
            return false;
        }

        long unit = t[end..].Trim().ToUpperInvariant() switch
        {
            "" or "B" => 1,
            "K" or "KB" or "KIB" => 1L << 10,
            "M" or "MB" or "MIB" => 1L << 20,
            "G" or "GB" or "GIB" => 1L << 30,
            "T" or "TB" or "TIB" => 1L << 40,
            _ => 0,
        };
        if (unit == 0 || value > long.MaxValue / unit)
        {
            return false;
        }

        bytes = value * unit;
        return true;
    }

    /// <summary>Parses a size or throws <see cref="FormatException"/>.</summary>
    public static long Parse(string text) =>
        TryParse(text, out long bytes) ? bytes : throw new FormatException($"'{text}' is not a size such as 256MiB.");
}
