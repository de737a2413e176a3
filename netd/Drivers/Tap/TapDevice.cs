using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Multikernel.Netd.Wire;

namespace Multikernel.Netd.Drivers.Tap;

/// <summary>
/// A Linux TAP interface (<c>/dev/net/tun</c>, <c>IFF_TAP | IFF_NO_PI</c>): Ethernet frames
/// between netd and the host's network stack in the calling thread's network namespace.
/// </summary>
/// <remarks>
/// <para>The descriptor is non-blocking: a burst is a run of <c>read</c>/<c>write</c> calls that
/// stops at <c>EAGAIN</c> (the TUN driver moves one frame per call, so <c>readv</c> would not
/// batch more). No thread blocks on it: the owning core adds <see cref="WaitFileDescriptor"/> to
/// its epoll set and parks.</para>
/// <para>Lifetime: the device is not persistent, so the kernel removes it when the last
/// descriptor closes. The descriptor lives in a <see cref="SafeHandle"/>, closed by
/// <see cref="Dispose"/> or, if a crashed owner never disposed it, by the finalizer — and by the
/// kernel when the process exits, whatever happened.</para>
/// <para>Configuration uses <c>ioctl</c> on an <c>AF_INET</c> socket (SIOCSIFMTU, SIOCSIFADDR,
/// SIOCSIFNETMASK, SIOCSIFFLAGS, SIOCGIFHWADDR); nothing shells out to <c>ip</c>.</para>
/// </remarks>
public sealed class TapDevice : INetworkDevice
{
    private const int IfReqSize = 40;
    private const short IFF_TAP = 0x0002;
    private const short IFF_NO_PI = 0x1000;
    private const short IFF_UP = 0x1;
    private const short IFF_RUNNING = 0x40;
    private const nuint TUNSETIFF = 0x400454CA;
    private const nuint SIOCGIFFLAGS = 0x8913;
    private const nuint SIOCSIFFLAGS = 0x8914;
    private const nuint SIOCSIFADDR = 0x8916;
    private const nuint SIOCSIFNETMASK = 0x891C;
    private const nuint SIOCGIFMTU = 0x8921;
    private const nuint SIOCSIFMTU = 0x8922;
    private const nuint SIOCGIFHWADDR = 0x8927;

    private readonly SafeFileDescriptor _tap;
    private readonly SafeFileDescriptor _control;
    private readonly ILogger _logger;
    private readonly int _maxFrame;
    private bool _loggedError;
    private volatile bool _detached;

    private TapDevice(SafeFileDescriptor tap, SafeFileDescriptor control, string name, int mtu, MacAddress hostMac, MacAddress stationMac, ILogger logger)
    {
        _tap = tap;
        _control = control;
        Name = name;
        Mtu = mtu;
        HostMacAddress = hostMac;
        MacAddress = stationMac;
        _logger = logger;
        _maxFrame = mtu + NetworkDevice.EthernetHeaderLength;
    }

    public string Name { get; }

    /// <summary>The station address netd uses (configured, or the host MAC with its last bit flipped).</summary>
    public MacAddress MacAddress { get; }

    /// <summary>The Linux side's MAC address (what the host's ARP replies carry).</summary>
    public MacAddress HostMacAddress { get; }

    public int Mtu { get; }

    /// <summary>Packets, bytes and drops by reason.</summary>
    public DeviceCounters Counters { get; } = new();

    public int WaitFileDescriptor => _tap.IsClosed ? -1 : _tap.Fd;

    /// <summary>
    /// True once the interface was deleted from outside (<c>ip link del</c>) while this descriptor
    /// was open: the descriptor is detached for good (reads fail with <c>EBADFD</c>) and, being
    /// level-triggered, reports an error to epoll forever, so its owner must stop watching it.
    /// </summary>
    public bool IsDetached => _detached;

