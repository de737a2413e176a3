using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace Multikernel.Tests.Netd.Drivers;

/// <summary>
/// Tests that need root: outside CI without root (or without the tools) they are skipped with the
/// reason; in CI (<c>CI=true</c>) they always run, so a missing privilege or tool fails loudly.
/// </summary>
internal sealed class RootFactAttribute : FactAttribute
{
    public RootFactAttribute() => Skip = PrivilegedTests.SkipReason();
}

internal static class PrivilegedTests
{
    public static readonly string[] RequiredTools = ["ip", "ping"];

    public static bool InCi => string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);

    public static string? SkipReason()
    {
        if (InCi)
        {
            return null;
        }

        if (!OperatingSystem.IsLinux())
        {
            return "needs Linux (TAP devices and network namespaces)";
        }

        if (!Environment.IsPrivilegedProcess)
        {
            return "needs root (CAP_NET_ADMIN) to create TAP devices and network namespaces; runs in CI (CI=true)";
        }

        string[] missing = [.. RequiredTools.Where(t => FindTool(t) is null)];
        return missing.Length > 0 ? $"needs {string.Join(", ", missing)} (Debian: iproute2, iputils-ping)" : null;
    }

    /// <summary>In CI every prerequisite must be there: fail with what is missing instead of skipping.</summary>
    public static void RequirePrerequisites()
    {
        Assert.True(OperatingSystem.IsLinux(), "TAP tests need Linux");
        Assert.True(Environment.IsPrivilegedProcess, "TAP tests run as root in CI (CI=true) but this process is not privileged");
        foreach (string tool in RequiredTools)
        {
            Assert.True(FindTool(tool) is not null, $"{tool} is not installed (Debian packages: iproute2, iputils-ping, tshark)");
        }
    }

    public static string? FindTool(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin")
            .Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Append("/usr/sbin").Append("/sbin")
            .Select(d => Path.Combine(d, name))
            .FirstOrDefault(File.Exists);

    public static string RandomHex(int bytes) => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(bytes));

    public static (int ExitCode, string Output) Run(string file, TimeSpan timeout, params string[] arguments)
    {
        var start = new ProcessStartInfo(PrivilegedTests.FindTool(file) ?? file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in arguments)
        {
            start.ArgumentList.Add(a);
        }

        using Process process = Process.Start(start)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            return (-1, $"timed out after {timeout}: {file} {string.Join(' ', arguments)}");
        }

        return (process.ExitCode, stdout.GetAwaiter().GetResult() + stderr.GetAwaiter().GetResult());
    }
}

/// <summary>
/// A network namespace the test creates (<c>ip netns add mk-test-…</c>) and deletes on dispose.
/// Code that must run inside it runs on a dedicated thread that joined it with <c>setns</c>
/// (a network namespace is per thread), so devices and sockets it creates live there.
/// </summary>
internal sealed partial class NetNamespace : IDisposable
{
    private const int CLONE_NEWNET = 0x40000000;

    private NetNamespace(string name) => Name = name;

    public string Name { get; }

    public static NetNamespace Create()
    {
        string name = "mk-test-" + PrivilegedTests.RandomHex(4);
        (int exit, string output) = PrivilegedTests.Run("ip", TimeSpan.FromSeconds(10), "netns", "add", name);
        Assert.True(exit == 0, $"ip netns add {name} failed: {output}");
        return new NetNamespace(name);
    }

    /// <summary>Runs a command inside the namespace.</summary>
    public (int ExitCode, string Output) Exec(TimeSpan timeout, params string[] command) =>
        PrivilegedTests.Run("ip", timeout, ["netns", "exec", Name, .. command]);

    public Process Start(params string[] command)
    {
        var start = new ProcessStartInfo(PrivilegedTests.FindTool("ip")!) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in (string[])["netns", "exec", Name, .. command])
        {
            start.ArgumentList.Add(a);
        }

        return Process.Start(start)!;
    }

    /// <summary>Runs <paramref name="body"/> on a fresh thread inside the namespace (the thread ends afterwards, taking any changed credentials with it).</summary>
    public T OnThread<T>(Func<T> body)
    {
        T? result = default;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                using var handle = File.OpenHandle($"/run/netns/{Name}");
                if (setns((int)handle.DangerousGetHandle(), CLONE_NEWNET) != 0)
                {
                    throw new InvalidOperationException($"setns into {Name} failed: {Marshal.GetLastPInvokeErrorMessage()}");
                }

                result = body();
            }
            catch (Exception e)
            {
                failure = e;
            }
        });
        thread.Start();
        Assert.True(thread.Join(TimeSpan.FromSeconds(30)), "namespace thread hung");
        if (failure is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(failure).Throw();
        }

        return result!;
    }

    public void Dispose() => PrivilegedTests.Run("ip", TimeSpan.FromSeconds(10), "netns", "del", Name);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int setns(int fd, int nstype);
}
