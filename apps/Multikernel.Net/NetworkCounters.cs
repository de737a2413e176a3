using Multikernel.Net.Tcp;

namespace Multikernel.Net;

/// <summary>Why the stack dropped something. Each has its own counter.</summary>
public enum DropReason
{
    NoBuffer,
    TransmitQueueFull,
    BadEthernet,
    NotForUs,
    UnknownEtherType,
    BadArp,
    BadIpv4,
    BadIpv4Checksum,
    UnknownProtocol,
    FragmentsOverlap,
    ReassemblyFull,
    ReassemblyTimeout,
    BadIcmp,
    BadUdp,
    UdpNoListener,
    UdpQueueFull,
    BadTcp,
    BadTcpChecksum,
    TcpNoConnection,
    TcpOutOfWindow,
    TcpPawsRejected,
    TcpBadAck,
    TcpOutOfOrderFull,
    TcpReceiveQueueFull,
    TcpSynQueueFull,
    TcpConnectionLimit,
    ArpPendingFull,
    ArpUnresolved,
    NoRoute,
}

/// <summary>
/// A stack's counters. Written only on the stack's thread; other threads (metrics, the stats
/// table) may read them racily with <see cref="Volatile"/> reads, which is enough for monotonic
/// 64-bit counters on 64-bit hardware.
/// </summary>
public sealed class NetworkCounters
{
    private readonly long[] _drops = new long[Enum.GetValues<DropReason>().Length];
    private readonly long[] _states = new long[Enum.GetValues<TcpState>().Length];

    internal long FramesReceivedField;
    internal long FramesSentField;
    internal long TcpSegmentsReceivedField;
    internal long TcpSegmentsSentField;
    internal long TcpBytesReceivedField;
    internal long TcpBytesSentField;
    internal long TcpRetransmitsField;
    internal long TcpFastRetransmitsField;
    internal long TcpTimeoutsField;
    internal long TcpResetsSentField;
    internal long TcpResetsReceivedField;
    internal long ChallengeAcksField;
    internal long ChallengeAcksSuppressedField;
    internal long ConnectionsOpenedField;
    internal long ConnectionsAcceptedField;
    internal long SynQueueEvictionsField;
    internal long UdpReceivedField;
    internal long UdpSentField;
    internal long IcmpEchoRepliesField;
    internal long ArpRequestsSentField;
    internal long ArpRepliesSentField;
    internal long DatagramsReassembledField;
    internal long FragmentsSentField;
    internal long LinkWaitsField;
    internal long FramesDeferredField;

    public long FramesReceived => Volatile.Read(ref FramesReceivedField);

    public long FramesSent => Volatile.Read(ref FramesSentField);

    public long TcpSegmentsReceived => Volatile.Read(ref TcpSegmentsReceivedField);

    public long TcpSegmentsSent => Volatile.Read(ref TcpSegmentsSentField);

    /// <summary>TCP payload bytes in valid received segments (duplicates and out-of-window data included).</summary>
    public long TcpBytesReceived => Volatile.Read(ref TcpBytesReceivedField);

    /// <summary>TCP payload bytes sent (retransmissions included).</summary>
    public long TcpBytesSent => Volatile.Read(ref TcpBytesSentField);

    /// <summary>Segments sent again (timeouts, fast retransmits and recovery retransmits).</summary>
    public long TcpRetransmits => Volatile.Read(ref TcpRetransmitsField);

    public long TcpFastRetransmits => Volatile.Read(ref TcpFastRetransmitsField);

    /// <summary>Retransmission timer expiries.</summary>
    public long TcpTimeouts => Volatile.Read(ref TcpTimeoutsField);

    public long TcpResetsSent => Volatile.Read(ref TcpResetsSentField);

    public long TcpResetsReceived => Volatile.Read(ref TcpResetsReceivedField);

    /// <summary>RFC 5961 challenge ACKs sent.</summary>
    public long ChallengeAcks => Volatile.Read(ref ChallengeAcksField);

    /// <summary>Challenge ACKs not sent because the per-second limit was reached.</summary>
    public long ChallengeAcksSuppressed => Volatile.Read(ref ChallengeAcksSuppressedField);

    public long ConnectionsOpened => Volatile.Read(ref ConnectionsOpenedField);

    public long ConnectionsAccepted => Volatile.Read(ref ConnectionsAcceptedField);

    /// <summary>Half-open connections evicted to admit a new SYN into a full SYN queue.</summary>
    public long SynQueueEvictions => Volatile.Read(ref SynQueueEvictionsField);

    public long UdpDatagramsReceived => Volatile.Read(ref UdpReceivedField);

    public long UdpDatagramsSent => Volatile.Read(ref UdpSentField);

    public long IcmpEchoReplies => Volatile.Read(ref IcmpEchoRepliesField);

    public long ArpRequestsSent => Volatile.Read(ref ArpRequestsSentField);

    public long ArpRepliesSent => Volatile.Read(ref ArpRepliesSentField);

    public long DatagramsReassembled => Volatile.Read(ref DatagramsReassembledField);

    public long FragmentsSent => Volatile.Read(ref FragmentsSentField);

    /// <summary>Times a TCP connection held data back because the link's transmit queue was full (sent when it drained, not dropped).</summary>
    public long LinkWaits => Volatile.Read(ref LinkWaitsField);

    /// <summary>Control frames (RST, FIN, ACK, ARP) kept for a full link and sent when it drained, instead of dropped.</summary>
    public long FramesDeferred => Volatile.Read(ref FramesDeferredField);

    /// <summary>Drops for one reason.</summary>
    public long Drops(DropReason reason) => Volatile.Read(ref _drops[(int)reason]);

    /// <summary>Drops for every reason.</summary>
    public long TotalDrops { get { long s = 0; for (int i = 0; i < _drops.Length; i++) { s += Volatile.Read(ref _drops[i]); } return s; } }

    /// <summary>Connections currently in <paramref name="state"/>.</summary>
    public long Connections(TcpState state) => Volatile.Read(ref _states[(int)state]);

    internal void Drop(DropReason reason) => _drops[(int)reason]++;

    internal void StateChanged(TcpState from, TcpState to)
    {
        if (from != TcpState.Closed)
        {
            _states[(int)from]--;
        }

        if (to != TcpState.Closed)
        {
            _states[(int)to]++;
        }
    }
}
