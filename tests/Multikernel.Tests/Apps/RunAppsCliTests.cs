using static Multikernel.Tests.Cli.CliProcess;

namespace Multikernel.Tests.Apps;

/// <summary><c>multikernel run --app NAME@CORE:IP:PORT</c>: bad values stop start-up with one clear line; good ones boot and stop cleanly.</summary>
public sealed class RunAppsCliTests
{
    [Theory]
    [InlineData("run --cores 2 --app echo", "--app 'echo' is malformed: expected NAME@CORE:IP:PORT")]
    [InlineData("run --cores 2 --app echo@1:10.77.0.4", "--app 'echo@1:10.77.0.4' is malformed")]
    [InlineData("run --cores 2 --app gopher@1:10.77.0.4:70", "unknown application 'gopher' (known: echo, discard, http, kv)")]
    [InlineData("run --cores 2 --app echo@5:10.77.0.4:7", "core 5 is out of range (the machine has 2 cores: 0..1)")]
    [InlineData("run --cores 2 --app echo@x:10.77.0.4:7", "the core must be a number (got 'x')")]
    [InlineData("run --cores 2 --app echo@1:10.77.0.400:7", "'10.77.0.400' is not a unicast IPv4 address")]
    [InlineData("run --cores 2 --app echo@1:10.77.0.4:0", "the port must be 1..65535 (got '0')")]
    [InlineData("run --cores 2 --app echo@0:10.77.0.4:7 --app kv@1:10.77.0.4:6379", "address 10.77.0.4 is already used by echo@0")]
    [InlineData("run --cores 2 --app echo@0:10.77.0.254:7", "is netd's own address")]
    [InlineData("run --cores 2 --app http@0:10.77.0.3:80 --http-root /nonexistent/dir", "--http-root '/nonexistent/dir' is not a directory")]
    public async Task BadApps_StopWithOneClearLine_AndExitCode2(string arguments, string expected)
    {
        var (code, stdout, err) = await RunAsync(arguments);
        Assert.Equal(2, code);
        Assert.Contains(expected, err, StringComparison.Ordinal);
        Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.DoesNotContain("   at ", err, StringComparison.Ordinal);
        Assert.Equal(string.Empty, stdout);
    }

    [Fact]
    public async Task AppsFromConfiguration_AreCheckedTheSameWay()
    {
        var (code, _, err) = await RunAsync("run --cores 2", new Dictionary<string, string> { ["MULTIKERNEL__Apps__0"] = "kv@9:10.77.0.3:6379" });
        Assert.Equal(2, code);
        Assert.Contains("--app 'kv@9:10.77.0.3:6379': core 9 is out of range", err, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Apps_WithADomainMemoryTooSmallForTheirNetdRegion_StopWithOneClearLine()
    {
        var (code, stdout, err) = await RunAsync("run --cores 2 --app discard@0:10.77.0.4:9", new Dictionary<string, string> { ["MULTIKERNEL__DomainMemory"] = "1MiB" });
        Assert.Equal(2, code);
        Assert.Contains("--app: each application's domain needs DomainMemory of at least", err, StringComparison.Ordinal);
        Assert.Contains("Multikernel:DomainMemory is 1MiB", err, StringComparison.Ordinal);
        Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Equal(string.Empty, stdout);
    }

    [Fact]
    public async Task Run_WithEchoHttpAndKv_BootsServesAndStopsCleanly()
    {
        var (code, stdout, err) = await RunAsync("run --cores 2 --duration 3 --app echo@0:10.77.0.2:7 --app http@1:10.77.0.3:80 --app kv@1:10.77.0.4:6379");
        Assert.True(code == 0, $"exit {code}: {err}{stdout}");
        Assert.DoesNotContain("fail", err, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("Exception", err + stdout, StringComparison.Ordinal);
    }
}
