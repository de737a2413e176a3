using System.Buffers.Binary;
using Multikernel.Netd.Wire;

namespace Multikernel.Net.Wire;

/// <summary>TCP control bits.</summary>
[Flags]
public enum TcpFlags : byte
{
    None = 0,
    Fin = 0x01,
    Syn = 0x02,
    Rst = 0x04,
    Psh = 0x08,
    Ack = 0x10,
    Urg = 0x20,
    Ece = 0x40,
    Cwr = 0x80,
}

/// <summary>One SACK block (RFC 2018): the peer holds [<see cref="Left"/>, <see cref="Right"/>).</summary>
public readonly record struct SackBlock(SeqNumber Left, SeqNumber Right);

/// <summary>
/// The TCP options this stack reads and writes (RFC 9293 MSS, RFC 7323 window scale and
/// timestamps, RFC 2018 SACK). A plain value: parsing fills it without allocating (up to four
/// SACK blocks inline, the most that fit in 40 option bytes).
/// </summary>
public struct TcpOptions
{
    /// <summary>The most SACK blocks an option can carry.</summary>
    public const int MaxSackBlocks = 4;

    public ushort? MaxSegmentSize;

    /// <summary>The window-scale shift the sender offers (values above 14 are clamped to 14, as RFC 7323 §2.3 says).</summary>
    public byte? WindowScale;

    public bool SackPermitted;

    public bool HasTimestamps;

    public uint TimestampValue;

    public uint TimestampEcho;

    private SackBlock _sack0;
    private SackBlock _sack1;
    private SackBlock _sack2;
    private SackBlock _sack3;

    /// <summary>How many SACK blocks are present.</summary>
    public int SackCount { get; private set; }

    /// <summary>The SACK block at <paramref name="index"/> (below <see cref="SackCount"/>).</summary>
    public readonly SackBlock Sack(int index) => (uint)index < (uint)SackCount
        ? index switch { 0 => _sack0, 1 => _sack1, 2 => _sack2, _ => _sack3 }
        : throw new ArgumentOutOfRangeException(nameof(index));

    /// <summary>Appends a SACK block; false when four are already present.</summary>
    public bool AddSack(SackBlock block)
    {
        switch (SackCount)
        {
            case 0: _sack0 = block; break;
            case 1: _sack1 = block; break;
            case 2: _sack2 = block; break;
            case 3: _sack3 = block; break;
            default: return false;
        }

        SackCount++;
        return true;
    }

    /// <summary>Removes every SACK block.</summary>
    public void ClearSack() => SackCount = 0;

    /// <summary>
    /// Parses option bytes. Unknown kinds are skipped by their length; an option whose length is
    /// below 2 or runs past the header, or a known kind with a length it forbids, makes the whole
    /// segment malformed (<see cref="WireError.BadOptions"/>).
    /// </summary>
    public static WireError Parse(ReadOnlySpan<byte> bytes, out TcpOptions options)
    {
        options = default;
        int i = 0;
        while (i < bytes.Length)
        {
            byte kind = bytes[i];
            if (kind == 0)
            {
                break;
            }

            if (kind == 1)
            {
                i++;
                continue;
            }

            if (i + 1 >= bytes.Length)
            {
                return WireError.BadOptions;
            }

            int length = bytes[i + 1];
            if (length < 2 || i + length > bytes.Length)
            {
                return WireError.BadOptions;
            }

            ReadOnlySpan<byte> body = bytes.Slice(i + 2, length - 2);
            switch (kind)
            {
                case 2:
                    if (length != 4) { return WireError.BadOptions; }
                    options.MaxSegmentSize = BinaryPrimitives.ReadUInt16BigEndian(body);
                    break;
                case 3:
                    if (length != 3) { return WireError.BadOptions; }
                    options.WindowScale = Math.Min(body[0], (byte)14);
                    break;
                case 4:
                    if (length != 2) { return WireError.BadOptions; }
                    options.SackPermitted = true;
                    break;
                case 5:
                    if ((length - 2) % 8 != 0 || length == 2) { return WireError.BadOptions; }
                    for (int b = 0; b + 8 <= body.Length && options.SackCount < MaxSackBlocks; b += 8)
                    {
                        options.AddSack(new SackBlock(new SeqNumber(BinaryPrimitives.ReadUInt32BigEndian(body[b..])), new SeqNumber(BinaryPrimitives.ReadUInt32BigEndian(body[(b + 4)..]))));
                    }

                    break;
                case 8:
                    if (length != 10) { return WireError.BadOptions; }
                    options.HasTimestamps = true;
                    options.TimestampValue = BinaryPrimitives.ReadUInt32BigEndian(body);
                    options.TimestampEcho = BinaryPrimitives.ReadUInt32BigEndian(body[4..]);
                    break;
                default:
                    break;
            }

            i += length;
        }

        return WireError.None;
    }

