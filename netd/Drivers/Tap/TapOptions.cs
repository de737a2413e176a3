using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Multikernel.Netd.Wire;

namespace Multikernel.Netd.Drivers.Tap;

/// <summary>How to create a Linux TAP device; setters validate, so a bad value fails before any system call.</summary>
public sealed class TapOptions
{
    private string _name = "mk0";
    private int _mtu = NetworkDevice.DefaultMtu;
    private string? _hostAddress;

    /// <summary>Interface name: 1..15 bytes, no '/', ':', '%' or white space, not "." or "..". Default "mk0".</summary>
    public string Name
    {
        get => _name;
        set => _name = ValidateName(value);
    }

    /// <summary>IP MTU set on the interface. Default 1500; 576..9000.</summary>
    public int Mtu
    {
        get => _mtu;
        set => _mtu = value is >= NetworkDevice.MinMtu and <= NetworkDevice.MaxMtu ? value : throw new ArgumentOutOfRangeException(nameof(value), value, $"The TAP MTU is {NetworkDevice.MinMtu}..{NetworkDevice.MaxMtu} bytes.");
    }

    /// <summary>
    /// The Linux (host) side's IPv4 address with prefix, e.g. <c>10.7.0.1/24</c>; null (the
    /// default) leaves the interface without an address (it is still brought up).
    /// </summary>
    public string? HostAddress
    {
        get => _hostAddress;
        set
        {
            if (value is not null)
            {
                _ = ParseCidr(value);
            }

            _hostAddress = value;
        }
    }

    /// <summary>The station address netd uses on the link; null (the default) derives one from the host side's MAC (last bit flipped).</summary>
    public MacAddress? MacAddress { get; set; }

    /// <summary>The clone device (tests point it elsewhere to see the missing-device error). Default <c>/dev/net/tun</c>.</summary>
    internal string DevicePath { get; set; } = "/dev/net/tun";

    /// <summary>Throws <see cref="ArgumentException"/> with the rule a bad interface name breaks.</summary>
    public static string ValidateName(string? name)
    {
        if (string.IsNullOrEmpty(name))
        {
            throw new ArgumentException("TAP interface name is empty.", nameof(name));
        }

        if (System.Text.Encoding.UTF8.GetByteCount(name) > 15)
        {
            throw new ArgumentException($"TAP interface name '{name}' is longer than 15 bytes (Linux IFNAMSIZ).", nameof(name));
        }

        if (name is "." or ".." || name.AsSpan().IndexOfAny("/:% \t\n\r\f\v") >= 0)
        {
            throw new ArgumentException($"TAP interface name '{name}' is invalid (no '/', ':', '%' or white space; not '.' or '..').", nameof(name));
        }

        return name;
    }

    /// <summary>Parses <c>a.b.c.d/len</c>.</summary>
    internal static (IPAddress Address, int PrefixLength) ParseCidr(string cidr)
    {
        int slash = cidr.IndexOf('/', StringComparison.Ordinal);
        if (slash <= 0
            || !IPAddress.TryParse(cidr.AsSpan(0, slash), out IPAddress? address)
            || address.AddressFamily != AddressFamily.InterNetwork
            || !int.TryParse(cidr.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int prefix)
            || prefix is < 1 or > 32)
        {
            throw new ArgumentException($"Host address '{cidr}' is not IPv4 CIDR such as 10.7.0.1/24.", nameof(cidr));
        }

        return (address, prefix);
    }
}

/// <summary>A TAP device could not be created or configured; the message is one line naming what is missing.</summary>
public sealed class TapDeviceException : IOException
{
    public TapDeviceException()
    {
    }

    public TapDeviceException(string message)
        : base(message)
    {
    }

    public TapDeviceException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    internal TapDeviceException(string message, int errno)
        : base(message) => Errno = errno;

    /// <summary>The Linux errno behind the failure (0 when none).</summary>
    public int Errno { get; }
}
