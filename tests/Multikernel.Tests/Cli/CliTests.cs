using System.Diagnostics;
using Microsoft.Extensions.Configuration;
using Multikernel.CpuDriver.Kernel;
using Multikernel.Monitor.Hosting;

namespace Multikernel.Tests.Cli;

/// <summary>The `multikernel` command as a user runs it: a real process, real exit codes.</summary>
public sealed class CliTests
{
    private static Task<(int ExitCode, string Out, string Err)> RunAsync(string arguments, IDictionary<string, string>? environment = null, string? directory = null) =>
        CliProcess.RunAsync(arguments, environment, directory);

    [Theory]
    [InlineData("run --cores 0", "--cores must be a positive whole number or 'auto' (got '0')")]
    [InlineData("run --cores banana", "--cores must be a positive whole number or 'auto' (got 'banana')")]
    [InlineData("run --cores 100000", "more than the configured maximum of 64")]
    [InlineData("run --duration -3", "--duration must be a positive number of seconds")]
    [InlineData("run --duration soon", "Cannot parse argument 'soon'")]
    [InlineData("demo --seconds 0", "--seconds must be between 0 and 3600")]
    [InlineData("launch", "Unrecognized command or argument 'launch'")]
    [InlineData("run --memory lots", "--memory must be a size such as 256MiB")]
    [InlineData("bench shootdown --cores 0,2", "--cores must be a comma-separated list")]
    [InlineData("bench urpc --ring-slots 100", "RingSlots")]
    [InlineData("bench urpc --cpus 1,1", "--cpus must be two different CPU numbers")]
    public async Task InvalidOptions_StopWithOneClearLine_AndExitCode2(string arguments, string expected)
    {
        var (code, _, err) = await RunAsync(arguments);
        Assert.Equal(2, code);
        Assert.Contains(expected, err, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", err, StringComparison.Ordinal); // never a stack trace
    }

    [Theory]
    [InlineData("MULTIKERNEL__RingSlots", "100", "RingSlots must be a power of two")]
    [InlineData("MULTIKERNEL__ChannelWindow", "lots", "Failed to convert configuration value 'lots'")]
    [InlineData("MULTIKERNEL__MaxCores", "2", "more than the configured maximum of 2")]
    public async Task InvalidEnvironmentOptions_AreReportedTheSameWay(string variable, string value, string expected)
    {
        var (code, _, err) = await RunAsync("run --cores 3 --duration 1", new Dictionary<string, string> { [variable] = value });
        Assert.Equal(2, code);
        Assert.Contains(expected, err, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", err, StringComparison.Ordinal);
    }

    // Issue 8, "Errors users hit today": each is one line on stderr, exit code 2, and nothing on
    // stdout before it (no host failure log, no trace).
    [Theory]
    [InlineData("run --duration 1 --memory 64TiB", null, null, "--memory 64TiB is more than")]
    [InlineData("run --duration 1 --memory 1000GiB", null, null, "more than this machine has")]
    [InlineData("run --duration 1", "MULTIKERNEL__Telemetry__SamplingRatio", "5", "Telemetry:SamplingRatio must be between 0 and 1 (got 5).")]
    [InlineData("run --duration 1", "MULTIKERNEL__Telemetry__TraceFileMaxEvents", "3", "Telemetry:TraceFileMaxEvents must be at least 16 (got 3).")]
    [InlineData("run --duration 1", "OTEL_TRACES_SAMPLER", "banana", "OTEL_TRACES_SAMPLER 'banana' is not supported")]
    [InlineData("run --duration 1", "OTEL_EXPORTER_OTLP_ENDPOINT", "not-a-url", "OTEL_EXPORTER_OTLP_ENDPOINT 'not-a-url' is not an absolute http:// or https:// URL.")]
    [InlineData("run --duration 1 --trace-file /missing/dir/x.json", null, null, "Cannot create the trace file '/missing/dir/x.json': the directory '/missing/dir' does not exist.")]
    [InlineData("demo --seconds 1 --trace-file /missing/dir/x.json", null, null, "the directory '/missing/dir' does not exist.")]
    [InlineData("run --duration 1", "MULTIKERNEL__MaxWaitersPerEndpoint", "0", "MaxWaitersPerEndpoint must be between 1 and 1024 (got 0).")]
    public async Task StartupErrors_AreOneLineOnStderr_ExitCode2_AndNothingOnStdout(string arguments, string? variable, string? value, string expected)
    {
        var environment = new Dictionary<string, string>();
        if (variable is not null)
        {
            environment[variable] = value!;
        }

        var (code, output, err) = await RunAsync(arguments, environment);
        Assert.True(code == 2, $"exit {code}: {err}");
        string[] lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("multikernel: ", lines[0], StringComparison.Ordinal);
        Assert.Contains(expected, lines[0], StringComparison.Ordinal);
        Assert.Equal(string.Empty, output);
    }

    [Fact]
    public async Task Demo_WithACappedTraceFile_WarnsAndSaysHowManySpansWereDropped()
    {
        string path = Path.Combine(Path.GetTempPath(), $"capped-{Guid.NewGuid():N}.json");
        try
        {
            var (code, output, err) = await RunAsync($"demo --cores 2 --seconds 1 --trace-file {path}", new Dictionary<string, string> { ["MULTIKERNEL__Telemetry__TraceFileMaxEvents"] = "16" });
            string all = output + err;
            Assert.True(code == 0, all);
            System.Text.RegularExpressions.Match warning = System.Text.RegularExpressions.Regex.Match(all, @"warn: .*reached its cap of 16 events: (\d+) spans were dropped");
            Assert.True(warning.Success, all);
            Assert.True(long.Parse(warning.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) > 0);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public async Task MalformedAppSettings_IsOneLineNamingTheFile_ExitCode2()
    {
        // A copy of the command with its own broken appsettings.json beside the binary.
        string directory = Path.Combine(Path.GetTempPath(), "multikernel-cli-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(directory);
        try
        {
            foreach (string file in Directory.EnumerateFiles(AppContext.BaseDirectory))
            {
                File.Copy(file, Path.Combine(directory, Path.GetFileName(file)));
            }

            string settings = Path.Combine(directory, "appsettings.json");
            File.WriteAllText(settings, "{ \"Multikernel\": { \"Cores\": ");
            var (code, output, err) = await RunAsync("run --duration 1", directory: directory);
            Assert.True(code == 2, $"exit {code}: {err}");
            string line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            Assert.Contains($"Failed to load configuration from file '{settings}' (malformed JSON:", line, StringComparison.Ordinal);
            Assert.Equal(string.Empty, output);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task Run_ForADuration_BootsAndShutsDownGracefully()
    {
        var (code, output, err) = await RunAsync("run --cores 3 --duration 1");
        string all = output + err;
        Assert.True(code == 0, all);
        Assert.Contains("All 3 cores booted", all, StringComparison.Ordinal);
        if (Environment.ProcessorCount < 3)
        {
            Assert.Contains("oversubscribed", all, StringComparison.Ordinal); // 3 kernels on fewer CPUs: warned
        }
        Assert.Contains("All cores halted", all, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_WithStatsAndSeveralApps_ShowsTheTables_AndExitsCleanly()
    {
        // Several applications bind channels of the same name on the same core ("netd"): the meter's
        // table must add them up, not die on a duplicate key (it did, on the first refresh).
        var (code, output, err) = await RunAsync("run --cores 2 --duration 3 --stats --app echo@0:10.77.0.2:7 --app http@0:10.77.0.3:8080 --app kv@1:10.77.0.4:6379");
        string all = output + err;
        Assert.True(code == 0, all);
        Assert.DoesNotContain("Unhandled exception", all, StringComparison.Ordinal);
        Assert.Contains("busiest channels", all, StringComparison.Ordinal);
        Assert.Contains("All cores halted", all, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Demo_PrintsThePerCoreSummaryAndTheMatrix()
    {
        var (code, output, err) = await RunAsync("demo --cores 2 --seconds 1");
        Assert.True(code == 0, output + err);
        Assert.Contains("per core", output, StringComparison.Ordinal);
        Assert.Contains("messages/s from core (row) to core (column); in brackets: stalls on a full ring / waits for a channel's credits", output, StringComparison.Ordinal);
        Assert.Contains("token ring:", output, StringComparison.Ordinal);
        Assert.DoesNotContain("token ring: 0 laps", output, StringComparison.Ordinal);
        Assert.Contains("read in place on 1 of 1 other cores", output, StringComparison.Ordinal);
        Assert.Contains("(1 of 1 holders now get CapabilityRevokedException)", output, StringComparison.Ordinal);

        // The network half: http and kv on their own stacks answered the built-in load generator
        // through netd (between local stacks, no device), with no errors.
        foreach (string app in new[] { "http", "kv" })
        {
            System.Text.RegularExpressions.Match row = System.Text.RegularExpressions.Regex.Match(output, $@"│ {app} +│[^│]+│ ([\d,]+) +│[^│]+│[^│]+│[^│]+│ (\d+) +│");
            Assert.True(row.Success, output);
            Assert.True(long.Parse(row.Groups[1].Value, System.Globalization.NumberStyles.AllowThousands, System.Globalization.CultureInfo.InvariantCulture) > 0, $"{app} answered no requests:\n{output}");
            Assert.Equal("0", row.Groups[2].Value);
        }

        Assert.DoesNotContain("network load:", output, StringComparison.Ordinal);
        Assert.Contains("between local stacks", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Demo_WithATraceFile_WritesPerfettoJson_OneTrackPerCore_WithFlowArrows()
    {
        string path = Path.Combine(Path.GetTempPath(), $"mk-demo-{Guid.NewGuid():N}.json");
        try
        {
            var (code, output, err) = await RunAsync($"demo --cores 3 --seconds 1 --trace-file {path}");
            Assert.True(code == 0, output + err);
            using var document = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(path));
            var events = document.RootElement.EnumerateArray().ToList();
            var tracks = events
                .Where(e => e.GetProperty("ph").GetString() == "M" && e.GetProperty("name").GetString() == "thread_name")
                .Select(e => e.GetProperty("args").GetProperty("name").GetString())
                .ToHashSet();
            Assert.Superset(new HashSet<string?> { "core 0", "core 1", "core 2" }, tracks);
            Assert.Contains(events, e => e.GetProperty("ph").GetString() == "s");
            Assert.Contains(events, e => e.GetProperty("ph").GetString() == "f");
            Assert.Contains(events, e => e.GetProperty("name").GetString() == "bind");
            Assert.Contains(events, e => e.GetProperty("name").GetString() == "send core/2");
            Assert.Contains(events, e => e.GetProperty("name").GetString() == "process core/2");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public async Task BenchShootdown_WritesOnePointPerProtocolAndCoreCount()
    {
        string path = Path.Combine(Path.GetTempPath(), $"mk-sd-{Guid.NewGuid():N}.json");
        try
        {
            var (code, output, err) = await RunAsync($"bench shootdown --cores 1,3 --iterations 5 --json {path}");
            Assert.True(code == 0, output + err);
            using var document = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(path));
            var points = document.RootElement.EnumerateArray()
                .Select(e => (e.GetProperty("protocol").GetString(), e.GetProperty("cores").GetInt32(), e.GetProperty("latency_ns").GetDouble(), e.GetProperty("oversubscribed").GetBoolean()))
                .ToList();
            Assert.Equal(6, points.Count);
            Assert.Equal(["multicast", "shared-memory", "unicast"], points.Select(p => p.Item1).Distinct().Order());
            Assert.All(points, p => Assert.True(p.Item3 >= 0));
            Assert.All(points.Where(p => p.Item2 == 3), p => Assert.Equal(Environment.ProcessorCount < 3, p.Item4));
            Assert.Contains("oversubscribed", output, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public async Task BenchUrpc_Quick_WritesTheSixNamedVariants()
    {
        string path = Path.Combine(Path.GetTempPath(), $"mk-urpc-{Guid.NewGuid():N}.json");
        try
        {
            var (code, output, err) = await RunAsync($"bench urpc --quick --json {path}");
            Assert.True(code == 0, output + err);
            using var document = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(path));
            var names = document.RootElement.EnumerateArray().Select(e => e.GetProperty("name").GetString()).ToHashSet();
            Assert.Superset(new HashSet<string?> { "floor", "urpc", "urpc-batched", "bounded-channel", "unbounded-channel", "concurrent-queue" }, names);
            foreach (var e in document.RootElement.EnumerateArray())
            {
                Assert.True(e.TryGetProperty("rtt_ns", out _));
                Assert.True(e.TryGetProperty("msgs_per_s", out _));
                Assert.Equal(64, e.GetProperty("bytes_per_msg").GetInt32());
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public async Task Demo_WithTheStandardOtelVariables_ExportsSpansAndMetricsOverOtlpHttp()
    {
        await using var receiver = new Telemetry.OtlpHttpReceiver();
        var (code, output, err) = await RunAsync("demo --cores 2 --seconds 1", new Dictionary<string, string>
        {
            ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.Endpoint.ToString(),
            ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf",
            ["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio",
            ["OTEL_TRACES_SAMPLER_ARG"] = "0.01",
            ["OTEL_METRIC_EXPORT_INTERVAL"] = "500",
        });
        Assert.True(code == 0, output + err);
        var spans = receiver.Requests.Where(r => r.Path == "/v1/traces").SelectMany(r => Telemetry.OtlpSpan.FromRequest(r.Body)).ToList();
        var sends = spans.Where(s => s.Name.StartsWith("send core/", StringComparison.Ordinal)).ToList();
        Assert.True(sends.Count > 0, $"no send spans; requests: {string.Join(", ", receiver.Requests.Select(r => $"{r.Path} {r.Body.Length}B"))}; spans: {string.Join(", ", spans.Select(x => x.Name).Distinct())}\n{output}\n{err}");
        Assert.Contains(spans, s => s.Name.StartsWith("process core/", StringComparison.Ordinal) && s.Links.Count == 1);
        // 1% sampling: a small fraction of the millions of messages the demo sends is traced.
        Assert.True(sends.Count < 200_000, $"{sends.Count} send spans at 1% sampling");
        Assert.Contains(receiver.Requests, r => r.Path == "/v1/metrics");
    }

    [Fact]
    public async Task Run_StopsGracefullyOnSigterm()
    {
        // Not an early return that would count as passed: the runtime needs Linux (eventfd, epoll,
        // sched_setaffinity) and SIGTERM is a POSIX signal.
        Assert.True(OperatingSystem.IsLinux(), "this test sends SIGTERM to the CLI; the runtime runs on Linux only");

        string dll = Path.Combine(AppContext.BaseDirectory, "multikernel.dll");
        var start = new ProcessStartInfo("dotnet", $"\"{dll}\" run --cores 2")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = AppContext.BaseDirectory,
        };
        using var process = Process.Start(start)!;
        var output = new System.Text.StringBuilder();
        var booted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void OnLine(object _, DataReceivedEventArgs e)
        {
            if (e.Data is null)
            {
                return;
            }

            lock (output)
            {
                output.AppendLine(e.Data);
            }

            if (e.Data.Contains("All 2 cores booted", StringComparison.Ordinal))
            {
                booted.TrySetResult();
            }
        }

        process.OutputDataReceived += OnLine;
        process.ErrorDataReceived += OnLine;
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            await booted.Task.WaitAsync(TimeSpan.FromMinutes(1));
            using (var kill = Process.Start("kill", $"-TERM {process.Id}"))
            {
                await kill.WaitForExitAsync();
            }

            await process.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(1));
            Assert.Equal(0, process.ExitCode);
            lock (output)
            {
                Assert.Contains("All cores halted", output.ToString(), StringComparison.Ordinal);
            }
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }
    }

    [Fact]
    public async Task Help_DescribesEveryCommand()
    {
        var (code, output, _) = await RunAsync("--help");
        Assert.Equal(0, code);
        Assert.Contains("run", output, StringComparison.Ordinal);
        Assert.Contains("demo", output, StringComparison.Ordinal);
        var (runCode, runHelp, _) = await RunAsync("run --help");
        Assert.Equal(0, runCode);
        Assert.Contains("--cores", runHelp, StringComparison.Ordinal);
        Assert.Contains("--duration", runHelp, StringComparison.Ordinal);
    }
}

public sealed class OptionsValidationTests
{
    [Fact]
    public void Defaults_AreValid()
    {
        Assert.Empty(new MultikernelOptions().Validate());
    }

    [Fact]
    public void EveryBadValue_IsReportedOnItsOwnLine()
    {
        var options = new MultikernelOptions
        {
            Cores = "-1",
            RingSlots = 3,
            ChannelWindow = 1,
            SpinBudget = -5,
            MaxPark = TimeSpan.Zero,
            MaxEndpointsPerCore = 70_000,
        };
        string[] problems = [.. options.Validate()];
        Assert.Equal(6, problems.Length);
        Assert.All(problems, p => Assert.DoesNotContain('\n', p));
    }

    [Fact]
    public async Task KernelLimits_BindFromConfiguration_AndReachEveryKernel()
    {
        IConfiguration configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Multikernel:SpinTime"] = "00:00:00.000005",
            ["Multikernel:RunQueueCapacity"] = "1024",
            ["Multikernel:MaxForeignWork"] = "333",
            ["Multikernel:MaxWakeSources"] = "7",
            ["Multikernel:MaxWaitersPerEndpoint"] = "3",
        }).Build();
        var options = new MultikernelOptions();
        configuration.GetSection("Multikernel").Bind(options);
        Assert.Empty(options.Validate());

        KernelOptions kernel = options.ToKernelOptions();
        Assert.Equal(TimeSpan.FromMicroseconds(5), kernel.SpinTime);
        Assert.Equal(1024, kernel.RunQueueCapacity);
        Assert.Equal(333, kernel.MaxForeignWork);
        Assert.Equal(7, kernel.MaxWakeSources);
        Assert.Equal(3, kernel.MaxWaitersPerEndpoint);

        await using var runtime = new MultikernelRuntime(options, cpuCount: 2);
        Assert.All(runtime.Machine.Kernels, k =>
        {
            Assert.Equal(333, k.Options.MaxForeignWork);
            Assert.Equal(3, k.Options.MaxWaitersPerEndpoint);
        });
    }

    [Fact]
    public void KernelLimits_BadValues_AreOneClearLineEach()
    {
        var options = new MultikernelOptions
        {
            SpinTime = TimeSpan.FromSeconds(2),
            RunQueueCapacity = 8,
            MaxForeignWork = 0,
            MaxWakeSources = 5000,
            MaxWaitersPerEndpoint = 0,
        };
        string[] problems = [.. options.Validate()];
        Assert.Equal(
            [
                "SpinTime must be between 0 and 1 s (got 00:00:02).",
                "RunQueueCapacity must be between 16 and 16777216 (got 8).",
                "MaxForeignWork must be between 1 and 16777216 (got 0).",
                "MaxWakeSources must be between 0 and 4096 (got 5000).",
                "MaxWaitersPerEndpoint must be between 1 and 1024 (got 0).",
            ],
            problems);
    }

    [Fact]
    public void Runtime_RefusesInvalidOptions()
    {
        var ex = Assert.Throws<ArgumentException>(() => new MultikernelRuntime(new MultikernelOptions { RingSlots = 1000 }));
        Assert.Contains("RingSlots", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AutoCores_IsOnePerCpu_CappedByMaxCores()
    {
        Assert.Equal(2, new MultikernelOptions { Cores = "auto" }.ResolveCores(2));
        Assert.Equal(4, new MultikernelOptions { Cores = "AUTO", MaxCores = 4 }.ResolveCores(64));
        Assert.Equal(8, new MultikernelOptions { Cores = "8" }.ResolveCores(2));
    }
}
