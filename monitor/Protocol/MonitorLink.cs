using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.Monitor.Protocol;

/// <summary>
/// A monitor's link to one peer monitor. Monitor handlers never wait on a send (two monitors
/// waiting on each other's full windows would deadlock), so sends that find the window full go
/// to a bounded outbox drained by a pump; a full outbox is an error, not growth.
/// </summary>
internal sealed class MonitorLink
{
    private readonly Endpoint _endpoint;
    private readonly Queue<Message> _outbox = new();
    private readonly int _capacity;
    private bool _pumping;

    public MonitorLink(Endpoint endpoint, int capacity)
    {
        _endpoint = endpoint;
        _capacity = capacity;
    }

    public Endpoint Endpoint => _endpoint;

    public int Backlog => _outbox.Count;

    public void Send(in Message message)
    {
        if (!_pumping && _endpoint.TryWrite(in message))
        {
            return;
        }

        if (_outbox.Count >= _capacity)
        {
            throw new InvalidOperationException($"The monitor link {_endpoint.Name} has {_outbox.Count} unsent messages (MonitorOutbox = {_capacity}); the peer core is not draining.");
        }

        _outbox.Enqueue(message);
        if (!_pumping)
        {
            _pumping = true;
            _ = PumpAsync();
        }
    }

    private async Task PumpAsync()
    {
        while (_outbox.TryDequeue(out Message message))
        {
            await _endpoint.WriteAsync(in message);
        }

        _pumping = false;
    }
}
