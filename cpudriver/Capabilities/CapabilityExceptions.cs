namespace Multikernel.CpuDriver.Capabilities;

/// <summary>Base of every error a capability operation reports.</summary>
public class CapabilityException : InvalidOperationException
{
    public CapabilityException()
    {
    }

    public CapabilityException(string message)
        : base(message)
    {
    }

    public CapabilityException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>The slot number is outside the domain's CSpace.</summary>
public sealed class InvalidSlotException(string message) : CapabilityException(message);

/// <summary>The slot holds no capability (or one that is in transit to another domain).</summary>
public sealed class EmptySlotException(string message) : CapabilityException(message);

/// <summary>The capability has the wrong type for the operation.</summary>
public sealed class CapabilityTypeException(string message) : CapabilityException(message);

/// <summary>The capability lacks a right the operation needs, or a copy asked for more rights than the source has.</summary>
public sealed class InsufficientRightsException(string message) : CapabilityException(message);

/// <summary>The capability was revoked or deleted (or is being revoked); old handles no longer give access.</summary>
public sealed class CapabilityRevokedException(string message) : CapabilityException(message);

/// <summary>A retype needs more memory than the RAM capability has free: the domain has used up its RAM.</summary>
public sealed class OutOfRamException(string message) : CapabilityException(message);

/// <summary>A bounded table (CSpace slots, the core's capability table, pending operations, the outbox) is full.</summary>
public sealed class CapabilityLimitException(string message) : CapabilityException(message);

/// <summary>Another revoke or delete covering this capability is in progress; retry after it completes.</summary>
public sealed class CapabilityBusyException(string message) : CapabilityException(message);

/// <summary>
/// A protocol invariant does not hold: a kernel bug (or a core built with different options), never
/// something a domain's input can cause. Checked in every build, including Release.
/// </summary>
public sealed class CapabilityInvariantException(string message) : InvalidOperationException(message);

/// <summary>A capability operation or frame access ran on a thread other than its core's kernel thread.</summary>
public sealed class WrongCoreThreadException(string message) : InvalidOperationException(message);
