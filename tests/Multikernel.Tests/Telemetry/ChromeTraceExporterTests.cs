using System.Diagnostics;
using System.Text.Json;
using Multikernel.CpuDriver.Diagnostics;
using Multikernel.CpuDriver.Urpc;
using Multikernel.Monitor.Telemetry;
using OpenTelemetry;
using OpenTelemetry.Trace;

namespace Multikernel.Tests.Telemetry;

[Collection(TelemetryCollection.Name)]
public sealed class ChromeTraceExporterTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("mk-trace-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private string NewPath() => Path.Combine(_directory, Guid.NewGuid().ToString("N") + ".json");

    private static TracerProvider Provider(ChromeTraceExporter exporter) =>
        Sdk.CreateTracerProviderBuilder()
            .AddSource(ActivitySources.Wildcard)
            .SetSampler(new AlwaysOnSampler())
            .AddProcessor(new SimpleActivityExportProcessor(exporter))
            .Build();

    /// <summary>A revoke on core 0 that sends to cores 1 and 2, which process it and reply.</summary>
    private static void RevokeRoundTrip()
    {
        using Activity? revoke = MessageTracing.StartProtocol(ProtocolSpanNames.Revoke, 0);
        foreach (int core in new[] { 1, 2 })
        {
            Message mark = Message.Create(10);
            using (MessageTracing.StartSend(ref mark, 0, core, "monitor", 0))
            {
            }

            Message reply = Message.Create(11);
            using (MessageTracing.StartProcess(in mark, 0, core, "monitor"))
            {
                using (MessageTracing.StartProtocol(ProtocolSpanNames.RevokeMark, core))
                {
                }

                using (MessageTracing.StartSend(ref reply, core, 0, "monitor", 1))
                {
                }
            }

            using (MessageTracing.StartProcess(in reply, core, 0, "monitor"))
            {
            }
        }
    }

    private static List<JsonElement> Events(JsonDocument document)
    {
        Assert.Equal(JsonValueKind.Array, document.RootElement.ValueKind);
        return [.. document.RootElement.EnumerateArray()];
    }

    private static string Ph(JsonElement e) => e.GetProperty("ph").GetString()!;

    [Fact]
    public void Trace_HasOneTrackPerCore_SpansOnTheirCore_AndFlowsFromEachSendToItsProcess()
    {
        string path = NewPath();
        var exporter = new ChromeTraceExporter(path);
        using (Provider(exporter))
        {
            RevokeRoundTrip();
        }

        using JsonDocument document = JsonDocument.Parse(File.ReadAllBytes(path));
        List<JsonElement> events = Events(document);

        // One named track per core, nothing else (every span carried a core).
        Dictionary<int, string> tracks = events
            .Where(e => Ph(e) == "M" && e.GetProperty("name").GetString() == "thread_name")
            .ToDictionary(e => e.GetProperty("tid").GetInt32(), e => e.GetProperty("args").GetProperty("name").GetString()!);
        Assert.Equal(new Dictionary<int, string> { [0] = "core 0", [1] = "core 1", [2] = "core 2" }, tracks);
        Assert.Single(events, e => Ph(e) == "M" && e.GetProperty("name").GetString() == "process_name");

        List<JsonElement> slices = events.Where(e => Ph(e) == "X").ToList();
        Assert.Equal(1 + (2 * 5), slices.Count); // revoke + per core: send, process, mark, reply send, reply process
        foreach (JsonElement slice in slices)
        {
            Assert.Equal(slice.GetProperty("args").GetProperty(TelemetryTags.Core).GetInt32(), slice.GetProperty("tid").GetInt32());
            Assert.True(slice.GetProperty("dur").GetDouble() >= 0);
        }

        Assert.Single(slices, s => s.GetProperty("name").GetString() == "revoke" && s.GetProperty("tid").GetInt32() == 0);
        Assert.Equal(2, slices.Count(s => s.GetProperty("name").GetString() == "revoke mark"));

        // Every send starts a flow that ends in the process span of the same message, on the destination core.
        List<JsonElement> starts = events.Where(e => Ph(e) == "s").ToList();
        List<JsonElement> ends = events.Where(e => Ph(e) == "f").ToList();
        Assert.Equal(4, starts.Count);
        Assert.Equal(4, ends.Count);
        foreach (JsonElement start in starts)
        {
            string id = start.GetProperty("id").GetString()!;
            JsonElement end = Assert.Single(ends, f => f.GetProperty("id").GetString() == id);
            Assert.Equal(start.GetProperty("cat").GetString(), end.GetProperty("cat").GetString());
            Assert.Equal(start.GetProperty("name").GetString(), end.GetProperty("name").GetString());
            Assert.Equal("e", end.GetProperty("bp").GetString());

            JsonElement send = Assert.Single(slices, s => "0x" + s.GetProperty("args").GetProperty("span_id").GetString() == id);
            Assert.StartsWith("send core/", send.GetProperty("name").GetString(), StringComparison.Ordinal);
            Assert.Equal(send.GetProperty("tid").GetInt32(), start.GetProperty("tid").GetInt32());
            AssertInside(start, send);

            // The process span whose parent is that send, on the destination core.
            JsonElement process = Assert.Single(slices, s => s.GetProperty("args").TryGetProperty("parent_span_id", out JsonElement p) && "0x" + p.GetString() == id && s.GetProperty("name").GetString()!.StartsWith("process", StringComparison.Ordinal));
            Assert.Equal(send.GetProperty("args").GetProperty(TelemetryTags.CoreDestination).GetInt32(), process.GetProperty("tid").GetInt32());
            Assert.Equal(process.GetProperty("tid").GetInt32(), end.GetProperty("tid").GetInt32());
            AssertInside(end, process);
        }

        Assert.Equal(0, exporter.DroppedSpans);
    }

    private static void AssertInside(JsonElement point, JsonElement slice)
    {
        double ts = point.GetProperty("ts").GetDouble();
        double start = slice.GetProperty("ts").GetDouble();
        double end = start + slice.GetProperty("dur").GetDouble();
        Assert.InRange(ts, start, end);
    }

    [Fact]
    public void Trace_AtTheEventCap_DropsAndCountsSpans_AndStaysValidJson()
    {
        string path = NewPath();
        var exporter = new ChromeTraceExporter(path, maxEvents: 20);
        using (Provider(exporter))
        {
            for (int i = 0; i < 10; i++)
            {
                RevokeRoundTrip();
            }
        }

        using JsonDocument document = JsonDocument.Parse(File.ReadAllBytes(path));
        List<JsonElement> events = Events(document);
        JsonElement stats = Assert.Single(events, e => e.GetProperty("name").GetString() == "multikernel_trace_stats");
        Assert.True(exporter.DroppedSpans > 0);
        Assert.Equal(exporter.DroppedSpans, stats.GetProperty("args").GetProperty("dropped_spans").GetInt64());
        Assert.InRange(events.Count, 2, 20 + 1); // the cap, plus the stats event
        Assert.Equal(110, exporter.DroppedSpans + events.Count(e => Ph(e) == "X"));
    }

    [Fact]
    public void Trace_CutOffBeforeShutdown_IsAValidArrayOnceClosed()
    {
        string path = NewPath();
        var exporter = new ChromeTraceExporter(path);
        using TracerProvider provider = Provider(exporter);
        RevokeRoundTrip();
        Assert.True(provider.ForceFlush());

        // What a crash would leave: everything written, no closing bracket. The array format
        // allows that; here we check that adding the bracket is all it takes.
        string partial;
        using (var reader = new StreamReader(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite)))
        {
            partial = reader.ReadToEnd();
        }

        Assert.StartsWith("[", partial, StringComparison.Ordinal);
        using JsonDocument document = JsonDocument.Parse(partial + "]");
        Assert.Equal(11, Events(document).Count(e => Ph(e) == "X"));
    }

    [Fact]
    public void Export_AfterShutdown_IsCountedAsDropped()
    {
        string path = NewPath();
        var exporter = new ChromeTraceExporter(path);
        TracerProvider provider = Provider(exporter);
        provider.Dispose();
        Assert.Equal(0, exporter.DroppedSpans);

        using var batchSource = new ActivitySource("Multikernel.Tests.Dropped");
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s == batchSource,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
        };
        ActivitySource.AddActivityListener(listener);
        Activity activity = batchSource.StartActivity("late")!;
        activity.Stop();
        Assert.Equal(ExportResult.Failure, exporter.Export(new Batch<Activity>([activity], 1)));
        Assert.Equal(1, exporter.DroppedSpans);
        using JsonDocument document = JsonDocument.Parse(File.ReadAllBytes(path)); // still the closed, valid file
    }

    [Fact]
    public void Span_WithoutACore_GoesToTheHostTrack()
    {
        string path = NewPath();
        var exporter = new ChromeTraceExporter(path);
        using (Provider(exporter))
        {
            using Activity? boot = ActivitySources.Kernel.StartActivity("host work");
            Assert.NotNull(boot);
        }

        using JsonDocument document = JsonDocument.Parse(File.ReadAllBytes(path));
        List<JsonElement> events = Events(document);
        JsonElement slice = Assert.Single(events, e => Ph(e) == "X");
        Assert.Equal(ChromeTraceExporter.HostTrack, slice.GetProperty("tid").GetInt32());
        Assert.Contains(events, e => Ph(e) == "M" && e.GetProperty("name").GetString() == "thread_name" && e.GetProperty("args").GetProperty("name").GetString() == "host");
    }

    [Fact]
    public void Constructor_RejectsBadArguments()
    {
        ArgumentException missingDirectory = Assert.Throws<ArgumentException>(() => new ChromeTraceExporter(Path.Combine(_directory, "no", "such", "dir", "t.json")));
        Assert.Contains("Cannot create the trace file", missingDirectory.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => new ChromeTraceExporter(new MemoryStream(), maxEvents: 3));
        Assert.Throws<ArgumentException>(() => new ChromeTraceExporter("  "));
    }
}
