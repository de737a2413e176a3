using System.Globalization;
using System.Runtime.CompilerServices;

namespace Multikernel.Netd.Filters;

/// <summary>The outcome of classifying one frame: the matching filter and its owner, or none.</summary>
public readonly record struct ClassifyResult(int FilterId, int Owner)
{
    /// <summary>True if some filter matched (filter ids start at 1).</summary>
    public bool Matched => FilterId != PacketClassifier.NoMatch;
}

/// <summary>The outcome of an install: the new filter's id, or why it was refused (nothing changed then).</summary>
public readonly record struct FilterInstallResult(int FilterId, FilterProblem Problem)
{
    public bool Succeeded => Problem.IsNone;

    public override string ToString() => Succeeded ? string.Create(CultureInfo.InvariantCulture, $"installed filter {FilterId}") : Problem.ToString();
}

/// <summary>An installed filter and its counters, as listed for people (netd's CLI).</summary>
public sealed record FilterInfo(int Id, int Owner, string Filter, int Atoms, long Matches, long Bytes);

/// <summary>One installed filter: its program, canonical atoms and match counters.</summary>
internal sealed class InstalledFilter(int id, int owner, FilterProgram program, FilterAtom[] canonical)
{
    public int Id { get; } = id;

    public int Owner { get; } = owner;

    public FilterProgram Program { get; } = program;

    public FilterAtom[] Canonical { get; } = canonical;

    // Plain fields, bumped by the one core that classifies (see PacketClassifier's threading note).
    public long Matches;
    public long Bytes;
}

/// <summary>
/// netd's demultiplexer: the installed packet filters of every owner, merged into one
/// <see cref="ClassifierTrie"/> so that the cost per packet grows far slower than the number of
/// filters. Every install is verified (<see cref="FilterVerifier"/>), checked for overlap with
/// other owners' filters, and bounded (<see cref="ClassifierOptions"/>); a refused install
/// changes nothing.
/// <para>
/// Overlap rule: two filters overlap unless some atom of one contradicts some atom of the other
/// (both on the same base and requiring different values of one bit, see
/// <see cref="FilterAlgebra.Contradict"/>). A filter that overlaps a filter of another owner is
/// refused; filters of the same owner may overlap, and a frame matching several goes to the
/// lowest id (the earliest installed). The rule is conservative: atoms on different bases (a
/// constant offset against one after the IPv4 header, or two different shifts) never count as
/// contradicting, so such pairs are refused as overlapping even when no frame could match both.
/// </para>
/// <para>
/// Threading: not thread-safe. netd's core owns the classifier; installs, removals, listing and
/// <see cref="Classify"/> all run on that core (other domains reach it by message), which is also
/// why the counters are plain increments.
/// </para>
/// </summary>
public sealed class PacketClassifier
{
    /// <summary>The filter id of "no filter matched".</summary>
    public const int NoMatch = 0;

    private readonly ClassifierOptions _options;
    private readonly List<InstalledFilter> _filters = []; // in id order: the lowest id first
    private ClassifierTrie _trie = ClassifierTrie.CreateEmpty();
    private int _nextId = 1;
    private long _unmatched;

    public PacketClassifier(ClassifierOptions? options = null)
    {
        _options = (options ?? new ClassifierOptions()).Snapshot();
    }

    /// <summary>Installed filters.</summary>
    public int Count => _filters.Count;

    /// <summary>Nodes of the current merged trie (root included).</summary>
    public int TrieNodes => _trie.NodeCount;

    /// <summary>Frames no filter matched.</summary>
    public long Unmatched => _unmatched;

    /// <summary>Parses <paramref name="text"/> (see <see cref="FilterSyntax"/>) and installs it; a syntax error is a <see cref="FilterRejection.Syntax"/> refusal.</summary>
    public FilterInstallResult Install(string text, int owner)
    {
        ArgumentNullException.ThrowIfNull(text);
        return FilterSyntax.TryParse(text, out FilterProgram? program, out FilterSyntaxError error)
            ? Install(program, owner)
            : new FilterInstallResult(NoMatch, new FilterProblem(FilterRejection.Syntax, error.ToString()));
    }

    /// <summary>Decodes a binary program (see <see cref="FilterBinary"/>) and installs it.</summary>
    public FilterInstallResult Install(ReadOnlySpan<byte> binary, int owner) =>
        FilterBinary.TryDecode(binary, out FilterProgram? program, out FilterProblem problem)
            ? Install(program!, owner)
            : new FilterInstallResult(NoMatch, problem);

