namespace Multikernel.Netd.Filters;

/// <summary>
/// Limits of one <see cref="PacketClassifier"/> and of every filter it accepts. Each is a
/// designed refusal: an install that would pass one fails with the matching
/// <see cref="FilterRejection"/> and leaves the installed set as it was.
/// </summary>
public sealed class ClassifierOptions
{
    /// <summary>Installed filters, over all owners. Between 1 and 65536. Default 4096.</summary>
    public int MaxFilters { get; set; } = 4096;

    /// <summary>Atoms in one filter (after the text syntax added its implied atoms). Between 1 and 64. Default 16.</summary>
    public int MaxAtomsPerFilter { get; set; } = 16;

    /// <summary>Nodes of the merged decision trie (root included). Between 1 and 4194304. Default 262144.</summary>
    public int MaxTrieNodes { get; set; } = 262_144;

    /// <summary>
    /// The largest frame the NIC delivers (Ethernet header plus MTU, no FCS). No atom may read a
    /// byte at or past it, whatever the variable-length headers say. Between 60 and 65535. Default 1514.
    /// </summary>
    public int MaxFrameLength { get; set; } = 1514;

    /// <summary>Returns the first problem with these options, or null.</summary>
    public string? Validate()
    {
        if (MaxFilters < 1 || MaxFilters > 65536)
        {
            return $"MaxFilters must be between 1 and 65536 (got {MaxFilters}).";
        }

        if (MaxAtomsPerFilter < 1 || MaxAtomsPerFilter > 64)
        {
            return $"MaxAtomsPerFilter must be between 1 and 64 (got {MaxAtomsPerFilter}).";
        }

        if (MaxTrieNodes < 1 || MaxTrieNodes > (1 << 22))
        {
            return $"MaxTrieNodes must be between 1 and {1 << 22} (got {MaxTrieNodes}).";
        }

        if (MaxFrameLength < 60 || MaxFrameLength > 65535)
        {
            return $"MaxFrameLength must be between 60 and 65535 (got {MaxFrameLength}).";
        }

        return null;
    }

    internal ClassifierOptions Snapshot()
    {
        if (Validate() is { } problem)
        {
            throw new ArgumentException(problem, "options");
        }

        return new ClassifierOptions { MaxFilters = MaxFilters, MaxAtomsPerFilter = MaxAtomsPerFilter, MaxTrieNodes = MaxTrieNodes, MaxFrameLength = MaxFrameLength };
    }
}
