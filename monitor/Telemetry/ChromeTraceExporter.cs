using System.Diagnostics;
using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using Multikernel.CpuDriver.Diagnostics;
using OpenTelemetry;

namespace Multikernel.Monitor.Telemetry;

/// <summary>
/// Writes finished spans as a Chrome Trace Event file (JSON array format) that Perfetto and
/// chrome://tracing open: the machine is one process, each core one thread track (<c>tid</c> =
/// core, named <c>core N</c>), every span a complete event (<c>"ph":"X"</c>), and every
/// cross-core message a flow arrow from its <c>send</c> span to its <c>process</c> span.
/// </summary>
/// <remarks>
/// <para>Events are streamed to the file as batches arrive, so memory stays bounded by the
/// export batch, and the file is bounded by <see cref="MaxEvents"/>: once that many events are
/// written, further spans are dropped and counted (<see cref="DroppedSpans"/>; the count is also
/// written into the file at shutdown as a <c>multikernel_trace_stats</c> metadata event).</para>
/// <para>The closing bracket is written at shutdown (disposing the tracer provider). Each batch is
/// flushed to disk, and the array format allows a missing closing bracket, so even a trace cut
/// off by a crash still opens.</para>
/// <para>A span goes to the track of the core in its <see cref="TelemetryTags.Core"/> tag (the
/// <see cref="MessageTracing"/> helpers set it); spans without one go to a <c>host</c> track.
/// Flow ids are the send span's id, which the process span links to (the context the message
/// carried), so pairs match with no state kept here.</para>
/// </remarks>
public sealed class ChromeTraceExporter : BaseExporter<Activity>
{
    /// <summary>Default for <see cref="MaxEvents"/>: one million events (a few hundred MB at most).</summary>
    public const int DefaultMaxEvents = 1_000_000;

    /// <summary>The track (<c>tid</c>) for spans that carry no core tag.</summary>
    public const int HostTrack = 1_000_000;

    /// <summary>Category and name shared by the two ends of a message's flow arrow.</summary>
    public const string FlowCategory = "multikernel.message";

    private const string FlowName = "message";
    private const int MaxArgs = 32;

    private readonly Lock _gate = new();
    private readonly Stream _stream;
    private readonly Utf8JsonWriter _writer;
    private readonly DateTime _origin;
    private readonly int _pid = Environment.ProcessId;
    private readonly HashSet<int> _tracks = [];
    private long _written;
    private long _droppedSpans;
    private bool _closed;

    /// <summary>Creates (or truncates) <paramref name="path"/> and starts the trace.</summary>
    /// <param name="path">The file to write.</param>
    /// <param name="maxEvents">Cap on events in the file (default <see cref="DefaultMaxEvents"/>); spans beyond it are dropped and counted.</param>
    /// <param name="time">Clock for the trace's time origin (default <see cref="TimeProvider.System"/>).</param>
    public ChromeTraceExporter(string path, int maxEvents = DefaultMaxEvents, TimeProvider? time = null)
        : this(OpenFile(path), maxEvents, time)
    {
        Path = System.IO.Path.GetFullPath(path);
    }

