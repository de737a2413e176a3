using Multikernel.Netd.Wire;

namespace Multikernel.Net;

/// <summary>
/// A stack's configuration. Every limit is a bound with a designed behaviour at the limit
/// (drop and count, or refuse with a clear error); <see cref="Validate"/> checks them all up front.
/// </summary>
public sealed class NetworkStackOptions
{
    /// <summary>This stack's IPv4 address (required).</summary>
    public Ipv4Address Address { get; set; }

    /// <summary>Prefix length of the local subnet. Default 24.</summary>
    public int PrefixLength { get; set; } = 24;

    /// <summary>Next hop for destinations off the subnet; <see cref="Ipv4Address.Any"/> for none (those are unreachable). Default none.</summary>
    public Ipv4Address Gateway { get; set; }

    /// <summary>TTL of sent datagrams. Default 64.</summary>
    public byte TimeToLive { get; set; } = 64;

    /// <summary>Buffers in the stack's own receive pool (frames that arrive as spans, ARP-pending frames). Default 1024.</summary>
    public int ReceiveBuffers { get; set; } = 1024;

    /// <summary>ARP cache entries; when full the entry closest to expiry is evicted. Default 256.</summary>
    public int ArpCacheSize { get; set; } = 256;

    /// <summary>How long a learned ARP entry stays valid. Default 60 s.</summary>
    public TimeSpan ArpEntryLifetime { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>Addresses being resolved at once; a datagram to one more is dropped and counted. Default 16.</summary>
    public int ArpMaxPendingAddresses { get; set; } = 16;

    /// <summary>Frames held per address being resolved; more are dropped and counted. Default 4.</summary>
    public int ArpMaxPendingFrames { get; set; } = 4;

    /// <summary>ARP requests sent per resolution before its frames are dropped. Default 3.</summary>
    public int ArpRequestAttempts { get; set; } = 3;

    /// <summary>Time between ARP requests of one resolution. Default 1 s.</summary>
    public TimeSpan ArpRequestInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Datagrams reassembled at once (each holds a 64 KiB buffer: the reassembly memory cap is this times 64 KiB). Default 4.</summary>
    public int MaxReassemblies { get; set; } = 4;

    /// <summary>How long an incomplete datagram waits for its fragments. Default 30 s.</summary>
    public TimeSpan ReassemblyTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Connections (any state) the stack holds; more are refused. Default 1024.</summary>
    public int MaxConnections { get; set; } = 1024;

    /// <summary>Per-connection receive buffer in bytes (the most the advertised window reaches). Default 256 KiB.</summary>
    public int ReceiveBufferSize { get; set; } = 256 * 1024;

    /// <summary>Per-connection send buffer in bytes; a write waits when it is full. Default 256 KiB.</summary>
    public int SendBufferSize { get; set; } = 256 * 1024;

    /// <summary>
    /// Out-of-order segments held per connection (each holds one frame); more are dropped and
    /// counted. Default 256: more than a full default window of full segments (256 KiB / 1460), so
    /// one lost segment costs one retransmission, not the whole window behind it.
    /// </summary>
    public int MaxOutOfOrderSegments { get; set; } = 256;

    /// <summary>In-order slices (frames) queued per connection before the application reads. Default 512.</summary>
    public int MaxReceiveSlices { get; set; } = 512;

    /// <summary>UDP datagrams queued per socket before the application reads; more are dropped and counted. Default 64.</summary>
    public int UdpReceiveQueue { get; set; } = 64;

    /// <summary>Lower bound of the retransmission timeout. RFC 6298 says 1 s; Linux uses 200 ms. Default 200 ms.</summary>
    public TimeSpan MinRetransmissionTimeout { get; set; } = TimeSpan.FromMilliseconds(200);

    /// <summary>Upper bound of the retransmission timeout. Default 60 s.</summary>
    public TimeSpan MaxRetransmissionTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>RTO before the first RTT sample (RFC 6298 §2.1). Default 1 s.</summary>
    public TimeSpan InitialRetransmissionTimeout { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Retransmissions of one segment before the connection is aborted. Default 12.</summary>
    public int MaxRetransmissions { get; set; } = 12;

    /// <summary>Retransmissions of a SYN or SYN-ACK before giving up. Default 5.</summary>
    public int MaxSynRetransmissions { get; set; } = 5;

    /// <summary>Longest delay of an acknowledgment (RFC 9293 says under 0.5 s). Default 40 ms.</summary>
    public TimeSpan DelayedAckTimeout { get; set; } = TimeSpan.FromMilliseconds(40);

    /// <summary>
    /// Most full segments one acknowledgment covers while a burst of received frames is processed
    /// (between <see cref="NetworkStack.BeginReceiveBurst"/> and <see cref="NetworkStack.EndReceiveBurst"/>).
    /// Outside a burst the stack acknowledges every second segment (RFC 9293 §3.8.6.3); inside one
    /// it acknowledges once when the burst ends, or after this many segments, as Linux does for the
    /// super-segments its receive offload builds: each ACK over TAP is a write system call in which
    /// the peer's whole TCP input runs, so on a plain TAP link ACKs cost as much CPU as the data.
    /// Out-of-order data, holes filled, a FIN and window updates are still acknowledged at once
    /// (fast retransmit counts those). 2 turns stretching off. Default 16; 2–64.
    /// </summary>
    public int MaxSegmentsPerAck { get; set; } = 16;

    /// <summary>Maximum segment lifetime; TIME-WAIT lasts twice this. Default 30 s.</summary>
    public TimeSpan MaximumSegmentLifetime { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How long a closed connection waits in FIN-WAIT-2 for the peer's FIN. Default 60 s.</summary>
    public TimeSpan FinWait2Timeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>Idle time before keep-alive probes start on a connection that enabled them. Default 2 h (RFC 1122).</summary>
    public TimeSpan KeepAliveIdle { get; set; } = TimeSpan.FromHours(2);

    /// <summary>Time between keep-alive probes. Default 75 s.</summary>
    public TimeSpan KeepAliveInterval { get; set; } = TimeSpan.FromSeconds(75);

    /// <summary>Unanswered keep-alive probes before the connection is aborted. Default 9.</summary>
    public int KeepAliveProbes { get; set; } = 9;

    /// <summary>RFC 5961 challenge ACKs sent per second per stack; more are suppressed and counted. Default 1000.</summary>
    public int ChallengeAcksPerSecond { get; set; } = 1000;

    /// <summary>Offer and accept RFC 7323 window scaling. Default true.</summary>
    public bool WindowScaling { get; set; } = true;

    /// <summary>Offer and accept RFC 7323 timestamps. Default true.</summary>
    public bool Timestamps { get; set; } = true;

    /// <summary>Offer and accept RFC 2018 SACK. Default true.</summary>
    public bool SelectiveAck { get; set; } = true;

    /// <summary>Secret of the RFC 6528 ISN hash; null (the default) draws 32 bytes from the CSPRNG at stack creation. Tests set it for reproducible runs.</summary>
    public byte[]? IsnSecret { get; set; }

    /// <summary>
    /// Where the stack's counters are published (<see cref="NetworkStackMetrics"/> over the runtime's
    /// <c>Multikernel</c> meter): the stack reports from <see cref="NetworkStack.Start"/> until it is
    /// disposed. Default null (not published).
    /// </summary>
    public NetworkStackMetrics? Metrics { get; set; }

    /// <summary>The stack's name in metrics and spans (<c>multikernel.domain</c>: the application domain's). Default null (no such tag).</summary>
    public string? Name { get; set; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid value.</summary>
    public void Validate()
    {
        static void Positive(int value, string name)
        {
            if (value <= 0)
            {
                throw new ArgumentException($"{name} must be positive (was {value}).", name);
            }
        }

        static void PositiveTime(TimeSpan value, string name)
        {
            if (value <= TimeSpan.Zero)
            {
                throw new ArgumentException($"{name} must be positive (was {value}).", name);
            }
        }

        if (Address.IsAny || Address.IsBroadcast || Address.IsMulticast)
        {
            throw new ArgumentException($"Address must be a unicast IPv4 address (was {Address}).", nameof(Address));
        }

        if (PrefixLength is < 1 or > 31)
        {
            throw new ArgumentException($"PrefixLength must be 1..31 (was {PrefixLength}).", nameof(PrefixLength));
        }

        uint hostMask = uint.MaxValue >> PrefixLength;
        if ((Address.Value & hostMask) == 0 || (Address.Value & hostMask) == hostMask)
        {
            throw new ArgumentException($"Address {Address} is the network or broadcast address of its /{PrefixLength} subnet.", nameof(Address));
        }

        if (!Gateway.IsAny && !Gateway.SameSubnet(Address, PrefixLength))
        {
            throw new ArgumentException($"Gateway {Gateway} is not on the subnet {Address}/{PrefixLength}.", nameof(Gateway));
        }

        Positive(TimeToLive, nameof(TimeToLive));
        Positive(ReceiveBuffers, nameof(ReceiveBuffers));
        Positive(ArpCacheSize, nameof(ArpCacheSize));
        Positive(ArpMaxPendingAddresses, nameof(ArpMaxPendingAddresses));
        Positive(ArpMaxPendingFrames, nameof(ArpMaxPendingFrames));
        Positive(ArpRequestAttempts, nameof(ArpRequestAttempts));
        Positive(MaxReassemblies, nameof(MaxReassemblies));
        Positive(MaxConnections, nameof(MaxConnections));
        Positive(MaxOutOfOrderSegments, nameof(MaxOutOfOrderSegments));
        if (MaxSegmentsPerAck is < 2 or > 64)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxSegmentsPerAck), MaxSegmentsPerAck, "MaxSegmentsPerAck must be 2-64.");
        }

        Positive(MaxReceiveSlices, nameof(MaxReceiveSlices));
        Positive(UdpReceiveQueue, nameof(UdpReceiveQueue));
        Positive(MaxRetransmissions, nameof(MaxRetransmissions));
        Positive(MaxSynRetransmissions, nameof(MaxSynRetransmissions));
        Positive(KeepAliveProbes, nameof(KeepAliveProbes));
        Positive(ChallengeAcksPerSecond, nameof(ChallengeAcksPerSecond));
        if (ReceiveBufferSize is < 1024 or > (1 << 30))
        {
            throw new ArgumentException($"ReceiveBufferSize must be 1 KiB..1 GiB (was {ReceiveBufferSize}).", nameof(ReceiveBufferSize));
        }

        if (SendBufferSize is < 1024 or > (1 << 30))
        {
            throw new ArgumentException($"SendBufferSize must be 1 KiB..1 GiB (was {SendBufferSize}).", nameof(SendBufferSize));
        }

        PositiveTime(ArpEntryLifetime, nameof(ArpEntryLifetime));
        PositiveTime(ArpRequestInterval, nameof(ArpRequestInterval));
        PositiveTime(ReassemblyTimeout, nameof(ReassemblyTimeout));
        PositiveTime(MinRetransmissionTimeout, nameof(MinRetransmissionTimeout));
        PositiveTime(InitialRetransmissionTimeout, nameof(InitialRetransmissionTimeout));
        PositiveTime(DelayedAckTimeout, nameof(DelayedAckTimeout));
        PositiveTime(MaximumSegmentLifetime, nameof(MaximumSegmentLifetime));
        PositiveTime(FinWait2Timeout, nameof(FinWait2Timeout));
        PositiveTime(KeepAliveIdle, nameof(KeepAliveIdle));
        PositiveTime(KeepAliveInterval, nameof(KeepAliveInterval));
        if (MaxRetransmissionTimeout < MinRetransmissionTimeout)
        {
            throw new ArgumentException("MaxRetransmissionTimeout must not be below MinRetransmissionTimeout.", nameof(MaxRetransmissionTimeout));
        }

        if (IsnSecret is { Length: < 16 })
        {
            throw new ArgumentException("IsnSecret must hold at least 16 bytes.", nameof(IsnSecret));
        }
    }
}
