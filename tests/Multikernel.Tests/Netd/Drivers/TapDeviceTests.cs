using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Multikernel.Netd.Capture;
using Multikernel.Netd.Drivers;
using Multikernel.Netd.Drivers.Tap;
using PacketDotNet;
using Xunit.Abstractions;
using MacAddress = Multikernel.Netd.Wire.MacAddress;

namespace Multikernel.Tests.Netd.Drivers;

/// <summary>
/// The TAP driver against the real Linux kernel, inside a network namespace each test creates
/// and deletes: Linux pings an address behind the TAP and the test answers ARP and ICMP echo
/// with hand-built frames through the driver.
/// </summary>
public sealed partial class TapDeviceTests(ITestOutputHelper output)
{
    private static readonly TimeSpan CommandTimeout = TimeSpan.FromSeconds(10);

    [RootFact]
    public void Ping_FromTheNamespace_IsAnsweredThroughTheDriver_PcapIsClean_DeviceGoneAfterwards()
    {
        PrivilegedTests.RequirePrerequisites();
        string tapName = "mkt" + PrivilegedTests.RandomHex(3);
        int subnet = 1 + RandomNumberGeneratorInt(250);
        string hostIp = $"10.213.{subnet}.1";
        var peerIp = IPAddress.Parse($"10.213.{subnet}.2");
        string pcapPath = Path.Combine(Path.GetTempPath(), $"mk-tap-{PrivilegedTests.RandomHex(4)}.pcap");
        using NetNamespace ns = NetNamespace.Create();
        TapDevice? tap = null;
        try
        {
            tap = ns.OnThread(() => TapDevice.Create(new TapOptions { Name = tapName, HostAddress = hostIp + "/24", Mtu = 1500 }));
            Assert.Equal(tapName, tap.Name);
            Assert.Equal(1500, tap.Mtu);
            Assert.True(tap.WaitFileDescriptor >= 0);
            Assert.NotEqual(tap.HostMacAddress, tap.MacAddress);

            // The host side was configured by the driver's own ioctls.
            (int exit, string addr) = ns.Exec(CommandTimeout, "ip", "-o", "addr", "show", "dev", tapName);
            Assert.True(exit == 0, addr);
            Assert.Contains($"inet {hostIp}/24", addr, StringComparison.Ordinal);
            (_, string link) = ns.Exec(CommandTimeout, "ip", "-o", "link", "show", tapName);
            Assert.Contains("mtu 1500", link, StringComparison.Ordinal);
            Assert.Contains(",UP", link, StringComparison.Ordinal);
            Assert.Contains(tap.HostMacAddress.ToString(), link, StringComparison.Ordinal);
            Assert.True(tap.IsLinkUp);

            using (PcapWriter pcap = PcapWriter.Create(pcapPath))
            {
                foreach (int size in new[] { 56, 1400 })
                {
                    (int pingExit, string pingOutput, int echoes) = PingAndAnswer(ns, tap, pcap, peerIp, size);
                    output.WriteLine(pingOutput);
                    Assert.True(pingExit == 0, $"ping -s {size} failed: {pingOutput}");
                    Assert.Contains("1 received", pingOutput, StringComparison.Ordinal);
                    Assert.Equal(1, echoes);
                }
            }

            Assert.True(tap.Counters.RxPackets >= 3);
            Assert.True(tap.Counters.TxPackets >= 3);
            CheckCapture(pcapPath, peerIp);

            tap.Dispose();
            (int showExit, string gone) = ns.Exec(CommandTimeout, "ip", "link", "show", tapName);
            Assert.True(showExit != 0, $"{tapName} still exists after Dispose: {gone}");
            Assert.False(tap.IsLinkUp);
        }
        finally
        {
            tap?.Dispose();
            File.Delete(pcapPath);
        }
    }

