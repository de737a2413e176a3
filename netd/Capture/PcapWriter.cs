using System.Buffers.Binary;

namespace Multikernel.Netd.Capture;

/// <summary>Which way a captured frame went (classic pcap cannot store it; the writer counts it).</summary>
public enum CaptureDirection
{
    /// <summary>From the wire to netd.</summary>
    Received,

    /// <summary>From netd to the wire.</summary>
    Transmitted,
}

/// <summary>Timestamp precision of a capture file.</summary>
public enum PcapTimestampResolution
{
    /// <summary>Classic pcap (magic a1b2c3d4): microseconds.</summary>
    Microseconds,

    /// <summary>Nanosecond pcap (magic a1b23c4d), read by tshark/tcpdump/libpcap ≥ 1.5.</summary>
    Nanoseconds,
}

/// <summary>How a <see cref="PcapWriter"/> writes; setters validate.</summary>
public sealed class PcapOptions
{
    private int _snapLength = 65535;
    private long _maxBytes = 100L << 20;

    /// <summary>Timestamp precision. Default microseconds (the format every tool reads).</summary>
    public PcapTimestampResolution Resolution { get; set; } = PcapTimestampResolution.Microseconds;

    /// <summary>Bytes kept of each frame (longer frames are truncated, their original length recorded). Default 65535; 64..262144.</summary>
    public int SnapLength
    {
        get => _snapLength;
        set => _snapLength = value is >= 64 and <= 262144 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "The pcap snap length is 64..262144 bytes.");
    }

    /// <summary>Largest file, header included: the writer stops (and counts what it skipped) instead of exceeding it. Default 100 MiB; at least 4 KiB.</summary>
    public long MaxBytes
    {
        get => _maxBytes;
        set => _maxBytes = value >= 4096 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "The pcap size cap is at least 4096 bytes.");
    }
}

/// <summary>
/// Writes Ethernet frames to a classic libpcap file (LINKTYPE_ETHERNET), both directions into
/// one file, with a size cap. Timestamps come from the <see cref="TimeProvider"/>: the wall clock
/// read once at creation plus the monotonic timestamp's elapsed time per frame, so they are
/// ordered, nanosecond-capable and cost no clock call beyond <c>GetTimestamp</c>.
/// </summary>
/// <remarks>
/// One writer thread (netd's core captures both directions). Frames are copied into a buffer
/// allocated once and written to the stream when it fills, on <see cref="Flush"/> and on
/// <see cref="Dispose"/>; nothing is allocated per frame. When the cap is reached the writer
/// stops for good and counts every further frame in <see cref="DroppedPackets"/>; a write error
/// (disk full) does the same and is kept in <see cref="Error"/> — capture never fails the data path.
/// </remarks>
public sealed class PcapWriter : IDisposable
{
    private const int GlobalHeaderBytes = 24;
    private const int RecordHeaderBytes = 16;
    private const ushort LinkTypeEthernet = 1;

    private readonly Stream _stream;
    private readonly bool _leaveOpen;
    private readonly TimeProvider _time;
    private readonly byte[] _buffer;
    private readonly long _startTimestamp;
    private readonly long _startUnixNanoseconds;
    private readonly bool _nanoseconds;
    private readonly int _snapLength;
    private readonly long _maxBytes;
    private int _buffered;
    private long _fileBytes;
    private long _packets;
    private long _received;
    private long _transmitted;
    private long _dropped;
    private bool _stopped;
    private bool _disposed;

    /// <summary>Writes the pcap header to <paramref name="stream"/> at once.</summary>
    public PcapWriter(Stream stream, PcapOptions? options = null, TimeProvider? time = null, bool leaveOpen = false)
    {
        ArgumentNullException.ThrowIfNull(stream);
        if (!stream.CanWrite)
        {
            throw new ArgumentException("The pcap stream is not writable.", nameof(stream));
        }

        options ??= new PcapOptions();
        _stream = stream;
        _leaveOpen = leaveOpen;
        _time = time ?? TimeProvider.System;
        _nanoseconds = options.Resolution == PcapTimestampResolution.Nanoseconds;
        _snapLength = options.SnapLength;
        _maxBytes = options.MaxBytes;
        _buffer = new byte[Math.Max(64 * 1024, RecordHeaderBytes + _snapLength)];
        _startTimestamp = _time.GetTimestamp();
        _startUnixNanoseconds = (_time.GetUtcNow() - DateTimeOffset.UnixEpoch).Ticks * 100;

        Span<byte> header = _buffer.AsSpan(0, GlobalHeaderBytes);
        BinaryPrimitives.WriteUInt32LittleEndian(header, _nanoseconds ? 0xA1B23C4Du : 0xA1B2C3D4u);
        BinaryPrimitives.WriteUInt16LittleEndian(header[4..], 2);   // version 2.4
        BinaryPrimitives.WriteUInt16LittleEndian(header[6..], 4);
        BinaryPrimitives.WriteInt32LittleEndian(header[8..], 0);    // thiszone: UTC
        BinaryPrimitives.WriteUInt32LittleEndian(header[12..], 0);  // sigfigs
        BinaryPrimitives.WriteUInt32LittleEndian(header[16..], (uint)_snapLength);
        BinaryPrimitives.WriteUInt32LittleEndian(header[20..], LinkTypeEthernet);
        _buffered = GlobalHeaderBytes;
        _fileBytes = GlobalHeaderBytes;
        FlushBuffer();
    }

