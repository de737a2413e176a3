using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;

namespace Multikernel.Monitor.Telemetry;

/// <summary>One value of an instrument for one tag set, as read by <see cref="MetricsSnapshotReader"/>.</summary>
/// <param name="Instrument">Instrument name.</param>
/// <param name="Unit">Unit, if any.</param>
/// <param name="Value">Latest observed value (observable instruments) or running sum (counters).</param>
/// <param name="Tags">The tag set.</param>
public sealed record MetricValue(string Instrument, string? Unit, double Value, IReadOnlyList<KeyValuePair<string, object?>> Tags)
{
    /// <summary>The value of tag <paramref name="key"/>, or null.</summary>
    public object? Tag(string key)
    {
        foreach (KeyValuePair<string, object?> tag in Tags)
        {
            if (tag.Key == key)
            {
                return tag.Value;
            }
        }

        return null;
    }
}

/// <summary>
/// Reads the <c>Multikernel</c> meter in-process, without an exporter: what <c>multikernel run
/// --stats</c> shows live. Call <see cref="Collect"/> at the refresh rate; observable instruments
/// are read then, and counters (monitor and capability operations) are summed as they happen.
/// </summary>
/// <remarks>
/// Counter measurements arrive on the core that records them, so they are summed under a lock:
/// only a few per monitor operation, never per message. The number of distinct series is
/// bounded by <c>maxSeries</c>; beyond it new series are dropped and counted.
/// </remarks>
public sealed class MetricsSnapshotReader : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly Lock _gate = new();
    private readonly Dictionary<string, MetricValue> _sums = [];
    private readonly Dictionary<string, MetricValue> _observed = [];
    private readonly int _maxSeries;
    private long _droppedSeries;

    /// <summary>Starts listening to the meter named <paramref name="meterName"/> (default <see cref="MultikernelMetrics.MeterName"/>).</summary>
    public MetricsSnapshotReader(string meterName = MultikernelMetrics.MeterName, int maxSeries = 65_536)
    {
        ArgumentException.ThrowIfNullOrEmpty(meterName);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxSeries, 1);
        _maxSeries = maxSeries;
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == meterName)
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((i, v, tags, _) => OnMeasurement(i, v, tags));
        _listener.SetMeasurementEventCallback<int>((i, v, tags, _) => OnMeasurement(i, v, tags));
        _listener.SetMeasurementEventCallback<double>((i, v, tags, _) => OnMeasurement(i, v, tags));
        _listener.Start();
    }

    /// <summary>Series not kept because <c>maxSeries</c> were already held.</summary>
    public long DroppedSeries => Interlocked.Read(ref _droppedSeries);

    /// <summary>Reads every observable instrument now and returns all values, sorted by instrument and tags.</summary>
    public IReadOnlyList<MetricValue> Collect()
    {
        lock (_gate)
        {
            _observed.Clear();
        }

        _listener.RecordObservableInstruments();
        lock (_gate)
        {
            return [.. _sums.Concat(_observed).OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => p.Value)];
        }
    }

    /// <summary>Stops listening.</summary>
    public void Dispose() => _listener.Dispose();

    private void OnMeasurement(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        string key = Key(instrument.Name, tags);
        bool observable = instrument.IsObservable;
        lock (_gate)
        {
            Dictionary<string, MetricValue> table = observable ? _observed : _sums;
            if (table.TryGetValue(key, out MetricValue? existing))
            {
                table[key] = existing with { Value = observable ? value : existing.Value + value };
                return;
            }

            if (_sums.Count + _observed.Count >= _maxSeries)
            {
                _droppedSeries++;
                return;
            }

            table[key] = new MetricValue(instrument.Name, instrument.Unit, value, tags.ToArray());
        }
    }

    private static string Key(string name, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var parts = new List<string>(tags.Length);
        foreach (KeyValuePair<string, object?> tag in tags)
        {
            parts.Add(tag.Key + "=" + Convert.ToString(tag.Value, CultureInfo.InvariantCulture));
        }

        parts.Sort(StringComparer.Ordinal);
        var key = new StringBuilder(name);
        foreach (string part in parts)
        {
            key.Append('|').Append(part);
        }

        return key.ToString();
    }
}
