using System.Diagnostics;

namespace Multikernel.Tests.Apps;

/// <summary>Real clients (curl, nc, redis-cli, redis-benchmark) found on PATH, and a bounded way to run them.</summary>
public static class ExternalTools
{
    public const string Packages = "apt-get install -y curl netcat-openbsd redis-tools wrk hping3";

    public static bool InCi => string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);

    public static string? Find(string tool)
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, tool);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return null;
    }

    /// <summary>The tool's path; in CI a missing tool fails the test (outside CI the test was skipped already by <see cref="ToolFactAttribute"/>).</summary>
    public static string Require(string tool) =>
        Find(tool) ?? throw new InvalidOperationException($"'{tool}' is required (CI={Environment.GetEnvironmentVariable("CI")}); install it: {Packages}");

    public sealed record Result(int ExitCode, string Stdout, string Stderr);

    /// <summary>Runs <paramref name="tool"/> with <paramref name="args"/>, feeding <paramref name="stdin"/>; kills it after <paramref name="timeout"/>.</summary>
    public static async Task<Result> RunAsync(string tool, IEnumerable<string> args, TimeSpan timeout, byte[]? stdin = null)
    {
        var info = new ProcessStartInfo(Require(tool))
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string a in args)
        {
            info.ArgumentList.Add(a);
        }

        using var process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {tool}");
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        try
        {
            if (stdin is not null)
            {
                await process.StandardInput.BaseStream.WriteAsync(stdin);
            }

            process.StandardInput.Close();
            using var cts = new CancellationTokenSource(timeout);
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{tool} {string.Join(' ', args)} did not finish within {timeout}");
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }

        return new Result(process.ExitCode, await stdout, await stderr);
    }
}

/// <summary>
/// A fact that needs real client tools: skipped with the reason when they are missing outside CI;
/// in CI (CI=true) it runs and fails on the missing tool.
/// </summary>
public sealed class ToolFactAttribute : FactAttribute
{
    public ToolFactAttribute(params string[] tools)
    {
        string[] missing = [.. tools.Where(t => ExternalTools.Find(t) is null)];
        if (missing.Length > 0 && !ExternalTools.InCi)
        {
            Skip = $"needs {string.Join(", ", missing)} on PATH ({ExternalTools.Packages}); with CI=true this is a failure instead";
        }
    }
}
