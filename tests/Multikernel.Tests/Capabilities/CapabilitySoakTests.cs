using System.Diagnostics;
using System.Globalization;
using Xunit.Abstractions;

namespace Multikernel.Tests.Capabilities;

/// <summary>
/// Soak of the capability properties, run in every build: many short random scenarios (with
/// adversarial link starvation, see <see cref="CapabilityPropertyTests"/>) from a seed that
/// rotates daily and is printed, so CI explores new schedules every day and any failure replays.
/// MULTIKERNEL_CAP_SOAK=N scenarios (default 100 concurrent, 40 sequential: a few seconds),
/// MULTIKERNEL_CAP_SOAK_SEED to replay. A failing scenario is shrunk greedily and printed.
/// </summary>
public sealed class CapabilitySoakTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Soak(bool sequential)
    {
        string? count = Environment.GetEnvironmentVariable("MULTIKERNEL_CAP_SOAK");
        string? seedText = Environment.GetEnvironmentVariable("MULTIKERNEL_CAP_SOAK_SEED");
        int seed = seedText is null ? (int)(DateTime.UtcNow.Ticks / TimeSpan.TicksPerDay) : int.Parse(seedText, CultureInfo.InvariantCulture);
        int scenarios = count is null ? (sequential ? 40 : 100) : int.Parse(count, CultureInfo.InvariantCulture);
        output.WriteLine($"capability soak: {(sequential ? "sequential" : "concurrent")}, {scenarios} scenarios, MULTIKERNEL_CAP_SOAK_SEED={seed}");
        var rng = new Random(seed);
        var watch = Stopwatch.StartNew();
        for (int t = 0; t < scenarios; t++)
        {
            var scenario = new CapabilityPropertyTests.Scenario(rng.Next(2, 9), rng.Next(), [.. Enumerable.Range(0, rng.Next(1, 41)).Select(_ => rng.Next())]);
            if (Failure(scenario, sequential) is null)
            {
                continue;
            }

            bool shrunk = true;
            while (shrunk)
            {
                shrunk = false;
                for (int i = 0; i < scenario.Operations.Length && !shrunk; i++)
                {
                    CapabilityPropertyTests.Scenario smaller = scenario with { Operations = [.. scenario.Operations.Take(i), .. scenario.Operations.Skip(i + 1)] };
                    if (Failure(smaller, sequential) is not null)
                    {
                        scenario = smaller;
                        shrunk = true;
                    }
                }
            }

            output.WriteLine($"{scenario}: {Failure(scenario, sequential)}");
            Assert.Fail($"seed {seed}, scenario {t}: {scenario}: {Failure(scenario, sequential)}");
        }

        output.WriteLine($"{scenarios} scenarios in {watch.Elapsed.TotalSeconds:F1} s");
    }

    private static string? Failure(CapabilityPropertyTests.Scenario scenario, bool sequential)
    {
        try
        {
            if (sequential)
            {
                CapabilityPropertyTests.RunSequential(scenario, new CapabilityPropertyTests.Stats());
            }
            else
            {
                CapabilityPropertyTests.RunConcurrent(scenario, new CapabilityPropertyTests.Stats());
            }

            return null;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return e.ToString();
        }
    }
}
