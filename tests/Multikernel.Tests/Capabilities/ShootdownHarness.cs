using System.Diagnostics;
using Multikernel.CpuDriver.Capabilities;
using Multikernel.CpuDriver.Memory;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.Tests.Capabilities;

/// <summary>
/// Runs the capability protocol on real threads (one per core, connected by real URPC rings) and
/// times a shootdown: revoke a Frame capability that has a copy on every other core and wait for
/// every acknowledgement. Also times the shared-memory baseline. A stand-in until the monitors
/// wire the protocol into the core kernels; it measures, it does not assert speed.
/// </summary>
internal sealed class ShootdownHarness : IDisposable
{
    private readonly int _cores;
    private readonly UrpcRing[,] _rings;
    private readonly PhysicalMemory _memory;
    private readonly CoreCapabilities[] _caps;
    private readonly CSpace[] _domains;
    private readonly RingTransport[] _transports;
    private volatile bool _stop;
    private volatile int _phase; // 0 protocol, 1 shared-memory baseline
    private SharedMemoryShootdown? _baseline;

    public ShootdownHarness(int cores)
    {
        _cores = cores;
        _rings = new UrpcRing[cores, cores];
        for (int i = 0; i < cores; i++)
        {
            for (int j = 0; j < cores; j++)
            {
                _rings[i, j] = new UrpcRing(64);
            }
        }

        _memory = new PhysicalMemory((long)cores * 16 * PhysicalMemory.FrameSize);
        FrameRange[] shares = _memory.Split(cores);
        _caps = new CoreCapabilities[cores];
        _domains = new CSpace[cores];
        _transports = new RingTransport[cores];
        for (int c = 0; c < cores; c++)
        {
            _caps[c] = new CoreCapabilities(c, cores, _memory, shares[c], new CapabilityOptions { MaxObjectsPerCore = 64, MaxReferencesPerCore = 256, MaxDomainsPerCore = 2, SlotsPerDomain = 64, MaxOperations = 8, OutboxCapacity = 256 });
            CoreCapabilities core = _caps[c];
            core.ChannelOwner = channel => core.FindDomain((int)channel);
            _domains[c] = _caps[c].CreateDomain($"d{c}");
            int kernel = _caps[c].CreateKernelCapability(_domains[c]);
            _caps[c].CreateRoot(_domains[c], kernel, _domains[c], CapabilityType.Ram, shares[c].BaseFrame, shares[c].FrameCount);
            _transports[c] = new RingTransport(_rings, c);
        }
    }

    public CoreCapabilities[] Capabilities => _caps;

    /// <summary>Mean revoke latency (microseconds) for the protocol in <paramref name="mode"/> and for the shared-memory baseline.</summary>
    public (double ProtocolMicros, double BaselineMicros, int Acked) Run(RevokeMode mode, int iterations)
    {
        var samples = new double[iterations];
        var baseline = new double[iterations];
        int acked = 0;
        _stop = false;
        _phase = 0;
        var threads = new Thread[_cores];
        for (int c = 1; c < _cores; c++)
        {
            int core = c;
            threads[c] = new Thread(() => Loop(core)) { IsBackground = true, Name = $"shootdown core {core}" };
            threads[c].Start();
        }

        // Core 0 is the owner and runs on this thread.
        CSpace owner = _domains[0];
        int frame = owner.Retype(1, CapabilityType.Frame);
        for (int i = 0; i < iterations; i++)
        {
            for (int c = 1; c < _cores; c++)
            {
                ValueTask copy = owner.TransferAsync(frame, c, 0, TransferMode.Copy);
                while (!copy.IsCompleted)
                {
                    Wait(0);
                }

                CapabilitySimulation.Result(copy);
            }

            long start = Stopwatch.GetTimestamp();
            ValueTask revoke = owner.RevokeAsync(frame, mode);
            while (!revoke.IsCompleted)
            {
                Wait(0);
            }

            samples[i] = Stopwatch.GetElapsedTime(start).TotalMicroseconds;
            CapabilitySimulation.Result(revoke);
        }

        _baseline = new SharedMemoryShootdown(_cores, 16);
        _phase = 1;
        for (int i = 0; i < iterations; i++)
        {
            for (int c = 0; c < _cores; c++)
            {
                _baseline.Map(c, 3);
            }

            long start = Stopwatch.GetTimestamp();
            acked = _baseline.Revoke(3, 0);
            baseline[i] = Stopwatch.GetElapsedTime(start).TotalMicroseconds;
        }

        _stop = true;
        for (int c = 1; c < _cores; c++)
        {
            threads[c].Join();
        }

        owner.Delete(frame);
        return (Median(samples), Median(baseline), acked);
    }

    private static double Median(double[] values)
    {
        double[] sorted = [.. values.Order()];
        return sorted[sorted.Length / 2];
    }

    // Yield when idle: with more cores than CPUs, a spinning owner would starve the others.
    private void Wait(int core)
    {
        if (!Turn(core))
        {
            Thread.Yield();
        }
    }

    private void Loop(int core)
    {
        // This thread is the core's kernel thread from now on.
        _caps[core].BindToCurrentThread();
        var spin = default(SpinWait);
        while (!_stop)
        {
            bool worked = _phase == 0 ? Turn(core) : _baseline!.Poll(core);
            if (!worked)
            {
                spin.SpinOnce(sleep1Threshold: -1);
            }
            else
            {
                spin.Reset();
            }
        }
    }

    /// <summary>One iteration of a core's loop: drain inbound rings into the protocol, then flush its outbox.</summary>
    private bool Turn(int core)
    {
        bool worked = false;
        for (int from = 0; from < _cores; from++)
        {
            if (from == core)
            {
                continue;
            }

            UrpcRing ring = _rings[from, core];
            while (true)
            {
                ref readonly Message m = ref ring.Peek();
                if (System.Runtime.CompilerServices.Unsafe.IsNullRef(in m) || !_caps[core].TryHandle(from, in m))
                {
                    break;
                }

                ring.Advance();
                worked = true;
            }

            ring.PublishConsumed();
        }

        worked |= _caps[core].Flush(_transports[core]) > 0;
        return worked;
    }

    public void Dispose()
    {
        _stop = true;
        foreach (UrpcRing ring in _rings)
        {
            ring.Dispose();
        }

        _memory.Dispose();
    }

    private sealed class RingTransport(UrpcRing[,] rings, int from) : ICapabilityTransport
    {
        public bool TrySend(int core, in Message message) => rings[from, core].TryWrite(in message);
    }
}
