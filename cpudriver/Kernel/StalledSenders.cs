using Multikernel.CpuDriver.Channels;

namespace Multikernel.CpuDriver.Kernel;

/// <summary>
/// Endpoints waiting for room in the ring to each core, one FIFO per destination (intrusive
/// through the endpoints, so stalling allocates nothing). A send to a core with waiters queues
/// behind them, which keeps every channel's messages in order and the ring fair between channels.
/// Core thread only.
/// </summary>
internal sealed class StalledSenders
{
    private readonly Endpoint?[] _head;
    private readonly Endpoint?[] _tail;
    private int _cores;

    public StalledSenders(int cores)
    {
        _head = new Endpoint?[cores];
        _tail = new Endpoint?[cores];
    }

    /// <summary>Destinations with at least one waiter.</summary>
    public int StalledCores => _cores;

    public bool HasWaiters(int core) => _head[core] is not null;

    public Endpoint? Head(int core) => _head[core];

    public void Enqueue(Endpoint endpoint)
    {
        if (endpoint.InStalledList)
        {
            return;
        }

        int core = endpoint.RemoteCore;
        endpoint.InStalledList = true;
        endpoint.NextStalled = null;
        if (_tail[core] is { } tail)
        {
            tail.NextStalled = endpoint;
        }
        else
        {
            _head[core] = endpoint;
            _cores++;
        }

        _tail[core] = endpoint;
    }

    /// <summary>Removes the head waiter of <paramref name="core"/>.</summary>
    public void PopHead(int core)
    {
        Endpoint endpoint = _head[core]!;
        Endpoint? next = endpoint.NextStalled;
        endpoint.NextStalled = null;
        endpoint.InStalledList = false;
        _head[core] = next;
        if (next is null)
        {
            _tail[core] = null;
            _cores--;
        }
    }
}
