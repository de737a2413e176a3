namespace Multikernel.CpuDriver.Capabilities;

/// <summary>Per-core limits of the capability system. Every table is preallocated at boot from these.</summary>
public sealed class CapabilityOptions
{
    /// <summary>Kernel objects (capability derivation-tree nodes) a core can own. Default 65536.</summary>
    public int MaxObjectsPerCore { get; set; } = 65536;

    /// <summary>Capability references (copies in CSpaces, local or of remote objects) per core. Default 65536.</summary>
    public int MaxReferencesPerCore { get; set; } = 65536;

    /// <summary>Domains (CSpaces) per core. Default 256.</summary>
    public int MaxDomainsPerCore { get; set; } = 256;

    /// <summary>Slots in each domain's CSpace. Default 1024.</summary>
    public int SlotsPerDomain { get; set; } = 1024;

    /// <summary>Concurrent distributed operations per core (revokes it sequences, transfers it awaits). At most 256. Default 64.</summary>
    public int MaxOperations { get; set; } = 64;

    /// <summary>Protocol messages a core can queue for sending. Default 4096.</summary>
    public int OutboxCapacity { get; set; } = 4096;

    /// <summary>Children per node of the multicast tree used by <see cref="RevokeMode.Multicast"/>. Between 1 and 8. Default 2.</summary>
    public int MulticastFanout { get; set; } = 2;

    /// <summary>Returns the first problem with these options, or null.</summary>
    public string? Validate()
    {
        if (MaxObjectsPerCore < 1 || MaxObjectsPerCore > (1 << 24))
        {
            return $"MaxObjectsPerCore must be between 1 and {1 << 24} (got {MaxObjectsPerCore}).";
        }

        if (MaxReferencesPerCore < 1 || MaxReferencesPerCore > (1 << 23))
        {
            return $"MaxReferencesPerCore must be between 1 and {1 << 23} (got {MaxReferencesPerCore}).";
        }

        if (MaxDomainsPerCore < 1 || MaxDomainsPerCore > 65535)
        {
            return $"MaxDomainsPerCore must be between 1 and 65535 (got {MaxDomainsPerCore}).";
        }

        if (SlotsPerDomain < 1 || SlotsPerDomain > (1 << 20))
        {
            return $"SlotsPerDomain must be between 1 and {1 << 20} (got {SlotsPerDomain}).";
        }

        if (MaxOperations < 1 || MaxOperations > 256)
        {
            return $"MaxOperations must be between 1 and 256 (got {MaxOperations}).";
        }

        if (OutboxCapacity < 64)
        {
            return $"OutboxCapacity must be at least 64 (got {OutboxCapacity}).";
        }

        if (MulticastFanout < 1 || MulticastFanout > 8)
        {
            return $"MulticastFanout must be between 1 and 8 (got {MulticastFanout}).";
        }

        return null;
    }
}
