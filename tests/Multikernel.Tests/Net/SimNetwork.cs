using Multikernel.Net;
using Multikernel.Netd.Wire;

namespace Multikernel.Tests.Net;

/// <summary>Seeded faults on every frame the simulated switch forwards.</summary>
internal sealed record SimFaults
{
    public double Loss { get; init; }

    public double Duplicate { get; init; }

    /// <summary>Probability that a frame is held back by <see cref="ReorderDelay"/> (so later frames overtake it).</summary>
    public double Reorder { get; init; }

    public TimeSpan ReorderDelay { get; init; } = TimeSpan.FromMilliseconds(3);

    /// <summary>Probability of flipping one random bit.</summary>
    public double Corrupt { get; init; }

    public TimeSpan Latency { get; init; } = TimeSpan.FromMilliseconds(1);

    public static SimFaults None { get; } = new();
}

/// <summary>
/// A deterministic network of stacks on one virtual Ethernet switch (smoltcp's netsim style):
/// a manual clock, a single-threaded context for the applications' continuations, and a
/// seeded fault injector. Everything runs on the test's thread; a run is reproducible from its
/// seed.
/// </summary>
internal sealed class SimNetwork : IDisposable
{
    private readonly PriorityQueue<(SimPort To, byte[] Frame), (long, long)> _inFlight = new();
    private readonly List<SimPort> _ports = [];
    private readonly Random _random;
    private long _order;

    public SimNetwork(int seed, SimFaults? faults = null)
    {
        Seed = seed;
        _random = new Random(seed);
        Faults = faults ?? SimFaults.None;
    }

    public int Seed { get; }

    public SimFaults Faults { get; set; }

    public ManualTimeProvider Time { get; } = new();

    public SimSynchronizationContext Context { get; } = new();

    /// <summary>Sees every frame a port transmits; return false to drop it (before faults).</summary>
    public Func<SimPort, byte[], bool>? Tap { get; set; }

    public long FramesForwarded { get; private set; }

    public int MaxInFlight { get; set; } = 100_000;

    /// <summary>
    /// Deliver the frames due at the same moment to a stack as one receive burst
    /// (<see cref="NetworkStack.BeginReceiveBurst"/> … <see cref="NetworkStack.EndReceiveBurst"/>),
    /// as netd's receive pump does with a batch. Off: one frame at a time, no burst.
    /// </summary>
    public bool Bursts { get; set; }

    private readonly List<SimPort> _bursting = [];

    // Delivers every frame due now; with Bursts, each port's frames as one burst.
    private bool DeliverDue()
    {
        bool delivered = false;
        while (_inFlight.TryPeek(out (SimPort To, byte[] Frame) item, out (long Due, long) when) && when.Due <= Time.NowTicks)
        {
            _inFlight.Dequeue();
            FramesForwarded++;
            if (Bursts && item.To.Stack is { } stack && !_bursting.Contains(item.To))
            {
                stack.BeginReceiveBurst();
                _bursting.Add(item.To);
            }

            item.To.Deliver(item.Frame);
            delivered = true;
        }

        foreach (SimPort port in _bursting)
        {
            port.Stack!.EndReceiveBurst();
        }

        _bursting.Clear();
        return delivered;
    }

    public IReadOnlyList<SimPort> Ports => _ports;

    /// <summary>Adds a stack with address 10.0.0.<paramref name="hostByte"/>/24.</summary>
    public SimPort AddHost(byte hostByte, Action<NetworkStackOptions>? configure = null, int mtu = 1500)
    {
        var options = new NetworkStackOptions
        {
            Address = new Ipv4Address(10, 0, 0, hostByte),
            IsnSecret = [.. Enumerable.Range(hostByte, 32).Select(i => (byte)i)],
        };
        configure?.Invoke(options);
        var port = new SimPort(this, MacAddress.FromUInt64(0x0200_0000_0000UL | hostByte), mtu);
        port.Stack = new NetworkStack(options, port, Time, Context);
        _ports.Add(port);
        port.Stack.Start();
        return port;
    }

    /// <summary>A port with no stack: the test sends and sees raw frames through it.</summary>
    public SimPort AddRawPort(ulong mac)
    {
        var port = new SimPort(this, MacAddress.FromUInt64(mac), 1500);
        _ports.Add(port);
        return port;
    }

    internal void Transmit(SimPort from, ReadOnlySpan<byte> frame)
    {
        byte[] copy = frame.ToArray();
        if (from.Record)
        {
            from.Sent.Add(copy);
            from.SentAtMs.Add(Time.NowTicks / TimeSpan.TicksPerMillisecond);
        }

        if (Tap is { } tap && !tap(from, copy))
        {
            return;
        }

        MacAddress to = MacAddress.Read(copy);
        foreach (SimPort port in _ports)
        {
            if (port != from && (to.IsBroadcast || port.Mac == to))
            {
                Schedule(port, copy);
            }
        }
    }

    private void Schedule(SimPort to, byte[] frame)
    {
        SimFaults f = Faults;
        if (_inFlight.Count >= MaxInFlight || (f.Loss > 0 && _random.NextDouble() < f.Loss))
        {
            return;
        }

        int copies = f.Duplicate > 0 && _random.NextDouble() < f.Duplicate ? 2 : 1;
        for (int c = 0; c < copies; c++)
        {
            byte[] bytes = c == 0 ? frame : (byte[])frame.Clone();
            if (f.Corrupt > 0 && _random.NextDouble() < f.Corrupt)
            {
                bytes = (byte[])bytes.Clone();
                int bit = _random.Next(bytes.Length * 8);
                bytes[bit / 8] ^= (byte)(1 << (bit % 8));
            }

            long delay = f.Latency.Ticks;
            if (f.Reorder > 0 && _random.NextDouble() < f.Reorder)
            {
                delay += f.ReorderDelay.Ticks;
            }

            _inFlight.Enqueue((to, bytes), (Time.NowTicks + delay, _order++));
        }
    }

