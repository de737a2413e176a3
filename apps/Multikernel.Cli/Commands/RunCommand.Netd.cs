using System.CommandLine;
using System.Globalization;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Multikernel.Monitor.Hosting;
using Multikernel.Netd.Daemon;
using Multikernel.Netd.Drivers.Tap;
using Multikernel.Netd.Wire;

namespace Multikernel.Cli.Commands;

/// <summary>
/// netd's options of <c>multikernel run</c> (<c>--nic</c>, <c>--host-ip</c>, <c>--netd-ip</c>,
/// <c>--netd-core</c>, <c>--pcap</c>) and their binding: each option overrides its key of the
/// <c>Multikernel:Netd</c> section, so appsettings.json, <c>MULTIKERNEL__NETD__*</c> variables and
/// the command line all configure netd the same way. netd runs when that section exists (any of
/// these options creates it); without it the machine has no NIC.
/// </summary>
internal sealed class RunNetdOptions
{
    private static readonly string Section = $"{MultikernelOptions.SectionName}:{NetdOptions.SectionName}";

    public Option<string?> Nic { get; } = new("--nic")
    {
        Description = "Start netd with this NIC: 'memory' (the in-memory switch, the default) or 'tap:NAME' (a Linux TAP device; needs root or CAP_NET_ADMIN and /dev/net/tun). Overrides Multikernel:Netd:Nic.",
    };

    public Option<string?> HostIp { get; } = new("--host-ip")
    {
        Description = "The TAP device's Linux-side address with prefix, e.g. 10.77.0.1/24 (with --nic tap:NAME). Overrides Multikernel:Netd:HostIp.",
    };

    public Option<string?> NetdIp { get; } = new("--netd-ip")
    {
        Description = "netd's own IPv4 address (it answers ARP and ping), default 10.77.0.254. Overrides Multikernel:Netd:NetdIp.",
    };

    public Option<int?> NetdCore { get; } = new("--netd-core")
    {
        Description = "The core netd runs on (-1, the default: the last core). Overrides Multikernel:Netd:Core.",
    };

    public Option<string?> Pcap { get; } = new("--pcap")
    {
        Description = "Write every frame netd receives and sends to this pcap file (capped by Multikernel:Netd:PcapMaxBytes, default 64 MiB). Overrides Multikernel:Netd:Pcap.",
    };

    public void AddTo(Command command)
    {
        Nic.Validators.Add(r =>
        {
            if (CommonOptions.TryGet<string?>(r) is { } nic && !NetdOptions.TryParseNic(nic, out _, out string? problem))
            {
                r.AddError(problem!);
            }
        });
        HostIp.Validators.Add(r =>
        {
            if (CommonOptions.TryGet<string?>(r) is { } cidr && !NetdOptions.TryParseCidr(cidr, out _, out _))
            {
                r.AddError($"--host-ip must be an IPv4 address with a prefix length between 1 and 30, such as 10.77.0.1/24 (got '{cidr}').");
            }
        });
        NetdIp.Validators.Add(r =>
        {
            if (CommonOptions.TryGet<string?>(r) is { } ip && !Ipv4Address.TryParse(ip, out _))
            {
                r.AddError($"--netd-ip must be an IPv4 address such as 10.77.0.254 (got '{ip}').");
            }
        });
        NetdCore.Validators.Add(r =>
        {
            if (CommonOptions.TryGet<int?>(r) is int core && core < -1)
            {
                r.AddError(string.Create(CultureInfo.InvariantCulture, $"--netd-core must be -1 (the last core) or a core number (got {core})."));
            }
        });
        command.Options.Add(Nic);
        command.Options.Add(HostIp);
        command.Options.Add(NetdIp);
        command.Options.Add(NetdCore);
        command.Options.Add(Pcap);
    }

    /// <summary>The configuration keys the given options override (empty: none given).</summary>
    public Dictionary<string, string?> Overrides(ParseResult parse)
    {
        var overrides = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
        Put(overrides, nameof(NetdOptions.Nic), parse.GetValue(Nic));
        Put(overrides, nameof(NetdOptions.HostIp), parse.GetValue(HostIp));
        Put(overrides, nameof(NetdOptions.NetdIp), parse.GetValue(NetdIp));
        Put(overrides, nameof(NetdOptions.Core), parse.GetValue(NetdCore)?.ToString(CultureInfo.InvariantCulture));
        Put(overrides, nameof(NetdOptions.Pcap), parse.GetValue(Pcap) is { } pcap ? Path.GetFullPath(pcap) : null);
        return overrides;
    }

    private static void Put(Dictionary<string, string?> overrides, string key, string? value)
    {
        if (value is not null)
        {
            overrides[$"{Section}:{key}"] = value;
        }
    }

