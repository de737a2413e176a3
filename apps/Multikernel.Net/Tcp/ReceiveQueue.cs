using Multikernel.Net.Wire;

namespace Multikernel.Net.Tcp;

/// <summary>
/// A connection's received data, as slices of the frames it arrived in (no copy until the
/// application reads): an in-order queue the application reads from, and a bounded list of
/// out-of-order segments sorted by sequence number. Overlaps between out-of-order segments are
/// allowed and resolved when they become in order, so insertion never splits a segment. Every
/// slice holds one reference to its frame, released when it is read or dropped.
/// </summary>
internal sealed class ReceiveQueue(int maxSlices, int maxOutOfOrder)
{
    private readonly BufferSlice[] _slices = new BufferSlice[maxSlices];
    private readonly List<(SeqNumber Seq, BufferSlice Slice)> _ooo = new(maxOutOfOrder);
    private int _head;
    private int _count;
    private SeqNumber _lastOooSeq;

    /// <summary>In-order bytes not yet read.</summary>
    public int Bytes { get; private set; }

    public int Slices => _count;

    public int OutOfOrderCount => _ooo.Count;

    public bool IsFull => _count == _slices.Length;

    public bool Append(BufferSlice slice)
    {
        if (_count == _slices.Length)
        {
            return false;
        }

        slice.Buffer.Retain();
        _slices[(_head + _count) % _slices.Length] = slice;
        _count++;
        Bytes += slice.Length;
        return true;
    }

    public int Read(Span<byte> destination)
    {
        int total = 0;
        while (_count > 0 && total < destination.Length)
        {
            ref BufferSlice s = ref _slices[_head];
            int n = Math.Min(s.Length, destination.Length - total);
            s.Span[..n].CopyTo(destination[total..]);
            total += n;
            Bytes -= n;
            if (n == s.Length)
            {
                s.Buffer.Release();
                s = default;
                _head = (_head + 1) % _slices.Length;
                _count--;
            }
            else
            {
                s = s.Skip(n);
            }
        }

        return total;
    }

    /// <summary>Holds an out-of-order segment; false when the list is full (or it duplicates one held).</summary>
    public bool InsertOutOfOrder(SeqNumber seq, BufferSlice slice)
    {
        // From the end: behind a hole the segments arrive in order, so each lands last (O(1)).
        int i = _ooo.Count;
        while (i > 0 && _ooo[i - 1].Seq >= seq)
        {
            i--;
        }

        if (i < _ooo.Count && _ooo[i].Seq == seq && _ooo[i].Slice.Length >= slice.Length)
        {
            _lastOooSeq = seq;
            return true;
        }

        if (_ooo.Count == maxOutOfOrder)
        {
            return false;
        }

        slice.Buffer.Retain();
        _ooo.Insert(i, (seq, slice));
        _lastOooSeq = seq;
        return true;
    }

    /// <summary>Moves out-of-order data that is now in order behind <paramref name="rcvNxt"/>; returns the new next expected number.</summary>
    public SeqNumber Drain(SeqNumber rcvNxt)
    {
        while (_ooo.Count > 0 && !IsFull)
        {
            (SeqNumber seq, BufferSlice slice) = _ooo[0];
            if (seq > rcvNxt)
            {
                break;
            }

            _ooo.RemoveAt(0);
            int skip = rcvNxt - seq;
            if (skip < slice.Length)
            {
                BufferSlice rest = slice.Skip(skip);
                Append(rest);
                rcvNxt += rest.Length;
            }

            slice.Buffer.Release();
        }

        return rcvNxt;
    }

    /// <summary>Up to <paramref name="max"/> SACK blocks (RFC 2018 §4): the block holding the latest segment first, then the others in order.</summary>
    public void FillSack(ref TcpOptions options, SeqNumber rcvNxt, int max)
    {
        if (_ooo.Count == 0 || max <= 0)
        {
            return;
        }

        Span<SackBlock> blocks = stackalloc SackBlock[TcpOptions.MaxSackBlocks * 4];
        int n = 0;
        foreach ((SeqNumber seq, BufferSlice slice) in _ooo)
        {
            SeqNumber left = SeqNumber.Max(seq, rcvNxt);
            SeqNumber right = seq + slice.Length;
            if (right <= left)
            {
                continue;
            }

            if (n > 0 && left <= blocks[n - 1].Right)
            {
                blocks[n - 1] = new SackBlock(blocks[n - 1].Left, SeqNumber.Max(blocks[n - 1].Right, right));
            }
            else if (n < blocks.Length)
            {
                blocks[n++] = new SackBlock(left, right);
            }
        }

        int first = -1;
        for (int i = 0; i < n; i++)
        {
            if (_lastOooSeq >= blocks[i].Left && _lastOooSeq < blocks[i].Right)
            {
                first = i;
                break;
            }
        }

        if (first >= 0)
        {
            options.AddSack(blocks[first]);
        }

        for (int i = 0; i < n && options.SackCount < max; i++)
        {
            if (i != first)
            {
                options.AddSack(blocks[i]);
            }
        }
    }

    public void Clear()
    {
        while (_count > 0)
        {
            _slices[_head].Buffer.Release();
            _slices[_head] = default;
            _head = (_head + 1) % _slices.Length;
            _count--;
        }

        foreach ((_, BufferSlice slice) in _ooo)
        {
            slice.Buffer.Release();
        }

        _ooo.Clear();
        Bytes = 0;
    }
}
