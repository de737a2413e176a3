using System.Diagnostics;
using Multikernel.CpuDriver.Capabilities;
using Multikernel.CpuDriver.Diagnostics;
using Multikernel.CpuDriver.Memory;
using Multikernel.Monitor;
using Multikernel.Monitor.Hosting;
using Multikernel.Tests.Telemetry;

namespace Multikernel.Tests.Runtime;

/// <summary>Capabilities through the real machine: monitors, capability links, kernel loops.</summary>
[Collection(TelemetryCollection.Name)]
public sealed class CapabilityRuntimeTests
{
    [Theory]
    [InlineData(RevokeMode.Unicast)]
    [InlineData(RevokeMode.Multicast)]
    public async Task FrameSharedAcrossCores_IsSeenByTheReceiver_AndRevokeKillsEveryCopy_WithSpansOnEveryCore(RevokeMode mode)
    {
        const int Cores = 4; // oversubscribed here: kernels share the 2 CPUs
        using var capture = new ActivityCapture();
        var readers = new TaskCompletionSource<string>[Cores];
        var revoked = new TaskCompletionSource<Exception?>[Cores];
        for (int i = 0; i < Cores; i++)
        {
            readers[i] = new(TaskCreationOptions.RunContinuationsAsynchronously);
            revoked[i] = new(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        var revokeDone = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        MultikernelRuntime runtime = await TestMachine.StartAsync(Cores, o =>
        {
            o.AddProgram("holder", async ctx =>
            {
                using ServiceListener listener = await ctx.ExportAsync($"holder-{ctx.Core}");
                DomainChannel channel = await listener.AcceptAsync(ctx.Stopping);
                int slot = await channel.ReceiveCapabilityAsync();
                FrameHandle frame = ctx.Capabilities.GetFrame(slot);
                readers[ctx.Core].SetResult(System.Text.Encoding.ASCII.GetString(frame.ReadOnlySpan[..5]));
                await channel.Reader<long>().ReadAsync(ctx.Stopping); // "revoked now"
                try
                {
                    _ = frame.ReadOnlySpan[0];
                    revoked[ctx.Core].SetResult(null);
                }
                catch (Exception ex)
                {
                    revoked[ctx.Core].SetResult(ex);
                }
            });
            o.AddProgram("owner", async ctx =>
            {
                try
                {
                    int frameSlot = ctx.Capabilities.Retype(ctx.RamSlot, CapabilityType.Frame, 1);
                    FrameHandle own = ctx.Capabilities.GetFrame(frameSlot);
                    "hello"u8.CopyTo(own.Span);
                    var channels = new List<DomainChannel>();
                    for (int k = 1; k < Cores; k++)
                    {
                        DomainChannel channel = await ctx.BindAsync($"holder-{k}", TimeSpan.FromSeconds(30));
                        await channel.SendCapabilityAsync(frameSlot, TransferMode.Copy, CapabilityRights.Read);
                        channels.Add(channel);
                    }

                    await Task.WhenAll(readers.Skip(1).Select(r => r.Task));
                    await ctx.Capabilities.RevokeAsync(frameSlot, mode);
                    revokeDone.SetResult();
                    foreach (DomainChannel channel in channels)
                    {
                        await channel.Writer<long>().WriteAsync(1);
                    }

                    // The revoker keeps its own copy (revoke removes descendants and copies elsewhere).
                    Assert.Equal((byte)'h', own.ReadOnlySpan[0]);
                }
                catch (Exception ex)
                {
                    revokeDone.TrySetException(ex);
                }
            });
            for (int k = 1; k < Cores; k++)
            {
                o.SpawnAtBoot("holder", core: k);
            }

            o.SpawnAtBoot("owner", core: 0);
        });
        try
        {
            for (int k = 1; k < Cores; k++)
            {
                Assert.Equal("hello", await readers[k].Task.WaitAsync(TestMachine.Patience));
            }

            await revokeDone.Task.WaitAsync(TestMachine.Patience);
            for (int k = 1; k < Cores; k++)
            {
                Exception? ex = await revoked[k].Task.WaitAsync(TestMachine.Patience);
                Assert.IsType<CapabilityRevokedException>(ex);
            }
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }

        // One trace follows the revoke to every holder's core and back.
        Activity revoke = Assert.Single(capture.All(ProtocolSpanNames.Revoke), a => a.Kind == ActivityKind.Client);
        var marks = capture.All(ProtocolSpanNames.RevokeMark).Where(a => a.TraceId == revoke.TraceId).ToList();
        var commits = capture.All(ProtocolSpanNames.RevokeCommit).Where(a => a.TraceId == revoke.TraceId).ToList();
        Assert.Equal(Enumerable.Range(1, Cores - 1), marks.Select(a => (int)a.GetTagItem(TelemetryTags.Core)!).Distinct().Order());
        Assert.Equal(Enumerable.Range(1, Cores - 1), commits.Select(a => (int)a.GetTagItem(TelemetryTags.Core)!).Distinct().Order());
        Assert.Contains(capture.Stopped, a => a.TraceId == revoke.TraceId && a.DisplayName.Contains("ack", StringComparison.Ordinal) && (int)a.GetTagItem(TelemetryTags.Core)! == 0);
    }

    [Fact]
    public async Task InfiniteProducer_ToAConsumerThatNeverReads_StopsWithinItsOwnRam_AndPairsInALoopLeakNothing()
    {
        // Seed 002 through the whole machine: every buffer the producer sends is retyped from its
        // own RAM and moved to a consumer that never looks at it. The producer runs out of its
        // budget with a clear error; a bystander on the same core keeps working; when a pair ends,
        // every frame goes back to its core, so pairs in a loop cannot exhaust the machine.
        const int Rounds = 6;
        const int FramesPerDomain = 16;
        var outcomes = new System.Collections.Concurrent.ConcurrentQueue<(Exception? Error, int Sent)>();
        var producerDone = new System.Collections.Concurrent.ConcurrentDictionary<ulong, TaskCompletionSource>();
        TaskCompletionSource Done(ulong round) => producerDone.GetOrAdd(round, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        long bystanderTicks = 0;
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.Memory = "8MiB";
            o.DomainMemory = $"{FramesPerDomain * 4}KiB";
            o.ChannelWindow = 256; // the channel is not what stops it: its RAM is
            o.AddProgram("never-reads", async ctx =>
            {
                using ServiceListener listener = await ctx.ExportAsync($"sink-{ctx.Argument}");
                _ = await listener.AcceptAsync(ctx.Stopping);
                await Done(ctx.Argument).Task.WaitAsync(ctx.Stopping); // holds on, reads nothing, ends once its producer is stuck
            });
            o.AddProgram("producer", async ctx =>
            {
                DomainChannel channel = await ctx.BindAsync($"sink-{ctx.Argument}", TimeSpan.FromSeconds(30));
                int sent = 0;
                try
                {
                    while (true)
                    {
                        int buffer = ctx.Capabilities.Retype(ctx.RamSlot, CapabilityType.Frame, 1);
                        await channel.SendCapabilityAsync(buffer, TransferMode.Move);
                        sent++;
                    }
                }
                catch (CapabilityException ex)
                {
                    outcomes.Enqueue((ex, sent));
                    Done(ctx.Argument).SetResult();
                }
            });
            o.AddProgram("bystander", async ctx =>
            {
                while (!ctx.Stopping.IsCancellationRequested)
                {
                    int frame = ctx.Capabilities.Retype(ctx.RamSlot, CapabilityType.Frame, 1);
                    ctx.Capabilities.GetFrame(frame).Span.Fill(7);
                    ctx.Capabilities.Delete(frame);
                    Interlocked.Increment(ref bystanderTicks);
                    await ctx.Delay(TimeSpan.FromMilliseconds(1), ctx.Stopping);
                }
            });
        });
        try
        {
            long baselineCore0 = await runtime.FreeRamFramesAsync(0);
            long baselineCore1 = await runtime.FreeRamFramesAsync(1);
            await runtime.SpawnAsync(0, "bystander");
            for (int round = 0; round < Rounds; round++)
            {
                await runtime.SpawnAsync(1, "never-reads", (ulong)round);
                await runtime.SpawnAsync(0, "producer", (ulong)round);
                await TestMachine.EventuallyAsync(() => outcomes.Count == round + 1, $"producer {round} to run out of RAM");
            }

            Assert.All(outcomes, e => Assert.IsType<OutOfRamException>(e.Error));
            Assert.All(outcomes, e => Assert.Equal(FramesPerDomain, e.Sent));
            long ticks = Interlocked.Read(ref bystanderTicks);
            await TestMachine.EventuallyAsync(() => Interlocked.Read(ref bystanderTicks) > ticks + 10, "the bystander on the producers' core to keep running");

            // Every pair has ended: its RAM, and the frames it moved to the other core, are back.
            await TestMachine.EventuallyAsync(() => runtime.FreeRamFramesAsync(1).Result == baselineCore1, "core 1's RAM back at its baseline");
            await TestMachine.EventuallyAsync(() => runtime.FreeRamFramesAsync(0).Result == baselineCore0 - FramesPerDomain, "core 0's RAM back at its baseline (less the bystander's budget)");
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }

    [Fact]
    public async Task Spawn_WithoutEnoughRamForTheDomainsBudget_FailsClearly_AndOthersRun()
    {
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.Memory = "2MiB";        // 1 MiB per core
            o.DomainMemory = "512KiB"; // room for one domain per core (the rest is short by a frame)
            o.AddProgram("idle", ctx => Task.Delay(Timeout.Infinite, ctx.Stopping).ContinueWith(_ => { }, TaskScheduler.Default));
        });
        try
        {
            await runtime.SpawnAsync(1, "idle");
            var ex = await Assert.ThrowsAsync<MonitorException>(async () =>
            {
                for (int i = 0; i < 4; i++)
                {
                    await runtime.SpawnAsync(1, "idle");
                }
            });
            Assert.Equal(MonitorStatus.OutOfMemory, ex.Status);
            Assert.Contains("OutOfMemory", ex.Message, StringComparison.Ordinal);
            await runtime.SpawnAsync(0, "idle"); // the other core's RAM is its own
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }
}

[Collection(TelemetryCollection.Name)]
public sealed class CapabilityMetricsTests
{
    [Fact]
    public async Task DomainMemoryInUse_AndCapabilityOperations_ReachTheMeter()
    {
        using var meter = new Multikernel.Monitor.Telemetry.MetricsSnapshotReader();
        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.AddProgram("hoarder", async ctx =>
            {
                for (int i = 0; i < 5; i++)
                {
                    ctx.Capabilities.Retype(ctx.RamSlot, CapabilityType.Frame, 2); // 10 frames = 40 KiB in use
                }

                using ServiceListener listener = await ctx.ExportAsync("hoarder");
                DomainChannel peer = await listener.AcceptAsync(ctx.Stopping);
                int slot = ctx.Capabilities.Retype(ctx.RamSlot, CapabilityType.Frame, 1);
                await peer.SendCapabilityAsync(slot, TransferMode.Copy);
                await ctx.Capabilities.RevokeAsync(slot);
                ready.SetResult();
                await Task.Delay(Timeout.Infinite, ctx.Stopping).ContinueWith(_ => { }, TaskScheduler.Default);
            });
            o.AddProgram("peer", async ctx =>
            {
                DomainChannel channel = await ctx.BindAsync("hoarder", TimeSpan.FromSeconds(30));
                _ = await channel.ReceiveCapabilityAsync();
            });
            o.SpawnAtBoot("hoarder", core: 0);
            o.SpawnAtBoot("peer", core: 1);
        });
        try
        {
            await ready.Task.WaitAsync(TestMachine.Patience);
            IReadOnlyList<Multikernel.Monitor.Telemetry.MetricValue> values = [];
            await TestMachine.EventuallyAsync(() =>
            {
                values = meter.Collect();
                return values.Any(v => v.Instrument == "multikernel.domain.memory.usage" && v.Value >= 10 * 4096);
            }, "the hoarder's memory in use to be reported");
            Assert.Contains(values, v => v.Instrument == "multikernel.capability.operations" && (v.Tag(TelemetryTags.CapabilityOperation) as string) == ProtocolSpanNames.RevokeMark);
            Assert.Contains(values, v => v.Instrument == "multikernel.capability.operations" && (v.Tag(TelemetryTags.CapabilityOperation) as string) == "transfer install");
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }
    }
}
