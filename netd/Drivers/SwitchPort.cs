using System.Runtime.CompilerServices;
using Multikernel.Netd.Wire;

namespace Multikernel.Netd.Drivers;

/// <summary>
/// One port of a <see cref="VirtualSwitch"/>, driven like any NIC. Owned by one thread: its
/// <see cref="TransmitBurst"/> forwards on that thread into other ports' inbound rings, its
/// <see cref="ReceiveBurst"/> drains its own inbound rings (applying injected faults).
/// </summary>
public sealed class SwitchPort : INetworkDevice, IFramePlacingDevice
{
    private readonly VirtualSwitch _switch;
    private readonly FrameRing?[] _inbound;   // [source port]: written (once) by the source, read by us
    private readonly FrameRing?[] _outbound;  // [destination port]: our own cache of the rings we produce into
    private readonly int[] _touched;          // destinations written this burst (signalled once each at the end)
    private readonly bool[] _isTouched;
    private readonly int _maxFrame;
    private readonly SafeFileDescriptor? _wakeFd;
    private int _armed;
    private volatile bool _linkUp = true;
    private volatile bool _disposed;
    private int _nextSource;

    // Faults (receive side; owner thread only).
    private readonly bool _faulty;
    private ulong _random;
    private readonly double _loss;
    private readonly double _duplicate;
    private readonly double _reorder;
    private readonly double _corrupt;
    private readonly long _delayTicks;
    private readonly long _rate;
    private readonly long _burst;
    private long _tokens;
    private long _lastRefill;

    internal SwitchPort(VirtualSwitch owner, int index, string name, MacAddress mac, SwitchPortOptions options)
    {
        _switch = owner;
        Index = index;
        Name = name;
        MacAddress = mac;
        _maxFrame = owner.Mtu + NetworkDevice.EthernetHeaderLength;
        _inbound = new FrameRing?[owner.MaxPorts];
        _outbound = new FrameRing?[owner.MaxPorts];
        _touched = new int[owner.MaxPorts];
        _isTouched = new bool[owner.MaxPorts];
        Counters = new DeviceCounters(InboundQueueDrops);
        if (options.WakeFileDescriptor)
        {
            if (!OperatingSystem.IsLinux())
            {
                throw new PlatformNotSupportedException("SwitchPortOptions.WakeFileDescriptor needs Linux eventfd.");
            }

            int fd = LinuxNative.EventFd(0, LinuxNative.EFD_NONBLOCK | LinuxNative.EFD_CLOEXEC);
            if (fd < 0)
            {
                int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
                throw new IOException($"Switch port {name}: eventfd failed: {LinuxNative.Describe(errno)}");
            }

            _wakeFd = new SafeFileDescriptor(fd);
        }

        if (options.Faults is { } f)
        {
            _faulty = true;
            _random = f.Seed;
            _loss = f.LossProbability;
            _duplicate = f.DuplicateProbability;
            _reorder = f.ReorderProbability;
            _corrupt = f.CorruptProbability;
            _delayTicks = (long)(f.Delay.TotalSeconds * owner.Time.TimestampFrequency);
            _rate = f.RateLimitBytesPerSecond;
            _burst = f.RateLimitBurstBytes > 0 ? f.RateLimitBurstBytes : Math.Max(_maxFrame, _rate / 10);
            _tokens = _burst;
            _lastRefill = owner.Time.GetTimestamp();
        }
    }

    /// <summary>Port number on the switch (never reused).</summary>
    public int Index { get; }

    public string Name { get; }

    public MacAddress MacAddress { get; }

    public int Mtu => _switch.Mtu;

    public bool IsLinkUp => _linkUp && !_disposed;

    public int WaitFileDescriptor => _wakeFd is { IsClosed: false } fd ? fd.Fd : -1;

    /// <summary>Packets, bytes and drops by reason; readable from any thread.</summary>
    public DeviceCounters Counters { get; }