    /// <summary>Up and running as seen from the namespace it was created in (SIOCGIFFLAGS); false once closed or moved away.</summary>
    public unsafe bool IsLinkUp
    {
        get
        {
            if (_tap.IsClosed || _detached)
            {
                return false;
            }

            byte* ifr = stackalloc byte[IfReqSize];
            WriteName(ifr, Name);
            if (LinuxNative.Ioctl(_control.Fd, SIOCGIFFLAGS, ifr) != 0)
            {
                return false;
            }

            short flags = *(short*)(ifr + 16);
            return (flags & (IFF_UP | IFF_RUNNING)) == (IFF_UP | IFF_RUNNING);
        }
    }

    /// <summary>
    /// Creates the TAP interface <see cref="TapOptions.Name"/> in the calling thread's network
    /// namespace, sets its MTU and host address and brings it up.
    /// </summary>
    /// <exception cref="TapDeviceException">One line naming what is missing: root/CAP_NET_ADMIN, /dev/net/tun, a free name.</exception>
    public static unsafe TapDevice Create(TapOptions options, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (!OperatingSystem.IsLinux())
        {
            throw new PlatformNotSupportedException("TAP devices need Linux (/dev/net/tun).");
        }

        string name = TapOptions.ValidateName(options.Name);
        (System.Net.IPAddress Address, int PrefixLength)? host = options.HostAddress is { } cidr ? TapOptions.ParseCidr(cidr) : null;
        logger ??= NullLogger.Instance;

        int fd = LinuxNative.Open(options.DevicePath, LinuxNative.O_RDWR | LinuxNative.O_NONBLOCK | LinuxNative.O_CLOEXEC);
        if (fd < 0)
        {
            throw OpenError(Marshal.GetLastPInvokeError(), options.DevicePath, name);
        }

        var tap = new SafeFileDescriptor(fd);
        SafeFileDescriptor? control = null;
        try
        {
            byte* ifr = stackalloc byte[IfReqSize];
            WriteName(ifr, name);
            *(short*)(ifr + 16) = IFF_TAP | IFF_NO_PI;
            if (LinuxNative.Ioctl(fd, TUNSETIFF, ifr) != 0)
            {
                throw SetIffError(Marshal.GetLastPInvokeError(), name);
            }

            int socket = LinuxNative.Socket(LinuxNative.AF_INET, LinuxNative.SOCK_DGRAM | LinuxNative.SOCK_CLOEXEC, 0);
            if (socket < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                throw new TapDeviceException($"TAP {name}: cannot open the AF_INET control socket: {LinuxNative.Describe(errno)}", errno);
            }

            control = new SafeFileDescriptor(socket);

            WriteName(ifr, name);
            *(int*)(ifr + 16) = options.Mtu;
            Configure(socket, SIOCSIFMTU, ifr, name, $"setting the MTU to {options.Mtu}");

            if (host is var (address, prefix))
            {
                WriteName(ifr, name);
                WriteSockAddrIn(ifr + 16, address.GetAddressBytes());
                Configure(socket, SIOCSIFADDR, ifr, name, $"setting the host address {options.HostAddress}");

                uint mask = prefix == 32 ? uint.MaxValue : ~(uint.MaxValue >> prefix);
                byte* maskBytes = stackalloc byte[4];
                BinaryPrimitives.WriteUInt32BigEndian(new Span<byte>(maskBytes, 4), mask);
                WriteName(ifr, name);
                WriteSockAddrIn(ifr + 16, new ReadOnlySpan<byte>(maskBytes, 4));
                Configure(socket, SIOCSIFNETMASK, ifr, name, $"setting the netmask /{prefix}");
            }

            WriteName(ifr, name);
            Configure(socket, SIOCGIFFLAGS, ifr, name, "reading the interface flags");
            *(short*)(ifr + 16) |= IFF_UP;
            Configure(socket, SIOCSIFFLAGS, ifr, name, "bringing the link up");

            WriteName(ifr, name);
            Configure(socket, SIOCGIFHWADDR, ifr, name, "reading the MAC address");
            MacAddress hostMac = MacAddress.Read(new ReadOnlySpan<byte>(ifr + 18, MacAddress.Length));

            WriteName(ifr, name);
            Configure(socket, SIOCGIFMTU, ifr, name, "reading the MTU back");
            int mtu = *(int*)(ifr + 16);

            MacAddress station = options.MacAddress ?? MacAddress.FromUInt64(hostMac.Value ^ 1);
            var device = new TapDevice(tap, control, name, mtu, hostMac, station, logger);
            TapLog.Created(logger, name, hostMac, station, mtu, options.HostAddress ?? "none");
            return device;
        }
        catch
        {
            control?.Dispose();
            tap.Dispose(); // the kernel removes the non-persistent device with its last descriptor
            throw;
        }
    }

