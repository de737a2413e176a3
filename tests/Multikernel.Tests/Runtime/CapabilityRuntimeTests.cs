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
    public async Task InfiniteProducer_ToAConsumerThatNeverTakes_Stalls_MemoryStaysFlat_OthersRun_AndPairsInALoopStopOnRamBilling()
    {
        // Seed 002, honestly, through the whole machine: a producer retypes buffers from its own
        // RAM and passes them to a consumer that never takes them. Once the channel's grant window
        // is full its send does not complete (it stalls; no exception), the machine's memory stays
        // flat, and domains on both cores keep running. Taking one grant lets exactly one more send
        // through. Pairs started in a loop stop on RAM billing (a clear OutOfMemory), not on the
        // domain table, and stopping the machine ends every stalled producer.
        const int GrantWindow = 4;
        var sent = new System.Collections.Concurrent.ConcurrentDictionary<ulong, int>();
        var lastSend = new System.Collections.Concurrent.ConcurrentDictionary<ulong, Task>();
        var takeOne = new System.Collections.Concurrent.ConcurrentDictionary<ulong, TaskCompletionSource>();
        TaskCompletionSource TakeOne(ulong round) => takeOne.GetOrAdd(round, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        var producerErrors = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
        var ticks = new long[2];
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.Memory = "4MiB";          // 2 MiB per core: room for a few dozen 64 KiB domains, far fewer than MaxDomainsPerCore
            o.DomainMemory = "64KiB";   // 16 frames each
            o.ChannelGrantWindow = GrantWindow;
            o.AddProgram("never-takes", async ctx =>
            {
                using ServiceListener listener = await ctx.ExportAsync($"sink-{ctx.Argument}");
                DomainChannel channel = await listener.AcceptAsync(ctx.Stopping);
                await TakeOne(ctx.Argument).Task.WaitAsync(ctx.Stopping);
                Assert.True(channel.TryReceiveCapability(out _)); // one, then never again
                await Task.Delay(Timeout.Infinite, ctx.Stopping).ContinueWith(_ => { }, TaskScheduler.Default);
            });
            o.AddProgram("producer", async ctx =>
            {
                DomainChannel channel = await ctx.BindAsync($"sink-{ctx.Argument}", TimeSpan.FromSeconds(30));
                try
                {
                    while (true)
                    {
                        int buffer = ctx.Capabilities.Retype(ctx.RamSlot, CapabilityType.Frame, 1);
                        Task send = channel.SendCapabilityAsync(buffer, TransferMode.Move);
                        lastSend[ctx.Argument] = send;
                        await send;
                        sent.AddOrUpdate(ctx.Argument, 1, (_, n) => n + 1);
                    }
                }
                catch (System.Threading.Channels.ChannelClosedException) when (ctx.Stopping.IsCancellationRequested)
                {
                    // The machine stops: the stalled send fails with the channel, and the producer ends.
                }
                catch (Exception e)
                {
                    producerErrors.Enqueue(e);
                    throw;
                }
            });
            o.AddProgram("bystander", async ctx =>
            {
                while (!ctx.Stopping.IsCancellationRequested)
                {
                    int frame = ctx.Capabilities.Retype(ctx.RamSlot, CapabilityType.Frame, 1);
                    ctx.Capabilities.GetFrame(frame).Span.Fill(7);
                    ctx.Capabilities.Delete(frame);
                    Interlocked.Increment(ref ticks[ctx.Argument]);
                    await ctx.Delay(TimeSpan.FromMilliseconds(1), ctx.Stopping);
                }
            });
        });
        try
        {
            await runtime.SpawnAsync(0, "bystander", 0);
            await runtime.SpawnAsync(1, "bystander", 1);
            await runtime.SpawnAsync(1, "never-takes", 0);
            await runtime.SpawnAsync(0, "producer", 0);
            await TestMachine.EventuallyAsync(() => sent.GetValueOrDefault(0UL) >= GrantWindow, "the first producer to fill the grant window");
            long free0 = await runtime.FreeRamFramesAsync(0);
            long free1 = await runtime.FreeRamFramesAsync(1);

            // Both cores keep running while the producer is stuck; its send neither completes nor fails.
            long t0 = Interlocked.Read(ref ticks[0]), t1 = Interlocked.Read(ref ticks[1]);
            await TestMachine.EventuallyAsync(() => Interlocked.Read(ref ticks[0]) > t0 + 30 && Interlocked.Read(ref ticks[1]) > t1 + 30, "bystanders on both cores to keep running");
            Assert.Equal(GrantWindow, sent[0]);
            Task stalled = lastSend[0];
            Assert.False(stalled.IsCompleted, $"the producer's send should stall, not {stalled.Status}");
            Assert.Empty(producerErrors);
            Assert.Equal(free0, await runtime.FreeRamFramesAsync(0)); // flat: nothing more is taken on either core
            Assert.Equal(free1, await runtime.FreeRamFramesAsync(1));

            // The consumer takes one: exactly one more send goes through, then it stalls again.
            TakeOne(0).SetResult();
            await stalled.WaitAsync(TestMachine.Patience);
            await TestMachine.EventuallyAsync(() => sent[0] == GrantWindow + 1 && !lastSend[0].IsCompleted && !ReferenceEquals(lastSend[0], stalled), "one more send after one grant was taken");
            t0 = Interlocked.Read(ref ticks[0]);
            await TestMachine.EventuallyAsync(() => Interlocked.Read(ref ticks[0]) > t0 + 30, "the bystander to keep running");
            Assert.Equal(GrantWindow + 1, sent[0]);

            // Put it in a loop: new pairs, each stuck on its own window, until the RAM the monitor
            // hands out is gone. What stops the loop is RAM billing with a clear error.
            MonitorException? refused = null;
            for (ulong round = 1; refused is null && round < 200; round++)
            {
                try
                {
                    await runtime.SpawnAsync(1, "never-takes", round);
                    await runtime.SpawnAsync(0, "producer", round);
                }
                catch (MonitorException e)
                {
                    refused = e;
                    break;
                }

                ulong r = round;
                await TestMachine.EventuallyAsync(() => sent.GetValueOrDefault(r) == GrantWindow, $"producer {round} to fill its window");
            }

            Assert.NotNull(refused);
            Assert.Equal(MonitorStatus.OutOfMemory, refused.Status);
            Assert.Empty(producerErrors);
            t1 = Interlocked.Read(ref ticks[1]);
            await TestMachine.EventuallyAsync(() => Interlocked.Read(ref ticks[1]) > t1 + 30, "the bystander on the full core to keep running");
        }
        finally
        {
            await runtime.StopCleanlyAsync();
        }

        Assert.Empty(producerErrors);
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
