using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Multikernel.CpuDriver.Urpc;

/// <summary>Flags carried in a message header.</summary>
[Flags]
public enum MessageFlags : byte
{
    None = 0,
    /// <summary>The trace-context fields hold a valid W3C trace id and parent span id.</summary>
    HasTraceContext = 1,
    /// <summary>W3C trace-flags "sampled" bit of the carried context.</summary>
    TraceSampled = 2,
    /// <summary>A kernel control message (credit return); never delivered to a domain.</summary>
    Control = 4,
    /// <summary>
    /// Sent by a handler into the trace of the value a typed reader handed it (one hop): the
    /// receiver's handler does not continue this trace further, so a request/response loop
    /// over typed channels does not chain every later message into one trace.
    /// </summary>
    ContinuedTrace = 8,
}

/// <summary>
/// One URPC message: 56 bytes that, with the ring's 8-byte sequence stamp, fill one 64-byte
/// cache line. Layout: an 8-byte header (type, payload length, flags, destination endpoint),
/// 24 bytes reserved for W3C trace context (trace id and parent span id; the sampled bit is in
/// <see cref="Flags"/>), and a 24-byte inline payload. Larger payloads travel as frame
/// capabilities whose descriptor fits the payload.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = Size)]
public struct Message
{
    /// <summary>Size of a message in bytes (a slot is this plus the 8-byte sequence stamp).</summary>
    public const int Size = 56;

    /// <summary>Bytes of inline payload.</summary>
    public const int PayloadSize = 24;

    /// <summary>Application- or protocol-defined message type.</summary>
    [FieldOffset(0)] public ushort Type;

    /// <summary>How many payload bytes are meaningful (0..24).</summary>
    [FieldOffset(2)] public byte Length;

    /// <summary>Header flags.</summary>
    [FieldOffset(3)] public MessageFlags Flags;

    /// <summary>Destination endpoint on the receiving core (set by the channel, not by applications).</summary>
    [FieldOffset(4)] public uint Endpoint;

    /// <summary>W3C trace id, high and low halves (big-endian order of the hex string).</summary>
    [FieldOffset(8)] public ulong TraceIdHigh;

    /// <summary>W3C trace id, low half.</summary>
    [FieldOffset(16)] public ulong TraceIdLow;

    /// <summary>W3C parent span id.</summary>
    [FieldOffset(24)] public ulong SpanId;

    /// <summary>First payload word.</summary>
    [FieldOffset(32)] public ulong Word0;

    /// <summary>Second payload word.</summary>
    [FieldOffset(40)] public ulong Word1;

    /// <summary>Third payload word.</summary>
    [FieldOffset(48)] public ulong Word2;

    /// <summary>Creates a message of <paramref name="type"/> with up to three payload words.</summary>
    public static Message Create(ushort type, ulong word0 = 0, ulong word1 = 0, ulong word2 = 0) => new()
    {
        Type = type,
        Length = PayloadSize,
        Word0 = word0,
        Word1 = word1,
        Word2 = word2,
    };

    /// <summary>The 24 payload bytes as a span over this message.</summary>
    [UnscopedRef]
    public Span<byte> Payload => MemoryMarshal.CreateSpan(ref Unsafe.As<ulong, byte>(ref Word0), PayloadSize);

    /// <summary>Writes an unmanaged value of at most 24 bytes into the payload.</summary>
    public void SetPayload<T>(in T value) where T : unmanaged
    {
        if (Unsafe.SizeOf<T>() > PayloadSize)
        {
            ThrowPayloadTooLarge(typeof(T));
        }

        Unsafe.WriteUnaligned(ref Unsafe.As<ulong, byte>(ref Word0), value);
        Length = (byte)Unsafe.SizeOf<T>();
    }

    /// <summary>Reads an unmanaged value of at most 24 bytes from the payload.</summary>
    public readonly T GetPayload<T>() where T : unmanaged
    {
        if (Unsafe.SizeOf<T>() > PayloadSize)
        {
            ThrowPayloadTooLarge(typeof(T));
        }

        return Unsafe.ReadUnaligned<T>(ref Unsafe.As<ulong, byte>(ref Unsafe.AsRef(in Word0)));
    }

    private static void ThrowPayloadTooLarge(Type type) =>
        throw new ArgumentException($"{type.Name} is {Marshal.SizeOf(type)} bytes; a URPC message carries at most {PayloadSize} bytes inline. Pass a frame capability for larger payloads.");
}