    /// <summary>The bytes <see cref="Write"/> needs (a multiple of four).</summary>
    public readonly int WrittenLength
    {
        get
        {
            int n = 0;
            if (MaxSegmentSize.HasValue) { n += 4; }
            if (WindowScale.HasValue) { n += 4; }           // NOP + 3
            if (SackPermitted && HasTimestamps) { n += 12; } // SACK-permitted + timestamps share two NOP-free words
            else
            {
                if (SackPermitted) { n += 4; }               // NOP NOP + 2
                if (HasTimestamps) { n += 12; }              // NOP NOP + 10
            }

            if (SackCount > 0) { n += 4 + (8 * SackCount); } // NOP NOP + 2 + 8n
            return n;
        }
    }

    /// <summary>Writes the options, NOP-padded to whole words as Linux lays them out; returns the length.</summary>
    public readonly int Write(Span<byte> destination)
    {
        int needed = WrittenLength;
        if (needed > 40)
        {
            throw new InvalidOperationException($"TCP options need {needed} bytes; at most 40 fit.");
        }

        Span<byte> d = destination[..needed];
        int i = 0;
        if (MaxSegmentSize is ushort mss)
        {
            d[i] = 2; d[i + 1] = 4;
            BinaryPrimitives.WriteUInt16BigEndian(d[(i + 2)..], mss);
            i += 4;
        }

        if (SackPermitted && HasTimestamps)
        {
            d[i] = 4; d[i + 1] = 2; d[i + 2] = 8; d[i + 3] = 10;
            BinaryPrimitives.WriteUInt32BigEndian(d[(i + 4)..], TimestampValue);
            BinaryPrimitives.WriteUInt32BigEndian(d[(i + 8)..], TimestampEcho);
            i += 12;
        }
        else
        {
            if (SackPermitted)
            {
                d[i] = 1; d[i + 1] = 1; d[i + 2] = 4; d[i + 3] = 2;
                i += 4;
            }

            if (HasTimestamps)
            {
                d[i] = 1; d[i + 1] = 1; d[i + 2] = 8; d[i + 3] = 10;
                BinaryPrimitives.WriteUInt32BigEndian(d[(i + 4)..], TimestampValue);
                BinaryPrimitives.WriteUInt32BigEndian(d[(i + 8)..], TimestampEcho);
                i += 12;
            }
        }

        if (WindowScale is byte ws)
        {
            d[i] = 1; d[i + 1] = 3; d[i + 2] = 3; d[i + 3] = ws;
            i += 4;
        }

        if (SackCount > 0)
        {
            d[i] = 1; d[i + 1] = 1; d[i + 2] = 5; d[i + 3] = (byte)(2 + (8 * SackCount));
            i += 4;
            for (int b = 0; b < SackCount; b++)
            {
                SackBlock block = Sack(b);
                BinaryPrimitives.WriteUInt32BigEndian(d[i..], block.Left.Value);
                BinaryPrimitives.WriteUInt32BigEndian(d[(i + 4)..], block.Right.Value);
                i += 8;
            }
        }

        return i;
    }
}

