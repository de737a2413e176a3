namespace Multikernel.Apps.Kv.Store;

/// <summary>
/// Redis's glob (<c>stringmatchlen</c>): <c>*</c>, <c>?</c>, <c>[abc]</c>, <c>[^a]</c>, <c>[a-z]</c> and
/// <c>\x</c> escapes. Iterative with one backtrack point for the last <c>*</c>, so a hostile
/// pattern costs O(pattern × text) at worst, never exponential time.
/// </summary>
public static class Glob
{
    /// <summary>True when <paramref name="text"/> matches <paramref name="pattern"/>.</summary>
    public static bool Match(ReadOnlySpan<byte> pattern, ReadOnlySpan<byte> text, bool ignoreCase)
    {
        int p = 0, t = 0, starP = -1, starT = -1;
        while (t < text.Length)
        {
            if (p < pattern.Length && pattern[p] == (byte)'*')
            {
                while (p < pattern.Length && pattern[p] == (byte)'*')
                {
                    p++;
                }

                if (p == pattern.Length)
                {
                    return true;
                }

                starP = p;
                starT = t;
                continue;
            }

            if (p < pattern.Length && MatchOne(pattern, ref p, text[t], ignoreCase))
            {
                t++;
                continue;
            }

            if (starP < 0)
            {
                return false;
            }

            p = starP;
            t = ++starT;
        }

        while (p < pattern.Length && pattern[p] == (byte)'*')
        {
            p++;
        }

        return p == pattern.Length;
    }

    /// <summary>Matches one pattern element at <paramref name="p"/> against <paramref name="c"/>; advances past it on success.</summary>
    private static bool MatchOne(ReadOnlySpan<byte> pattern, ref int p, byte c, bool ignoreCase)
    {
        byte pc = pattern[p];
        if (pc == (byte)'?')
        {
            p++;
            return true;
        }

        if (pc == (byte)'[')
        {
            int i = p + 1;
            bool negate = i < pattern.Length && pattern[i] == (byte)'^';
            if (negate)
            {
                i++;
            }

            bool matched = false;
            while (i < pattern.Length && pattern[i] != (byte)']')
            {
                if (pattern[i] == (byte)'\\' && i + 1 < pattern.Length)
                {
                    i++;
                    matched |= Same(pattern[i], c, ignoreCase);
                    i++;
                }
                else if (i + 2 < pattern.Length && pattern[i + 1] == (byte)'-' && pattern[i + 2] != (byte)']')
                {
                    byte lo = pattern[i], hi = pattern[i + 2];
                    if (lo > hi)
                    {
                        (lo, hi) = (hi, lo);
                    }

                    byte x = ignoreCase ? Lower(c) : c;
                    matched |= (x >= (ignoreCase ? Lower(lo) : lo) && x <= (ignoreCase ? Lower(hi) : hi)) || (c >= lo && c <= hi);
                    i += 3;
                }
                else
                {
                    matched |= Same(pattern[i], c, ignoreCase);
                    i++;
                }
            }

            // An unterminated class ends at the end of the pattern, as in redis.
            p = i < pattern.Length ? i + 1 : i;
            return matched != negate;
        }

        if (pc == (byte)'\\' && p + 1 < pattern.Length)
        {
            if (!Same(pattern[p + 1], c, ignoreCase))
            {
                return false;
            }

            p += 2;
            return true;
        }

        if (!Same(pc, c, ignoreCase))
        {
            return false;
        }

        p++;
        return true;
    }

    private static bool Same(byte a, byte b, bool ignoreCase) => a == b || (ignoreCase && Lower(a) == Lower(b));

    private static byte Lower(byte b) => b is >= (byte)'A' and <= (byte)'Z' ? (byte)(b | 0x20) : b;
}
