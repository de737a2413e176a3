namespace Multikernel.Net.Wire;

/// <summary>
/// A TCP sequence number: arithmetic modulo 2^32 (RFC 9293 §3.4). Every operation is unchecked
/// and total — comparisons are the sign of the wrapped 32-bit difference — so nothing a peer
/// sends can overflow into an exception (smoltcp's recurring bug class). Comparisons are only
/// meaningful for numbers less than 2^31 apart, which the window bounds guarantee for numbers
/// the stack itself compares.
/// </summary>
public readonly record struct SeqNumber(uint Value) : IComparable<SeqNumber>
{
    public static SeqNumber operator +(SeqNumber a, int n) => new(unchecked(a.Value + (uint)n));

    public static SeqNumber operator -(SeqNumber a, int n) => new(unchecked(a.Value - (uint)n));

    /// <summary>The signed distance from <paramref name="b"/> to <paramref name="a"/> (wraps, never throws).</summary>
    public static int operator -(SeqNumber a, SeqNumber b) => unchecked((int)(a.Value - b.Value));

    public static bool operator <(SeqNumber a, SeqNumber b) => (a - b) < 0;

    public static bool operator >(SeqNumber a, SeqNumber b) => (a - b) > 0;

    public static bool operator <=(SeqNumber a, SeqNumber b) => (a - b) <= 0;

    public static bool operator >=(SeqNumber a, SeqNumber b) => (a - b) >= 0;

    /// <summary>The later of two numbers.</summary>
    public static SeqNumber Max(SeqNumber a, SeqNumber b) => a > b ? a : b;

    /// <summary>The earlier of two numbers.</summary>
    public static SeqNumber Min(SeqNumber a, SeqNumber b) => a < b ? a : b;

    /// <summary>True when <c>start &lt;= this &lt; start + length</c> (modulo 2^32); false for a zero length.</summary>
    public bool InWindow(SeqNumber start, uint length) => unchecked(Value - start.Value) < length;

    /// <inheritdoc/>
    public int CompareTo(SeqNumber other) => (this - other) switch { < 0 => -1, > 0 => 1, _ => 0 };

    /// <inheritdoc/>
    public override string ToString() => Value.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
