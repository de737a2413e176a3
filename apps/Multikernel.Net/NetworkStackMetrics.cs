using System.Collections.Immutable;
using System.Diagnostics.Metrics;
using Multikernel.CpuDriver.Diagnostics;
using Multikernel.Net.Tcp;

namespace Multikernel.Net;

/// <summary>
/// The library-OS stacks' counters as instruments of a meter (the runtime's <c>Multikernel</c>
/// meter: <c>MultikernelRuntime.Metrics.Meter</c>), one series per stack. All observable: they are
/// read when a reader collects, on the reader's thread, from the <see cref="NetworkCounters"/> each
/// stack's core writes with plain stores (a value may be slightly stale, never torn), so the data
/// path pays nothing for them.
/// </summary>
/// <remarks>
/// <para>Instruments (unit; tags beyond the stack's): <c>multikernel.net.frames</c> ({frame};
/// <c>network.io.direction</c> receive | transmit), <c>multikernel.net.tcp.segments</c> ({segment};
/// direction), <c>multikernel.net.tcp.bytes</c> (By of TCP payload, retransmissions included;
/// direction), <c>multikernel.net.tcp.retransmits</c> ({segment}), <c>multikernel.net.tcp.fast_retransmits</c>
/// ({segment}), <c>multikernel.net.tcp.timeouts</c> ({timeout}), <c>multikernel.net.tcp.resets</c>
/// ({segment}; direction), <c>multikernel.net.tcp.challenge_acks</c> ({segment};
/// <see cref="TelemetryTags.Outcome"/> sent | suppressed), <c>multikernel.net.tcp.connections.opened</c>
/// ({connection}; <see cref="Role"/> client | server), <c>multikernel.net.tcp.connections</c> (an
/// up-down counter of connections now in each state; <see cref="State"/> syn_sent … time_wait),
/// <c>multikernel.net.drops</c> ({packet}; <see cref="Reason"/>, one per <see cref="DropReason"/> in
/// snake case), <c>multikernel.net.udp.datagrams</c> ({datagram}; direction).</para>
/// <para>Every series carries the stack's identity: <see cref="TelemetryTags.Core"/> (its core; absent
/// for a stack not on a core), <see cref="TelemetryTags.Domain"/> (<see cref="NetworkStackOptions.Name"/>,
/// when set) and <c>network.local.address</c> (its IPv4 address).</para>
/// <para><b>No shared hot state.</b> A stack registers once, when it starts, and leaves when it is
/// disposed, each time on its own thread: the registry has one immutable list per core, replaced by
/// that core alone (an interlocked swap, no lock, nothing another core writes), and the reader walks
/// the lists as published. Nothing here runs per packet.</para>
/// </remarks>
public sealed class NetworkStackMetrics
{
    /// <summary>Instrument name.</summary>
    public const string Frames = "multikernel.net.frames";
    /// <summary>Instrument name.</summary>
    public const string Segments = "multikernel.net.tcp.segments";
    /// <summary>Instrument name.</summary>
    public const string Bytes = "multikernel.net.tcp.bytes";
    /// <summary>Instrument name.</summary>
    public const string Retransmits = "multikernel.net.tcp.retransmits";
    /// <summary>Instrument name.</summary>
    public const string FastRetransmits = "multikernel.net.tcp.fast_retransmits";
    /// <summary>Instrument name.</summary>
    public const string Timeouts = "multikernel.net.tcp.timeouts";
    /// <summary>Instrument name.</summary>
    public const string Resets = "multikernel.net.tcp.resets";
    /// <summary>Instrument name.</summary>
    public const string ChallengeAcks = "multikernel.net.tcp.challenge_acks";
    /// <summary>Instrument name.</summary>
    public const string ConnectionsOpened = "multikernel.net.tcp.connections.opened";
    /// <summary>Instrument name.</summary>
    public const string Connections = "multikernel.net.tcp.connections";
    /// <summary>Instrument name.</summary>
    public const string Drops = "multikernel.net.drops";
    /// <summary>Instrument name.</summary>
    public const string Datagrams = "multikernel.net.udp.datagrams";

    /// <summary>Times TCP held data back for a full link transmit queue (sent when it drained, not dropped).</summary>
    public const string LinkWaits = "multikernel.net.tcp.link_waits";

