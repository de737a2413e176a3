using System.Buffers;
using System.Text;

namespace Multikernel.Apps.Http;

/// <summary>The parsed head of one request: only what the server acts on.</summary>
public sealed class HttpRequestHead
{
    /// <summary>The method token as sent (case-sensitive, as RFC 9110 defines it).</summary>
    public string Method { get; internal set; } = "";

    /// <summary>The request target as sent.</summary>
    public string Target { get; internal set; } = "";

    /// <summary>10 for HTTP/1.0, 11 for HTTP/1.1.</summary>
    public int Version { get; internal set; }

    /// <summary>The Host header, if present.</summary>
    public string? Host { get; internal set; }

    /// <summary>The Content-Length, or −1 when absent.</summary>
    public long ContentLength { get; internal set; } = -1;

    /// <summary>A Transfer-Encoding header was present (no transfer coding is supported: 501).</summary>
    public bool TransferEncoding { get; internal set; }

    /// <summary>The Range header, if present.</summary>
    public string? Range { get; internal set; }

    /// <summary>The Connection header carried the <c>close</c> option.</summary>
    public bool ConnectionClose { get; internal set; }

    /// <summary>The Connection header carried the <c>keep-alive</c> option.</summary>
    public bool ConnectionKeepAlive { get; internal set; }

    /// <summary>Number of header fields.</summary>
    public int HeaderCount { get; internal set; }

    /// <summary>Whether the connection stays open after the response (RFC 9112 §9.3).</summary>
    public bool KeepAlive => Version == 11 ? !ConnectionClose : ConnectionKeepAlive && !ConnectionClose;

    internal void Reset()
    {
        Method = "";
        Target = "";
        Version = 0;
        Host = null;
        ContentLength = -1;
        Range = null;
        TransferEncoding = false;
        ConnectionClose = false;
        ConnectionKeepAlive = false;
        HeaderCount = 0;
    }
}

/// <summary>What <see cref="HttpRequestParser.TryParse"/> found.</summary>
public enum HttpParseStatus
{
    /// <summary>The head is not complete yet; nothing was consumed.</summary>
    Incomplete,

    /// <summary>A head was parsed; <c>consumed</c> bytes belong to it.</summary>
    Complete,

    /// <summary>The request is refused with the status code given; the connection must close after the reply.</summary>
    Error,
}

/// <summary>
/// HTTP/1.x request-head parser (RFC 9112): strict about framing (token methods, single spaces,
/// no whitespace before a colon, no obsolete line folding, no bare CR), lenient where the RFC
/// allows (bare LF line ends, empty lines before the request line). It looks at no more than
/// <see cref="HttpOptions.MaxHeaderBytes"/> of input, so a head that never ends costs a bounded
/// buffer and ends in 414 or 431, never in growth.
/// </summary>
public sealed class HttpRequestParser
{
    private readonly int _maxRequestLine;
    private readonly int _maxHeaderBytes;
    private readonly int _maxHeaderCount;
    private readonly byte[] _scratch;

    /// <summary>Creates a parser with <paramref name="options"/>' limits (it owns a scratch buffer of <see cref="HttpOptions.MaxHeaderBytes"/>).</summary>
    public HttpRequestParser(HttpOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _maxRequestLine = options.MaxRequestLineBytes;
        _maxHeaderBytes = options.MaxHeaderBytes;
        _maxHeaderCount = options.MaxHeaderCount;
        _scratch = new byte[_maxHeaderBytes];
    }

