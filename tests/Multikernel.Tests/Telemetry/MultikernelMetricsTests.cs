using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;
using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Diagnostics;
using Multikernel.CpuDriver.Urpc;
using Multikernel.Monitor.Telemetry;

namespace Multikernel.Tests.Telemetry;

[Collection(TelemetryCollection.Name)]
public sealed class MultikernelMetricsTests
{
    private static double Value(IReadOnlyList<MetricValue> values, string instrument, params (string Key, object Value)[] tags) =>
        Assert.Single(values, v => v.Instrument == instrument && tags.All(t => Equals(v.Tag(t.Key), t.Value))).Value;

    [Fact]
    public async Task Observation_ReadsTheKernelsAndRegisteredChannels()
    {
        using var rig = new TwoCoreRig();
        using var metrics = new MultikernelMetrics([rig.Core0, rig.Core1]);
        using var reader = new MetricsSnapshotReader();
        Assert.True(await TwoCoreRig.On(rig.Core0, () => metrics.TryRegisterChannel(rig.Sender)));
        Assert.True(await TwoCoreRig.On(rig.Core1, () => metrics.TryRegisterChannel(rig.Receiver)));
        const int Messages = 20; // more than the window (8): credits flow back

        Task receive = TwoCoreRig.RunOn(rig.Core1, async () =>
        {
            for (int i = 0; i < Messages; i++)
            {
                await rig.Receiver.ReadAsync();
            }
        });
        Task send = TwoCoreRig.RunOn(rig.Core0, async () =>
        {
            for (int i = 0; i < Messages; i++)
            {
                await rig.Sender.WriteAsync(Message.Create(1, (ulong)i));
            }
        });
        await Task.WhenAll(send, receive).WaitAsync(TimeSpan.FromSeconds(30));

        IReadOnlyList<MetricValue> values = reader.Collect();

        Assert.Equal(Messages, Value(values, "multikernel.channel.messages.sent", (TelemetryTags.Channel, "ping"), (TelemetryTags.Core, 0), (TelemetryTags.CoreDestination, 1)));
        Assert.Equal(Messages, Value(values, "multikernel.channel.messages.received", (TelemetryTags.Channel, "ping"), (TelemetryTags.Core, 1)));
        Assert.Equal(0, Value(values, "multikernel.channel.queue.depth", (TelemetryTags.Core, 1)));
        // Core-pair counters include the credit returns, so at least the data messages.
        Assert.InRange(Value(values, "multikernel.urpc.messages.sent", (TelemetryTags.CoreSource, 0), (TelemetryTags.CoreDestination, 1)), Messages, Messages + 10);
        Assert.InRange(Value(values, "multikernel.urpc.messages.received", (TelemetryTags.CoreSource, 0), (TelemetryTags.CoreDestination, 1)), Messages, Messages + 10);
        Assert.True(Value(values, "multikernel.urpc.messages.sent", (TelemetryTags.CoreSource, 1), (TelemetryTags.CoreDestination, 0)) >= 2); // credits
        Assert.InRange(Value(values, "multikernel.urpc.ring.depth", (TelemetryTags.CoreSource, 0), (TelemetryTags.CoreDestination, 1)), 0, 16);
        foreach (int core in new[] { 0, 1 })
        {
            double busy = Value(values, "multikernel.core.time", (TelemetryTags.Core, core), (TelemetryTags.CoreState, "busy"));
            double idle = Value(values, "multikernel.core.time", (TelemetryTags.Core, core), (TelemetryTags.CoreState, "idle"));
            Assert.True(busy + idle > 0);
            Assert.True(Value(values, "multikernel.core.work_items", (TelemetryTags.Core, core)) > 0);
            Assert.Equal(1, Value(values, "multikernel.core.endpoints", (TelemetryTags.Core, core)));
        }

        Assert.Equal("s", values.First(v => v.Instrument == "multikernel.core.time").Unit);
    }

    [Fact]
    public void OperationCounters_AreSummedByCoreOperationAndOutcome()
    {
        using var rig = new TwoCoreRig();
        using var metrics = new MultikernelMetrics([rig.Core0, rig.Core1]);
        using var reader = new MetricsSnapshotReader();

        metrics.RecordMonitorOperation(0, ProtocolSpanNames.Revoke);
        metrics.RecordMonitorOperation(0, ProtocolSpanNames.Revoke);
        metrics.RecordMonitorOperation(1, ProtocolSpanNames.Bind, "error");
        metrics.RecordCapabilityOperation(1, "retype");

        IReadOnlyList<MetricValue> values = reader.Collect();
        Assert.Equal(2, Value(values, "multikernel.monitor.operations", (TelemetryTags.Core, 0), (TelemetryTags.MonitorOperation, "revoke"), (TelemetryTags.Outcome, "ok")));
        Assert.Equal(1, Value(values, "multikernel.monitor.operations", (TelemetryTags.Core, 1), (TelemetryTags.MonitorOperation, "bind"), (TelemetryTags.Outcome, "error")));
        Assert.Equal(1, Value(values, "multikernel.capability.operations", (TelemetryTags.Core, 1), (TelemetryTags.CapabilityOperation, "retype")));
        Assert.Throws<ArgumentOutOfRangeException>(() => metrics.RecordMonitorOperation(2, ProtocolSpanNames.Spawn));
    }

