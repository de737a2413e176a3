using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Multikernel.CpuDriver.Diagnostics;

namespace Multikernel.Net.Tcp;

/// <summary>
/// Connection spans on <see cref="ActivitySources.Net"/>: <c>tcp handshake</c> from the first SYN
/// (sent: kind Client; received: kind Server) until the connection is established or dies, and
/// <c>tcp close</c> from the first FIN (ours: <c>active</c>, the peer's: <c>passive</c>) until the
/// FIN exchange is done (TIME-WAIT or CLOSED) — or, for a connection reset or timed out while
/// open, a span of the moment it died. Sampled by whatever samples the rest (the listener's
/// sampler; parent-based samplers follow <see cref="Activity.Current"/> when the span starts).
/// </summary>
/// <remarks>
/// With nobody listening <see cref="SetState"/> pays one volatile read and two field tests, and
/// nothing is allocated. A span stays open across many segments and timer callbacks, so it is
/// never left as <see cref="Activity.Current"/>: it is detached at once, and stopping it restores
/// whatever span was current then (an Activity's stop would otherwise reinstate the context of its
/// start in the middle of some unrelated packet's processing).
/// </remarks>
public sealed partial class TcpConnection
{
    /// <summary>Span name.</summary>
    public const string HandshakeSpanName = "tcp handshake";

    /// <summary>Span name.</summary>
    public const string CloseSpanName = "tcp close";

    /// <summary>Tag of <see cref="CloseSpanName"/>: active (we sent the first FIN) | passive | reset.</summary>
    public const string CloseTag = "multikernel.net.tcp.close";

    private Activity? _handshakeSpan;
    private Activity? _closeSpan;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void TraceState(TcpState from, TcpState to)
    {
        if (to is TcpState.SynSent or TcpState.SynReceived)
        {
            if (_handshakeSpan is null && from is TcpState.Closed or TcpState.Listen)
            {
                _handshakeSpan = Start(HandshakeSpanName, to == TcpState.SynSent ? ActivityKind.Client : ActivityKind.Server, role: to == TcpState.SynSent ? "client" : "server");
            }

            return;
        }

        if (_handshakeSpan is { } handshake)
        {
            _handshakeSpan = null;
            Stop(handshake, to == TcpState.Closed ? Outcome() : "established");
        }

        if (to is TcpState.FinWait1 or TcpState.CloseWait && _closeSpan is null && from is not TcpState.Closed)
        {
            _closeSpan = Start(CloseSpanName, ActivityKind.Internal, close: to == TcpState.FinWait1 ? "active" : "passive");
        }
        else if (to is TcpState.TimeWait or TcpState.Closed)
        {
            if (_closeSpan is { } close)
            {
                _closeSpan = null;
                Stop(close, to == TcpState.TimeWait || _error is null ? "closed" : Outcome());
            }
            else if (to == TcpState.Closed && _error is not null && from is TcpState.Established or TcpState.FinWait1 or TcpState.FinWait2 or TcpState.CloseWait or TcpState.Closing or TcpState.LastAck)
            {
                // Died while open (reset, timed out, aborted): a span of that moment.
                if (Start(CloseSpanName, ActivityKind.Internal, close: "reset") is { } died)
                {
                    Stop(died, Outcome());
                }
            }
        }
    }

    private string Outcome() => _error switch
    {
        null => "closed",
        SocketException { SocketErrorCode: SocketError.ConnectionRefused } => "refused",
        SocketException { SocketErrorCode: SocketError.ConnectionReset } => "reset",
        SocketException { SocketErrorCode: SocketError.TimedOut } => "timed_out",
        OperationCanceledException => "cancelled",
        _ => "aborted",
    };

    private Activity? Start(string name, ActivityKind kind, string? role = null, string? close = null)
    {
        Activity? span = ActivitySources.Net.StartActivity(name, kind);
        if (span is null)
        {
            return null;
        }

        MessageTracing.Detach(span);
        if (span.IsAllDataRequested)
        {
            span.SetTag("network.transport", "tcp");
            span.SetTag("network.local.address", _stack.AddressText);
            span.SetTag("network.local.port", (int)Key.LocalPort);
            span.SetTag("network.peer.address", Key.RemoteAddress.ToString());
            span.SetTag("network.peer.port", (int)Key.RemotePort);
            if (_stack.Core >= 0)
            {
                span.SetTag(TelemetryTags.Core, _stack.Core);
            }

            if (_stack.Options.Name is { } domain)
            {
                span.SetTag(TelemetryTags.Domain, domain);
            }

            if (role is not null)
            {
                span.SetTag(NetworkStackMetrics.Role, role);
            }

            if (close is not null)
            {
                span.SetTag(CloseTag, close);
            }
        }

        return span;
    }

    private static void Stop(Activity span, string outcome)
    {
        if (span.IsAllDataRequested)
        {
            span.SetTag(TelemetryTags.Outcome, outcome);
            if (outcome is not ("established" or "closed"))
            {
                span.SetStatus(ActivityStatusCode.Error, outcome);
            }
        }

        Activity? current = Activity.Current;
        span.Stop();
        if (!ReferenceEquals(Activity.Current, current))
        {
            Activity.Current = current;
        }
    }
}