    /// <summary>Tag: the stack's IPv4 address (OpenTelemetry's <c>network.local.address</c>).</summary>
    public const string LocalAddress = "network.local.address";
    /// <summary>Tag: receive | transmit (OpenTelemetry's <c>network.io.direction</c>).</summary>
    public const string Direction = "network.io.direction";
    /// <summary>Tag: why a packet was dropped.</summary>
    public const string Reason = "multikernel.net.drop.reason";
    /// <summary>Tag: a TCP state in snake case.</summary>
    public const string State = "multikernel.net.tcp.state";
    /// <summary>Tag: client (active open) | server (passive open).</summary>
    public const string Role = "multikernel.net.tcp.role";

    /// <summary>The tag value of each <see cref="DropReason"/> (snake case).</summary>
    public static ImmutableArray<string> ReasonNames { get; } = [.. Enum.GetNames<DropReason>().Select(SnakeCase)];

    /// <summary>The tag value of each <see cref="TcpState"/> (snake case).</summary>
    public static ImmutableArray<string> StateNames { get; } = [.. Enum.GetNames<TcpState>().Select(SnakeCase)];

    private static readonly ImmutableArray<DropReason> AllReasons = [.. Enum.GetValues<DropReason>()];

    private readonly ImmutableArray<Entry>[] _byCore; // [core + 1]: index 0 holds stacks on no core

    /// <summary>Adds the instruments to <paramref name="meter"/>; stacks whose options name this object report through them.</summary>
    public NetworkStackMetrics(Meter meter, int maxCores = 64)
    {
        ArgumentNullException.ThrowIfNull(meter);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCores, 1);
        Meter = meter;
        _byCore = new ImmutableArray<Entry>[maxCores + 1];
        for (int i = 0; i < _byCore.Length; i++)
        {
            _byCore[i] = [];
        }

