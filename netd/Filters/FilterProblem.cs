namespace Multikernel.Netd.Filters;

/// <summary>Why a filter was refused. Stable: tests and the CLI key on it; the message says the details.</summary>
public enum FilterRejection
{
    /// <summary>Not refused.</summary>
    None = 0,

    /// <summary>A binary program is truncated, too long, of an unknown version or has reserved bits set.</summary>
    Malformed,

    /// <summary>No atoms: the filter would claim every packet.</summary>
    Empty,

    /// <summary>More atoms than <see cref="ClassifierOptions.MaxAtomsPerFilter"/>.</summary>
    TooManyAtoms,

    /// <summary>A field width other than 1, 2 or 4 bytes.</summary>
    BadWidth,

    /// <summary>A zero mask (the atom tests nothing) or a mask wider than its field.</summary>
    BadMask,

    /// <summary>The value has bits outside the mask, so the atom could never be true.</summary>
    ValueOutsideMask,

    /// <summary>A shift with a zero mask or a shift count above <see cref="FilterVerifier.MaxShiftLeft"/>.</summary>
    BadShift,

    /// <summary>An atom can read past the largest frame (<see cref="ClassifierOptions.MaxFrameLength"/>).</summary>
    ReadPastFrame,

    /// <summary>Two atoms of the filter require different values of the same bits: it can never match.</summary>
    Contradictory,

    /// <summary>The filter can match traffic that a filter of another owner already claims.</summary>
    Overlap,

    /// <summary>The classifier holds <see cref="ClassifierOptions.MaxFilters"/> filters already.</summary>
    TooManyFilters,

    /// <summary>Merging the filter would need more than <see cref="ClassifierOptions.MaxTrieNodes"/> trie nodes.</summary>
    TooManyTrieNodes,

    /// <summary>The text form did not parse.</summary>
    Syntax,
}

/// <summary>A refusal: the reason and a precise message (which atom, which byte, which limit).</summary>
public readonly record struct FilterProblem(FilterRejection Reason, string Message)
{
    public bool IsNone => Reason == FilterRejection.None;

    public override string ToString() => Reason == FilterRejection.None ? "ok" : $"{Reason}: {Message}";
}
