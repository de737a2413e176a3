using System.Globalization;
using Xunit.Abstractions;

namespace Multikernel.Tests.Capabilities;

/// <summary>
/// Opt-in soak of the capability properties: MULTIKERNEL_CAP_SOAK=20000 (scenarios),
/// MULTIKERNEL_CAP_SOAK_SEED, MULTIKERNEL_CAP_SOAK_SEQUENTIAL=1. Finds rare interleavings the
/// quick FsCheck runs miss, and prints the failing scenario after a greedy shrink.
/// </summary>
public sealed class CapabilitySoakTests(ITestOutputHelper output)
{
    [Fact]
    public void Soak()
    {
        string? count = Environment.GetEnvironmentVariable("MULTIKERNEL_CAP_SOAK");
        if (count is null)
        {
            return;
        }

        bool sequential = Environment.GetEnvironmentVariable("MULTIKERNEL_CAP_SOAK_SEQUENTIAL") == "1";
        var rng = new Random(int.Parse(Environment.GetEnvironmentVariable("MULTIKERNEL_CAP_SOAK_SEED") ?? "1", CultureInfo.InvariantCulture));
        int scenarios = int.Parse(count, CultureInfo.InvariantCulture);
        for (int t = 0; t < scenarios; t++)
        {
            var scenario = new CapabilityPropertyTests.Scenario(rng.Next(2, 9), rng.Next(), [.. Enumerable.Range(0, rng.Next(1, 81)).Select(_ => rng.Next())]);
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
            Assert.Fail($"{scenario}: {Failure(scenario, sequential)}");
        }
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
            return e.Message;
        }
    }
}