    /// <summary>Writes the trace to <paramref name="stream"/> (owned: disposed at shutdown).</summary>
    public ChromeTraceExporter(Stream stream, int maxEvents = DefaultMaxEvents, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        if (maxEvents < 16)
        {
            throw new ArgumentOutOfRangeException(nameof(maxEvents), maxEvents, "A trace file holds at least 16 events (the metadata alone needs a few).");
        }

        _stream = stream;
        MaxEvents = maxEvents;
        _origin = (time ?? TimeProvider.System).GetUtcNow().UtcDateTime;
        // No HTML escaping: span names like "send core/1" stay readable in the file.
        _writer = new Utf8JsonWriter(_stream, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
        _writer.WriteStartArray();
        WriteMetadata("process_name", HostTrack, "name", "multikernel");
        _writer.Flush();
    }

    /// <summary>The file written, when created from a path.</summary>
    public string? Path { get; }

    /// <summary>Cap on the number of events in the file.</summary>
    public int MaxEvents { get; }

    /// <summary>Events written so far (metadata included).</summary>
    public long WrittenEvents => Interlocked.Read(ref _written);

    /// <summary>Spans not written because the file reached <see cref="MaxEvents"/> or the exporter was shut down.</summary>
    public long DroppedSpans => Interlocked.Read(ref _droppedSpans);

    /// <inheritdoc />
    public override ExportResult Export(in Batch<Activity> batch)
    {
        lock (_gate)
        {
            if (_closed)
            {
                Interlocked.Add(ref _droppedSpans, batch.Count);
                return ExportResult.Failure;
            }

            try
            {
                foreach (Activity activity in batch)
                {
                    WriteSpan(activity);
                }

                _writer.Flush();
                _stream.Flush();
                return ExportResult.Success;
            }
            catch (IOException)
            {
                return ExportResult.Failure;
            }
        }
    }

    /// <inheritdoc />
    protected override bool OnForceFlush(int timeoutMilliseconds)
    {
        lock (_gate)
        {
            if (!_closed)
            {
                _writer.Flush();
                _stream.Flush();
            }

            return true;
        }
    }

    /// <inheritdoc />
    protected override bool OnShutdown(int timeoutMilliseconds)
    {
        Close();
        return true;
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            Close();
        }

        base.Dispose(disposing);
    }

    private void Close()
    {
        lock (_gate)
        {
            if (_closed)
            {
                return;
            }

            _closed = true;
            try
            {
                // The stats event is written even at the cap: it is the one place the drops show.
                _writer.WriteStartObject();
                _writer.WriteString("name", "multikernel_trace_stats");
                _writer.WriteString("ph", "M");
                _writer.WriteNumber("pid", _pid);
                _writer.WriteNumber("tid", HostTrack);
                _writer.WriteStartObject("args");
                _writer.WriteNumber("dropped_spans", Interlocked.Read(ref _droppedSpans));
                _writer.WriteNumber("written_events", Interlocked.Read(ref _written));
                _writer.WriteEndObject();
                _writer.WriteEndObject();
                _writer.WriteEndArray();
                _writer.Flush();
                _stream.Flush();
            }
            finally
            {
                _writer.Dispose();
                _stream.Dispose();
            }
        }
    }

    private void WriteSpan(Activity activity)
    {
        int track = TrackOf(activity);
        bool newTrack = !_tracks.Contains(track);
        int flows = activity.Kind switch
        {
            ActivityKind.Producer => 1,
            ActivityKind.Consumer => CountLinks(activity),
            _ => 0,
        };
        int needed = 1 + flows + (newTrack ? 2 : 0);
        if (_written + needed > MaxEvents)
        {
            Interlocked.Increment(ref _droppedSpans);
            return;
        }

        if (newTrack)
        {
            _tracks.Add(track);
            string name = track == HostTrack ? "host" : "core " + track.ToString(CultureInfo.InvariantCulture);
            WriteMetadata("thread_name", track, "name", name);
            WriteMetadata("thread_sort_index", track, "sort_index", track);
        }

        double start = Microseconds(activity.StartTimeUtc - _origin);
        double duration = Math.Max(0, activity.Duration.Ticks / 10.0);

        _writer.WriteStartObject();
        _writer.WriteString("name", activity.DisplayName);
        _writer.WriteString("cat", activity.Source.Name);
        _writer.WriteString("ph", "X");
        _writer.WriteNumber("ts", start);
        _writer.WriteNumber("dur", duration);
        _writer.WriteNumber("pid", _pid);
        _writer.WriteNumber("tid", track);
        WriteArgs(activity);
        _writer.WriteEndObject();
        Interlocked.Increment(ref _written);

        // A flow end binds to the slice enclosing its timestamp: put it just inside the span's
        // start, where no child span has begun yet (and strictly inside, so that sorting equal
        // timestamps cannot place it before the slice opens).
        double inside = start + Math.Min(duration / 2, 0.001);
        if (activity.Kind == ActivityKind.Producer)
        {
            WriteFlow("s", activity.SpanId, inside, track);
        }
        else if (activity.Kind == ActivityKind.Consumer)
        {
            foreach (ActivityLink link in activity.Links)
            {
                if (link.Context.SpanId != default)
                {
                    WriteFlow("f", link.Context.SpanId, inside, track);
                }
            }
        }
    }

