using Multikernel.Netd.Capture;
using Multikernel.Netd.Drivers;
using Multikernel.Tests.Architecture;
using static Multikernel.Tests.Netd.Drivers.Frames;
using Multikernel.Netd.Wire;

namespace Multikernel.Tests.Netd.Drivers;

/// <summary>No per-packet allocation on the data path and no mutable statics in the netd assembly.</summary>
public sealed class DriverHygieneTests
{
    [Fact]
    public void NetdAssembly_HasNoMutableStaticFields()
    {
        string[] offenders = [.. NoSharedMutableStateTests.MutableStatics(typeof(VirtualSwitch).Assembly)];
        Assert.True(offenders.Length == 0, string.Join(Environment.NewLine, offenders));
    }

    [Fact]
    public void SwitchForwarding_FaultInjection_AndCapture_AllocateNothingPerPacket()
    {
        var time = new ManualTimeProvider();
        using var sw = new VirtualSwitch(null, time);
        SwitchPort a = sw.AddPort("a", Mac(1));
        var faults = new FaultInjectionOptions { Seed = 1, LossProbability = 0.1, DuplicateProbability = 0.1, ReorderProbability = 0.1, CorruptProbability = 0.1, RateLimitBytesPerSecond = 1_000_000_000 };
        SwitchPort b = sw.AddPort("b", Mac(2), new SwitchPortOptions { Faults = faults, WakeFileDescriptor = OperatingSystem.IsLinux() });
        SwitchPort c = sw.AddPort("c", Mac(3));
        using var pcap = new PcapWriter(Stream.Null, new PcapOptions(), time);

        const int Burst = 16;
        var tx = new byte[Burst * 128];
        var txLengths = new int[Burst];
        for (int i = 0; i < Burst; i++)
        {
            Build(i % 2 == 0 ? Mac(2) : MacAddress.Broadcast, Mac(1), i, 128).CopyTo(tx, i * 128);
            txLengths[i] = 128;
        }

        var rx = new byte[Burst * 2048];
        var rxLengths = new int[Burst];
        SwitchPort[] receivers = [b, c];
        void Round()
        {
            var frames = new StridedFrames(tx, 128, txLengths);
            a.TransmitBurst(ref frames);
            foreach (SwitchPort port in receivers)
            {
                port.PrepareToWait();
                var buffers = new StridedFrameBuffers(rx, 2048, Burst);
                int n = port.ReceiveBurst(ref buffers, rxLengths);
                for (int i = 0; i < n; i++)
                {
                    pcap.Write(rx.AsSpan(i * 2048, rxLengths[i]), CaptureDirection.Received);
                }
            }

            time.Advance(TimeSpan.FromMilliseconds(1));
        }

        for (int i = 0; i < 100; i++)
        {
            Round(); // warm up: rings are created on the first frames, the JIT settles
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++)
        {
            Round();
        }

        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(b.Counters.RxPackets > 10_000, $"only {b.Counters.RxPackets} frames went through");
        Assert.Equal(0, allocated);
    }
}
