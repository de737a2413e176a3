namespace Multikernel.Netd.Filters;

/// <summary>
/// Reasoning about atoms as constraints on bits: contradiction (used by the verifier and by
/// overlap detection) and the canonical form the trie is built from.
/// </summary>
internal static class FilterAlgebra
{
    /// <summary>
    /// True if no frame can satisfy both atoms: they are on the same base (both constant, or both
    /// with the same shift, so for every frame they address bytes the same distance apart) and
    /// some byte both read has a bit both masks test with different values. Atoms on different
    /// bases never contradict here (conservative: the shift could make them alias or not).
    /// </summary>
    public static bool Contradict(FilterAtom a, FilterAtom b, out int atOffset)
    {
        atOffset = -1;
        if (a.Shift != b.Shift)
        {
            return false;
        }

        int start = Math.Max(a.Offset, b.Offset);
        int end = Math.Min(a.Offset + a.Width, b.Offset + b.Width);
        for (int offset = start; offset < end; offset++)
        {
            int ma = MaskByte(a, offset);
            int mb = MaskByte(b, offset);
            if ((ma & mb & (ValueByte(a, offset) ^ ValueByte(b, offset))) != 0)
            {
                atOffset = offset;
                return true;
            }
        }

        return false;
    }

    /// <summary>True if some atom of one conjunction contradicts some atom of the other (so no frame matches both).</summary>
    public static bool Disjoint(ReadOnlySpan<FilterAtom> a, ReadOnlySpan<FilterAtom> b)
    {
        foreach (FilterAtom x in a)
        {
            foreach (FilterAtom y in b)
            {
                if (Contradict(x, y, out _))
                {
                    return true;
                }
            }
        }

        return false;
    }

    /// <summary>
    /// The canonical form of a verified conjunction: atoms on the same field (offset, width,
    /// shift) merged into one (masks and values or-ed; the verifier has ruled out contradictions),
    /// sorted constant-offset first, then by shift, offset and width — header order, so filters
    /// that test the same headers share trie prefixes. Same matches as the input.
    /// </summary>
    public static FilterAtom[] Canonical(ReadOnlySpan<FilterAtom> atoms)
    {
        var merged = new List<FilterAtom>(atoms.Length);
        foreach (FilterAtom atom in atoms)
        {
            int i = merged.FindIndex(m => m.SameField(atom));
            if (i < 0)
            {
                merged.Add(atom);
            }
            else
            {
                FilterAtom m = merged[i];
                merged[i] = m with { Mask = m.Mask | atom.Mask, Value = m.Value | atom.Value };
            }
        }

        merged.Sort(Compare);
        return [.. merged];
    }

    /// <summary>Orders fields (not values): the order atoms are tested in along a trie path.</summary>
    public static int Compare(FilterAtom a, FilterAtom b)
    {
        int c = (a.Shift is null ? 0 : 1).CompareTo(b.Shift is null ? 0 : 1);
        if (c == 0 && a.Shift is { } sa && b.Shift is { } sb)
        {
            c = sa.ShiftOffset.CompareTo(sb.ShiftOffset);
            c = c != 0 ? c : sa.ShiftMask.CompareTo(sb.ShiftMask);
            c = c != 0 ? c : sa.ShiftLeft.CompareTo(sb.ShiftLeft);
        }

        c = c != 0 ? c : a.Offset.CompareTo(b.Offset);
        c = c != 0 ? c : a.Width.CompareTo(b.Width);
        return c != 0 ? c : a.Mask.CompareTo(b.Mask);
    }

    private static int MaskByte(FilterAtom atom, int offset) => (int)((atom.Mask >> (8 * (atom.Offset + atom.Width - 1 - offset))) & 0xFF);

    private static int ValueByte(FilterAtom atom, int offset) => (int)((atom.Value >> (8 * (atom.Offset + atom.Width - 1 - offset))) & 0xFF);
}
