namespace Multikernel.Apps.Http;

/// <summary>What a Range header asks of a representation.</summary>
public enum RangeResult
{
    /// <summary>No usable single range (absent, malformed, several ranges, another unit): serve the whole file with 200.</summary>
    Ignore,

    /// <summary>One satisfiable range: 206 with Content-Range.</summary>
    Satisfiable,

    /// <summary>A valid range that starts past the end (or a zero-length suffix): 416.</summary>
    Unsatisfiable,
}

/// <summary>
/// Single-range <c>bytes=</c> parsing per RFC 9110 §14: <c>a-b</c>, <c>a-</c>, <c>-n</c>. A server may
/// ignore Range, so a multi-range request is served whole rather than as multipart.
/// </summary>
public static class HttpRange
{
    /// <summary>Parses <paramref name="header"/> against a representation of <paramref name="length"/> bytes.</summary>
    public static RangeResult Parse(string? header, long length, out long start, out long count)
    {
        start = 0;
        count = length;
        if (header is null)
        {
            return RangeResult.Ignore;
        }

        ReadOnlySpan<char> value = header.AsSpan().Trim();
        if (value.Length < 7 || !value[..6].Equals("bytes=", StringComparison.OrdinalIgnoreCase))
        {
            return RangeResult.Ignore;
        }

        value = value[6..].Trim();
        if (value.Contains(','))
        {
            return RangeResult.Ignore;
        }

        int dash = value.IndexOf('-');
        if (dash < 0)
        {
            return RangeResult.Ignore;
        }

        ReadOnlySpan<char> first = value[..dash].Trim();
        ReadOnlySpan<char> last = value[(dash + 1)..].Trim();
        if (first.IsEmpty)
        {
            // A suffix: the last n bytes.
            if (!TryDigits(last, out long suffix))
            {
                return RangeResult.Ignore;
            }

            if (suffix == 0 || length == 0)
            {
                return RangeResult.Unsatisfiable;
            }

            count = Math.Min(suffix, length);
            start = length - count;
            return RangeResult.Satisfiable;
        }

        if (!TryDigits(first, out long from))
        {
            return RangeResult.Ignore;
        }

        long to = long.MaxValue;
        if (!last.IsEmpty && (!TryDigits(last, out to) || to < from))
        {
            return RangeResult.Ignore;
        }

        if (from >= length)
        {
            return RangeResult.Unsatisfiable;
        }

        to = Math.Min(to, length - 1);
        start = from;
        count = to - from + 1;
        return RangeResult.Satisfiable;
    }

    private static bool TryDigits(ReadOnlySpan<char> text, out long value)
    {
        value = 0;
        if (text.IsEmpty || text.Length > 18)
        {
            return false;
        }

        foreach (char c in text)
        {
            if (!char.IsAsciiDigit(c))
            {
                return false;
            }

            value = (value * 10) + (c - '0');
        }

        return true;
    }
}
