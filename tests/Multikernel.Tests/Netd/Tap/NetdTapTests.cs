using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using Multikernel.Netd.Drivers.Tap;
using Multikernel.Tests.Netd.Drivers;
using PacketDotNet;
using Xunit.Abstractions;

namespace Multikernel.Tests.Netd.Tap;

/// <summary>
/// netd on a real TAP device, through the <c>multikernel</c> command as a user runs it, inside a
/// network namespace each test creates and deletes (<c>ip netns exec</c> puts the whole process
/// there, so the device, the pings and every frame stay inside it). As root; outside CI without
/// root or the tools these are skipped with the reason, in CI they always run.
/// </summary>
public sealed class NetdTapTests(ITestOutputHelper output)
{
    private static readonly TimeSpan CommandTimeout = TimeSpan.FromSeconds(20);

    private static string Dll => Path.Combine(AppContext.BaseDirectory, "multikernel.dll");

    private static string Dotnet => PrivilegedTests.FindTool("dotnet") ?? "dotnet";

    [RootFact]
    public async Task Netd_OnTap_AnswersPing_56And1400Bytes_PcapIsCleanBothWays_DeviceGoneAfterwards()
    {
        PrivilegedTests.RequirePrerequisites();
        string tap = "mkn" + PrivilegedTests.RandomHex(3);
        int subnet = 1 + System.Security.Cryptography.RandomNumberGenerator.GetInt32(250);
        string hostIp = $"10.214.{subnet}.1";
        string netdIp = $"10.214.{subnet}.2";
        string pcap = Path.Combine(Path.GetTempPath(), $"mk-netd-{PrivilegedTests.RandomHex(4)}.pcap");
        using NetNamespace ns = NetNamespace.Create();
        CliRun? run = null;
        try
        {
            run = CliRun.Start(ns, $"run --cores 2 --nic tap:{tap} --host-ip {hostIp}/24 --netd-ip {netdIp} --pcap {pcap} --duration 120");
            string ready = await run.WaitForLineAsync("netd: ", TimeSpan.FromSeconds(60));
            Assert.Contains($"netd: {tap} (tap:{tap}, host {hostIp}/24), address {netdIp}", ready, StringComparison.Ordinal);

            // The device exists in the test's namespace only, up, with the host address netd set.
            (int exit, string addr) = ns.Exec(CommandTimeout, "ip", "-o", "addr", "show", "dev", tap);
            Assert.True(exit == 0, addr);
            Assert.Contains($"inet {hostIp}/24", addr, StringComparison.Ordinal);
            Assert.NotEqual(0, PrivilegedTests.Run("ip", CommandTimeout, "link", "show", tap).ExitCode);

            foreach (int size in new[] { 56, 1400 })
            {
                (int pingExit, string ping) = ns.Exec(CommandTimeout, "ping", "-c", "3", "-i", "0.2", "-W", "3", "-s", size.ToString(CultureInfo.InvariantCulture), netdIp);
                output.WriteLine(ping);
                Assert.True(pingExit == 0, $"ping -s {size} {netdIp} failed: {ping}\n{run.Output}");
                Assert.Contains("3 received", ping, StringComparison.Ordinal);
                Assert.Contains($"{size + 8} bytes from {netdIp}", ping, StringComparison.Ordinal);
            }

            int code = await run.StopAsync();
            output.WriteLine(run.Output);
            Assert.Equal(0, code);
            (int showExit, string gone) = ns.Exec(CommandTimeout, "ip", "link", "show", tap);
            Assert.True(showExit != 0, $"{tap} still exists after netd stopped: {gone}");

            CheckCapture(pcap, IPAddress.Parse(hostIp), IPAddress.Parse(netdIp));
        }
        finally
        {
            run?.Dispose();
            File.Delete(pcap);
        }
    }

    [RootFact]
    public async Task Netd_OnTap_DeviceIsRemoved_WhenTheProcessIsKilled()
    {
        PrivilegedTests.RequirePrerequisites();
        string tap = "mkn" + PrivilegedTests.RandomHex(3);
        using NetNamespace ns = NetNamespace.Create();
        CliRun? run = null;
        try
        {
            run = CliRun.Start(ns, $"run --cores 2 --nic tap:{tap} --host-ip 10.215.0.1/24 --netd-ip 10.215.0.2 --duration 120");
            await run.WaitForLineAsync("netd: ", TimeSpan.FromSeconds(60));
            Assert.Equal(0, ns.Exec(CommandTimeout, "ip", "link", "show", tap).ExitCode);

            // No shutdown at all: the kernel closes the descriptor and removes the device.
            run.Process.Kill();
            await run.Process.WaitForExitAsync().WaitAsync(CommandTimeout);
            await Eventually(() => ns.Exec(CommandTimeout, "ip", "link", "show", tap).ExitCode != 0, $"{tap} outlived its killed process");
        }
        finally
        {
            run?.Dispose();
        }
    }