    /// <summary>
    /// Registers the <see cref="NetdHost"/> and, when the configuration has a
    /// <c>Multikernel:Netd</c> section, adds netd to the machine with the options bound from it,
    /// validated first (every problem one line; the CLI exits 2).
    /// </summary>
    public static void AddServices(IServiceCollection services)
    {
        services.TryAddSingleton<NetdHost>();
        services.AddSingleton<IConfigureOptions<MultikernelOptions>>(sp => new ConfigureOptions<MultikernelOptions>(o =>
            Configure(o, sp.GetRequiredService<IConfiguration>().GetSection(Section), sp.GetRequiredService<NetdHost>())));
    }

    private static void Configure(MultikernelOptions options, IConfigurationSection section, NetdHost host)
    {
        if (!section.Exists() || host.IsAdded)
        {
            return;
        }

        var netd = new NetdOptions();
        section.Bind(netd);
        List<string> problems = [.. Validate(netd, options)];
        if (problems.Count > 0)
        {
            throw new OptionsValidationException(NetdOptions.SectionName, typeof(NetdOptions), problems);
        }

        // The CLI prints why netd could not start (no TAP, no capture file) as one line itself.
        host.ReportsStartFailures = true;
        options.AddNetd(netd, host);
    }

    /// <summary>Every problem with netd's options in a machine configured by <paramref name="machine"/>, one line each.</summary>
    internal static IEnumerable<string> Validate(NetdOptions netd, MultikernelOptions machine)
    {
        int cores;
        try
        {
            cores = machine.ResolveCores(Environment.ProcessorCount);
        }
        catch (FormatException)
        {
            cores = machine.MaxCores; // Multikernel:Cores itself is reported by the machine's validator
        }

        foreach (string problem in netd.Validate(cores))
        {
            yield return problem;
        }

        bool tap = NetdOptions.TryParseNic(netd.Nic, out string? tapName, out _) && tapName is not null;
        if (netd.HostIp is not null && !tap)
        {
            yield return $"Netd:HostIp ('{netd.HostIp}') is the TAP device's Linux-side address: it needs --nic tap:NAME (Netd:Nic is '{netd.Nic}').";
        }

        if (tapName is not null && TapNameProblem(tapName) is { } nameProblem)
        {
            yield return $"--nic: {nameProblem}";
        }

        if (netd.HostIp is not null && NetdOptions.TryParseCidr(netd.HostIp, out Ipv4Address host, out _)
            && Ipv4Address.TryParse(netd.NetdIp, out Ipv4Address own) && host == own)
        {
            yield return $"Netd:NetdIp ({netd.NetdIp}) must differ from the host side's address ({netd.HostIp}).";
        }

        if (netd.Pcap is { } pcap && Path.GetDirectoryName(Path.GetFullPath(pcap)) is { Length: > 0 } directory && !Directory.Exists(directory))
        {
            yield return $"Cannot create the capture file '{pcap}': the directory '{directory}' does not exist.";
        }
    }

    private static string? TapNameProblem(string name)
    {
        try
        {
            TapOptions.ValidateName(name);
            return null;
        }
        catch (ArgumentException e)
        {
            int cut = e.Message.IndexOf(" (Parameter", StringComparison.Ordinal);
            return cut < 0 ? e.Message : e.Message[..cut];
        }
    }

    /// <summary>
    /// After the host started: adds netd's instruments to the runtime's meter and waits until netd
    /// opened its NIC. A NIC that cannot be opened (no root, no /dev/net/tun, the name taken) or a
    /// capture file that cannot be created is one line on stderr and exit code 2.
    /// </summary>
    public static async Task<int?> WaitForNetdAsync(IHost host, CancellationToken cancellationToken)
    {
        NetdHost netd = host.Services.GetRequiredService<NetdHost>();
        if (!netd.IsAdded)
        {
            return null;
        }

        var runtime = host.Services.GetRequiredService<MultikernelRuntime>();
        netd.RegisterMetrics(runtime.Metrics.Meter);
        try
        {
            await netd.Started.WaitAsync(runtime.Options.BootTimeout, cancellationToken);
        }
        catch (Exception ex) when (ex is TapDeviceException or IOException or UnauthorizedAccessException or ArgumentException or PlatformNotSupportedException)
        {
            await Console.Error.WriteLineAsync($"multikernel: {ex.Message}");
            await host.StopAsync(CancellationToken.None);
            return CliHost.UsageError;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            return null; // Ctrl-C while netd was starting: the run stops as usual
        }
        catch (TimeoutException)
        {
            await Console.Error.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"multikernel: netd did not start within {runtime.Options.BootTimeout.TotalSeconds:F0} s (see the log above)."));
            await host.StopAsync(CancellationToken.None);
            return 1;
        }
        catch (InvalidOperationException ex)
        {
            await Console.Error.WriteLineAsync($"multikernel: netd could not start: {ex.Message}");
            await host.StopAsync(CancellationToken.None);
            return 1;
        }

        NetdOptions? options = netd.Options;
        Console.WriteLine($"netd: {netd.DeviceName} ({options?.Nic}{(options?.HostIp is { } hostIp ? ", host " + hostIp : string.Empty)}), address {options?.NetdIp}, MAC {netd.Mac}{(options?.Pcap is { } pcap ? ", capture " + pcap : string.Empty)}");
        return null;
    }
}
