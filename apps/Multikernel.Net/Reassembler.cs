using Multikernel.Netd.Wire;

namespace Multikernel.Net;

/// <summary>
/// IPv4 fragment reassembly (RFC 791 §3.2, RFC 815's hole tracking as a bitmap of 8-byte
/// blocks). Bounded: at most <see cref="NetworkStackOptions.MaxReassemblies"/> datagrams in
/// progress, each in one 64 KiB buffer (that product is the memory cap), each dropped when its
/// timeout passes. Overlapping fragments drop the whole datagram (they are how teardrop-style
/// attacks rewrite headers), and so does a fragment that would end past 65535 bytes.
/// </summary>
internal sealed class Reassembler : IDisposable
{
    private const int MaxDatagram = ushort.MaxValue;

    private readonly NetworkStack _stack;
    private readonly List<Entry> _entries = [];
    private readonly Stack<ReassemblyBuffer> _free = [];
    private readonly ITimer _timer;
    private bool _armed;

    public Reassembler(NetworkStack stack)
    {
        _stack = stack;
        _timer = stack.Time.CreateTimer(static s => ((Reassembler)s!).OnTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    public int InProgress => _entries.Count;

    public void Add(Ipv4Packet ip, bool broadcast)
    {
        int offset = ip.FragmentOffset;
        ReadOnlySpan<byte> data = ip.Payload;
        int end = offset + data.Length;
        // Every fragment but the last carries a multiple of 8 bytes (RFC 791).
        if (end > MaxDatagram - Ipv4Packet.MinHeaderLength || (ip.MoreFragments && (data.Length == 0 || data.Length % 8 != 0)))
        {
            _stack.Counters.Drop(DropReason.BadIpv4);
            return;
        }

        Entry? entry = Find(ip.Source, ip.Identification, ip.Protocol);
        if (entry is null)
        {
            if (_entries.Count >= _stack.Options.MaxReassemblies)
            {
                _stack.Counters.Drop(DropReason.ReassemblyFull);
                return;
            }

            ReassemblyBuffer? buffer = RentBuffer();
            if (buffer is null)
            {
                // Every buffer is still held by delivered data the application has not read.
                _stack.Counters.Drop(DropReason.ReassemblyFull);
                return;
            }

            entry = new Entry(ip.Source, ip.Destination, ip.Identification, ip.Protocol, buffer, _stack.NowMs + (long)_stack.Options.ReassemblyTimeout.TotalMilliseconds);
            _entries.Add(entry);
            Arm();
        }

        if (!ip.MoreFragments)
        {
            if (entry.TotalLength >= 0 && entry.TotalLength != end)
            {
                Discard(entry, DropReason.FragmentsOverlap);
                return;
            }

            entry.TotalLength = end;
        }

        if ((entry.TotalLength >= 0 && end > entry.TotalLength) || entry.Overlaps(offset, end))
        {
            Discard(entry, DropReason.FragmentsOverlap);
            return;
        }

        data.CopyTo(entry.Buffer.Array.AsSpan(offset));
        entry.Mark(offset, end);
        if (entry.TotalLength >= 0 && entry.IsComplete)
        {
            _entries.Remove(entry);
            _stack.Counters.DatagramsReassembledField++;
            ReassemblyBuffer b = entry.Buffer;
            b.Activate();
            try
            {
                _stack.Deliver(entry.Source, entry.Destination, entry.Protocol, broadcast, b, 0, entry.TotalLength);
            }
            finally
            {
                b.Release();
            }
        }
    }

    private ReassemblyBuffer? RentBuffer()
    {
        if (_free.TryPop(out ReassemblyBuffer? b))
        {
            return b;
        }

        // Buffers are made lazily up to the bound; a buffer still held by unread data is not free.
        return _created < _stack.Options.MaxReassemblies ? Create() : null;
    }

    private int _created;

    private ReassemblyBuffer Create()
    {
        _created++;
        return new ReassemblyBuffer(this, new byte[MaxDatagram]);
    }

    private Entry? Find(Ipv4Address source, ushort id, IpProtocol protocol)
    {
        foreach (Entry e in _entries)
        {
            if (e.Source == source && e.Id == id && e.Protocol == protocol)
            {
                return e;
            }
        }

        return null;
    }

    private void Discard(Entry entry, DropReason reason)
    {
        _entries.Remove(entry);
        _free.Push(entry.Buffer);
        _stack.Counters.Drop(reason);
    }

    private void Arm()
    {
        if (!_armed)
        {
            _armed = true;
            _timer.Change(TimeSpan.FromSeconds(1), Timeout.InfiniteTimeSpan);
        }
    }

    private void OnTimer()
    {
        _armed = false;
        long now = _stack.NowMs;
        for (int i = _entries.Count - 1; i >= 0; i--)
        {
            if (_entries[i].DeadlineMs <= now)
            {
                Discard(_entries[i], DropReason.ReassemblyTimeout);
            }
        }

        if (_entries.Count > 0)
        {
            Arm();
        }
    }

    public void Dispose() => _timer.Dispose();

    private sealed class Entry(Ipv4Address source, Ipv4Address destination, ushort id, IpProtocol protocol, ReassemblyBuffer buffer, long deadlineMs)
    {
        private readonly ulong[] _blocks = new ulong[(MaxDatagram + 7) / 8 / 64 + 1];
        private int _received;

        public Ipv4Address Source { get; } = source;

        public Ipv4Address Destination { get; } = destination;

        public ushort Id { get; } = id;

        public IpProtocol Protocol { get; } = protocol;

        public ReassemblyBuffer Buffer { get; } = buffer;

        public long DeadlineMs { get; } = deadlineMs;

        public int TotalLength { get; set; } = -1;

        public bool IsComplete => _received == (TotalLength + 7) / 8;

        public bool Overlaps(int start, int end)
        {
            for (int b = start / 8; b < (end + 7) / 8; b++)
            {
                if ((_blocks[b >> 6] & (1UL << (b & 63))) != 0)
                {
                    return true;
                }
            }

            return false;
        }

        public void Mark(int start, int end)
        {
            for (int b = start / 8; b < (end + 7) / 8; b++)
            {
                _blocks[b >> 6] |= 1UL << (b & 63);
                _received++;
            }
        }
    }

    internal sealed class ReassemblyBuffer(Reassembler owner, byte[] array) : PacketBuffer
    {
        public byte[] Array { get; } = array;

        public override Memory<byte> Memory => Array;

        public new void Activate() => base.Activate();

        protected override void OnReleased() => owner._free.Push(this);
    }
}
