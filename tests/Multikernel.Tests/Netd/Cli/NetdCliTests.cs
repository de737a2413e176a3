using Multikernel.Tests.Cli;

namespace Multikernel.Tests.Netd.Cli;

/// <summary>
/// netd's options of <c>multikernel run</c> (<c>--nic</c>, <c>--host-ip</c>, <c>--netd-ip</c>,
/// <c>--netd-core</c>, <c>--pcap</c>) and the same keys from configuration
/// (<c>Multikernel:Netd</c>, here through <c>MULTIKERNEL__NETD__*</c>, bound like appsettings.json):
/// every bad value is one line on stderr and exit code 2; good ones start netd.
/// </summary>
public sealed class NetdCliTests
{
    [Theory]
    [InlineData("run --nic banana", "--nic must be 'memory' or 'tap:NAME' with a name of 1 to 15 characters (got 'banana').")]
    [InlineData("run --nic tap:", "--nic must be 'memory' or 'tap:NAME'")]
    [InlineData("run --host-ip 10.0.0.1", "--host-ip must be an IPv4 address with a prefix length between 1 and 30, such as 10.77.0.1/24 (got '10.0.0.1').")]
    [InlineData("run --netd-ip 10.0.0", "--netd-ip must be an IPv4 address such as 10.77.0.254 (got '10.0.0').")]
    [InlineData("run --netd-core -2", "--netd-core must be -1 (the last core) or a core number (got -2).")]
    public async Task BadNetdOptions_AreOneClearLine_ExitCode2(string arguments, string expected)
    {
        var (code, _, err) = await CliProcess.RunAsync(arguments + " --duration 1");
        Assert.Equal(2, code);
        Assert.Contains($"multikernel: {expected}", err, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", err, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("run --cores 2 --netd-core 5", null, null, "Netd:Core must be -1 (the last core) or a core between 0 and 1 (got 5).")]
    [InlineData("run --cores 2 --nic memory --host-ip 10.0.0.1/24", null, null, "Netd:HostIp ('10.0.0.1/24') is the TAP device's Linux-side address: it needs --nic tap:NAME (Netd:Nic is 'memory').")]
    [InlineData("run --cores 2 --nic tap:a%b", null, null, "--nic: TAP interface name 'a%b' is invalid")]
    [InlineData("run --cores 2 --nic tap:mk0 --host-ip 10.0.0.1/24 --netd-ip 10.0.0.1", null, null, "Netd:NetdIp (10.0.0.1) must differ from the host side's address (10.0.0.1/24).")]
    [InlineData("run --cores 2 --pcap /missing/dir/x.pcap", null, null, "Cannot create the capture file '/missing/dir/x.pcap': the directory '/missing/dir' does not exist.")]
    [InlineData("run --cores 2", "MULTIKERNEL__NETD__NIC", "tap", "--nic must be 'memory' or 'tap:NAME' with a name of 1 to 15 characters (got 'tap').")]
    [InlineData("run --cores 2", "MULTIKERNEL__NETD__NETDIP", "banana", "Netd:NetdIp must be an IPv4 address such as 10.77.0.254 (got 'banana').")]
    [InlineData("run --cores 2", "MULTIKERNEL__NETD__RXBURST", "0", "Netd:RxBurst must be between 1 and 1024 (got 0).")]
    [InlineData("run --cores 2", "MULTIKERNEL__NETD__CORE", "first", "Failed to convert configuration value 'first'")]
    public async Task InvalidNetdConfiguration_IsOneLineOnStderr_ExitCode2_NothingOnStdout(string arguments, string? variable, string? value, string expected)
    {
        var environment = new Dictionary<string, string>();
        if (variable is not null)
        {
            environment[variable] = value!;
        }

        var (code, stdout, err) = await CliProcess.RunAsync(arguments + " --duration 1", environment);
        Assert.Equal(2, code);
        string line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        Assert.StartsWith("multikernel: ", line, StringComparison.Ordinal);
        Assert.Contains(expected, line, StringComparison.Ordinal);
        Assert.Equal(string.Empty, stdout.Trim());
    }

    [Fact]
    public async Task ACaptureFileNetdCannotCreate_IsOneLine_ExitCode2_NoStackTrace()
    {
        // The directory exists, so the check before boot passes; netd's own open fails on its core.
        var (code, stdout, err) = await CliProcess.RunAsync("run --cores 2 --pcap /proc/mk-netd.pcap --duration 1");
        Assert.Equal(2, code);
        string line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        Assert.StartsWith("multikernel: netd cannot create the capture file '/proc/mk-netd.pcap': ", line, StringComparison.Ordinal);
        Assert.DoesNotContain("Exception", stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_WithTheMemoryNic_StartsNetd_FromOptionsAndFromConfiguration()
    {
        var (code, stdout, err) = await CliProcess.RunAsync("run --cores 2 --nic memory --netd-ip 10.9.0.9 --netd-core 0 --duration 1");
        Assert.True(code == 0, err);
        Assert.Contains("netd: netd (memory), address 10.9.0.9, MAC ", stdout, StringComparison.Ordinal);

        // The section alone (no netd option) starts netd with its values; the command line wins over it.
        (code, stdout, err) = await CliProcess.RunAsync("run --cores 2 --duration 1", new Dictionary<string, string> { ["MULTIKERNEL__NETD__NETDIP"] = "10.9.0.7" });
        Assert.True(code == 0, err);
        Assert.Contains("netd: netd (memory), address 10.9.0.7, MAC ", stdout, StringComparison.Ordinal);
        (code, stdout, err) = await CliProcess.RunAsync("run --cores 2 --netd-ip 10.9.0.8 --duration 1", new Dictionary<string, string> { ["MULTIKERNEL__NETD__NETDIP"] = "10.9.0.7" });
        Assert.True(code == 0, err);
        Assert.Contains("address 10.9.0.8,", stdout, StringComparison.Ordinal);

        // Without the section there is no netd.
        (code, stdout, err) = await CliProcess.RunAsync("run --cores 2 --duration 1");
        Assert.True(code == 0, err);
        Assert.DoesNotContain("netd:", stdout, StringComparison.Ordinal);
    }
}
