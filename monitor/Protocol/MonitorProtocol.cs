using System.Text;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.Monitor.Protocol;

/// <summary>Message types of the monitor-to-monitor protocol (range 0x0100-0x01FF).</summary>
internal enum MonitorMessage : ushort
{
    /// <summary>core k -> 0: my kernel runs and my monitor is listening.</summary>
    Hello = 0x0100,
    /// <summary>0 -> k: every core is up (Word0 = core count).</summary>
    Welcome,
    /// <summary>k -> 0: register a service name (name in Word0..1, Word2 = request id).</summary>
    Export,
    /// <summary>0 -> k: Word0 = request id, Word1 = status.</summary>
    ExportReply,
    /// <summary>0 -> all: name (Word0..1) now served on core Word2.</summary>
    NameAdded,
    /// <summary>k -> 0: the name (Word0..1) is no longer served.</summary>
    Unexport,
    /// <summary>0 -> all: the name (Word0..1) was removed.</summary>
    NameRemoved,
    /// <summary>k -> 0: where is the name (Word0..1)? Word2 = request id.</summary>
    Lookup,
    /// <summary>0 -> k: Word0 = request id, Word1 = core or <see cref="ulong.MaxValue"/>.</summary>
    LookupReply,
    /// <summary>client core -> server core: name (Word0..1), Word2 = request id (high 32) | client endpoint id (low 32).</summary>
    Bind,
    /// <summary>server core -> client core: Word0 = request id, Word1 = status, Word2 = server endpoint id.</summary>
    BindReply,
    /// <summary>-> core k: Word0 = program index, Word1 = argument, Word2 = request id.</summary>
    Spawn,
    /// <summary>core k ->: Word0 = request id, Word1 = status, Word2 = domain id.</summary>
    SpawnReply,
    /// <summary>0 -> all: stop your domains (shutdown phase 1).</summary>
    StopDomains,
    /// <summary>k -> 0: my domains have stopped; Word0 = how many had to be abandoned.</summary>
    DomainsStopped,
    /// <summary>0 -> all: halt your kernel (shutdown phase 2).</summary>
    Halt,
}

/// <summary>Service names travel inline in two message words: at most 16 bytes of UTF-8.</summary>
internal static class ServiceName
{
    public const int MaxBytes = 16;

    public static void Validate(string name)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        if (Encoding.UTF8.GetByteCount(name) > MaxBytes)
        {
            throw new ArgumentException($"Service name '{name}' is longer than {MaxBytes} bytes of UTF-8 (names travel inline in one URPC message).", nameof(name));
        }

        if (name.Contains('\0', StringComparison.Ordinal))
        {
            throw new ArgumentException("Service names may not contain NUL.", nameof(name));
        }
    }

    public static void Write(ref Message message, string name)
    {
        Span<byte> bytes = message.Payload[..MaxBytes];
        bytes.Clear();
        Encoding.UTF8.GetBytes(name, bytes);
    }

    public static string Read(in Message message)
    {
        Message copy = message;
        ReadOnlySpan<byte> bytes = copy.Payload[..MaxBytes];
        int end = bytes.IndexOf((byte)0);
        return Encoding.UTF8.GetString(end < 0 ? bytes : bytes[..end]);
    }
}