    public unsafe int ReceiveBurst<TBuffers>(scoped ref TBuffers buffers, scoped Span<int> lengths)
        where TBuffers : IReceiveBuffers, allows ref struct
    {
        int max = Math.Min(buffers.Count, lengths.Length);
        bool added = false;
        int n = 0;
        try
        {
            // The reference keeps a concurrent Dispose from closing (and the OS reusing) the fd mid-burst.
            _tap.DangerousAddRef(ref added);
            int fd = _tap.Fd;
            while (n < max)
            {
                Span<byte> buffer = buffers[n];
                if (buffer.Length < _maxFrame)
                {
                    ThrowBufferTooSmall(buffer.Length);
                }

                nint got;
                fixed (byte* p = buffer)
                {
                    got = LinuxNative.Read(fd, p, (nuint)buffer.Length);
                }

                if (got < 0)
                {
                    int errno = Marshal.GetLastPInvokeError();
                    if (errno == LinuxNative.EINTR)
                    {
                        continue;
                    }

                    if (errno == LinuxNative.EBADFD)
                    {
                        if (!_detached)
                        {
                            _detached = true;
                            TapLog.Detached(_logger, Name);
                        }
                    }
                    else if (errno != LinuxNative.EAGAIN)
                    {
                        Failed("read", errno);
                    }

                    break;
                }

                if (got < NetworkDevice.EthernetHeaderLength || got > _maxFrame)
                {
                    Counters.Drop(DropReason.Malformed);
                    continue;
                }

                lengths[n++] = (int)got;
                Counters.Received((int)got);
            }
        }
        catch (ObjectDisposedException)
        {
            ThrowDisposed();
        }
        finally
        {
            if (added)
            {
                _tap.DangerousRelease();
            }
        }

        return n;
    }

    public unsafe int TransmitBurst<TFrames>(scoped ref TFrames frames)
        where TFrames : ITransmitFrames, allows ref struct
    {
        int count = frames.Count;
        bool added = false;
        int i = 0;
        try
        {
            _tap.DangerousAddRef(ref added);
            int fd = _tap.Fd;
            for (; i < count; i++)
            {
                ReadOnlySpan<byte> frame = frames[i];
                if (frame.Length < NetworkDevice.EthernetHeaderLength || frame.Length > _maxFrame)
                {
                    Counters.Drop(DropReason.Malformed);
                    continue;
                }

                nint sent;
                do
                {
                    fixed (byte* p = frame)
                    {
                        sent = LinuxNative.Write(fd, p, (nuint)frame.Length);
                    }
                }
                while (sent < 0 && Marshal.GetLastPInvokeError() == LinuxNative.EINTR);

                if (sent < 0)
                {
                    int errno = Marshal.GetLastPInvokeError();
                    if (errno == LinuxNative.EAGAIN)
                    {
                        break; // not taken: the caller keeps frames i.. and retries
                    }

                    Failed("write", errno); // e.g. EIO while the host side is down: dropped, counted
                    continue;
                }

                Counters.Transmitted(frame.Length);
            }
        }
        catch (ObjectDisposedException)
        {
            ThrowDisposed();
        }
        finally
        {
            if (added)
            {
                _tap.DangerousRelease();
            }
        }

        return i;
    }