    [RootFact]
    public async Task Netd_OnTap_TheDeviceDeletedFromOutside_LeavesItsCoreAsleep_AndTheRunStopsCleanly()
    {
        PrivilegedTests.RequirePrerequisites();
        string tap = "mkn" + PrivilegedTests.RandomHex(3);
        using NetNamespace ns = NetNamespace.Create();
        CliRun? run = null;
        try
        {
            run = CliRun.Start(ns, $"run --cores 2 --nic tap:{tap} --host-ip 10.216.0.1/24 --netd-ip 10.216.0.2 --duration 120");
            await run.WaitForLineAsync("netd: ", TimeSpan.FromSeconds(60));
            await Task.Delay(TimeSpan.FromSeconds(2)); // let start-up work (JIT, boot) settle

            // Deleted under netd's feet: the detached descriptor reports an error to epoll forever;
            // a core still watching it would spin instead of sleeping.
            Assert.Equal(0, ns.Exec(CommandTimeout, "ip", "link", "del", tap).ExitCode);
            await Task.Delay(TimeSpan.FromSeconds(1));
            double before = CpuSeconds(run.Process.Id);
            await Task.Delay(TimeSpan.FromSeconds(3));
            double used = CpuSeconds(run.Process.Id) - before;
            output.WriteLine($"CPU over 3 s after the delete: {used:F2} s");
            Assert.True(used < 1.0, $"the process burned {used:F2} s of CPU in 3 s after its TAP was deleted (a core spinning on the dead descriptor)");

            Assert.Equal(0, await run.StopAsync());
        }
        finally
        {
            run?.Dispose();
        }
    }