    private (int ExitCode, string Output, int Echoes) PingAndAnswer(NetNamespace ns, TapDevice tap, PcapWriter pcap, IPAddress peer, int size)
    {
        using Process ping = ns.Start("ping", "-c", "1", "-W", "3", "-s", size.ToString(System.Globalization.CultureInfo.InvariantCulture), peer.ToString());
        Task<string> stdout = ping.StandardOutput.ReadToEndAsync();
        Task<string> stderr = ping.StandardError.ReadToEndAsync();
        var memory = new byte[8 * 2048];
        var lengths = new int[8];
        int echoes = 0;
        var deadline = Stopwatch.StartNew();
        try
        {
            while (!ping.HasExited && deadline.Elapsed < TimeSpan.FromSeconds(10))
            {
                // Wait on the driver's descriptor like the kernel's epoll will: no idle spinning.
                if (!VirtualSwitchTests.Poll(tap.WaitFileDescriptor, 100))
                {
                    continue;
                }

                var buffers = new StridedFrameBuffers(memory, 2048, 8);
                int n = tap.ReceiveBurst(ref buffers, lengths);
                for (int i = 0; i < n; i++)
                {
                    ReadOnlySpan<byte> frame = memory.AsSpan(i * 2048, lengths[i]);
                    pcap.Write(frame, CaptureDirection.Received);
                    byte[]? reply = Answer(frame, tap.MacAddress, peer, size, ref echoes);
                    if (reply is not null)
                    {
                        Assert.True(tap.TransmitOne(reply), "the TAP did not take the reply");
                        pcap.Write(reply, CaptureDirection.Transmitted);
                    }
                }
            }
        }
        finally
        {
            if (!ping.HasExited)
            {
                ping.Kill(entireProcessTree: true);
            }

            ping.WaitForExit();
        }

        return (ping.ExitCode, stdout.GetAwaiter().GetResult() + stderr.GetAwaiter().GetResult(), echoes);
    }

    /// <summary>A hand-built ARP reply or ICMP echo reply for <paramref name="frame"/>, or null when it needs no answer.</summary>
    private static byte[]? Answer(ReadOnlySpan<byte> frame, MacAddress ourMac, IPAddress ourIp, int expectedPayload, ref int echoes)
    {
        Span<byte> ip = stackalloc byte[4];
        Assert.True(ourIp.TryWriteBytes(ip, out _));
        ushort etherType = BinaryPrimitives.ReadUInt16BigEndian(frame[12..]);
        if (etherType == 0x0806 && frame.Length >= 42 && BinaryPrimitives.ReadUInt16BigEndian(frame[20..]) == 1 && frame.Slice(38, 4).SequenceEqual(ip))
        {
            var reply = new byte[42];
            frame[22..28].CopyTo(reply);                          // to the requester
            ourMac.Write(reply.AsSpan(6));
            BinaryPrimitives.WriteUInt16BigEndian(reply.AsSpan(12), 0x0806);
            frame.Slice(14, 6).CopyTo(reply.AsSpan(14));          // htype, ptype, hlen, plen
            BinaryPrimitives.WriteUInt16BigEndian(reply.AsSpan(20), 2);
            ourMac.Write(reply.AsSpan(22));
            ip.CopyTo(reply.AsSpan(28));
            frame.Slice(22, 10).CopyTo(reply.AsSpan(32));         // target = requester MAC + IP
            return reply;
        }

        if (etherType != 0x0800 || frame.Length < 34)
        {
            return null;
        }

        int ihl = (frame[14] & 0xF) * 4;
        int total = BinaryPrimitives.ReadUInt16BigEndian(frame[16..]);
        if (frame[23] != 1 || !frame.Slice(30, 4).SequenceEqual(ip) || frame.Length < 14 + total || frame[14 + ihl] != 8)
        {
            return null;
        }

        Assert.Equal(8 + expectedPayload, total - ihl);          // the whole echo arrived in one frame
        echoes++;
        byte[] echo = frame[..(14 + total)].ToArray();
        frame[6..12].CopyTo(echo);
        ourMac.Write(echo.AsSpan(6));
        frame.Slice(30, 4).CopyTo(echo.AsSpan(26));
        frame.Slice(26, 4).CopyTo(echo.AsSpan(30));
        echo[22] = 64;                                           // TTL
        echo[24] = echo[25] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(echo.AsSpan(24), Checksum(echo.AsSpan(14, ihl)));
        int icmp = 14 + ihl;
        echo[icmp] = 0;                                          // echo reply
        echo[icmp + 2] = echo[icmp + 3] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(echo.AsSpan(icmp + 2), Checksum(echo.AsSpan(icmp, total - ihl)));
        return echo;
    }

    private static ushort Checksum(ReadOnlySpan<byte> data)
    {
        uint sum = 0;
        for (int i = 0; i + 1 < data.Length; i += 2)
        {
            sum += BinaryPrimitives.ReadUInt16BigEndian(data[i..]);
        }

        if ((data.Length & 1) != 0)
        {
            sum += (uint)data[^1] << 8;
        }

        while (sum > 0xFFFF)
        {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }

        return (ushort)~sum;
    }

