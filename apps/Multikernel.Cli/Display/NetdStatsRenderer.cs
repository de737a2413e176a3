using System.Globalization;
using Multikernel.Monitor.Telemetry;
using Multikernel.Netd.Daemon;
using Multikernel.Netd.Filters;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace Multikernel.Cli.Display;

/// <summary>
/// netd's part of <c>run --stats</c>: its counters and drops by reason from the <c>Multikernel</c>
/// meter (the same instruments OTLP exports), and the installed filters and bound consumers with
/// their counters, read on netd's core through <see cref="NetdHost"/>.
/// </summary>
internal static class NetdStatsRenderer
{
    /// <summary>The tables, or an empty row when netd does not run in this machine.</summary>
    public static async Task<IRenderable> TablesAsync(IReadOnlyList<MetricValue> values, NetdHost netd)
    {
        if (!netd.IsAdded)
        {
            return new Rows();
        }

        IReadOnlyList<FilterInfo> filters = await netd.FiltersAsync();
        ConsumerStats[] consumers = await netd.ConsumerStatsAsync();
        return Render(values, filters, consumers);
    }

    /// <summary>Renders the tables from meter values and netd's lists (separate so a test renders known input).</summary>
    public static IRenderable Render(IReadOnlyList<MetricValue> values, IReadOnlyList<FilterInfo> filters, IReadOnlyList<ConsumerStats> consumers)
    {
        string device = values.FirstOrDefault(v => v.Instrument.StartsWith("multikernel.netd.", StringComparison.Ordinal))?.Tag(NetdTags.Device)?.ToString() ?? "not running";
        var traffic = new Table().Border(TableBorder.Rounded).Title($"netd ({Markup.Escape(device)})");
        traffic.AddColumns("counter", "value");
        Row(traffic, "received packets", Value(values, NetdMetrics.Packets, NetdTags.Direction, "received"));
        Row(traffic, "received bytes", Value(values, NetdMetrics.Bytes, NetdTags.Direction, "received"));
        Row(traffic, "sent packets", Value(values, NetdMetrics.Packets, NetdTags.Direction, "transmitted"));
        Row(traffic, "sent bytes", Value(values, NetdMetrics.Bytes, NetdTags.Direction, "transmitted"));
        Row(traffic, "delivered small (copied)", Value(values, NetdMetrics.Deliveries, NetdTags.Kind, "small"));
        Row(traffic, "delivered in pages", Value(values, NetdMetrics.Deliveries, NetdTags.Kind, "page"));
        Row(traffic, "ARP replies", Value(values, NetdMetrics.Replies, NetdTags.Kind, "arp"));
        Row(traffic, "echo replies", Value(values, NetdMetrics.Replies, NetdTags.Kind, "echo"));
        Row(traffic, "transmits waiting", Value(values, NetdMetrics.TransmitPending, null, null));
        Row(traffic, "captured", Value(values, NetdMetrics.CapturePackets, NetdTags.Reason, "written"));
        Row(traffic, "capture dropped (size cap)", Value(values, NetdMetrics.CapturePackets, NetdTags.Reason, "dropped"));

        var drops = new Table().Border(TableBorder.Rounded).Title("netd drops by reason");
        drops.AddColumns("reason", "packets");
        foreach (MetricValue v in values.Where(v => v.Instrument == NetdMetrics.Drops).OrderBy(v => v.Tag(NetdTags.Reason)?.ToString(), StringComparer.Ordinal))
        {
            drops.AddRow(Markup.Escape(v.Tag(NetdTags.Reason)?.ToString() ?? "?"), Count(v.Value));
        }

        var filterTable = new Table().Border(TableBorder.Rounded).Title($"netd filters ({filters.Count.ToString(CultureInfo.InvariantCulture)} installed)");
        filterTable.AddColumns("id", "consumer", "filter", "atoms", "matches", "bytes");
        foreach (FilterInfo f in filters)
        {
            filterTable.AddRow(
                f.Id.ToString(CultureInfo.InvariantCulture),
                f.Owner.ToString(CultureInfo.InvariantCulture),
                Markup.Escape(f.Filter),
                f.Atoms.ToString(CultureInfo.InvariantCulture),
                Count(f.Matches),
                Count(f.Bytes));
        }

        var consumerTable = new Table().Border(TableBorder.Rounded).Title("netd consumers (queue depths now)");
        consumerTable.AddColumns("id", "name", "received", "sent", "dropped (no buffer)", "posted small", "posted pages", "owed");
        foreach (ConsumerStats c in consumers)
        {
            consumerTable.AddRow(
                c.Id.ToString(CultureInfo.InvariantCulture),
                Markup.Escape(c.Name),
                Count(c.RxPackets),
                Count(c.TxPackets),
                Count(c.DroppedNoBuffer),
                c.PostedSmall.ToString(CultureInfo.InvariantCulture),
                c.PostedPages.ToString(CultureInfo.InvariantCulture),
                c.Owed.ToString(CultureInfo.InvariantCulture));
        }

        return new Rows(new Columns(traffic, drops), filterTable, consumerTable);
    }

    private static void Row(Table table, string name, double? value) => table.AddRow(name, value is double d ? Count(d) : "-");

    private static double? Value(IReadOnlyList<MetricValue> values, string instrument, string? tag, string? tagValue)
    {
        double? sum = null;
        foreach (MetricValue v in values)
        {
            if (v.Instrument == instrument && (tag is null || string.Equals(v.Tag(tag)?.ToString(), tagValue, StringComparison.Ordinal)))
            {
                sum = (sum ?? 0) + v.Value;
            }
        }

        return sum;
    }

    private static string Count(double value) => value.ToString("N0", CultureInfo.InvariantCulture);
}
