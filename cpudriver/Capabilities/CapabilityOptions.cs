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

    /// <summary>
    /// Distributed operations (transfers, revokes) one domain may have in progress: its share of
    /// the core's awaitables. Exhausting it fails only that domain. Between 1 and 64. Default 4.
    /// MaxDomainsPerCore x OperationsPerDomain must not exceed 65536.
    /// </summary>
    public int OperationsPerDomain { get; set; } = 4;

    /// <summary>Capabilities a domain has received and not yet taken (per domain, all channels). Between 1 and 1024. Default 16.</summary>
    public int GrantsPerDomain { get; set; } = 16;

    /// <summary>
    /// References one domain may hold (slots in use plus copies on their way out): its share of
    /// the core's capability table. 0 (the default) means MaxReferencesPerCore / MaxDomainsPerCore,
    /// capped at SlotsPerDomain, so no set of domains can fill the table for the others.
    /// </summary>
    public int ReferencesPerDomain { get; set; }

    /// <summary>Frames a domain may have pinned at once (raw pointers for native I/O). Between 0 and 1024. Default 8.</summary>
    public int PinsPerDomain { get; set; } = 8;

    /// <summary>Frames reserved at boot at the end of <see cref="NicCore"/>'s share for the device region (the Nic root covers them). Default 0 (no device region).</summary>
    public int DeviceFrames { get; set; }

    /// <summary>The core whose kernel holds the machine's one Nic root and its device region. Default 0.</summary>
    public int NicCore { get; set; }

    /// <summary>The reference share a domain gets (see <see cref="ReferencesPerDomain"/>).</summary>
    internal int EffectiveReferencesPerDomain => ReferencesPerDomain > 0 ? ReferencesPerDomain : Math.Max(1, Math.Min(SlotsPerDomain, MaxReferencesPerCore / MaxDomainsPerCore));

    /// <summary>
    /// Protocol messages one domain's operations may hold in the outbox: the half of it that
    /// streams leave free, less the handlers' reserve, shared out among the domains.
    /// </summary>
    internal int OutboxShare => Math.Max(1, ((OutboxCapacity / 2) - (MulticastFanout + 4)) / MaxDomainsPerCore);

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

        if (OperationsPerDomain < 1 || OperationsPerDomain > 64 || (long)OperationsPerDomain * MaxDomainsPerCore > 65536)
        {
            return $"OperationsPerDomain must be between 1 and 64, and MaxDomainsPerCore x OperationsPerDomain at most 65536 (got {OperationsPerDomain} x {MaxDomainsPerCore}).";
        }

        if (GrantsPerDomain < 1 || GrantsPerDomain > 1024)
        {
            return $"GrantsPerDomain must be between 1 and 1024 (got {GrantsPerDomain}).";
        }

        if (ReferencesPerDomain < 0 || (long)ReferencesPerDomain * MaxDomainsPerCore > MaxReferencesPerCore)
        {
            return $"ReferencesPerDomain x MaxDomainsPerCore must fit in MaxReferencesPerCore, so one domain cannot take another's share (got {ReferencesPerDomain} x {MaxDomainsPerCore} > {MaxReferencesPerCore}).";
        }

        if (PinsPerDomain < 0 || PinsPerDomain > 1024)
        {
            return $"PinsPerDomain must be between 0 and 1024 (got {PinsPerDomain}).";
        }

        if (DeviceFrames < 0)
        {
            return $"DeviceFrames must not be negative (got {DeviceFrames}).";
        }

        if (NicCore < 0 || NicCore > 63)
        {
            return $"NicCore must be between 0 and 63 (got {NicCore}).";
        }

        return null;
    }
}