    private static int CountLinks(Activity activity)
    {
        int n = 0;
        foreach (ActivityLink link in activity.Links)
        {
            if (link.Context.SpanId != default)
            {
                n++;
            }
        }

        return n;
    }

    private void WriteFlow(string phase, ActivitySpanId id, double ts, int track)
    {
        _writer.WriteStartObject();
        _writer.WriteString("name", FlowName);
        _writer.WriteString("cat", FlowCategory);
        _writer.WriteString("ph", phase);
        // Perfetto reads a string id as hexadecimal, so the span id is the flow id as it is.
        _writer.WriteString("id", "0x" + id.ToHexString());
        _writer.WriteNumber("ts", ts);
        _writer.WriteNumber("pid", _pid);
        _writer.WriteNumber("tid", track);
        if (phase == "f")
        {
            _writer.WriteString("bp", "e");
        }

        _writer.WriteEndObject();
        Interlocked.Increment(ref _written);
    }

    private void WriteArgs(Activity activity)
    {
        _writer.WriteStartObject("args");
        _writer.WriteString("trace_id", activity.TraceId.ToHexString());
        _writer.WriteString("span_id", activity.SpanId.ToHexString());
        if (activity.ParentSpanId != default)
        {
            _writer.WriteString("parent_span_id", activity.ParentSpanId.ToHexString());
        }

        _writer.WriteString("kind", activity.Kind.ToString());
        if (activity.Status != ActivityStatusCode.Unset)
        {
            _writer.WriteString("status", activity.Status.ToString());
        }

        int args = 0;
        foreach (KeyValuePair<string, object?> tag in activity.TagObjects)
        {
            if (++args > MaxArgs)
            {
                break;
            }

            WriteValue(tag.Key, tag.Value);
        }

        _writer.WriteEndObject();
    }

    private void WriteValue(string key, object? value)
    {
        switch (value)
        {
            case null:
                _writer.WriteNull(key);
                break;
            case string s:
                _writer.WriteString(key, s);
                break;
            case bool b:
                _writer.WriteBoolean(key, b);
                break;
            case int i:
                _writer.WriteNumber(key, i);
                break;
            case long l:
                _writer.WriteNumber(key, l);
                break;
            case double d when double.IsFinite(d):
                _writer.WriteNumber(key, d);
                break;
            default:
                _writer.WriteString(key, Convert.ToString(value, CultureInfo.InvariantCulture));
                break;
        }
    }

    private void WriteMetadata(string name, int track, string argName, string value) =>
        WriteMetadata(name, track, argName, value, number: 0);

    private void WriteMetadata(string name, int track, string argName, int value) =>
        WriteMetadata(name, track, argName, text: null, value);

    // One metadata event ("ph":"M"): a string argument when text is given, else a number.
    private void WriteMetadata(string name, int track, string argName, string? text, int number)
    {
        _writer.WriteStartObject();
        _writer.WriteString("name", name);
        _writer.WriteString("ph", "M");
        _writer.WriteNumber("pid", _pid);
        _writer.WriteNumber("tid", track);
        _writer.WriteStartObject("args");
        if (text is not null)
        {
            _writer.WriteString(argName, text);
        }
        else
        {
            _writer.WriteNumber(argName, number);
        }

        _writer.WriteEndObject();
        _writer.WriteEndObject();
        Interlocked.Increment(ref _written);
    }

    private static int TrackOf(Activity activity) => activity.GetTagItem(TelemetryTags.Core) switch
    {
        int core when core >= 0 && core < HostTrack => core,
        long core when core >= 0 && core < HostTrack => (int)core,
        _ => HostTrack,
    };

    // Microseconds with nanosecond resolution kept (Perfetto converts to integer nanoseconds).
    private static double Microseconds(TimeSpan span) => Math.Round(span.Ticks / 10.0, 3);

    private static FileStream OpenFile(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        try
        {
            return new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read, bufferSize: 64 * 1024);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            throw new ArgumentException($"Cannot create the trace file '{path}': {ex.Message}", nameof(path), ex);
        }
    }
}
