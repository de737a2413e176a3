using Multikernel.CpuDriver.Capabilities;
using Multikernel.CpuDriver.Memory;

namespace Multikernel.Tests.Capabilities;

/// <summary>
/// Seed 002 at the capability layer: every buffer is retyped from RAM a domain holds; a producer
/// whose consumer never consumes stops when its own RAM is gone, others keep running, and the
/// kernel's memory does not grow when the scenario is repeated.
/// </summary>
public sealed class BilledBufferTests
{
    private static int Drive(CapabilitySimulation sim, CapabilitySimulation.PendingTransfer task)
    {
        while (!task.IsCompleted && sim.Step())
        {
        }

        return CapabilitySimulation.Result(task);
    }

    [Fact]
    public void ProducerWithoutConsumer_StopsWhenItsOwnRamIsGone_OthersKeepAllocating()
    {
        using var sim = new CapabilitySimulation(2, seed: 11, framesPerCore: 256, appRamFrames: 16);
        CSpace monitor = sim.Domains[0][0];
        long arenaFreeBefore = monitor.FreeRamFrames;
        int objectsBefore = sim.Cores[0].ObjectCount;
        int refsBefore = sim.Cores[1].ReferenceCount;

        for (int round = 0; round < 25; round++)
        {
            CSpace producer = sim.Cores[0].CreateDomain($"producer{round}");
            CSpace consumer = sim.Cores[1].CreateDomain($"consumer{round}");
            CSpace bystander = sim.Domains[0][2];
            monitor.MoveTo(monitor.Retype(CapabilitySimulation.RootRamSlot, CapabilityType.Ram, 8), producer);

            int sent = 0;
            OutOfRamException? stop = null;
            while (stop is null)
            {
                try
                {
                    int buffer = producer.Retype(0, CapabilityType.Frame);
                    producer.GetFrame(buffer).Span[0] = (byte)sent;
                    // The consumer never reads: the buffers pile up in its CSpace, billed to the producer.
                    Drive(sim, sim.Send(producer, buffer, 1, consumer.Id, TransferMode.Move));
                    sent++;
                }
                catch (OutOfRamException e)
                {
                    stop = e;
                }
            }

            Assert.Equal(8, sent);
            Assert.Contains($"producer{round}", stop.Message, StringComparison.Ordinal);
            Assert.Equal(8, consumer.UsedSlots);
            Assert.Equal(0, producer.FreeRamFrames);

            // Another domain on the producer's core still allocates from its own RAM.
            int own = bystander.Retype(0, CapabilityType.Frame);
            bystander.GetFrame(own).Span[0] = 1;
            bystander.Delete(own);

            // Tear the pair down: the producer's RAM goes, and with it every buffer it paid for,
            // wherever it sits.
            sim.Cores[0].DestroyDomain(producer);
            sim.Cores[1].DestroyDomain(consumer);
            sim.RunUntilQuiet();
            Assert.Equal(arenaFreeBefore, monitor.FreeRamFrames);
            Assert.Equal(objectsBefore, sim.Cores[0].ObjectCount);
            Assert.Equal(refsBefore, sim.Cores[1].ReferenceCount);
            sim.CheckInvariants();
        }
    }

    private static int FillUntilOutOfRam(CSpace producer, CSpace consumer)
    {
        int sent = 0;
        try
        {
            while (true)
            {
                producer.MoveTo(producer.Retype(0, CapabilityType.Frame), consumer);
                sent++;
            }
        }
        catch (OutOfRamException)
        {
            return sent;
        }
    }