    /// <summary>Puts a raw frame on the wire towards <paramref name="to"/> (no faults), delivered at the current time.</summary>
    public void Inject(SimPort to, byte[] frame) => _inFlight.Enqueue((to, frame), (Time.NowTicks, _order++));

    /// <summary>One step: run posted continuations, deliver frames due now, else move the clock to the next event. False when nothing is left to happen.</summary>
    public bool Step()
    {
        Context.ThrowIfLeftTheThread(Seed);
        bool worked = Context.RunAll() > 0;
        worked |= DeliverDue();

        if (worked)
        {
            Context.RunAll();
            return true;
        }

        long nextFrame = _inFlight.TryPeek(out _, out (long Due, long) next) ? next.Due : long.MaxValue;
        long nextTimer = Time.NextDue;
        long target = Math.Min(nextFrame, nextTimer);
        if (target == long.MaxValue)
        {
            return false;
        }

        Time.AdvanceTo(target);
        return true;
    }

    /// <summary>Runs until <paramref name="done"/> holds; fails when virtual time passes <paramref name="limit"/> or nothing is left to happen.</summary>
    public void RunUntil(Func<bool> done, TimeSpan limit, string what = "the condition")
    {
        long end = Time.NowTicks + limit.Ticks;
        while (!done())
        {
            if (Time.NowTicks > end)
            {
                throw new TimeoutException($"{what} did not happen within {limit} of virtual time (seed {Seed}, now {Time.Elapsed}).");
            }

            if (!Step())
            {
                if (done())
                {
                    return;
                }

                throw new InvalidOperationException($"{what} can never happen: no frame in flight and no timer armed (seed {Seed}, now {Time.Elapsed}).");
            }
        }
    }

    /// <summary>Runs for <paramref name="duration"/> of virtual time.</summary>
    public void RunFor(TimeSpan duration)
    {
        long end = Time.NowTicks + duration.Ticks;
        while (Time.NowTicks < end)
        {
            Context.ThrowIfLeftTheThread(Seed);
            Context.RunAll();
            bool delivered = DeliverDue();

            if (delivered || Context.Pending > 0)
            {
                continue;
            }

            long nextFrame = _inFlight.TryPeek(out _, out (long Due, long) next) ? next.Due : long.MaxValue;
            Time.AdvanceTo(Math.Min(end, Math.Min(nextFrame, Time.NextDue)));
        }

        Context.RunAll();
    }

    /// <summary>Starts application code with the simulation's context current, so every await resumes inside the simulation.</summary>
    public Task Spawn(Func<Task> app) => Context.Run(app);

    public Task<T> Spawn<T>(Func<Task<T>> app) => Context.Run(app);

    /// <summary>Runs until <paramref name="task"/> finishes and returns its result (rethrowing its failure).</summary>
    public T Await<T>(Task<T> task, TimeSpan limit)
    {
        RunUntil(() => task.IsCompleted, limit, "the task");
        return task.GetAwaiter().GetResult();
    }

    public void Await(Task task, TimeSpan limit)
    {
        RunUntil(() => task.IsCompleted, limit, "the task");
        task.GetAwaiter().GetResult();
    }

    public void Dispose()
    {
        foreach (SimPort port in _ports)
        {
            port.Stack?.Dispose();
        }
    }
}

/// <summary>One port on the simulated switch, and the <see cref="ILinkPort"/> of the stack behind it.</summary>
internal sealed class SimPort(SimNetwork network, MacAddress mac, int mtu) : ILinkPort
{
    public NetworkStack? Stack { get; set; }

    public NetworkStack S => Stack ?? throw new InvalidOperationException("A raw port has no stack.");

    public int Mtu { get; } = mtu;

    public MacAddress Mac { get; } = mac;

    public Ipv4Address Ip => S.Address;

    /// <summary>Every frame this port transmitted (before faults).</summary>
    public List<byte[]> Sent { get; } = [];

    /// <summary>Every frame delivered to this port.</summary>
    public List<byte[]> Received { get; } = [];

    /// <summary>When false the port refuses frames (a full transmit queue).</summary>
    public bool AcceptTransmit { get; set; } = true;

    /// <summary>When set, what <see cref="CanTransmit"/> answers (a port that says it is full before a send).</summary>
    public bool? ReportsRoom { get; set; }

    public bool CanTransmit(int frameLength) => ReportsRoom ?? true;

    public bool TryTransmit(ReadOnlySpan<byte> frame)
    {
        if (!AcceptTransmit)
        {
            return false;
        }

        Assert.True(frame.Length <= Mtu + EthernetFrame.HeaderLength, $"frame of {frame.Length} bytes exceeds the MTU");
        network.Transmit(this, frame);
        return true;
    }

    /// <summary>Keep <see cref="Sent"/> and <see cref="Received"/> (off for bulk transfers).</summary>
    public bool Record { get; set; } = true;

    public List<long> SentAtMs { get; } = [];

    public List<long> ReceivedAtMs { get; } = [];

    public void Deliver(byte[] frame)
    {
        if (Record)
        {
            Received.Add(frame);
            ReceivedAtMs.Add(network.Time.NowTicks / TimeSpan.TicksPerMillisecond);
        }

        Stack?.Receive(frame);
    }
}