/// <summary>
/// A TCP segment: a checked view (RFC 9293 §3.1). <see cref="TryParse"/> checks the 20-byte
/// header, that the data offset is at least 5 words and inside the buffer, and the options;
/// the checksum needs the IP addresses (<see cref="IsChecksumValid"/>).
/// </summary>
public readonly ref struct TcpSegment
{
    public const int MinHeaderLength = 20;

    public const int MaxHeaderLength = 60;

    private readonly ReadOnlySpan<byte> _bytes;

    private TcpSegment(ReadOnlySpan<byte> bytes) => _bytes = bytes;

    /// <summary>Views <paramref name="bytes"/> (the whole IP payload) as a segment and parses its options into <paramref name="options"/>.</summary>
    public static WireError TryParse(ReadOnlySpan<byte> bytes, out TcpSegment segment, out TcpOptions options)
    {
        segment = default;
        options = default;
        if (bytes.Length < MinHeaderLength)
        {
            return WireError.Truncated;
        }

        int headerLength = (bytes[12] >> 4) * 4;
        if (headerLength < MinHeaderLength)
        {
            return WireError.BadHeaderLength;
        }

        if (headerLength > bytes.Length)
        {
            return WireError.Truncated;
        }

        WireError error = TcpOptions.Parse(bytes[MinHeaderLength..headerLength], out options);
        if (error != WireError.None)
        {
            return error;
        }

        segment = new TcpSegment(bytes);
        return WireError.None;
    }

    public ushort SourcePort => BinaryPrimitives.ReadUInt16BigEndian(_bytes);

    public ushort DestinationPort => BinaryPrimitives.ReadUInt16BigEndian(_bytes[2..]);

    public SeqNumber SequenceNumber => new(BinaryPrimitives.ReadUInt32BigEndian(_bytes[4..]));

    public SeqNumber AcknowledgmentNumber => new(BinaryPrimitives.ReadUInt32BigEndian(_bytes[8..]));

    public int HeaderLength => (_bytes[12] >> 4) * 4;

    public TcpFlags Flags => (TcpFlags)_bytes[13];

    public ushort Window => BinaryPrimitives.ReadUInt16BigEndian(_bytes[14..]);

    public ushort Checksum => BinaryPrimitives.ReadUInt16BigEndian(_bytes[16..]);

    public ushort UrgentPointer => BinaryPrimitives.ReadUInt16BigEndian(_bytes[18..]);

    public ReadOnlySpan<byte> OptionBytes => _bytes[MinHeaderLength..HeaderLength];

    public ReadOnlySpan<byte> Payload => _bytes[HeaderLength..];

    public int Length => _bytes.Length;

    /// <summary>The sequence space the segment occupies: its payload plus one each for SYN and FIN.</summary>
    public int SequenceLength => Payload.Length + ((Flags & TcpFlags.Syn) != 0 ? 1 : 0) + ((Flags & TcpFlags.Fin) != 0 ? 1 : 0);

    public bool IsChecksumValid(Ipv4Address source, Ipv4Address destination) =>
        InternetChecksum.Finish(InternetChecksum.Add(InternetChecksum.PseudoHeader(source, destination, (byte)IpProtocol.Tcp, _bytes.Length), _bytes)) == 0;

    /// <summary>
    /// Writes a header with <paramref name="options"/> into <paramref name="destination"/>, leaving
    /// the checksum zero; returns the header length. Put the payload after it, then call
    /// <see cref="WriteChecksum"/>.
    /// </summary>
    public static int WriteHeader(Span<byte> destination, ushort sourcePort, ushort destinationPort, SeqNumber sequence, SeqNumber acknowledgment,
        TcpFlags flags, ushort window, in TcpOptions options)
    {
        int optionLength = options.Write(destination[MinHeaderLength..]);
        int headerLength = MinHeaderLength + optionLength;
        Span<byte> d = destination[..MinHeaderLength];
        BinaryPrimitives.WriteUInt16BigEndian(d, sourcePort);
        BinaryPrimitives.WriteUInt16BigEndian(d[2..], destinationPort);
        BinaryPrimitives.WriteUInt32BigEndian(d[4..], sequence.Value);
        BinaryPrimitives.WriteUInt32BigEndian(d[8..], acknowledgment.Value);
        d[12] = (byte)((headerLength / 4) << 4);
        d[13] = (byte)flags;
        BinaryPrimitives.WriteUInt16BigEndian(d[14..], window);
        d[16] = 0;
        d[17] = 0;
        d[18] = 0;
        d[19] = 0;
        return headerLength;
    }

    /// <summary>Replaces the flags of a header written by <see cref="WriteHeader"/> (before its checksum is computed).</summary>
    public static void RewriteFlags(Span<byte> header, TcpFlags flags) => header[13] = (byte)flags;

    /// <summary>Computes and stores the checksum of a whole segment (header and payload in <paramref name="segment"/>).</summary>
    public static void WriteChecksum(Span<byte> segment, Ipv4Address source, Ipv4Address destination)
    {
        segment[16] = 0;
        segment[17] = 0;
        ushort sum = InternetChecksum.Finish(InternetChecksum.Add(InternetChecksum.PseudoHeader(source, destination, (byte)IpProtocol.Tcp, segment.Length), segment));
        BinaryPrimitives.WriteUInt16BigEndian(segment[16..], sum);
    }
}