    /// <summary>Always true: the descriptor is level-triggered, so epoll reports a frame that is already waiting.</summary>
    public bool PrepareToWait()
    {
        if (_tap.IsClosed)
        {
            ThrowDisposed();
        }

        return true;
    }

    /// <summary>Closes the descriptor; the kernel removes the interface.</summary>
    public void Dispose()
    {
        if (_tap.IsClosed)
        {
            return;
        }

        _tap.Dispose();
        _control.Dispose();
        TapLog.Closed(_logger, Name, Counters);
    }

    /// <inheritdoc />
    public override string ToString() => $"TAP {Name} ({MacAddress}, host {HostMacAddress}, MTU {Mtu})";

    private void Failed(string operation, int errno)
    {
        Counters.Drop(DropReason.DeviceError);
        if (!_loggedError)
        {
            _loggedError = true;
            TapLog.IoFailed(_logger, Name, operation, LinuxNative.Describe(errno));
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBufferTooSmall(int have) =>
        throw new ArgumentException($"TAP {Name}: a receive buffer of {have} bytes is smaller than Mtu + 14 = {_maxFrame} bytes (a longer frame would be truncated).");

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowDisposed() => throw new ObjectDisposedException(ToString(), $"TAP {Name} is closed.");

    private static unsafe void Configure(int socket, nuint request, byte* ifr, string name, string what)
    {
        if (LinuxNative.Ioctl(socket, request, ifr) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            string hint = errno is LinuxNative.EPERM or LinuxNative.EACCES ? " (needs root or CAP_NET_ADMIN)" : string.Empty;
            throw new TapDeviceException($"TAP {name}: {what} failed: {LinuxNative.Describe(errno)}{hint}", errno);
        }
    }

    private static unsafe void WriteName(byte* ifr, string name)
    {
        var span = new Span<byte>(ifr, IfReqSize);
        span.Clear();
        System.Text.Encoding.UTF8.GetBytes(name, span[..15]);
    }

    private static unsafe void WriteSockAddrIn(byte* sockaddr, ReadOnlySpan<byte> address)
    {
        var span = new Span<byte>(sockaddr, 16);
        span.Clear();
        *(ushort*)sockaddr = LinuxNative.AF_INET; // sa_family in host order; port 0
        address.CopyTo(span[4..]);
    }

    /// <summary>The one-line message for a failed <c>open</c> of the clone device (internal: a test maps every errno).</summary>
    internal static TapDeviceException OpenError(int errno, string path, string name) => errno switch
    {
        LinuxNative.ENOENT => new TapDeviceException($"TAP {name}: {path} does not exist: load the tun module (modprobe tun) or pass the device into the container (--device /dev/net/tun).", errno),
        LinuxNative.ENXIO or LinuxNative.ENODEV => new TapDeviceException($"TAP {name}: {path} has no driver behind it: the kernel lacks TUN/TAP support (CONFIG_TUN).", errno),
        LinuxNative.EACCES or LinuxNative.EPERM => new TapDeviceException($"TAP {name}: permission denied opening {path}: run as root or with CAP_NET_ADMIN.", errno),
        _ => new TapDeviceException($"TAP {name}: cannot open {path}: {LinuxNative.Describe(errno)}.", errno),
    };

    /// <summary>The one-line message for a failed TUNSETIFF.</summary>
    internal static TapDeviceException SetIffError(int errno, string name) => errno switch
    {
        LinuxNative.EPERM or LinuxNative.EACCES => new TapDeviceException($"TAP {name}: creating a TAP device needs CAP_NET_ADMIN: run as root (or grant the capability, e.g. setcap cap_net_admin+ep).", errno),
        LinuxNative.EBUSY => new TapDeviceException($"TAP {name}: the name is taken: another process has that TAP open; pick another name or stop it.", errno),
        LinuxNative.EINVAL => new TapDeviceException($"TAP {name}: the name is invalid or taken by an interface that is not a TAP device.", errno),
        _ => new TapDeviceException($"TAP {name}: TUNSETIFF failed: {LinuxNative.Describe(errno)}.", errno),
    };
}
