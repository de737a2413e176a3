using System.Globalization;
using Multikernel.Monitor.Hosting;

namespace Multikernel.Tests;

/// <summary>Boots a real multikernel (pinned kernel threads, real rings and monitors) for a test.</summary>
internal static class TestMachine
{
    /// <summary>How long a test waits for anything: short, so a failure fails fast.</summary>
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(15);

    public static async Task<MultikernelRuntime> StartAsync(int cores, Action<MultikernelOptions>? configure = null, double messageTraceRatio = 1)
    {
        var options = new MultikernelOptions
        {
            Cores = cores.ToString(CultureInfo.InvariantCulture),
            ShutdownTimeout = TimeSpan.FromSeconds(10),
            SpinBudget = 500,
            // Long: a parked core wakes only by its doorbell, a descriptor or a timer, so a lost
            // wake-up shows as a timeout in whichever test hits it instead of hiding behind polling.
            MaxPark = TimeSpan.FromSeconds(5),
        };
        configure?.Invoke(options);
        var runtime = new MultikernelRuntime(options, messageTraceRatio: messageTraceRatio);
        await runtime.StartAsync().WaitAsync(Patience);
        return runtime;
    }

    /// <summary>Shuts the machine down and fails the test if any domain faulted while it ran.</summary>
    public static async Task StopCleanlyAsync(this MultikernelRuntime runtime)
    {
        await runtime.StopAsync().WaitAsync(Patience);
        Assert.All(runtime.Machine.Kernels, k => Assert.True(k.Stopped.IsCompleted, $"core {k.Id} did not halt"));
        Assert.True(runtime.DomainFaults.Count == 0, string.Join(Environment.NewLine, runtime.DomainFaults.Select(f => $"{f.Domain}: {f.Exception}")));
    }

    /// <summary>Waits until <paramref name="condition"/> holds, polling; fails the test after <see cref="Patience"/>.</summary>
    public static async Task EventuallyAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + Patience;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"Timed out waiting for: {what}");
            }

            await Task.Delay(5);
        }
    }
}
