using System.Globalization;

namespace Multikernel.Netd.Filters;

/// <summary>
/// Decides whether a filter program is safe and meaningful to install. Every rule has its own
/// <see cref="FilterRejection"/> and a message naming the atom (1-based, in the order given):
/// <list type="number">
/// <item>at least one atom (an empty conjunction claims all traffic) and at most
/// <see cref="ClassifierOptions.MaxAtomsPerFilter"/>;</item>
/// <item>widths 1, 2 or 4; a non-zero mask that fits the width; a value with no bits outside the mask;</item>
/// <item>a shift has a non-zero mask and a count of at most <see cref="MaxShiftLeft"/>;</item>
/// <item>statically, no byte the atom can read — its length byte, and its field at the largest
/// shift — lies at or past <see cref="ClassifierOptions.MaxFrameLength"/>;</item>
/// <item>no two atoms require different values of the same bit (exact for atoms on the same
/// base, i.e. both constant or both with the same shift).</item>
/// </list>
/// A verified program still reads nothing out of range at run time: a frame shorter than a field
/// makes the atom false (see <see cref="FilterAtom.Matches"/>).
/// </summary>
public static class FilterVerifier
{
    /// <summary>The largest shift count: IPv4's IHL needs 2; 7 leaves room without letting a byte address 32 KiB.</summary>
    public const int MaxShiftLeft = 7;

    public static FilterProblem Verify(FilterProgram program, ClassifierOptions options)
    {
        ArgumentNullException.ThrowIfNull(program);
        ArgumentNullException.ThrowIfNull(options);
        return Verify(program.Atoms, options.MaxAtomsPerFilter, options.MaxFrameLength);
    }

    internal static FilterProblem Verify(ReadOnlySpan<FilterAtom> atoms, int maxAtoms, int maxFrameLength)
    {
        if (atoms.Length == 0)
        {
            return new(FilterRejection.Empty, "the filter has no atoms, so it would claim every packet");
        }

        if (atoms.Length > maxAtoms)
        {
            return new(FilterRejection.TooManyAtoms, $"the filter has {atoms.Length} atoms; the limit is {maxAtoms}");
        }

        for (int i = 0; i < atoms.Length; i++)
        {
            if (VerifyAtom(atoms[i], i + 1, maxFrameLength) is { IsNone: false } problem)
            {
                return problem;
            }
        }

        for (int i = 0; i < atoms.Length; i++)
        {
            for (int j = i + 1; j < atoms.Length; j++)
            {
                if (FilterAlgebra.Contradict(atoms[i], atoms[j], out int at))
                {
                    return new(FilterRejection.Contradictory, Invariant($"atoms {i + 1} ({atoms[i]}) and {j + 1} ({atoms[j]}) require different values of byte {Where(atoms[i], at)}: the filter can never match"));
                }
            }
        }

        return default;
    }

    private static FilterProblem VerifyAtom(FilterAtom atom, int n, int maxFrameLength)
    {
        if (atom.Width is not (1 or 2 or 4))
        {
            return new(FilterRejection.BadWidth, Invariant($"atom {n}: width {atom.Width} is not 1, 2 or 4 bytes"));
        }

        if (atom.Mask == 0)
        {
            return new(FilterRejection.BadMask, Invariant($"atom {n}: mask 0 tests nothing"));
        }

        if (atom.Width < 4 && atom.Mask >> (8 * atom.Width) != 0)
        {
            return new(FilterRejection.BadMask, Invariant($"atom {n}: mask 0x{atom.Mask:X} is wider than the {atom.Width}-byte field"));
        }

        if ((atom.Value & ~atom.Mask) != 0)
        {
            return new(FilterRejection.ValueOutsideMask, Invariant($"atom {n}: value 0x{atom.Value:X} has bits outside mask 0x{atom.Mask:X}, so it can never be true"));
        }

        int maxAdd = 0;
        if (atom.Shift is { } s)
        {
            if (s.ShiftMask == 0)
            {
                return new(FilterRejection.BadShift, Invariant($"atom {n}: shift mask 0 adds nothing (use a constant offset)"));
            }

            if (s.ShiftLeft > MaxShiftLeft)
            {
                return new(FilterRejection.BadShift, Invariant($"atom {n}: shift count {s.ShiftLeft} is above {MaxShiftLeft}"));
            }

            if (s.ShiftOffset >= maxFrameLength)
            {
                return new(FilterRejection.ReadPastFrame, Invariant($"atom {n}: the length byte at {s.ShiftOffset} is past the largest frame ({maxFrameLength} bytes)"));
            }

            maxAdd = s.MaxAdd;
        }

        long end = (long)atom.Offset + maxAdd + atom.Width;
        if (end > maxFrameLength)
        {
            return new(FilterRejection.ReadPastFrame, atom.Shift is null
                ? Invariant($"atom {n}: reads bytes {atom.Offset}..{end - 1}, past the largest frame ({maxFrameLength} bytes)")
                : Invariant($"atom {n}: with the largest shift ({maxAdd}) reads bytes up to {end - 1}, past the largest frame ({maxFrameLength} bytes)"));
        }

        return default;
    }

    private static string Where(FilterAtom atom, int at) =>
        atom.Shift is { } s ? Invariant($"{at} + {s}") : at.ToString(CultureInfo.InvariantCulture);

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
