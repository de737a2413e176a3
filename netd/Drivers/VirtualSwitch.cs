using Multikernel.Netd.Wire;
namespace Multikernel.Netd.Drivers;

/// <summary>
/// The in-memory NIC: a learning Ethernet switch with many ports, each an
/// <see cref="INetworkDevice"/> (netd's NIC, a load generator, a second machine in a test).
/// </summary>
/// <remarks>
/// <para><b>Concurrency.</b> Each port has one owner thread (its core). Forwarding runs on the
/// sender's thread inside <see cref="SwitchPort.TransmitBurst"/>: it learns the source address,
/// looks up the destination and copies the frame into the destination's inbound ring for that
/// sender. There is one bounded SPSC <see cref="FrameRing"/> per ordered pair of ports that has
/// talked (created by the sender on the first frame and published with a release store), so
/// every ring has exactly one producer (the sender's thread) and one consumer (the receiver's
/// thread) and the hot path takes no lock. The MAC table is shared by all senders and updated
/// lock-free (see <see cref="MacTable"/>). Adding or removing a port is the only locked
/// operation; the port list is copy-on-write, so senders flood over a consistent snapshot.</para>
/// <para><b>Bounds.</b> At most <see cref="VirtualSwitchOptions.MaxPorts"/> ports; one ring of
/// <see cref="VirtualSwitchOptions.QueueBytes"/> per talking pair; a full ring drops the frame and
/// counts it as the receiving port's <see cref="DropReason.QueueFull"/>. A receiver that stops
/// reading loses only frames addressed to it.</para>
/// <para><b>Time.</b> Aging, delay and rate limits read the injected <see cref="TimeProvider"/>.</para>
/// </remarks>
public sealed class VirtualSwitch : IDisposable
{
    private readonly Lock _gate = new();
    private readonly long _origin;
    private readonly SwitchPort?[] _byIndex;
    private SwitchPort[] _ports = [];
    private int _nextIndex;
    private bool _disposed;

    /// <summary>Creates a switch; <paramref name="time"/> defaults to <see cref="TimeProvider.System"/>.</summary>
    public VirtualSwitch(VirtualSwitchOptions? options = null, TimeProvider? time = null)
    {
        Options = options ?? new VirtualSwitchOptions();
        Options.Validate();
        // Copy the limits: options are mutable and may be changed by their owner later.
        MaxPorts = Options.MaxPorts;
        Mtu = Options.Mtu;
        QueueBytes = Options.QueueBytes;
        Time = time ?? TimeProvider.System;
        _origin = Time.GetTimestamp();
        MacTable = new MacTable(Options.MacTableCapacity, Options.MacAgingTime);
        _byIndex = new SwitchPort?[MaxPorts];
    }

    internal VirtualSwitchOptions Options { get; }

    internal MacTable MacTable { get; }

    internal TimeProvider Time { get; }

    /// <summary>Most ports this switch can have.</summary>
    public int MaxPorts { get; }

    /// <summary>IP MTU of every port.</summary>
    public int Mtu { get; }

    /// <summary>Bytes per pairwise queue.</summary>
    public int QueueBytes { get; }

    /// <summary>Attached ports (a snapshot).</summary>
    public IReadOnlyList<SwitchPort> Ports => Volatile.Read(ref _ports);

    /// <summary>Stations the table could not learn because it was full (their frames are flooded).</summary>
    public long MacLearningFailures => MacTable.LearnFailures;

    /// <summary>Stations currently known (a full scan of the table).</summary>
    public int LearnedStations => MacTable.CountLive(NowMilliseconds());

    /// <summary>The port a station was last seen on, or null when it is unknown or aged out.</summary>
    public SwitchPort? PortOf(MacAddress station)
    {
        int index = MacTable.Lookup(station, NowMilliseconds());
        return index < 0 ? null : FindPort(index);
    }

    /// <summary>
    /// Attaches a new port for a station with address <paramref name="mac"/> (the address its
    /// owner sends from; the switch still learns it from traffic, as a real one does).
    /// </summary>
    /// <exception cref="InvalidOperationException">All <see cref="MaxPorts"/> port numbers are used, or the switch is disposed.</exception>
    public SwitchPort AddPort(string name, MacAddress mac, SwitchPortOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_nextIndex >= MaxPorts)
            {
                throw new InvalidOperationException($"Virtual switch is full: all {MaxPorts} ports are used (VirtualSwitchOptions.MaxPorts).");
            }

            var port = new SwitchPort(this, _nextIndex, name, mac, options ?? new SwitchPortOptions());
            _nextIndex++;
            Volatile.Write(ref _byIndex[port.Index], port);
            Volatile.Write(ref _ports, [.. _ports, port]);
            return port;
        }
    }

    internal void Detach(SwitchPort port)
    {
        lock (_gate)
        {
            Volatile.Write(ref _byIndex[port.Index], null);
            Volatile.Write(ref _ports, [.. _ports.Where(p => p != port)]);
        }
    }

    internal SwitchPort? FindPort(int index) => (uint)index < (uint)_byIndex.Length ? Volatile.Read(ref _byIndex[index]) : null;

    internal SwitchPort[] Snapshot => Volatile.Read(ref _ports);

    internal long NowMilliseconds() => MillisecondsAt(Time.GetTimestamp());

    /// <summary>The switch's clock (milliseconds since it was made) at <paramref name="timestamp"/> of <see cref="Time"/>: one clock read serves a burst's aging and its queue stamps.</summary>
    internal long MillisecondsAt(long timestamp) => (long)Time.GetElapsedTime(_origin, timestamp).TotalMilliseconds;

    /// <summary>Detaches and disposes every port.</summary>
    public void Dispose()
    {
        SwitchPort[] ports;
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            ports = _ports;
        }

        foreach (SwitchPort port in ports)
        {
            port.Dispose();
        }
    }
}