    /// <summary>Plugs the cable in or pulls it: a port whose link is down sends nothing (counted <see cref="DropReason.LinkDown"/>) and receives no floods.</summary>
    public void SetLinkState(bool up) => _linkUp = up;

    public int TransmitBurst<TFrames>(scoped ref TFrames frames)
        where TFrames : ITransmitFrames, allows ref struct
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int count = frames.Count;
        if (!_linkUp)
        {
            for (int i = 0; i < count; i++)
            {
                Counters.Drop(DropReason.LinkDown);
            }

            return count;
        }

        MacTable table = _switch.MacTable;
        long timestamp = _switch.Time.GetTimestamp();
        long nowMs = _switch.MillisecondsAt(timestamp);
        SwitchPort[] ports = _switch.Snapshot;
        int touched = 0;
        for (int i = 0; i < count; i++)
        {
            ReadOnlySpan<byte> frame = frames[i];
            if (frame.Length < NetworkDevice.EthernetHeaderLength || frame.Length > _maxFrame)
            {
                Counters.Drop(DropReason.Malformed);
                continue;
            }

            Counters.Transmitted(frame.Length);
            MacAddress destination = MacAddress.Read(frame);
            MacAddress source = MacAddress.Read(frame[MacAddress.Length..]);
            if (!source.IsMulticast)
            {
                table.Learn(source, Index, nowMs);
            }

            if (!destination.IsMulticast)
            {
                int known = table.Lookup(destination, nowMs);
                if (known == Index)
                {
                    Counters.Drop(DropReason.Filtered);
                    continue;
                }

                if (known >= 0 && _switch.FindPort(known) is { IsLinkUp: true } port)
                {
                    Deliver(port, frame, timestamp, ref touched);
                    continue;
                }
            }

            // Broadcast, multicast or unknown unicast: flood to every other port whose link is up.
            int delivered = 0;
            foreach (SwitchPort port in ports)
            {
                if (port != this && port.IsLinkUp)
                {
                    Deliver(port, frame, timestamp, ref touched);
                    delivered++;
                }
            }

            if (delivered == 0)
            {
                Counters.Drop(DropReason.NoDestination);
            }
        }

        for (int i = 0; i < touched; i++)
        {
            int destination = _touched[i];
            _isTouched[destination] = false;
            _switch.FindPort(destination)?.Signal();
        }

