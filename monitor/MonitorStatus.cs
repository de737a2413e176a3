namespace Multikernel.Monitor;

/// <summary>Outcome of a monitor request, carried in replies.</summary>
public enum MonitorStatus : ulong
{
    /// <summary>Done.</summary>
    Ok = 0,
    /// <summary>The service name is already exported.</summary>
    Duplicate = 1,
    /// <summary>No such service.</summary>
    NotFound = 2,
    /// <summary>The service's accept backlog is full.</summary>
    Refused = 3,
    /// <summary>A kernel table (endpoints, domains) is full.</summary>
    NoResources = 4,
    /// <summary>No program of that name is registered.</summary>
    UnknownProgram = 5,
    /// <summary>The machine is shutting down.</summary>
    ShuttingDown = 6,
    /// <summary>The core has too little free RAM for the domain's budget.</summary>
    OutOfMemory = 7,
    /// <summary>No reply came within <c>MonitorRequestTimeout</c> (the peer core is stuck or gone).</summary>
    TimedOut = 8,
    /// <summary>The monitor link to the peer core could not take the request (its outbox is full: the peer is not draining).</summary>
    Overloaded = 9,
}
