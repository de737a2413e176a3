namespace Multikernel.Monitor;

/// <summary>A monitor request (export, bind, spawn) that could not be carried out.</summary>
public sealed class MonitorException : Exception
{
    /// <summary>Creates the exception.</summary>
    public MonitorException(MonitorStatus status, string message) : base(message) => Status = status;

    /// <summary>Creates the exception.</summary>
    public MonitorException() : this(MonitorStatus.Ok, "Monitor request failed.") { }

    /// <summary>Creates the exception.</summary>
    public MonitorException(string message) : this(MonitorStatus.Ok, message) { }

    /// <summary>Creates the exception.</summary>
    public MonitorException(string message, Exception innerException) : base(message, innerException) { }

    /// <summary>Why the request failed.</summary>
    public MonitorStatus Status { get; }
}