    private void CheckCapture(string path, IPAddress peer)
    {
        PcapFile file = PcapFile.Read(path);
        Assert.Equal(1u, file.LinkType);
        var packets = file.Records.Select(r => Packet.ParsePacket(LinkLayers.Ethernet, r.Data)).ToList();
        Assert.Contains(packets, p => p.Extract<ArpPacket>() is { Operation: ArpOperation.Request } a && a.TargetProtocolAddress.Equals(peer));
        Assert.Contains(packets, p => p.Extract<ArpPacket>() is { Operation: ArpOperation.Response } a && a.SenderProtocolAddress.Equals(peer));
        Assert.Equal(2, packets.Count(p => p.Extract<IcmpV4Packet>() is { TypeCode: IcmpV4TypeCode.EchoRequest }));
        Assert.Equal(2, packets.Count(p => p.Extract<IcmpV4Packet>() is { TypeCode: IcmpV4TypeCode.EchoReply }));
        Assert.Contains(packets, p => p.Extract<IcmpV4Packet>() is { TypeCode: IcmpV4TypeCode.EchoReply } e && e.Data.Length == 1400);

        if (PrivilegedTests.FindTool("tshark") is null)
        {
            Assert.False(PrivilegedTests.InCi, "CI=true but tshark is not installed (Debian package: tshark)");
            output.WriteLine("tshark not installed: the capture was checked with the built-in reader and PacketDotNet only");
            return;
        }

        (int exit, string all) = PrivilegedTests.Run("tshark", TimeSpan.FromSeconds(90), "-n", "-r", path);
        output.WriteLine(all);
        Assert.True(exit == 0, $"tshark -r failed: {all}");
        Assert.DoesNotContain("Malformed", all, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(2, all.Split('\n').Count(l => l.Contains("Echo (ping) reply", StringComparison.Ordinal)));
        (int exitMalformed, string malformed) = PrivilegedTests.Run("tshark", TimeSpan.FromSeconds(90), "-n", "-r", path, "-Y", "_ws.malformed || _ws.expert.severity >= error");
        Assert.Equal(0, exitMalformed);
        Assert.DoesNotContain(" ICMP ", malformed, StringComparison.Ordinal);
        Assert.DoesNotContain(" ARP ", malformed, StringComparison.Ordinal);
    }

    [RootFact]
    public void NameTaken_NotATap_NoCapNetAdmin_NotRoot_EachRefusedWithOneClearLine()
    {
        PrivilegedTests.RequirePrerequisites();
        string tapName = "mkt" + PrivilegedTests.RandomHex(3);
        using NetNamespace ns = NetNamespace.Create();
        ns.OnThread(() =>
        {
            using TapDevice first = TapDevice.Create(new TapOptions { Name = tapName });
            TapDeviceException busy = Assert.Throws<TapDeviceException>(() => TapDevice.Create(new TapOptions { Name = tapName }));
            Assert.Equal(16, busy.Errno);
            Assert.Equal($"TAP {tapName}: the name is taken: another process has that TAP open; pick another name or stop it.", busy.Message);

            TapDeviceException notTap = Assert.Throws<TapDeviceException>(() => TapDevice.Create(new TapOptions { Name = "lo" }));
            Assert.Equal(22, notTap.Errno);
            Assert.Contains("taken by an interface that is not a TAP device", notTap.Message, StringComparison.Ordinal);
            return 0;
        });

        // Without CAP_NET_ADMIN (dropped on this thread only): the kernel refuses TUNSETIFF with EPERM.
        TapDeviceException noCap = ns.OnThread(() =>
        {
            DropAllCapabilities();
            return Assert.Throws<TapDeviceException>(() => TapDevice.Create(new TapOptions { Name = tapName }));
        });
        output.WriteLine(noCap.Message);
        Assert.Equal(1, noCap.Errno);
        Assert.Contains("needs CAP_NET_ADMIN: run as root", noCap.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', noCap.Message);

        // As nobody (uid 65534, this thread only): /dev/net/tun itself is refused with EACCES.
        TapDeviceException notRoot = ns.OnThread(() =>
        {
            BecomeNobody();
            return Assert.Throws<TapDeviceException>(() => TapDevice.Create(new TapOptions { Name = tapName }));
        });
        output.WriteLine(notRoot.Message);
        Assert.Equal(13, notRoot.Errno);
        Assert.Equal($"TAP {tapName}: permission denied opening /dev/net/tun: run as root or with CAP_NET_ADMIN.", notRoot.Message);

        (int exit, _) = ns.Exec(CommandTimeout, "ip", "link", "show", tapName);
        Assert.True(exit != 0, "no TAP survives the failed attempts");
    }

    [RootFact]
    public void DeviceOfACrashedOwner_IsRemoved_WhenItsHandleIsFinalized()
    {
        PrivilegedTests.RequirePrerequisites();
        string tapName = "mkt" + PrivilegedTests.RandomHex(3);
        using NetNamespace ns = NetNamespace.Create();
        object? holder = null;
        WeakReference abandoned = ns.OnThread(() => Abandon(tapName, out holder));
        Assert.Equal(0, ns.Exec(CommandTimeout, "ip", "link", "show", tapName).ExitCode);
        GC.KeepAlive(holder);
        holder = null; // the owner "crashes": nothing references the driver any more

        var deadline = Stopwatch.StartNew();
        int exit = 0;
        while (exit == 0 && deadline.Elapsed < TimeSpan.FromSeconds(10))
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            exit = ns.Exec(CommandTimeout, "ip", "link", "show", tapName).ExitCode;
        }

        Assert.False(abandoned.IsAlive);
        Assert.True(exit != 0, $"{tapName} outlived its abandoned (never disposed) driver");
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference Abandon(string name, out object device)
    {
        // Created and dropped without Dispose, as a crashed domain would leave it. The strong
        // reference goes out with the namespace thread's frame; the weak one lets the test see it go.
        device = TapDevice.Create(new TapOptions { Name = name });
        return new WeakReference(device);
    }

    [Fact]
    public void MissingCloneDevice_IsRefusedWithOneClearLine()
    {
        if (!OperatingSystem.IsLinux())
        {
            Assert.Throws<PlatformNotSupportedException>(() => TapDevice.Create(new TapOptions()));
            return;
        }

        var options = new TapOptions { Name = "mk-none0", DevicePath = "/nonexistent/net/tun" };
        TapDeviceException e = Assert.Throws<TapDeviceException>(() => TapDevice.Create(options));
        Assert.Equal(2, e.Errno);
        Assert.Equal("TAP mk-none0: /nonexistent/net/tun does not exist: load the tun module (modprobe tun) or pass the device into the container (--device /dev/net/tun).", e.Message);
    }

    [Theory]
    [InlineData("", "is empty")]
    [InlineData("a-name-too-long0", "longer than 15 bytes")]
    [InlineData("a/b", "is invalid")]
    [InlineData("tap 0", "is invalid")]
    [InlineData("tap%d", "is invalid")]
    [InlineData("..", "is invalid")]
    public void InvalidNames_AreRefusedBeforeAnySystemCall(string name, string reason)
    {
        ArgumentException e = Assert.Throws<ArgumentException>(() => new TapOptions { Name = name });
        Assert.Contains(reason, e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("10.0.0.1")]
    [InlineData("10.0.0.1/33")]
    [InlineData("fe80::1/64")]
    [InlineData("banana/24")]
    public void InvalidHostAddresses_AreRefused(string cidr) =>
        Assert.Throws<ArgumentException>(() => new TapOptions { HostAddress = cidr });

    [Theory]
    [InlineData(1, "needs CAP_NET_ADMIN")]
    [InlineData(16, "the name is taken")]
    [InlineData(22, "the name is invalid or taken by an interface that is not a TAP device")]
    [InlineData(95, "TUNSETIFF failed")]
    public void TunSetIffErrors_MapToOneLine(int errno, string text)
    {
        TapDeviceException e = TapDevice.SetIffError(errno, "mk0");
        Assert.Contains(text, e.Message, StringComparison.Ordinal);
        Assert.StartsWith("TAP mk0: ", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Equal(errno, e.Errno);
    }

    private static int RandomNumberGeneratorInt(int max) => System.Security.Cryptography.RandomNumberGenerator.GetInt32(max);

    private static unsafe void DropAllCapabilities()
    {
        // capset(2) on the calling thread only (glibc's wrapper does not broadcast to other threads).
        uint* header = stackalloc uint[2] { 0x20080522, 0 }; // _LINUX_CAPABILITY_VERSION_3, this thread
        uint* data = stackalloc uint[6];                      // effective, permitted, inheritable x 2: all zero
        Assert.True(capset(header, data) == 0, $"capset failed: {Marshal.GetLastPInvokeErrorMessage()}");
    }

    private static void BecomeNobody()
    {
        // The raw system call changes this thread's credentials only (glibc's setresuid would change every thread's).
        long number = RuntimeInformation.ProcessArchitecture switch
        {
            System.Runtime.InteropServices.Architecture.X64 => 117,
            System.Runtime.InteropServices.Architecture.Arm64 => 147,
            _ => throw new PlatformNotSupportedException($"no setresuid syscall number for {RuntimeInformation.ProcessArchitecture}"),
        };
        Assert.True(syscall(number, 65534, 65534, 65534) == 0, $"setresuid failed: {Marshal.GetLastPInvokeErrorMessage()}");
    }

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int capset(uint* header, uint* data);

    [LibraryImport("libc", SetLastError = true)]
    private static partial long syscall(long number, long a, long b, long c);
}
