using System.Collections.Concurrent;
using System.Diagnostics;
using Multikernel.CpuDriver.Diagnostics;

namespace Multikernel.Tests.Telemetry;

/// <summary>Captures the spans of the Multikernel sources (and the tests' own source) through a real <see cref="ActivityListener"/>.</summary>
internal sealed class ActivityCapture : IDisposable
{
    public const string TestSourceName = "Multikernel.Tests.Telemetry";

    private readonly ActivityListener _listener;
    private readonly ConcurrentQueue<Activity> _stopped = new();
    private readonly ConcurrentDictionary<Activity, int> _startThreads = new();

    public ActivityCapture(ActivitySamplingResult sampling = ActivitySamplingResult.AllDataAndRecorded)
    {
        _listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name.StartsWith("Multikernel.", StringComparison.Ordinal),
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => sampling,
            ActivityStarted = a => _startThreads[a] = Environment.CurrentManagedThreadId,
            ActivityStopped = a => _stopped.Enqueue(a),
        };
        ActivitySource.AddActivityListener(_listener);
    }

    /// <summary>Spans stopped so far.</summary>
    public IReadOnlyList<Activity> Stopped => [.. _stopped];

    /// <summary>The managed thread a span was started on.</summary>
    public int StartThread(Activity activity) => _startThreads[activity];

    public Activity Single(string name) => Assert.Single(_stopped, a => a.DisplayName == name);

    public IReadOnlyList<Activity> All(string name) => [.. _stopped.Where(a => a.DisplayName == name)];

    public void Dispose() => _listener.Dispose();
}

internal static class TestSources
{
    public static readonly ActivitySource Test = new(ActivityCapture.TestSourceName);

    static TestSources() => _ = ActivitySources.Urpc; // the catalogue exists before any listener is attached
}
