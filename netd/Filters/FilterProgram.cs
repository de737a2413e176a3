namespace Multikernel.Netd.Filters;

/// <summary>
/// A packet filter as a program: a conjunction of <see cref="FilterAtom"/>s, matched when every
/// atom is true. Immutable. It may come from <see cref="FilterSyntax"/> (people), from
/// <see cref="FilterBinary"/> (programs) or be built from atoms directly; none of these make it
/// safe — <see cref="FilterVerifier"/> does, and <see cref="PacketClassifier"/> runs it on every
/// install.
/// </summary>
public sealed class FilterProgram
{
    private readonly FilterAtom[] _atoms;

    private FilterProgram(FilterAtom[] atoms, string? source)
    {
        _atoms = atoms;
        Source = source;
    }

    /// <summary>The atoms, in the order given.</summary>
    public ReadOnlySpan<FilterAtom> Atoms => _atoms;

    /// <summary>The text the program was parsed from, or null for a binary or hand-built program.</summary>
    public string? Source { get; }

    public static FilterProgram FromAtoms(IEnumerable<FilterAtom> atoms, string? source = null)
    {
        ArgumentNullException.ThrowIfNull(atoms);
        return new FilterProgram([.. atoms], source);
    }

    internal static FilterProgram Own(FilterAtom[] atoms, string? source) => new(atoms, source);

    /// <summary>The program in the filter syntax when it came from text, else as raw atoms.</summary>
    public override string ToString() => Source ?? string.Join(" && ", _atoms);

    /// <summary>Evaluates the conjunction atom by atom (the definition of a match; the classifier must agree with it).</summary>
    public bool Matches(ReadOnlySpan<byte> frame)
    {
        foreach (FilterAtom atom in _atoms)
        {
            if (!atom.Matches(frame))
            {
                return false;
            }
        }

        return true;
    }
}