        meter.CreateObservableCounter(Frames, () => Pair(static c => c.FramesReceived, static c => c.FramesSent), "{frame}", "Ethernet frames a stack received and sent.");
        meter.CreateObservableCounter(Segments, () => Pair(static c => c.TcpSegmentsReceived, static c => c.TcpSegmentsSent), "{segment}", "TCP segments a stack received (valid ones) and sent.");
        meter.CreateObservableCounter(Bytes, () => Pair(static c => c.TcpBytesReceived, static c => c.TcpBytesSent), "By", "TCP payload bytes a stack received and sent (retransmissions included).");
        meter.CreateObservableCounter(Retransmits, () => One(static c => c.TcpRetransmits), "{segment}", "TCP segments sent again (timeouts, fast retransmits, recovery).");
        meter.CreateObservableCounter(FastRetransmits, () => One(static c => c.TcpFastRetransmits), "{segment}", "TCP fast retransmits (three duplicate ACKs).");
        meter.CreateObservableCounter(Timeouts, () => One(static c => c.TcpTimeouts), "{timeout}", "TCP retransmission timer expiries.");
        meter.CreateObservableCounter(Resets, () => Pair(static c => c.TcpResetsReceived, static c => c.TcpResetsSent), "{segment}", "TCP resets a stack received and sent.");
        meter.CreateObservableCounter(ChallengeAcks, () => Kinds(TelemetryTags.Outcome, "sent", static c => c.ChallengeAcks, "suppressed", static c => c.ChallengeAcksSuppressed), "{segment}", "RFC 5961 challenge ACKs sent, and not sent for the per-second limit.");
        meter.CreateObservableCounter(ConnectionsOpened, () => Kinds(Role, "client", static c => c.ConnectionsOpened, "server", static c => c.ConnectionsAccepted), "{connection}", "TCP connections a stack opened (connect) and accepted.");
        meter.CreateObservableUpDownCounter(Connections, ObserveStates, "{connection}", "TCP connections a stack has now, by state.");
        meter.CreateObservableCounter(Drops, ObserveDrops, "{packet}", "Packets a stack dropped, by reason.");
        meter.CreateObservableCounter(Datagrams, () => Pair(static c => c.UdpDatagramsReceived, static c => c.UdpDatagramsSent), "{datagram}", "UDP datagrams a stack received and sent.");
        meter.CreateObservableCounter(LinkWaits, () => One(static c => c.LinkWaits), "{wait}", "Times TCP held data back because the link's transmit queue was full.");
    }

    /// <summary>The meter the instruments are in.</summary>
    public Meter Meter { get; }

    /// <summary>Stacks reporting now (a racy sum).</summary>
    public int StackCount
    {
        get
        {
            int n = 0;
            foreach (ImmutableArray<Entry> list in _byCore)
            {
                n += list.Length;
            }

            return n;
        }
    }

    /// <summary>Starts reporting <paramref name="stack"/> (its thread, once); its core's list only.</summary>
    internal void Add(NetworkStack stack)
    {
        if (stack.Core >= _byCore.Length - 1)
        {
            throw new InvalidOperationException($"A stack on core {stack.Core} cannot report: these metrics were made for {_byCore.Length - 1} cores.");
        }

        var tags = new List<KeyValuePair<string, object?>>(3) { new(LocalAddress, stack.Address.ToString()) };
        if (stack.Core >= 0)
        {
            tags.Add(new(TelemetryTags.Core, stack.Core));
        }

        if (stack.Options.Name is { } name)
        {
            tags.Add(new(TelemetryTags.Domain, name));
        }

        ImmutableInterlocked.Update(ref _byCore[stack.Core + 1], static (list, e) => list.Add(e), new Entry(stack, [.. tags]));
    }

    /// <summary>Stops reporting <paramref name="stack"/> (its thread).</summary>
    internal void Remove(NetworkStack stack) =>
        ImmutableInterlocked.Update(ref _byCore[stack.Core + 1], static (list, s) => list.RemoveAll(e => ReferenceEquals(e.Stack, s)), stack);

    private static string SnakeCase(string name)
    {
        var text = new System.Text.StringBuilder(name.Length + 4);
        for (int i = 0; i < name.Length; i++)
        {
            char c = name[i];
            if (char.IsUpper(c) && i > 0 && !char.IsUpper(name[i - 1]))
            {
                text.Append('_');
            }

            text.Append(char.ToLowerInvariant(c));
        }

        return text.ToString();
    }

    private IEnumerable<Entry> Stacks()
    {
        // Each list is replaced whole by its core (an interlocked swap publishes it): the reader
        // sees an older or a newer list, never a torn one.
        for (int i = 0; i < _byCore.Length; i++)
        {
            foreach (Entry e in _byCore[i])
            {
                yield return e;
            }
        }
    }

    private static KeyValuePair<string, object?>[] With(Entry e, string key, object value)
    {
        var tags = new KeyValuePair<string, object?>[e.Tags.Length + 1];
        e.Tags.CopyTo(tags, 0);
        tags[^1] = new(key, value);
        return tags;
    }

    private IEnumerable<Measurement<long>> One(Func<NetworkCounters, long> value)
    {
        foreach (Entry e in Stacks())
        {
            yield return new Measurement<long>(value(e.Stack.Counters), e.Tags);
        }
    }

    private IEnumerable<Measurement<long>> Pair(Func<NetworkCounters, long> received, Func<NetworkCounters, long> sent) =>
        Kinds(Direction, "receive", received, "transmit", sent);

    private IEnumerable<Measurement<long>> Kinds(string key, string first, Func<NetworkCounters, long> a, string second, Func<NetworkCounters, long> b)
    {
        foreach (Entry e in Stacks())
        {
            yield return new Measurement<long>(a(e.Stack.Counters), With(e, key, first));
            yield return new Measurement<long>(b(e.Stack.Counters), With(e, key, second));
        }
    }

    private IEnumerable<Measurement<long>> ObserveDrops()
    {
        foreach (Entry e in Stacks())
        {
            foreach (DropReason reason in AllReasons)
            {
                yield return new Measurement<long>(e.Stack.Counters.Drops(reason), With(e, Reason, ReasonNames[(int)reason]));
            }
        }
    }

    private IEnumerable<Measurement<long>> ObserveStates()
    {
        foreach (Entry e in Stacks())
        {
            for (int state = (int)TcpState.SynSent; state < StateNames.Length; state++)
            {
                yield return new Measurement<long>(e.Stack.Counters.Connections((TcpState)state), With(e, State, StateNames[state]));
            }
        }
    }

    private sealed record Entry(NetworkStack Stack, KeyValuePair<string, object?>[] Tags);
}
