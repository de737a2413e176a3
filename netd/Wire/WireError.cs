namespace Multikernel.Netd.Wire;

/// <summary>Why a header did not parse. Every parser returns one instead of throwing, so a hostile frame costs a counter, never an exception.</summary>
public enum WireError
{
    /// <summary>The header parsed.</summary>
    None,

    /// <summary>The buffer is shorter than the header (or than a length field inside it says).</summary>
    Truncated,

    /// <summary>A version, hardware or protocol type the parser does not speak.</summary>
    Unsupported,

    /// <summary>A header-length field out of range (IPv4 IHL, TCP data offset).</summary>
    BadHeaderLength,

    /// <summary>A total-length field out of range (IPv4 total length, UDP length).</summary>
    BadLength,

    /// <summary>The checksum does not match.</summary>
    BadChecksum,

    /// <summary>An option runs past the header, or has a length its kind forbids.</summary>
    BadOptions,
}
