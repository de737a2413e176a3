using System.Buffers;
using System.Buffers.Text;

namespace Multikernel.Apps.Kv.Resp;

/// <summary>What <see cref="RespParser.TryParse"/> found at the front of the buffer.</summary>
public enum RespParseStatus
{
    /// <summary>Not a whole command yet; nothing was consumed.</summary>
    Incomplete,

    /// <summary>A command was parsed into the <see cref="RespCommand"/> and consumed.</summary>
    Command,

    /// <summary>Something redis ignores was consumed (<c>*0</c>, <c>*-1</c>, a blank inline line).</summary>
    Empty,

    /// <summary>A protocol error: reply with the error and close the connection, as redis does.</summary>
    Error,

    /// <summary>
    /// The command's arguments exceed the query buffer limit (<see cref="KvOptions.MaxQueryBufferBytes"/>):
    /// close the connection without a reply, as redis does.
    /// </summary>
    TooLarge,
}

/// <summary>
/// Incremental RESP2 request parser: multibulk (<c>*N\r\n$len\r\n…</c>) and inline commands
/// (<c>SET a "b c"\r\n</c>, split the way redis's <c>sdssplitargs</c> splits them). It parses a
/// command only once all of it is buffered and never copies a partial bulk, so a client that
/// dribbles a command costs a re-scan of its header lines, not copies. Every length is checked
/// against the limits before anything is reserved; error texts are redis-server 7's.
/// </summary>
public sealed class RespParser
{
    /// <summary>Redis's PROTO_INLINE_MAX_SIZE: an inline request or a count line longer than this is refused.</summary>
    public const int MaxInlineBytes = 64 * 1024;

    private readonly int _maxBulkBytes;
    private readonly int _maxArguments;

    /// <summary>Creates a parser with the connection limits of <paramref name="options"/>.</summary>
    public RespParser(KvOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _maxBulkBytes = options.MaxBulkBytes;
        _maxArguments = options.MaxArguments;
    }

    /// <summary>
    /// Parses one command from the front of <paramref name="buffer"/>. On <see cref="RespParseStatus.Command"/>
    /// and <see cref="RespParseStatus.Empty"/> the buffer is sliced past it; on
    /// <see cref="RespParseStatus.Incomplete"/> it is left as it was; on <see cref="RespParseStatus.Error"/>
    /// <paramref name="error"/> holds the reply text (without the leading <c>-</c>).
    /// </summary>
    public RespParseStatus TryParse(ref ReadOnlySequence<byte> buffer, RespCommand command, out string? error)
    {
        ArgumentNullException.ThrowIfNull(command);
        error = null;
        command.Reset();
        if (buffer.IsEmpty)
        {
            return RespParseStatus.Incomplete;
        }

        var reader = new SequenceReader<byte>(buffer);
        reader.TryPeek(out byte first);
        RespParseStatus status = first == (byte)'*'
            ? ParseMultibulk(ref reader, command, out error)
            : ParseInline(ref reader, command, out error);
        if (status is RespParseStatus.Command or RespParseStatus.Empty)
        {
            buffer = buffer.Slice(reader.Position);
        }
        else if (status is RespParseStatus.Incomplete or RespParseStatus.TooLarge)
        {
            command.Reset();
        }

        return status;
    }

