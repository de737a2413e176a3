using System.Buffers;
using System.Buffers.Text;
using System.Text;

namespace Multikernel.Apps.Kv.Resp;

/// <summary>RESP2 reply serialization straight into the connection's output buffer (no intermediate strings).</summary>
public static class RespWriter
{
    private static ReadOnlySpan<byte> Crlf => "\r\n"u8;

    /// <summary>Writes <c>+text\r\n</c>; <paramref name="text"/> must not contain CR or LF.</summary>
    public static void WriteSimpleString(IBufferWriter<byte> output, ReadOnlySpan<byte> text)
    {
        ArgumentNullException.ThrowIfNull(output);
        Span<byte> span = output.GetSpan(text.Length + 3);
        span[0] = (byte)'+';
        text.CopyTo(span[1..]);
        Crlf.CopyTo(span[(1 + text.Length)..]);
        output.Advance(text.Length + 3);
    }

    /// <summary>Writes pre-encoded bytes as they are (a whole reply such as <c>+OK\r\n</c>).</summary>
    public static void WriteRaw(IBufferWriter<byte> output, ReadOnlySpan<byte> reply)
    {
        ArgumentNullException.ThrowIfNull(output);
        output.Write(reply);
    }

    /// <summary>
    /// Writes <c>-message\r\n</c>. CR and LF inside the message become spaces, as redis's
    /// <c>addReplyError</c> does, so a client-supplied name can never break the framing.
    /// </summary>
    public static void WriteError(IBufferWriter<byte> output, string message)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(message);
        int max = Encoding.UTF8.GetMaxByteCount(message.Length);
        Span<byte> span = output.GetSpan(max + 3);
        span[0] = (byte)'-';
        int n = Encoding.UTF8.GetBytes(message, span[1..]);
        Span<byte> body = span.Slice(1, n);
        body.Replace((byte)'\r', (byte)' ');
        body.Replace((byte)'\n', (byte)' ');
        Crlf.CopyTo(span[(1 + n)..]);
        output.Advance(n + 3);
    }

    /// <summary>Writes <c>-message\r\n</c> from raw bytes (CR and LF become spaces).</summary>
    public static void WriteError(IBufferWriter<byte> output, ReadOnlySpan<byte> message)
    {
        ArgumentNullException.ThrowIfNull(output);
        Span<byte> span = output.GetSpan(message.Length + 3);
        span[0] = (byte)'-';
        Span<byte> body = span.Slice(1, message.Length);
        message.CopyTo(body);
        body.Replace((byte)'\r', (byte)' ');
        body.Replace((byte)'\n', (byte)' ');
        Crlf.CopyTo(span[(1 + message.Length)..]);
        output.Advance(message.Length + 3);
    }

    /// <summary>Writes <c>:value\r\n</c>.</summary>
    public static void WriteInteger(IBufferWriter<byte> output, long value) => WritePrefixed(output, (byte)':', value);

    /// <summary>Writes <c>*count\r\n</c>.</summary>
    public static void WriteArrayHeader(IBufferWriter<byte> output, int count) => WritePrefixed(output, (byte)'*', count);

    /// <summary>Writes <c>$len\r\npayload\r\n</c>.</summary>
    public static void WriteBulk(IBufferWriter<byte> output, ReadOnlySpan<byte> payload)
    {
        WritePrefixed(output, (byte)'$', payload.Length);
        output.Write(payload);
        output.Write(Crlf);
    }

    /// <summary>Writes a bulk string of the decimal <paramref name="value"/>.</summary>
    public static void WriteBulk(IBufferWriter<byte> output, long value)
    {
        Span<byte> digits = stackalloc byte[20];
        Utf8Formatter.TryFormat(value, digits, out int n);
        WriteBulk(output, digits[..n]);
    }

    /// <summary>Writes a bulk string of ASCII/UTF-8 text.</summary>
    public static void WriteBulk(IBufferWriter<byte> output, string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        WriteBulk(output, Encoding.UTF8.GetBytes(text));
    }

    /// <summary>Writes the null bulk string <c>$-1\r\n</c>.</summary>
    public static void WriteNullBulk(IBufferWriter<byte> output) => WriteRaw(output, "$-1\r\n"u8);

    /// <summary>Writes the null array <c>*-1\r\n</c>.</summary>
    public static void WriteNullArray(IBufferWriter<byte> output) => WriteRaw(output, "*-1\r\n"u8);

    private static void WritePrefixed(IBufferWriter<byte> output, byte prefix, long value)
    {
        ArgumentNullException.ThrowIfNull(output);
        Span<byte> span = output.GetSpan(24);
        span[0] = prefix;
        Utf8Formatter.TryFormat(value, span[1..], out int n);
        span[1 + n] = (byte)'\r';
        span[2 + n] = (byte)'\n';
        output.Advance(n + 3);
    }
}
