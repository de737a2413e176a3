namespace Multikernel.Net.Tcp;

/// <summary>
/// A connection's send buffer: a fixed ring of bytes written by the application and consumed
/// as the peer acknowledges. Offset 0 is the first unacknowledged data byte, so a
/// retransmission reads the same bytes again. It never grows: a write that does not fit waits.
/// </summary>
internal sealed class SendRing(int capacity)
{
    private readonly byte[] _bytes = new byte[capacity];
    private int _head;

    public int Count { get; private set; }

    public int Capacity => _bytes.Length;

    public int Free => _bytes.Length - Count;

    public int Write(ReadOnlySpan<byte> data)
    {
        int n = Math.Min(data.Length, Free);
        int tail = (_head + Count) % _bytes.Length;
        int first = Math.Min(n, _bytes.Length - tail);
        data[..first].CopyTo(_bytes.AsSpan(tail));
        data[first..n].CopyTo(_bytes);
        Count += n;
        return n;
    }

    public void Consume(int n)
    {
        n = Math.Clamp(n, 0, Count);
        _head = (_head + n) % _bytes.Length;
        Count -= n;
    }

    /// <summary>Copies <paramref name="destination"/>.Length bytes starting <paramref name="offset"/> bytes after the head.</summary>
    public void CopyTo(int offset, Span<byte> destination)
    {
        int start = (_head + offset) % _bytes.Length;
        int first = Math.Min(destination.Length, _bytes.Length - start);
        _bytes.AsSpan(start, first).CopyTo(destination);
        _bytes.AsSpan(0, destination.Length - first).CopyTo(destination[first..]);
    }
}