    [Fact]
    public void OperationCounters_WithoutAListener_AllocateNothing()
    {
        using var rig = new TwoCoreRig();
        using var metrics = new MultikernelMetrics([rig.Core0, rig.Core1]);
        metrics.RecordMonitorOperation(0, "warm-up");
        Assert.False(metrics.OperationCountersEnabled, "a meter listener left attached by an earlier test collects the Multikernel meter; this test measures the path without one");

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 10_000; i++)
        {
            metrics.RecordMonitorOperation(i & 1, ProtocolSpanNames.Revoke);
            metrics.RecordCapabilityOperation(i & 1, "copy");
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Fact]
    public async Task ChannelTables_ArePerCore_BoundedPerCore_RefuseAndCountAtTheLimit()
    {
        using var rig = new TwoCoreRig();
        using var metrics = new MultikernelMetrics([rig.Core0, rig.Core1], maxChannels: 1, maxDomains: 1);
        Endpoint extra = await TwoCoreRig.On(rig.Core0, () => rig.Core0.CreateEndpoint("extra"));

        Assert.True(await TwoCoreRig.On(rig.Core0, () => metrics.TryRegisterChannel(rig.Sender)));
        Assert.True(await TwoCoreRig.On(rig.Core0, () => metrics.TryRegisterChannel(rig.Sender))); // idempotent
        Assert.True(await TwoCoreRig.On(rig.Core1, () => metrics.TryRegisterChannel(rig.Receiver))); // core 1's own table
        Assert.False(await TwoCoreRig.On(rig.Core0, () => metrics.TryRegisterChannel(extra)));
        Assert.Equal(1, metrics.RejectedRegistrations);
        Assert.Equal(2, metrics.ChannelCount);

        Assert.True(await TwoCoreRig.On(rig.Core0, () => metrics.UnregisterChannel(rig.Sender)));
        Assert.False(await TwoCoreRig.On(rig.Core0, () => metrics.UnregisterChannel(rig.Sender)));
        Assert.True(await TwoCoreRig.On(rig.Core0, () => metrics.TryRegisterChannel(extra))); // the freed slot
        Assert.Equal(2, metrics.ChannelCount);

        long inUse = 8192;
        using var reader = new MetricsSnapshotReader();
        IDisposable? registration = await TwoCoreRig.On(rig.Core1, () => metrics.TryRegisterDomainMemory("echo", 1, () => Volatile.Read(ref inUse)));
        Assert.NotNull(registration);
        Assert.Null(await TwoCoreRig.On(rig.Core1, () => metrics.TryRegisterDomainMemory("kv", 1, () => 0)));
        Assert.Equal(2, metrics.RejectedRegistrations);
        Assert.Equal(8192, Value(reader.Collect(), "multikernel.domain.memory.usage", (TelemetryTags.Domain, "echo"), (TelemetryTags.Core, 1)));

        await TwoCoreRig.On(rig.Core1, () => { registration.Dispose(); return 0; });
        Assert.DoesNotContain(reader.Collect(), v => v.Instrument == "multikernel.domain.memory.usage");
        Assert.NotNull(await TwoCoreRig.On(rig.Core1, () => metrics.TryRegisterDomainMemory("kv", 1, () => 0)));
    }

    [Fact]
    public void Registration_FromAnotherThreadThanTheCores_IsRefusedWithAClearError()
    {
        using var rig = new TwoCoreRig();
        using var metrics = new MultikernelMetrics([rig.Core0, rig.Core1]);
        var error = Assert.Throws<InvalidOperationException>(() => metrics.TryRegisterChannel(rig.Sender));
        Assert.Contains("core 0's thread", error.Message, StringComparison.Ordinal);
        Assert.Throws<InvalidOperationException>(() => metrics.UnregisterChannel(rig.Receiver));
        Assert.Throws<InvalidOperationException>(() => metrics.TryRegisterDomainMemory("echo", 1, () => 0));
        Assert.Equal(0, metrics.ChannelCount);
    }

    [Fact]
    public void Constructor_ChecksTheKernelList()
    {
        using var rig = new TwoCoreRig();
        Assert.Throws<ArgumentException>(() => new MultikernelMetrics([rig.Core1, rig.Core0]));
        Assert.Throws<ArgumentNullException>(() => new MultikernelMetrics(null!));
    }

    [Fact]
    public void MeterFactory_OwnsTheMeter()
    {
        using ServiceProvider services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        IMeterFactory factory = services.GetRequiredService<IMeterFactory>();
        using var rig = new TwoCoreRig();
        var metrics = new MultikernelMetrics([rig.Core0, rig.Core1], factory);
        using var reader = new MetricsSnapshotReader();

        metrics.Dispose(); // the factory's meter stays alive
        metrics.RecordMonitorOperation(0, ProtocolSpanNames.Spawn);

        Assert.Equal(MultikernelMetrics.MeterName, metrics.Meter.Name);
        Assert.Equal(1, Value(reader.Collect(), "multikernel.monitor.operations", (TelemetryTags.MonitorOperation, "spawn")));
    }

    [Fact]
    public void SnapshotReader_BoundsItsSeries()
    {
        using var rig = new TwoCoreRig();
        using var metrics = new MultikernelMetrics([rig.Core0, rig.Core1]);
        using var reader = new MetricsSnapshotReader(maxSeries: 2);

        metrics.RecordMonitorOperation(0, "a");
        metrics.RecordMonitorOperation(0, "b");
        metrics.RecordMonitorOperation(0, "c");

        Assert.Equal(2, reader.Collect().Count(v => v.Instrument == "multikernel.monitor.operations"));
        Assert.True(reader.DroppedSeries >= 1);
    }
}