    [Fact]
    public void PairsLeftRunningInALoop_ExhaustOnlyWhatTheMonitorGave_ThenAClearError()
    {
        // Room for more domains than the RAM can fund, so what stops the loop is RAM billing.
        using var sim = new CapabilitySimulation(1, seed: 12, framesPerCore: 128, appRamFrames: 8, options: new CapabilityOptions { MaxDomainsPerCore = 64, SlotsPerDomain = 64, MaxReferencesPerCore = 4096 });
        CapabilitySimulation s = sim;
        CoreCapabilities core = s.Cores[0];
        CSpace monitor = s.Domains[0][0];
        CSpace bystander = s.Domains[0][1];
        var pairs = new List<(CSpace, CSpace)>();
        CapabilityException? refused = null;
        while (refused is null)
        {
            CSpace producer, consumer;
            try
            {
                producer = core.CreateDomain($"p{pairs.Count}");
                consumer = core.CreateDomain($"c{pairs.Count}");
                pairs.Add((producer, consumer));
                monitor.MoveTo(monitor.Retype(CapabilitySimulation.RootRamSlot, CapabilityType.Ram, 16), producer);
            }
            catch (CapabilityException e)
            {
                // The loop of new pairs stops here: the monitor's RAM (or the domain table).
                refused = e;
                break;
            }

            // This producer gets stuck on exactly its own budget; start the next pair (seed 002:
            // "put the former operation in a loop").
            Assert.Equal(16, FillUntilOutOfRam(producer, consumer));
        }

        // What stopped the loop is the monitor running out of RAM to give, or the domain table,
        // never an unbounded kernel structure; the arena is fully accounted.
        Assert.True(refused is OutOfRamException, refused.ToString()); // RAM billing, not the domain table
        long held = pairs.Sum(p => (long)p.Item2.UsedSlots);
        Assert.True(held <= 128);
        Assert.True(core.ObjectCount <= 128 + 8);

        // The bystander keeps its own 8 frames whatever the others did.
        for (int i = 0; i < 8; i++)
        {
            bystander.Retype(0, CapabilityType.Frame);
        }

        Assert.Throws<OutOfRamException>(() => bystander.Retype(0, CapabilityType.Frame));
        sim.CheckInvariants();
    }

    [Fact]
    public void LocalBufferCycle_DoesNotAllocate()
    {
        using var memory = new PhysicalMemory(64 * PhysicalMemory.FrameSize);
        var core = new CoreCapabilities(0, 1, memory, new FrameRange(0, 64), new CapabilityOptions { SlotsPerDomain = 16 });
        CSpace netd = core.CreateDomain("netd");
        CSpace app = core.CreateDomain("app");
        int kernel = core.CreateKernelCapability(netd);
        Assert.Equal(1, core.CreateRoot(netd, kernel, netd, CapabilityType.Ram, 0, 32));
        Assert.Equal(0, core.CreateRoot(netd, kernel, app, CapabilityType.Ram, 32, 32));
        int posted = app.Retype(0, CapabilityType.Frame);

        void Cycle()
        {
            int buffer = netd.Retype(1, CapabilityType.Frame);
            netd.GetFrame(buffer).Span[0] = 1;
            app.PostFrame(posted);
            netd.SwapFrames(buffer, app, posted);
            _ = app.GetFrame(posted).ReadOnlySpan[0];
            int copy = app.Copy(posted, CapabilityRights.Read);
            app.Delete(copy);
            netd.Delete(buffer);
        }

        // Best of three rounds: the first ones may include the JIT's own tier-up bookkeeping.
        long best = long.MaxValue;
        for (int round = 0; round < 3; round++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 1000; i++)
            {
                Cycle();
            }

            best = Math.Min(best, GC.GetAllocatedBytesForCurrentThread() - before);
        }

        Assert.Equal(0, best);
    }

    [Fact]
    public void CrossCoreTransfersAndReleases_DoNotAllocateInTheKernel()
    {
        using var sim = new CapabilitySimulation(2, seed: 13, framesPerCore: 64, appRamFrames: 16, linkCapacity: 64);
        CSpace producer = sim.Domains[0][1];
        CSpace consumer = sim.Domains[1][1];

        void Round()
        {
            int buffer = producer.Retype(0, CapabilityType.Frame);
            ValueTask move = producer.TransferAsync(buffer, 1, (uint)consumer.Id, TransferMode.Move);
            while (!move.IsCompleted && sim.Step())
            {
            }

            CapabilitySimulation.Result(move);
            int received = consumer.TakeGrant((uint)consumer.Id);
            consumer.Delete(received);
            while (sim.Step())
            {
            }
        }

        for (int i = 0; i < 4; i++)
        {
            Round();
        }

        long best = long.MaxValue;
        for (int round = 0; round < 3; round++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 100; i++)
            {
                Round();
            }

            best = Math.Min(best, GC.GetAllocatedBytesForCurrentThread() - before);
        }

        Assert.Equal(0, best);
        Assert.Equal(16, producer.FreeRamFrames);
    }
}