        return count;
    }

    private void Deliver(SwitchPort destination, ReadOnlySpan<byte> frame, long timestamp, ref int touched)
    {
        FrameRing ring = _outbound[destination.Index] ?? CreateRing(destination);
        if (ring.TryWrite(frame, timestamp) && !_isTouched[destination.Index])
        {
            _isTouched[destination.Index] = true;
            _touched[touched++] = destination.Index;
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private FrameRing CreateRing(SwitchPort destination)
    {
        // Once per ordered pair: we are the ring's only producer, the destination its only
        // consumer. The release store publishes the fully constructed ring to its thread.
        var ring = new FrameRing(_switch.QueueBytes);
        _outbound[destination.Index] = ring;
        Volatile.Write(ref destination._inbound[Index], ring);
        return ring;
    }

    // Sender side: wake the owner if it armed its eventfd (Dekker with PrepareToWait: the
    // sender's ring publication, a full fence, then the flag read; the owner's flag write, a
    // full fence, then its ring reads — one of the two always sees the other).
    private void Signal()
    {
        if (_wakeFd is null)
        {
            return;
        }

        Interlocked.MemoryBarrier();
        if (Volatile.Read(ref _armed) == 1 && Interlocked.CompareExchange(ref _armed, 0, 1) == 1)
        {
            RingEventFd();
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private unsafe void RingEventFd()
    {
        bool added = false;
        try
        {
            // Hold a reference so a concurrent Dispose cannot close (and the OS reuse) the fd mid-write.
            _wakeFd!.DangerousAddRef(ref added);
            ulong one = 1;
            _ = LinuxNative.Write(_wakeFd.Fd, (byte*)&one, sizeof(ulong));
        }
        catch (ObjectDisposedException)
        {
            // The port is gone; nobody waits on it.
        }
        finally
        {
            if (added)
            {
                _wakeFd!.DangerousRelease();
            }
        }
    }

    public int ReceiveBurst<TBuffers>(scoped ref TBuffers buffers, scoped Span<int> lengths)
        where TBuffers : IReceiveBuffers, allows ref struct
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int max = Math.Min(buffers.Count, lengths.Length);
        if (!_faulty)
        {
            int n = 0;
            while (n < max && TryNext(0, out FrameRing? ring, out ReadOnlySpan<byte> frame))
            {
                Span<byte> destination = buffers[n];
                CheckBuffer(destination, frame.Length);
                frame.CopyTo(destination);
                lengths[n++] = frame.Length;
                Counters.Received(frame.Length);
                ring.Advance(frame.Length);
            }

            return n;
        }

        return ReceiveWithFaults(ref buffers, lengths, max);
    }

    /// <summary>True unless faults are injected on this port's receive side (they mangle frames as they are received).</summary>
    public bool CanPlace => !_faulty;

    /// <summary>
    /// Receives up to <paramref name="max"/> frames, each written once, from this port's queue
    /// straight into the buffer <paramref name="placer"/> names after looking at it in the queue.
    /// </summary>
    public int ReceivePlaced(IFramePlacer placer, int max)
    {
        ArgumentNullException.ThrowIfNull(placer);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_faulty)
        {
            throw new InvalidOperationException($"Switch port {Name} injects faults on receive; receive bursts instead (CanPlace is false).");
        }

        int n = 0;
        while (n < max && TryNext(0, out FrameRing? ring, out ReadOnlySpan<byte> frame))
        {
            int length = frame.Length;
            Counters.Received(length);
            Span<byte> destination = placer.Place(frame);
            if (destination.IsEmpty)
            {
                ring.Advance(length); // dropped, and counted, by the placer
            }
            else
            {
                CheckBuffer(destination, length);
                frame.CopyTo(destination);
                ring.Advance(length);
                placer.Placed(length);
            }

            n++;
        }

        return n;
    }

    private int ReceiveWithFaults<TBuffers>(scoped ref TBuffers buffers, scoped Span<int> lengths, int max)
        where TBuffers : IReceiveBuffers, allows ref struct
    {
        long now = _switch.Time.GetTimestamp();
        Refill(now);
        int n = 0;
        while (n < max && TryNext(now, out FrameRing? ring, out ReadOnlySpan<byte> frame))
        {
            int length = frame.Length;
            if (_rate > 0 && _tokens < length)
            {
                break; // shaped: the frame waits for tokens
            }

            Span<byte> destination = buffers[n];
            CheckBuffer(destination, length);
            _tokens -= length;
            if (Chance(_loss))
            {
                ring.Advance(length);
                Counters.Drop(DropReason.FaultLoss);
                continue;
            }

            frame.CopyTo(destination);
            ring.Advance(length);
            if (Chance(_corrupt))
            {
                int bit = (int)(NextRandom() % (ulong)(length * 8));
                destination[bit >> 3] ^= (byte)(1 << (bit & 7));
                Counters.Corrupt();
            }

            lengths[n] = length;
            Counters.Received(length);
            if (n + 1 < max && Chance(_duplicate))
            {
                Span<byte> copy = buffers[n + 1];
                CheckBuffer(copy, length);
                destination[..length].CopyTo(copy);
                lengths[n + 1] = length;
                Counters.Received(length);
                Counters.Duplicate();
                n += 2;
                continue;
            }

            if (n + 1 < max && Chance(_reorder) && TryNext(now, out FrameRing? nextRing, out ReadOnlySpan<byte> next)
                && (_rate == 0 || _tokens >= next.Length))
            {
                // Deliver the next queued frame first: ours moves one buffer later.
                Span<byte> later = buffers[n + 1];
                CheckBuffer(later, length);
                CheckBuffer(destination, next.Length);
                destination[..length].CopyTo(later);
                next.CopyTo(destination);
                lengths[n + 1] = length;
                lengths[n] = next.Length;
                _tokens -= next.Length;
                Counters.Received(next.Length);
                Counters.Reorder();
                nextRing.Advance(next.Length);
                n += 2;
                continue;
            }

            n++;
        }

        return n;
    }

    // Round robin over the senders' rings, so one busy sender cannot starve the others.
    private bool TryNext(long now, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out FrameRing? ring, out ReadOnlySpan<byte> frame)
    {
        int sources = _inbound.Length;
        for (int i = 0; i < sources; i++)
        {
            int source = _nextSource + i;
            if (source >= sources)
            {
                source -= sources;
            }

            FrameRing? candidate = Volatile.Read(ref _inbound[source]);
            if (candidate is not null && candidate.TryPeek(out frame, out long enqueued)
                && (_delayTicks == 0 || now - enqueued >= _delayTicks))
            {
                _nextSource = source + 1 == sources ? 0 : source + 1;
                ring = candidate;
                return true;
            }
        }

        ring = null;
        frame = default;
        return false;
    }

    private void CheckBuffer(Span<byte> buffer, int length)
    {
        if (buffer.Length < length)
        {
            ThrowBufferTooSmall(buffer.Length, length);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBufferTooSmall(int have, int need) =>
        throw new ArgumentException($"Switch port {Name}: a receive buffer of {have} bytes is smaller than the {need}-byte frame waiting (buffers must hold Mtu + 14 = {_maxFrame} bytes); the frame stays queued.");

    private void Refill(long now)
    {
        if (_rate == 0)
        {
            return;
        }

        long elapsed = now - _lastRefill;
        long add = (long)(elapsed * (double)_rate / _switch.Time.TimestampFrequency);
        if (add > 0)
        {
            _tokens = Math.Min(_burst, _tokens + add);
            _lastRefill = now;
        }
    }

    private bool Chance(double probability) =>
        probability > 0 && (NextRandom() >> 11) * (1.0 / (1UL << 53)) < probability;

    // SplitMix64: tiny, fast, and fully determined by the seed.
    private ulong NextRandom()
    {
        ulong z = _random += 0x9E37_79B9_7F4A_7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EBUL;
        return z ^ (z >> 31);
    }

    public unsafe bool PrepareToWait()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_wakeFd is null)
        {
            return !HasPending();
        }

        // Clear a stale signal first, then arm, then re-check (see Signal for the pairing).
        ulong value;
        _ = LinuxNative.Read(_wakeFd.Fd, (byte*)&value, sizeof(ulong));
        Interlocked.Exchange(ref _armed, 1);
        if (HasPending())
        {
            Volatile.Write(ref _armed, 0);
            return false;
        }

        return true;
    }

    /// <summary>Owner thread: true when any frame is queued for this port (including ones an injected delay still holds).</summary>
    public bool HasPending()
    {
        foreach (FrameRing? ring in _inbound)
        {
            if (ring is not null && ring.HasFrames)
            {
                return true;
            }
        }

        return false;
    }

    private long InboundQueueDrops()
    {
        long drops = 0;
        foreach (FrameRing? ring in _inbound)
        {
            drops += ring?.Dropped ?? 0;
        }

        return drops;
    }

    /// <summary>Detaches the port: it leaves the switch (frames to it are no longer delivered) and its eventfd is closed.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _switch.Detach(this);
        _wakeFd?.Dispose();
    }

    /// <inheritdoc />
    public override string ToString() => $"switch port {Index} '{Name}' ({MacAddress})";
}