    /// <summary>Verifies <paramref name="program"/>, checks it for overlap with other owners' filters and the limits, and merges it into the classifier.</summary>
    public FilterInstallResult Install(FilterProgram program, int owner)
    {
        ArgumentNullException.ThrowIfNull(program);
        if (_filters.Count >= _options.MaxFilters)
        {
            return Refuse(FilterRejection.TooManyFilters, $"the classifier holds {_filters.Count} filters; the limit is {_options.MaxFilters}");
        }

        if (_nextId == int.MaxValue)
        {
            return Refuse(FilterRejection.TooManyFilters, "filter ids are exhausted");
        }

        FilterProblem verdict = FilterVerifier.Verify(program, _options);
        if (!verdict.IsNone)
        {
            return new FilterInstallResult(NoMatch, verdict);
        }

        FilterAtom[] canonical = FilterAlgebra.Canonical(program.Atoms);
        foreach (InstalledFilter other in _filters)
        {
            if (other.Owner != owner && !FilterAlgebra.Disjoint(canonical, other.Canonical))
            {
                return Refuse(FilterRejection.Overlap, string.Create(CultureInfo.InvariantCulture,
                    $"'{program}' can match traffic that filter {other.Id} ('{other.Program}') of owner {other.Owner} claims: no atom of one contradicts an atom of the other"));
            }
        }

        var filter = new InstalledFilter(_nextId, owner, program, canonical);
        _filters.Add(filter);
        ClassifierTrie? trie = ClassifierTrie.Build(_filters, _options.MaxTrieNodes);
        if (trie is null)
        {
            _filters.RemoveAt(_filters.Count - 1);
            return Refuse(FilterRejection.TooManyTrieNodes, $"merging '{program}' would need more than {_options.MaxTrieNodes} trie nodes");
        }

        _trie = trie;
        _nextId++;
        return new FilterInstallResult(filter.Id, default);
    }

    /// <summary>Removes a filter (its PacketFilter capability was revoked). False if no such filter is installed.</summary>
    public bool Remove(int filterId)
    {
        int i = _filters.FindIndex(f => f.Id == filterId);
        if (i < 0)
        {
            return false;
        }

        _filters.RemoveAt(i);
        Rebuild();
        return true;
    }

    /// <summary>Removes every filter of <paramref name="owner"/> (the owning domain ended). Returns how many.</summary>
    public int RemoveOwner(int owner)
    {
        int removed = _filters.RemoveAll(f => f.Owner == owner);
        if (removed > 0)
        {
            Rebuild();
        }

        return removed;
    }

    /// <summary>
    /// The filter that claims <paramref name="frame"/> (the lowest id among those matching), with
    /// its owner, or <see cref="NoMatch"/>. Counts the match (packets and bytes) on that filter.
    /// Allocation-free; reads nothing outside <paramref name="frame"/>.
    /// </summary>
    public ClassifyResult Classify(ReadOnlySpan<byte> frame)
    {
        ClassifierTrie trie = _trie;
        int slot = trie.Classify(frame);
        if (slot < 0)
        {
            _unmatched++;
            return default;
        }

        InstalledFilter filter = trie.Filters[slot];
        filter.Matches++;
        filter.Bytes += frame.Length;
        return new ClassifyResult(filter.Id, filter.Owner);
    }

    /// <summary>
    /// The baseline the trie is measured against: every filter evaluated in turn, in id order,
    /// until one matches. Same answer as <see cref="Classify"/>; counts nothing.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal int ClassifyEachInTurn(ReadOnlySpan<byte> frame)
    {
        foreach (InstalledFilter filter in _filters)
        {
            if (filter.Program.Matches(frame))
            {
                return filter.Id;
            }
        }

        return NoMatch;
    }

    /// <summary>The installed filters by trie slot, for counters read off netd's core (the array is replaced, never changed, when the set changes).</summary>
    internal InstalledFilter[] Installed => Volatile.Read(ref _trie).Filters;

    /// <summary>The program of an installed filter, or null.</summary>
    public FilterProgram? GetProgram(int filterId) => _filters.Find(f => f.Id == filterId)?.Program;

    /// <summary>The installed filters in id order, with their counters.</summary>
    public IReadOnlyList<FilterInfo> List() =>
        [.. _filters.Select(f => new FilterInfo(f.Id, f.Owner, f.Program.ToString(), f.Program.Atoms.Length, f.Matches, f.Bytes))];

    private void Rebuild()
    {
        // Removing filters never adds nodes, so a build within the limit before stays within it.
        _trie = ClassifierTrie.Build(_filters, _options.MaxTrieNodes) ?? throw new InvalidOperationException("A smaller filter set cannot need more trie nodes.");
    }

    private static FilterInstallResult Refuse(FilterRejection reason, string message) => new(NoMatch, new FilterProblem(reason, message));
}
