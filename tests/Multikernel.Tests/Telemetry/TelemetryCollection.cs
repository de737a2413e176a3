namespace Multikernel.Tests.Telemetry;

/// <summary>
/// Activity listeners are process-wide: a listener attached by one test sees spans from every
/// other test running at the same time, and the zero-allocation test needs no listener at all.
/// So every telemetry test runs in this collection, alone.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TelemetryCollection
{
    public const string Name = "Telemetry";
}
