using Multikernel.CpuDriver.Diagnostics;
using Multikernel.Monitor.Telemetry;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Multikernel.Cli.Display;

/// <summary>Tables of per-core activity and the core x core message matrix, between two snapshots.</summary>
internal static class StatsRenderer
{
    public static IRenderable CoreTable(MachineSnapshot before, MachineSnapshot after, TimeProvider time, bool oversubscribed)
    {
        double seconds = Math.Max(1e-9, time.GetElapsedTime(before.Timestamp, after.Timestamp).TotalSeconds);
        var table = new Table().Border(TableBorder.Rounded)
            .Title(oversubscribed ? "per core [yellow](oversubscribed: more kernels than CPUs)[/]" : "per core");
        table.AddColumns("core", "sent/s", "received/s", "sent", "received", "ring-full stalls", "busy %", "parks");
        for (int c = 0; c < after.Cores; c++)
        {
            long sent = 0;
            long sentBefore = 0;
            long stalls = 0;
            for (int d = 0; d < after.Cores; d++)
            {
                sent += after.Sent[c, d];
                sentBefore += before.Sent[c, d];
                stalls += after.Stalls[c, d] - before.Stalls[c, d];
            }

            long busy = after.Busy[c] - before.Busy[c];
            long idle = after.Idle[c] - before.Idle[c];
            double busyPercent = busy + idle > 0 ? 100.0 * busy / (busy + idle) : 0;
            table.AddRow(
                c.ToString(System.Globalization.CultureInfo.InvariantCulture),
                Rate((sent - sentBefore) / seconds),
                Rate((after.Received[c] - before.Received[c]) / seconds),
                sent.ToString("N0", System.Globalization.CultureInfo.InvariantCulture),
                after.Received[c].ToString("N0", System.Globalization.CultureInfo.InvariantCulture),
                stalls.ToString("N0", System.Globalization.CultureInfo.InvariantCulture),
                busyPercent.ToString("F1", System.Globalization.CultureInfo.InvariantCulture),
                (after.Parks[c] - before.Parks[c]).ToString("N0", System.Globalization.CultureInfo.InvariantCulture));
        }

        return table;
    }

    public static IRenderable Matrix(MachineSnapshot before, MachineSnapshot after, TimeProvider time)
    {
        double seconds = Math.Max(1e-9, time.GetElapsedTime(before.Timestamp, after.Timestamp).TotalSeconds);
        var table = new Table().Border(TableBorder.Rounded);
        table.AddColumn("from \\ to");
        for (int d = 0; d < after.Cores; d++)
        {
            table.AddColumn(new TableColumn(d.ToString(System.Globalization.CultureInfo.InvariantCulture)).RightAligned());
        }

        for (int s = 0; s < after.Cores; s++)
        {
            var row = new List<string> { s.ToString(System.Globalization.CultureInfo.InvariantCulture) };
            for (int d = 0; d < after.Cores; d++)
            {
                if (s == d)
                {
                    row.Add("-");
                    continue;
                }

                double rate = (after.Sent[s, d] - before.Sent[s, d]) / seconds;
                long stalls = after.Stalls[s, d] - before.Stalls[s, d];
                long window = after.WindowStalls[s, d] - before.WindowStalls[s, d];
                row.Add($"{Rate(rate)} [grey]({stalls.ToString("N0", System.Globalization.CultureInfo.InvariantCulture)} / {window.ToString("N0", System.Globalization.CultureInfo.InvariantCulture)})[/]");
            }

            table.AddRow(row.ToArray());
        }

        return new Rows(new Text("messages/s from core (row) to core (column); in brackets: stalls on a full ring / waits for a channel's credits (its receiver was behind)"), table);
    }

    /// <summary>
    /// What the runtime's Meter reports (the same instruments OTLP exports): the busiest channels
    /// and the monitor/capability operation counts.
    /// </summary>
    public static IRenderable MeterTables(IReadOnlyList<MetricValue> values, int topChannels = 12)
    {
        var channels = new Table().Border(TableBorder.Rounded).Title($"busiest channels (top {topChannels}, from the Multikernel meter)");
        channels.AddColumns("channel", "core", "to core", "sent", "received", "queued");
        // Many endpoints can share a name and a core (every application binds "netd"): one row per
        // (channel, core, destination), their values summed.
        (string Channel, string Core, string To) Key(MetricValue v) =>
            (v.Tag(TelemetryTags.Channel)?.ToString() ?? "?", v.Tag(TelemetryTags.Core)?.ToString() ?? "?", v.Tag(TelemetryTags.CoreDestination)?.ToString() ?? "?");
        Dictionary<(string Channel, string Core, string To), double> Sum(string instrument) =>
            values.Where(v => v.Instrument == instrument).GroupBy(Key).ToDictionary(g => g.Key, g => g.Sum(v => v.Value));
        var sent = Sum("multikernel.channel.messages.sent");
        var received = Sum("multikernel.channel.messages.received");
        var queued = Sum("multikernel.channel.queue.depth");
        foreach (var (key, value) in sent.OrderByDescending(kv => kv.Value + received.GetValueOrDefault(kv.Key)).Take(topChannels))
        {
            channels.AddRow(
                Markup.Escape(key.Channel),
                key.Core,
                key.To,
                value.ToString("N0", System.Globalization.CultureInfo.InvariantCulture),
                received.GetValueOrDefault(key).ToString("N0", System.Globalization.CultureInfo.InvariantCulture),
                queued.GetValueOrDefault(key).ToString("N0", System.Globalization.CultureInfo.InvariantCulture));
        }

        var operations = new Table().Border(TableBorder.Rounded).Title("monitor and capability operations");
        operations.AddColumns("operation", "outcome", "count");
        foreach (var group in values
            .Where(v => v.Instrument is "multikernel.monitor.operations" or "multikernel.capability.operations")
            .GroupBy(v => (Operation: (v.Tag(TelemetryTags.MonitorOperation) ?? v.Tag(TelemetryTags.CapabilityOperation))?.ToString() ?? "?", Outcome: v.Tag(TelemetryTags.Outcome)?.ToString() ?? "?"))
            .OrderBy(g => g.Key.Operation, StringComparer.Ordinal))
        {
            operations.AddRow(Markup.Escape(group.Key.Operation), Markup.Escape(group.Key.Outcome), group.Sum(v => v.Value).ToString("N0", System.Globalization.CultureInfo.InvariantCulture));
        }

        return new Rows(channels, operations);
    }

    public static string Rate(double perSecond) => perSecond switch
    {
        >= 1e6 => (perSecond / 1e6).ToString("F2", System.Globalization.CultureInfo.InvariantCulture) + " M",
        >= 1e3 => (perSecond / 1e3).ToString("F1", System.Globalization.CultureInfo.InvariantCulture) + " k",
        _ => perSecond.ToString("F0", System.Globalization.CultureInfo.InvariantCulture),
    };
}