    /// <summary>Creates (or truncates) <paramref name="path"/> and writes the pcap header.</summary>
    public static PcapWriter Create(string path, PcapOptions? options = null, TimeProvider? time = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read, bufferSize: 1);
        try
        {
            return new PcapWriter(file, options, time);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>Frames written.</summary>
    public long Packets => Volatile.Read(ref _packets);

    /// <summary>Frames written that were received.</summary>
    public long ReceivedPackets => Volatile.Read(ref _received);

    /// <summary>Frames written that were transmitted.</summary>
    public long TransmittedPackets => Volatile.Read(ref _transmitted);

    /// <summary>Frames not written because the cap was reached (or writing failed).</summary>
    public long DroppedPackets => Volatile.Read(ref _dropped);

    /// <summary>Bytes of the file so far (header included, buffered bytes included).</summary>
    public long FileBytes => Volatile.Read(ref _fileBytes);

    /// <summary>True once the writer stopped (cap reached or a write failed).</summary>
    public bool IsStopped => Volatile.Read(ref _stopped);

    /// <summary>The I/O error that stopped the writer, if any.</summary>
    public Exception? Error { get; private set; }

    /// <summary>Appends one frame; false when it was not written (cap reached, stopped, or disposed).</summary>
    public bool Write(ReadOnlySpan<byte> frame, CaptureDirection direction)
    {
        if (_stopped || _disposed)
        {
            _dropped++;
            return false;
        }

        int captured = Math.Min(frame.Length, _snapLength);
        int record = RecordHeaderBytes + captured;
        if (_fileBytes + record > _maxBytes)
        {
            _stopped = true;
            _dropped++;
            return false;
        }

        if (_buffered + record > _buffer.Length && !FlushBuffer())
        {
            _dropped++;
            return false;
        }

        long elapsed = _time.GetTimestamp() - _startTimestamp;
        long frequency = _time.TimestampFrequency;
        long nanoseconds = _startUnixNanoseconds + (elapsed / frequency * 1_000_000_000) + (elapsed % frequency * 1_000_000_000 / frequency);
        Span<byte> header = _buffer.AsSpan(_buffered, RecordHeaderBytes);
        BinaryPrimitives.WriteUInt32LittleEndian(header, (uint)(nanoseconds / 1_000_000_000));
        BinaryPrimitives.WriteUInt32LittleEndian(header[4..], (uint)(_nanoseconds ? nanoseconds % 1_000_000_000 : nanoseconds % 1_000_000_000 / 1000));
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], (uint)captured);
        BinaryPrimitives.WriteUInt32LittleEndian(header[12..], (uint)frame.Length);
        frame[..captured].CopyTo(_buffer.AsSpan(_buffered + RecordHeaderBytes));
        _buffered += record;
        _fileBytes += record;
        _packets++;
        if (direction == CaptureDirection.Received)
        {
            _received++;
        }
        else
        {
            _transmitted++;
        }

        return true;
    }

    /// <summary>Writes buffered frames to the stream and flushes it.</summary>
    public void Flush()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (FlushBuffer())
        {
            try
            {
                _stream.Flush();
            }
            catch (IOException e)
            {
                Stop(e);
            }
        }
    }

    private bool FlushBuffer()
    {
        if (Error is not null)
        {
            return false;
        }

        try
        {
            _stream.Write(_buffer, 0, _buffered);
            _buffered = 0;
            return true;
        }
        catch (IOException e)
        {
            Stop(e);
            return false;
        }
    }

    private void Stop(IOException e)
    {
        Error = e;
        _stopped = true;
        _buffered = 0;
    }

    /// <summary>Flushes and closes the stream (unless it was left open).</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        try
        {
            Flush();
        }
        finally
        {
            _disposed = true;
            if (!_leaveOpen)
            {
                _stream.Dispose();
            }
        }
    }
}
