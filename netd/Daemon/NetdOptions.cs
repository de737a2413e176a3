using System.Globalization;
using Multikernel.Netd.Wire;

namespace Multikernel.Netd.Daemon;

/// <summary>
/// netd's options, bound from the <c>Multikernel:Netd</c> configuration section and the command
/// line (<c>--nic</c>, <c>--host-ip</c>, <c>--netd-ip</c>, <c>--netd-core</c>, <c>--pcap</c>).
/// </summary>
public sealed class NetdOptions
{
    /// <summary>The configuration section name, below <c>Multikernel</c>.</summary>
    public const string SectionName = "Netd";

    /// <summary>Core netd runs on; -1 = the last core. Default -1.</summary>
    public int Core { get; set; } = -1;

    /// <summary>The NIC: <c>memory</c> (the in-memory switch) or <c>tap:NAME</c>. Default <c>memory</c>.</summary>
    public string Nic { get; set; } = "memory";

    /// <summary>Host-side address of a TAP device with prefix, e.g. <c>10.77.0.1/24</c>. Default none.</summary>
    public string? HostIp { get; set; }

    /// <summary>netd's own IPv4 address (answers ARP and ping). Default <c>10.77.0.254</c>.</summary>
    public string NetdIp { get; set; } = "10.77.0.254";

    /// <summary>Write both directions to this pcap file. Default none.</summary>
    public string? Pcap { get; set; }

    /// <summary>Largest pcap file, in bytes; capture stops (and counts) beyond it. Default 64 MiB.</summary>
    public long PcapMaxBytes { get; set; } = 64L << 20;

    /// <summary>Consumers (application stacks) bound at once. Default 64.</summary>
    public int MaxConsumers { get; set; } = 64;

    /// <summary>Regions one consumer may register. Default 16.</summary>
    public int MaxRegionsPerConsumer { get; set; } = 16;

    /// <summary>Empty buffers of each kind (small, page) netd holds for one consumer. Default 256.</summary>
    public int MaxPostedPerConsumer { get; set; } = 256;

    /// <summary>Transmit descriptors of one consumer netd holds while the device is busy. Default 64 (a channel window).</summary>
    public int MaxTransmitsInFlight { get; set; } = 64;

    /// <summary>IPv4 addresses one consumer may claim. Default 8.</summary>
    public int MaxAddressesPerConsumer { get; set; } = 8;

    /// <summary>Frames received per device burst (and receive buffers netd keeps). Default 32.</summary>
    public int RxBurst { get; set; } = 32;

    /// <summary>
    /// Most frames netd hands the device in one transmit burst (the transmits of a step leave
    /// together: one driver call, one signal of the receiving switch port). Default 64 (a channel window).
    /// </summary>
    public int TxBurst { get; set; } = 64;

    /// <summary>Every problem with these options, one line each.</summary>
    public IEnumerable<string> Validate(int cores)
    {
        if (Core < -1 || Core >= cores)
        {
            yield return string.Create(CultureInfo.InvariantCulture, $"Netd:Core must be -1 (the last core) or a core between 0 and {cores - 1} (got {Core}).");
        }

        if (!TryParseNic(Nic, out _, out string? problem))
        {
            yield return problem!;
        }

        if (!Ipv4Address.TryParse(NetdIp, out _))
        {
            yield return $"Netd:NetdIp must be an IPv4 address such as 10.77.0.254 (got '{NetdIp}').";
        }

        if (HostIp is not null && !TryParseCidr(HostIp, out _, out _))
        {
            yield return $"Netd:HostIp must be an IPv4 address with a prefix length such as 10.77.0.1/24 (got '{HostIp}').";
        }

        foreach ((string name, int value, int max) in new[]
        {
            ("MaxConsumers", MaxConsumers, 4096), ("MaxRegionsPerConsumer", MaxRegionsPerConsumer, 1024),
            ("MaxPostedPerConsumer", MaxPostedPerConsumer, 65536), ("MaxTransmitsInFlight", MaxTransmitsInFlight, 65536),
            ("MaxAddressesPerConsumer", MaxAddressesPerConsumer, 256), ("RxBurst", RxBurst, 1024),
            ("TxBurst", TxBurst, 1024),
        })
        {
            if (value < 1 || value > max)
            {
                yield return string.Create(CultureInfo.InvariantCulture, $"Netd:{name} must be between 1 and {max} (got {value}).");
            }
        }

        if (PcapMaxBytes < 4096)
        {
            yield return string.Create(CultureInfo.InvariantCulture, $"Netd:PcapMaxBytes must be at least 4096 (got {PcapMaxBytes}).");
        }
    }

    /// <summary>The core netd runs on in a machine of <paramref name="cores"/>.</summary>
    public int ResolveCore(int cores) => Core < 0 ? cores - 1 : Core;

    /// <summary>Parses <c>memory</c> or <c>tap:NAME</c>; <paramref name="tapName"/> is null for memory.</summary>
    public static bool TryParseNic(string? text, out string? tapName, out string? problem)
    {
        tapName = null;
        problem = null;
        if (string.Equals(text, "memory", StringComparison.Ordinal))
        {
            return true;
        }

        if (text is not null && text.StartsWith("tap:", StringComparison.Ordinal) && text.Length > 4 && text.Length - 4 < 16)
        {
            tapName = text[4..];
            return true;
        }

        problem = $"--nic must be 'memory' or 'tap:NAME' with a name of 1 to 15 characters (got '{text}').";
        return false;
    }

    /// <summary>Parses <c>A.B.C.D/N</c>.</summary>
    public static bool TryParseCidr(string text, out Ipv4Address address, out int prefix)
    {
        address = default;
        prefix = 0;
        int slash = text.IndexOf('/', StringComparison.Ordinal);
        return slash > 0
            && Ipv4Address.TryParse(text[..slash], out address)
            && int.TryParse(text.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out prefix)
            && prefix is >= 1 and <= 30;
    }
}
