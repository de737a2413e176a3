using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.Monitor.Protocol;

/// <summary>What a monitor message is to the link that carries it (it decides what a full outbox does).</summary>
internal enum LinkTraffic
{
    /// <summary>A request this monitor starts: refused when the outbox is full, so its caller fails at once with <see cref="MonitorStatus.Overloaded"/>.</summary>
    Request,

    /// <summary>A reply or a protocol notice someone depends on: never refused while within the reserve.</summary>
    Reply,
}

/// <summary>
/// A monitor's link to one peer monitor. Monitor handlers never wait on a send (two monitors
/// waiting on each other's full windows would deadlock), so sends that find the window full go
/// to a bounded outbox drained by a pump.
/// </summary>
/// <remarks>
/// <para>Limits, each with a designed behaviour: requests this monitor starts may fill the outbox
/// up to <c>capacity</c>; past it <see cref="TrySend"/> refuses them and the request fails with a
/// clear error at once (nothing is queued, nobody waits for a reply that cannot come). Replies and
/// protocol notices have a further reserve of <c>replyReserve</c> messages (the peer's bound on
/// requests it may have in flight here), so a reply somebody awaits is never dropped because
/// this side started too many requests. Past the reserve the send is refused and reported.</para>
/// <para>A pump whose write fails (the peer's end was closed) clears the outbox, records the
/// fault and ends with <c>_pumping</c> cleared; later sends are refused with that fault.</para>
/// </remarks>
internal sealed class MonitorLink
{
    private readonly Endpoint _endpoint;
    private readonly Queue<Message> _outbox = new();
    private readonly int _capacity;
    private readonly int _replyReserve;
    private bool _pumping;

    public MonitorLink(Endpoint endpoint, int capacity, int replyReserve)
    {
        _endpoint = endpoint;
        _capacity = capacity;
        _replyReserve = replyReserve;
    }

    public Endpoint Endpoint => _endpoint;

    /// <summary>Messages waiting in the outbox.</summary>
    public int Backlog => _outbox.Count;

    /// <summary>True while a pump drains the outbox.</summary>
    public bool IsPumping => _pumping;

    /// <summary>Why the link stopped carrying messages (the pump's write failed), or null.</summary>
    public Exception? Fault { get; private set; }

    /// <summary>
    /// Sends or queues <paramref name="message"/>. False when the link refuses it: faulted, or the
    /// outbox is at its limit for this kind of traffic (see the remarks on the class).
    /// </summary>
    public bool TrySend(in Message message, LinkTraffic traffic)
    {
        if (Fault is not null)
        {
            return false;
        }

        if (!_pumping && _endpoint.TryWrite(in message))
        {
            return true;
        }

        int limit = traffic == LinkTraffic.Request ? _capacity : _capacity + _replyReserve;
        if (_outbox.Count >= limit)
        {
            return false;
        }

        _outbox.Enqueue(message);
        if (!_pumping)
        {
            _pumping = true;
            _ = PumpAsync();
        }

        return true;
    }

    /// <summary>Describes why <see cref="TrySend"/> refused, for the error a caller sees.</summary>
    public string RefusalReason() => Fault is { } fault
        ? $"the monitor link {_endpoint.Name} failed ({fault.Message})"
        : $"the monitor link {_endpoint.Name} has {_outbox.Count} unsent messages (MonitorOutbox = {_capacity}); the peer core is not draining";

    private async Task PumpAsync()
    {
        try
        {
            while (_outbox.TryPeek(out Message message))
            {
                await _endpoint.WriteAsync(in message);
                _outbox.Dequeue();
            }
        }
#pragma warning disable CA1031 // the fault is recorded and every later send refused with it
        catch (Exception ex)
#pragma warning restore CA1031
        {
            Fault = ex;
            _outbox.Clear();
        }
        finally
        {
            _pumping = false;
        }
    }
}