    private RespParseStatus ParseMultibulk(ref SequenceReader<byte> reader, RespCommand command, out string? error)
    {
        error = null;
        reader.Advance(1);
        switch (ReadCountLine(ref reader, out long count))
        {
            case LineStatus.Incomplete:
                return RespParseStatus.Incomplete;
            case LineStatus.TooLong:
                error = "ERR Protocol error: too big mbulk count string";
                return RespParseStatus.Error;
            case LineStatus.NotANumber:
                error = "ERR Protocol error: invalid multibulk length";
                return RespParseStatus.Error;
        }

        if (count > _maxArguments)
        {
            error = "ERR Protocol error: invalid multibulk length";
            return RespParseStatus.Error;
        }

        if (count <= 0)
        {
            return RespParseStatus.Empty;
        }

        for (long i = 0; i < count; i++)
        {
            if (!reader.TryPeek(out byte marker))
            {
                return RespParseStatus.Incomplete;
            }

            if (marker != (byte)'$')
            {
                // Redis checks the marker only once the whole line is buffered.
                if (!HasLine(ref reader, out bool tooLong))
                {
                    if (tooLong)
                    {
                        error = "ERR Protocol error: too big bulk count string";
                        return RespParseStatus.Error;
                    }

                    return RespParseStatus.Incomplete;
                }

                error = $"ERR Protocol error: expected '$', got '{(char)marker}'";
                return RespParseStatus.Error;
            }

            reader.Advance(1);
            switch (ReadCountLine(ref reader, out long length))
            {
                case LineStatus.Incomplete:
                    return RespParseStatus.Incomplete;
                case LineStatus.TooLong:
                    error = "ERR Protocol error: too big bulk count string";
                    return RespParseStatus.Error;
                case LineStatus.NotANumber:
                    error = "ERR Protocol error: invalid bulk length";
                    return RespParseStatus.Error;
            }

            if (length < 0 || length > _maxBulkBytes)
            {
                error = "ERR Protocol error: invalid bulk length";
                return RespParseStatus.Error;
            }

            // The payload and its CRLF must be buffered before anything is copied.
            if (reader.Remaining < length + 2)
            {
                return RespParseStatus.Incomplete;
            }

            if (!command.TryAppend((int)length, out Span<byte> destination))
            {
                return RespParseStatus.TooLarge;
            }

            reader.TryCopyTo(destination);
            reader.Advance(length + 2); // like redis, the two bytes after the payload are skipped unchecked
        }

        return RespParseStatus.Command;
    }

