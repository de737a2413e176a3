using System.Diagnostics;

namespace Multikernel.Tests.Cli;

/// <summary>Runs the built `multikernel` command as a real process, as a user would, and collects its output.</summary>
internal static class CliProcess
{
    /// <summary>Runs <c>multikernel ARGUMENTS</c>; the process is killed if it outlives <paramref name="timeout"/> (default 2 min).</summary>
    public static async Task<(int ExitCode, string Out, string Err)> RunAsync(string arguments, IDictionary<string, string>? environment = null, string? directory = null, TimeSpan? timeout = null)
    {
        string dll = Path.Combine(directory ?? AppContext.BaseDirectory, "multikernel.dll");
        var start = new ProcessStartInfo("dotnet", $"\"{dll}\" {arguments}")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = directory ?? AppContext.BaseDirectory,
        };
        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[key] = value;
        }

        using var process = Process.Start(start)!;
        try
        {
            Task<string> stdout = process.StandardOutput.ReadToEndAsync();
            Task<string> stderr = process.StandardError.ReadToEndAsync();
            await process.WaitForExitAsync().WaitAsync(timeout ?? TimeSpan.FromMinutes(2));
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
}