    // utime + stime of the whole process from /proc/PID/stat (clock ticks of 1/100 s on Linux).
    private static double CpuSeconds(int pid)
    {
        string stat = File.ReadAllText($"/proc/{pid}/stat");
        string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return (long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture)) / 100.0;
    }

    [RootFact]
    public async Task Run_WithTap_NotRoot_NoCapNetAdmin_NameTaken_NoCloneDevice_EachRefusedWithOneClearLine_ExitCode2()
    {
        PrivilegedTests.RequirePrerequisites();
        string tap = "mkn" + PrivilegedTests.RandomHex(3);
        using NetNamespace ns = NetNamespace.Create();
        string[] run = [Dotnet, Dll, "run", "--cores", "1", "--nic", $"tap:{tap}", "--duration", "5"];

        // Not root: uid/gid 65534 without supplementary groups or capabilities.
        Assert.NotNull(PrivilegedTests.FindTool("setpriv"));
        (int exit, string stdout, string stderr) = await RunAsync(ns, ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "--inh-caps=-all", "--", "env", "HOME=/tmp", "DOTNET_CLI_HOME=/tmp", .. run]);
        output.WriteLine(stderr);
        Assert.Equal(2, exit);
        string line = Assert.Single(Lines(stderr));
        Assert.StartsWith($"multikernel: TAP {tap}: ", line, StringComparison.Ordinal);
        Assert.Contains("CAP_NET_ADMIN", line, StringComparison.Ordinal);
        Assert.DoesNotContain("Exception", stdout, StringComparison.Ordinal);

        // Root without CAP_NET_ADMIN (dropped from the bounding set): /dev/net/tun opens, TUNSETIFF is refused.
        (exit, stdout, stderr) = await RunAsync(ns, ["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin", "--", .. run]);
        output.WriteLine(stderr);
        Assert.Equal(2, exit);
        Assert.Equal($"multikernel: TAP {tap}: creating a TAP device needs CAP_NET_ADMIN: run as root (or grant the capability, e.g. setcap cap_net_admin+ep).", Assert.Single(Lines(stderr)));

        // The name taken: this test holds the TAP open in the namespace.
        using (TapDevice holder = ns.OnThread(() => TapDevice.Create(new TapOptions { Name = tap })))
        {
            (exit, stdout, stderr) = await RunAsync(ns, run);
            output.WriteLine(stderr);
            Assert.Equal(2, exit);
            Assert.Equal($"multikernel: TAP {tap}: the name is taken: another process has that TAP open; pick another name or stop it.", Assert.Single(Lines(stderr)));
            Assert.DoesNotContain("Exception", stdout, StringComparison.Ordinal);
        }

        // No /dev/net/tun: a private mount namespace hides /dev/net under an empty tmpfs.
        Assert.NotNull(PrivilegedTests.FindTool("unshare"));
        string script = "mount -t tmpfs tmpfs /dev/net && exec \"$@\"";
        (exit, stdout, stderr) = await RunAsync(ns, ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", .. run]);
        output.WriteLine(stderr);
        Assert.Equal(2, exit);
        Assert.Equal($"multikernel: TAP {tap}: /dev/net/tun does not exist: load the tun module (modprobe tun) or pass the device into the container (--device /dev/net/tun).", Assert.Single(Lines(stderr)));

        Assert.NotEqual(0, ns.Exec(CommandTimeout, "ip", "link", "show", tap).ExitCode);
    }

    private static string[] Lines(string text) => text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    private static async Task<(int ExitCode, string Out, string Err)> RunAsync(NetNamespace ns, string[] command)
    {
        using Process process = ns.Start(command);
        try
        {
            Task<string> stdout = process.StandardOutput.ReadToEndAsync();
            Task<string> stderr = process.StandardError.ReadToEndAsync();
            await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(90));
            return (process.ExitCode, await stdout, await stderr);
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }
    }

    private void CheckCapture(string path, IPAddress host, IPAddress netd)
    {
        PcapFile file = PcapFile.Read(path);
        Assert.Equal(1u, file.LinkType);
        var packets = file.Records.Select(r => Packet.ParsePacket(LinkLayers.Ethernet, r.Data)).ToList();
        Assert.Contains(packets, p => p.Extract<ArpPacket>() is { Operation: ArpOperation.Request } a && a.TargetProtocolAddress.Equals(netd));
        Assert.Contains(packets, p => p.Extract<ArpPacket>() is { Operation: ArpOperation.Response } a && a.SenderProtocolAddress.Equals(netd));
        var requests = packets.Where(p => p.Extract<IcmpV4Packet>() is { TypeCode: IcmpV4TypeCode.EchoRequest } && p.Extract<IPv4Packet>().SourceAddress.Equals(host)).ToList();
        var replies = packets.Where(p => p.Extract<IcmpV4Packet>() is { TypeCode: IcmpV4TypeCode.EchoReply } && p.Extract<IPv4Packet>().SourceAddress.Equals(netd)).ToList();
        Assert.Equal(6, requests.Count);
        Assert.Equal(6, replies.Count);
        Assert.Equal(3, replies.Count(p => p.Extract<IcmpV4Packet>().Data.Length == 1400));

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
        Assert.Equal(6, all.Split('\n').Count(l => l.Contains("Echo (ping) request", StringComparison.Ordinal)));
        Assert.Equal(6, all.Split('\n').Count(l => l.Contains("Echo (ping) reply", StringComparison.Ordinal)));
        (int exitMalformed, string malformed) = PrivilegedTests.Run("tshark", TimeSpan.FromSeconds(90), "-n", "-r", path, "-Y", "_ws.malformed || _ws.expert.severity >= error");
        Assert.Equal(0, exitMalformed);
        Assert.DoesNotContain(" ICMP ", malformed, StringComparison.Ordinal);
        Assert.DoesNotContain(" ARP ", malformed, StringComparison.Ordinal);
    }

    private static async Task Eventually(Func<bool> condition, string what)
    {
        var deadline = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(deadline.Elapsed < TimeSpan.FromSeconds(15), what);
            await Task.Delay(100);
        }
    }

    /// <summary>The <c>multikernel</c> command running inside a namespace, its output collected line by line.</summary>
    private sealed class CliRun : IDisposable
    {
        private readonly StringBuilder _output = new();
        private readonly List<(string Prefix, TaskCompletionSource<string> Line)> _waiting = [];

        private CliRun(Process process) => Process = process;

        public Process Process { get; }

        public string Output
        {
            get
            {
                lock (_output)
                {
                    return _output.ToString();
                }
            }
        }

        public static CliRun Start(NetNamespace ns, string arguments)
        {
            var run = new CliRun(ns.Start([Dotnet, Dll, .. arguments.Split(' ')]));
            run.Process.OutputDataReceived += run.OnLine;
            run.Process.ErrorDataReceived += run.OnLine;
            run.Process.BeginOutputReadLine();
            run.Process.BeginErrorReadLine();
            return run;
        }

        public async Task<string> WaitForLineAsync(string prefix, TimeSpan timeout)
        {
            var line = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
            lock (_output)
            {
                string? seen = _output.ToString().Split('\n').FirstOrDefault(l => l.StartsWith(prefix, StringComparison.Ordinal));
                if (seen is not null)
                {
                    return seen.TrimEnd('\r');
                }

                _waiting.Add((prefix, line));
            }

            Task exited = Process.WaitForExitAsync();
            Task first = await Task.WhenAny(line.Task, exited).WaitAsync(timeout);
            Assert.True(first == line.Task, $"multikernel exited before printing '{prefix}':\n{Output}");
            return await line.Task;
        }

        /// <summary>SIGTERM, as a service manager stops it; returns the exit code.</summary>
        public async Task<int> StopAsync()
        {
            using (Process kill = System.Diagnostics.Process.Start("kill", $"-TERM {Process.Id}"))
            {
                await kill.WaitForExitAsync();
            }

            await Process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
            return Process.ExitCode;
        }

        public void Dispose()
        {
            if (!Process.HasExited)
            {
                Process.Kill(entireProcessTree: true);
                Process.WaitForExit();
            }

            Process.Dispose();
        }

        private void OnLine(object sender, DataReceivedEventArgs e)
        {
            if (e.Data is null)
            {
                return;
            }

            lock (_output)
            {
                _output.AppendLine(e.Data);
                foreach ((string prefix, TaskCompletionSource<string> line) in _waiting)
                {
                    if (e.Data.StartsWith(prefix, StringComparison.Ordinal))
                    {
                        line.TrySetResult(e.Data);
                    }
                }
            }
        }
    }
}