    /// <summary>
    /// Parses a request head from the front of <paramref name="input"/> into <paramref name="head"/>.
    /// On <see cref="HttpParseStatus.Error"/>, <paramref name="status"/> is the status to answer.
    /// </summary>
    public HttpParseStatus TryParse(in ReadOnlySequence<byte> input, HttpRequestHead head, out int consumed, out int status)
    {
        ArgumentNullException.ThrowIfNull(head);
        consumed = 0;
        status = 0;
        head.Reset();
        ReadOnlySpan<byte> span;
        if (input.IsSingleSegment)
        {
            span = input.FirstSpan;
            if (span.Length > _maxHeaderBytes)
            {
                span = span[.._maxHeaderBytes];
            }
        }
        else
        {
            int n = (int)Math.Min(input.Length, _maxHeaderBytes);
            input.Slice(0, n).CopyTo(_scratch);
            span = _scratch.AsSpan(0, n);
        }

        bool truncated = input.Length > span.Length;
        HttpParseStatus result = Parse(span, head, out consumed, out status);
        if (result == HttpParseStatus.Incomplete && truncated)
        {
            // The limit is reached and the head has not ended.
            status = 431;
            return HttpParseStatus.Error;
        }

        return result;
    }

    private HttpParseStatus Parse(ReadOnlySpan<byte> span, HttpRequestHead head, out int consumed, out int status)
    {
        consumed = 0;
        status = 0;
        int pos = 0;

        // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request line.
        while (pos < span.Length && (span[pos] == (byte)'\n' || (span[pos] == (byte)'\r' && pos + 1 < span.Length && span[pos + 1] == (byte)'\n')))
        {
            pos += span[pos] == (byte)'\r' ? 2 : 1;
        }

        int lineEnd = span[pos..].IndexOf((byte)'\n');
        if (lineEnd < 0)
        {
            if (span.Length - pos > _maxRequestLine)
            {
                status = 414;
                return HttpParseStatus.Error;
            }

            if (span.Length == _maxHeaderBytes)
            {
                status = 431;
                return HttpParseStatus.Error;
            }

            return HttpParseStatus.Incomplete;
        }

        if (lineEnd > _maxRequestLine)
        {
            status = 414;
            return HttpParseStatus.Error;
        }

        if (!ParseRequestLine(TrimCr(span.Slice(pos, lineEnd), out bool bareCr), head, out status) || bareCr)
        {
            status = status == 0 ? 400 : status;
            return HttpParseStatus.Error;
        }

        pos += lineEnd + 1;
        int hostCount = 0;
        while (true)
        {
            int end = span[pos..].IndexOf((byte)'\n');
            if (end < 0)
            {
                if (span.Length >= _maxHeaderBytes)
                {
                    status = 431;
                    return HttpParseStatus.Error;
                }

                return HttpParseStatus.Incomplete;
            }

            ReadOnlySpan<byte> line = TrimCr(span.Slice(pos, end), out bool cr);
            pos += end + 1;
            if (cr)
            {
                status = 400;
                return HttpParseStatus.Error;
            }

            if (line.IsEmpty)
            {
                break;
            }

            if (++head.HeaderCount > _maxHeaderCount)
            {
                status = 431;
                return HttpParseStatus.Error;
            }

            if (!ParseHeader(line, head, ref hostCount))
            {
                status = 400;
                return HttpParseStatus.Error;
            }
        }

        // RFC 9112 §3.2: HTTP/1.1 requires exactly one Host.
        if ((head.Version == 11 && hostCount != 1) || hostCount > 1)
        {
            status = 400;
            return HttpParseStatus.Error;
        }

        consumed = pos;
        return HttpParseStatus.Complete;
    }

    /// <summary>Strips one trailing CR; reports a CR anywhere else in the line (bare CR is not a line ending).</summary>
    private static ReadOnlySpan<byte> TrimCr(ReadOnlySpan<byte> line, out bool bareCr)
    {
        if (!line.IsEmpty && line[^1] == (byte)'\r')
        {
            line = line[..^1];
        }

        bareCr = line.Contains((byte)'\r');
        return line;
    }