    private RespParseStatus ParseInline(ref SequenceReader<byte> reader, RespCommand command, out string? error)
    {
        error = null;
        if (!reader.TryReadTo(out ReadOnlySequence<byte> line, (byte)'\n', advancePastDelimiter: true))
        {
            if (reader.Remaining > MaxInlineBytes)
            {
                error = "ERR Protocol error: too big inline request";
                return RespParseStatus.Error;
            }

            return RespParseStatus.Incomplete;
        }

        if (line.Length > MaxInlineBytes)
        {
            error = "ERR Protocol error: too big inline request";
            return RespParseStatus.Error;
        }

        byte[]? rented = null;
        try
        {
            ReadOnlySpan<byte> span;
            if (line.IsSingleSegment)
            {
                span = line.FirstSpan;
            }
            else
            {
                rented = ArrayPool<byte>.Shared.Rent((int)line.Length);
                line.CopyTo(rented);
                span = rented.AsSpan(0, (int)line.Length);
            }

            if (!span.IsEmpty && span[^1] == (byte)'\r')
            {
                span = span[..^1];
            }

            if (!SplitArguments(span, command, out error))
            {
                return RespParseStatus.Error;
            }

            return command.Count == 0 ? RespParseStatus.Empty : RespParseStatus.Command;
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    /// <summary>Redis's <c>sdssplitargs</c>: whitespace-separated words, "double quotes" with escapes, 'single quotes'.</summary>
    private bool SplitArguments(ReadOnlySpan<byte> line, RespCommand command, out string? error)
    {
        error = null;
        int p = 0;
        // An argument is never longer than the line, so one scratch buffer of the line's size serves all of them.
        byte[] scratch = ArrayPool<byte>.Shared.Rent(Math.Max(1, line.Length));
        try
        {
            while (true)
            {
                while (p < line.Length && IsSpace(line[p]))
                {
                    p++;
                }

                if (p >= line.Length)
                {
                    return true;
                }

                int n = 0;
                bool inDouble = false;
                bool inSingle = false;
                bool done = false;
                while (!done)
                {
                    bool end = p >= line.Length;
                    byte c = end ? (byte)0 : line[p];
                    if (inDouble)
                    {
                        if (end)
                        {
                            return Unbalanced(out error);
                        }

                        if (c == (byte)'\\' && p + 3 < line.Length && line[p + 1] == (byte)'x' && IsHex(line[p + 2]) && IsHex(line[p + 3]))
                        {
                            scratch[n++] = (byte)((HexValue(line[p + 2]) << 4) | HexValue(line[p + 3]));
                            p += 3;
                        }
                        else if (c == (byte)'\\' && p + 1 < line.Length)
                        {
                            p++;
                            scratch[n++] = line[p] switch
                            {
                                (byte)'n' => (byte)'\n',
                                (byte)'r' => (byte)'\r',
                                (byte)'t' => (byte)'\t',
                                (byte)'b' => (byte)'\b',
                                (byte)'a' => (byte)'\a',
                                _ => line[p],
                            };
                        }
                        else if (c == (byte)'"')
                        {
                            // The closing quote must be followed by a space or the end.
                            if (p + 1 < line.Length && !IsSpace(line[p + 1]))
                            {
                                return Unbalanced(out error);
                            }

                            done = true;
                        }
                        else
                        {
                            scratch[n++] = c;
                        }
                    }
                    else if (inSingle)
                    {
                        if (end)
                        {
                            return Unbalanced(out error);
                        }

                        if (c == (byte)'\\' && p + 1 < line.Length && line[p + 1] == (byte)'\'')
                        {
                            p++;
                            scratch[n++] = (byte)'\'';
                        }
                        else if (c == (byte)'\'')
                        {
                            if (p + 1 < line.Length && !IsSpace(line[p + 1]))
                            {
                                return Unbalanced(out error);
                            }

                            done = true;
                        }
                        else
                        {
                            scratch[n++] = c;
                        }
                    }
                    else if (end || c is (byte)' ' or (byte)'\n' or (byte)'\r' or (byte)'\t' or 0)
                    {
                        done = true;
                    }
                    else if (c == (byte)'"')
                    {
                        inDouble = true;
                    }
                    else if (c == (byte)'\'')
                    {
                        inSingle = true;
                    }
                    else
                    {
                        scratch[n++] = c;
                    }

                    if (!end)
                    {
                        p++;
                    }
                }

                if (command.Count >= _maxArguments || n > _maxBulkBytes || !command.TryAppend(n, out Span<byte> destination))
                {
                    error = "ERR Protocol error: too big inline request";
                    return false;
                }

                scratch.AsSpan(0, n).CopyTo(destination);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(scratch);
        }
    }

    private static bool Unbalanced(out string? error)
    {
        error = "ERR Protocol error: unbalanced quotes in request";
        return false;
    }

    private static bool IsSpace(byte c) => c is (byte)' ' or (byte)'\t' or (byte)'\n' or (byte)'\v' or (byte)'\f' or (byte)'\r';

    private static bool IsHex(byte c) => c is (>= (byte)'0' and <= (byte)'9') or (>= (byte)'a' and <= (byte)'f') or (>= (byte)'A' and <= (byte)'F');

    private static int HexValue(byte c) => c <= (byte)'9' ? c - '0' : (c | 0x20) - 'a' + 10;

    private enum LineStatus
    {
        Ok,
        Incomplete,
        TooLong,
        NotANumber,
    }

    /// <summary>True when a CR and one more byte are buffered from the reader's position (redis's line test).</summary>
    private static bool HasLine(ref SequenceReader<byte> reader, out bool tooLong)
    {
        SequenceReader<byte> probe = reader;
        bool found = probe.TryAdvanceTo((byte)'\r', advancePastDelimiter: true) && probe.Remaining >= 1;
        tooLong = !found && reader.Remaining > MaxInlineBytes;
        return found;
    }

    /// <summary>Reads a decimal count terminated by CR and one more byte (the LF, skipped unchecked like redis does).</summary>
    private static LineStatus ReadCountLine(ref SequenceReader<byte> reader, out long value)
    {
        value = 0;
        SequenceReader<byte> probe = reader;
        if (!probe.TryReadTo(out ReadOnlySequence<byte> digits, (byte)'\r', advancePastDelimiter: true) || probe.Remaining < 1)
        {
            return reader.Remaining > MaxInlineBytes ? LineStatus.TooLong : LineStatus.Incomplete;
        }

        if (digits.Length > MaxInlineBytes)
        {
            return LineStatus.TooLong;
        }

        probe.Advance(1);
        reader = probe;
        if (digits.Length is 0 or > 20)
        {
            return LineStatus.NotANumber;
        }

        Span<byte> text = stackalloc byte[20];
        digits.CopyTo(text);
        return TryParseInt64(text[..(int)digits.Length], out value) ? LineStatus.Ok : LineStatus.NotANumber;
    }

    /// <summary>Redis's <c>string2ll</c>: optional '-', digits, no '+', no leading zeros, no spaces, no overflow.</summary>
    internal static bool TryParseInt64(ReadOnlySpan<byte> text, out long value)
    {
        value = 0;
        if (text.IsEmpty || text.Length > 20)
        {
            return false;
        }

        if (text.Length == 1 && text[0] == (byte)'0')
        {
            return true;
        }

        int start = text[0] == (byte)'-' ? 1 : 0;
        if (start == text.Length || text[start] is < (byte)'1' or > (byte)'9')
        {
            return false;
        }

        return Utf8Parser.TryParse(text, out value, out int consumed) && consumed == text.Length;
    }
}
