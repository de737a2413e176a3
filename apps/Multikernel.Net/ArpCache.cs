using Multikernel.Netd.Wire;

namespace Multikernel.Net;

/// <summary>
/// ARP (RFC 826) for one stack: a bounded cache whose entries expire, requests with a bounded
/// retry count, replies to requests for our address, and a bounded queue of frames per address
/// being resolved. Learning follows RFC 826's merge rule: a sender already cached is updated; a
/// new one is added only when the packet is addressed to us, so broadcast chatter and spoofed
/// packets cannot fill the cache.
/// </summary>
internal sealed class ArpCache : IDisposable
{
    private readonly NetworkStack _stack;
    private readonly Dictionary<Ipv4Address, Entry> _entries = [];
    private readonly Dictionary<Ipv4Address, Pending> _pending = [];
    private readonly ITimer _timer;
    private readonly byte[] _frame = new byte[EthernetFrame.HeaderLength + ArpPacket.Length];
    private bool _timerArmed;

    public ArpCache(NetworkStack stack)
    {
        _stack = stack;
        _timer = stack.Time.CreateTimer(static s => ((ArpCache)s!).OnTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    public int Count => _entries.Count;

    public int PendingCount => _pending.Count;

    private long Lifetime => (long)_stack.Options.ArpEntryLifetime.TotalMilliseconds;

    // How long an expired entry stays usable while it is confirmed again: every request attempt.
    private long StaleMs => _stack.Options.ArpRequestAttempts * (long)_stack.Options.ArpRequestInterval.TotalMilliseconds;

    public bool TryLookup(Ipv4Address address, out MacAddress mac)
    {
        if (_entries.TryGetValue(address, out Entry entry))
        {
            long now = _stack.NowMs;
            if (entry.ExpiresMs > now)
            {
                mac = entry.Mac;
                return true;
            }

            // Expired but recent (Linux's STALE/PROBE, RFC 1122 §2.3.2.1): keep sending to the
            // address we know while a request confirms it (one per request interval). Dropping
            // the entry made every connection to a busy peer queue behind a fresh resolution
            // (four frames per address), and what did not fit was lost: at 32 connections an RTO
            // on each, every ArpEntryLifetime (`ArpPendingFull` in bench net's http).
            if (now < entry.ExpiresMs + StaleMs)
            {
                if (now >= entry.ProbedMs + (long)_stack.Options.ArpRequestInterval.TotalMilliseconds)
                {
                    _entries[address] = entry with { ProbedMs = now };
                    SendRequest(address, gratuitous: false);
                }

                mac = entry.Mac;
                return true;
            }

            _entries.Remove(address);
        }

        mac = default;
        return false;
    }

    public void Receive(ReadOnlySpan<byte> bytes)
    {
        if (ArpPacket.TryParse(bytes, out ArpPacket arp) != WireError.None)
        {
            _stack.Counters.Drop(DropReason.BadArp);
            return;
        }

        Ipv4Address sender = arp.SenderIp;
        MacAddress senderMac = arp.SenderMac;
        if (senderMac.IsMulticast || sender.IsBroadcast || sender.IsMulticast)
        {
            _stack.Counters.Drop(DropReason.BadArp);
            return;
        }

        bool forUs = arp.TargetIp == _stack.Address;
        if (sender.IsAny || sender == _stack.Address)
        {
            // A probe (sender 0.0.0.0) or someone else claiming our address: nothing to learn.
            if (forUs && sender.IsAny && arp.Operation == ArpOperation.Request)
            {
                Reply(senderMac, sender);
            }

            return;
        }

        if (_entries.ContainsKey(sender) || forUs || _pending.ContainsKey(sender))
        {
            Learn(sender, senderMac);
        }

        if (forUs && arp.Operation == ArpOperation.Request)
        {
            Reply(senderMac, sender);
        }
    }

    private void Reply(MacAddress mac, Ipv4Address ip)
    {
        EthernetFrame.WriteHeader(_frame, mac, _stack.Mac, EtherType.Arp);
        ArpPacket.Write(_frame.AsSpan(EthernetFrame.HeaderLength), ArpOperation.Reply, _stack.Mac, _stack.Address, mac, ip);
        if (_stack.TransmitFrame(_frame))
        {
            _stack.Counters.ArpRepliesSentField++;
        }
    }

    private void Learn(Ipv4Address ip, MacAddress mac)
    {
        if (!_entries.ContainsKey(ip) && _entries.Count >= _stack.Options.ArpCacheSize)
        {
            Evict();
        }

        _entries[ip] = new Entry(mac, _stack.NowMs + Lifetime, long.MinValue / 2);
        if (_pending.Remove(ip, out Pending? pending))
        {
            for (int i = 0; i < pending.Frames.Count; i++)
            {
                PacketBuffer frame = pending.Frames[i];
                Span<byte> bytes = frame.Memory.Span[..pending.Lengths[i]];
                mac.Write(bytes);
                _stack.TransmitFrame(bytes);
                frame.Release();
            }

            pending.Frames.Clear();
        }
    }

    private void Evict()
    {
        long now = _stack.NowMs;
        Ipv4Address victim = default;
        long soonest = long.MaxValue;
        foreach (KeyValuePair<Ipv4Address, Entry> e in _entries)
        {
            if (e.Value.ExpiresMs <= now)
            {
                victim = e.Key;
                break;
            }

            if (e.Value.ExpiresMs < soonest)
            {
                soonest = e.Value.ExpiresMs;
                victim = e.Key;
            }
        }

        _entries.Remove(victim);
    }

    /// <summary>Holds a frame (its destination MAC still to fill) until <paramref name="nextHop"/> resolves; false when the bounds say drop.</summary>
    public bool Park(Ipv4Address nextHop, ReadOnlySpan<byte> frame)
    {
        if (!_pending.TryGetValue(nextHop, out Pending? pending))
        {
            if (_pending.Count >= _stack.Options.ArpMaxPendingAddresses)
            {
                _stack.Counters.Drop(DropReason.ArpPendingFull);
                return false;
            }

            pending = new Pending();
            _pending.Add(nextHop, pending);
            SendRequest(nextHop, gratuitous: false);
            pending.Attempts = 1;
            pending.NextMs = _stack.NowMs + (long)_stack.Options.ArpRequestInterval.TotalMilliseconds;
            Arm();
        }

        if (pending.Frames.Count >= _stack.Options.ArpMaxPendingFrames)
        {
            _stack.Counters.Drop(DropReason.ArpPendingFull);
            return false;
        }

        PacketBuffer? buffer = _stack.RentBuffer();
        if (buffer is null || buffer.Memory.Length < frame.Length)
        {
            buffer?.Release();
            _stack.Counters.Drop(DropReason.NoBuffer);
            return false;
        }

        frame.CopyTo(buffer.Memory.Span);
        pending.Frames.Add(buffer);
        pending.Lengths.Add(frame.Length);
        return true;
    }

    public void SendRequest(Ipv4Address target, bool gratuitous)
    {
        EthernetFrame.WriteHeader(_frame, MacAddress.Broadcast, _stack.Mac, EtherType.Arp);
        ArpPacket.Write(_frame.AsSpan(EthernetFrame.HeaderLength), ArpOperation.Request, _stack.Mac, _stack.Address, MacAddress.Zero, gratuitous ? _stack.Address : target);
        if (_stack.TransmitFrame(_frame))
        {
            _stack.Counters.ArpRequestsSentField++;
        }
    }

    private void Arm()
    {
        if (!_timerArmed)
        {
            _timerArmed = true;
            _timer.Change(_stack.Options.ArpRequestInterval, Timeout.InfiniteTimeSpan);
        }
    }

    private void OnTimer()
    {
        _timerArmed = false;
        long now = _stack.NowMs;
        List<Ipv4Address>? expired = null;
        foreach (KeyValuePair<Ipv4Address, Pending> p in _pending)
        {
            if (p.Value.NextMs > now)
            {
                continue;
            }

            if (p.Value.Attempts >= _stack.Options.ArpRequestAttempts)
            {
                (expired ??= []).Add(p.Key);
                continue;
            }

            p.Value.Attempts++;
            p.Value.NextMs = now + (long)_stack.Options.ArpRequestInterval.TotalMilliseconds;
            SendRequest(p.Key, gratuitous: false);
        }

        if (expired is not null)
        {
            foreach (Ipv4Address a in expired)
            {
                _pending.Remove(a, out Pending? p);
                foreach (PacketBuffer frame in p!.Frames)
                {
                    frame.Release();
                    _stack.Counters.Drop(DropReason.ArpUnresolved);
                }
            }
        }

        if (_pending.Count > 0)
        {
            Arm();
        }
    }

    public void Dispose()
    {
        _timer.Dispose();
        foreach (Pending p in _pending.Values)
        {
            foreach (PacketBuffer frame in p.Frames)
            {
                frame.Release();
            }
        }

        _pending.Clear();
    }

    private readonly record struct Entry(MacAddress Mac, long ExpiresMs, long ProbedMs);

    private sealed class Pending
    {
        public List<PacketBuffer> Frames { get; } = new(4);

        public List<int> Lengths { get; } = new(4);

        public int Attempts { get; set; }

        public long NextMs { get; set; }
    }
}