    private static bool ParseRequestLine(ReadOnlySpan<byte> line, HttpRequestHead head, out int status)
    {
        status = 400;
        int sp1 = line.IndexOf((byte)' ');
        if (sp1 <= 0)
        {
            return false;
        }

        ReadOnlySpan<byte> method = line[..sp1];
        ReadOnlySpan<byte> rest = line[(sp1 + 1)..];
        int sp2 = rest.IndexOf((byte)' ');
        if (sp2 <= 0)
        {
            return false;
        }

        ReadOnlySpan<byte> target = rest[..sp2];
        ReadOnlySpan<byte> version = rest[(sp2 + 1)..];
        foreach (byte b in method)
        {
            if (!IsTokenChar(b))
            {
                return false;
            }
        }

        foreach (byte b in target)
        {
            if (b is <= 0x20 or >= 0x7F)
            {
                return false;
            }
        }

        if (version.SequenceEqual("HTTP/1.1"u8))
        {
            head.Version = 11;
        }
        else if (version.SequenceEqual("HTTP/1.0"u8))
        {
            head.Version = 10;
        }
        else if (version.Length == 8 && version.StartsWith("HTTP/"u8) && char.IsAsciiDigit((char)version[5]) && version[6] == (byte)'.' && char.IsAsciiDigit((char)version[7]))
        {
            status = 505;
            return false;
        }
        else
        {
            return false;
        }

        head.Method = method.SequenceEqual("GET"u8) ? "GET" : method.SequenceEqual("HEAD"u8) ? "HEAD" : Encoding.ASCII.GetString(method);
        head.Target = Encoding.ASCII.GetString(target);
        status = 0;
        return true;
    }

    private static bool ParseHeader(ReadOnlySpan<byte> line, HttpRequestHead head, ref int hostCount)
    {
        // Obsolete line folding and whitespace before the colon are refused (RFC 9112 §5.1–5.2).
        int colon = line.IndexOf((byte)':');
        if (colon <= 0)
        {
            return false;
        }

        ReadOnlySpan<byte> name = line[..colon];
        foreach (byte b in name)
        {
            if (!IsTokenChar(b))
            {
                return false;
            }
        }

        ReadOnlySpan<byte> value = line[(colon + 1)..].Trim(" \t"u8);
        foreach (byte b in value)
        {
            if (b is < 0x20 and not (byte)'\t' or 0x7F)
            {
                return false;
            }
        }

        if (name.Length == 4 && Ascii.EqualsIgnoreCase(name, "Host"u8))
        {
            hostCount++;
            head.Host = Encoding.Latin1.GetString(value);
        }
        else if (Ascii.EqualsIgnoreCase(name, "Content-Length"u8))
        {
            if (!TryParseLength(value, out long length) || (head.ContentLength >= 0 && head.ContentLength != length))
            {
                return false;
            }

            head.ContentLength = length;
        }
        else if (Ascii.EqualsIgnoreCase(name, "Transfer-Encoding"u8))
        {
            head.TransferEncoding = true;
        }
        else if (Ascii.EqualsIgnoreCase(name, "Connection"u8))
        {
            foreach (Range part in value.Split((byte)','))
            {
                ReadOnlySpan<byte> option = value[part].Trim(" \t"u8);
                head.ConnectionClose |= Ascii.EqualsIgnoreCase(option, "close"u8);
                head.ConnectionKeepAlive |= Ascii.EqualsIgnoreCase(option, "keep-alive"u8);
            }
        }
        else if (Ascii.EqualsIgnoreCase(name, "Range"u8))
        {
            head.Range = head.Range is null ? Encoding.ASCII.GetString(value) : "";
        }

        return true;
    }

    private static bool TryParseLength(ReadOnlySpan<byte> value, out long length)
    {
        length = 0;
        if (value.IsEmpty || value.Length > 18)
        {
            return false;
        }

        foreach (byte b in value)
        {
            if (b is < (byte)'0' or > (byte)'9')
            {
                return false;
            }

            length = (length * 10) + (b - '0');
        }

        return true;
    }

    /// <summary>RFC 9110 tchar.</summary>
    private static bool IsTokenChar(byte b) =>
        b is (>= (byte)'a' and <= (byte)'z') or (>= (byte)'A' and <= (byte)'Z') or (>= (byte)'0' and <= (byte)'9')
            or (byte)'!' or (byte)'#' or (byte)'$' or (byte)'%' or (byte)'&' or (byte)'\'' or (byte)'*' or (byte)'+'
            or (byte)'-' or (byte)'.' or (byte)'^' or (byte)'_' or (byte)'`' or (byte)'|' or (byte)'~';
}
