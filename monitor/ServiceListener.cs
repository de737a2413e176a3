using System.Threading.Channels;
using Multikernel.CpuDriver.Channels;
using Multikernel.Monitor.Protocol;

namespace Multikernel.Monitor;

/// <summary>An exported service name: binds from other domains arrive here as channels.</summary>
/// <remarks>
/// At most <see cref="Backlog"/> bound channels wait to be accepted; a bind past it is refused
/// (<see cref="MonitorStatus.Refused"/>). Disposing withdraws the name and closes every channel
/// still waiting, so their clients see the channel end instead of writing into a void.
/// </remarks>
public sealed class ServiceListener : IDisposable, IAsyncDisposable
{
    private readonly Channel<DomainChannel> _accepted;
    private readonly CoreMonitor _monitor;
    private bool _disposed;

    internal ServiceListener(CoreMonitor monitor, string name, CpuDriver.Domains.Domain domain, int backlog)
    {
        _monitor = monitor;
        Name = name;
        Domain = domain;
        Backlog = backlog;
        _accepted = Channel.CreateBounded<DomainChannel>(new BoundedChannelOptions(backlog)
        {
            SingleReader = true,
            SingleWriter = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
    }

    /// <summary>The service name.</summary>
    public string Name { get; }

    /// <summary>How many bound channels may wait to be accepted before binds are refused.</summary>
    public int Backlog { get; }

    internal CpuDriver.Domains.Domain Domain { get; }

    /// <summary>Waits for the next client that binds to this service.</summary>
    public ValueTask<DomainChannel> AcceptAsync(CancellationToken cancellationToken = default) =>
        _accepted.Reader.ReadAsync(cancellationToken);

    /// <summary>Waits for the next client and returns its channel typed as <typeparamref name="T"/>.</summary>
    public async ValueTask<DomainChannel<T>> AcceptAsync<T>(CancellationToken cancellationToken = default) where T : unmanaged =>
        (await _accepted.Reader.ReadAsync(cancellationToken)).As<T>();

    /// <summary>Accepted channels as an async stream.</summary>
    public IAsyncEnumerable<DomainChannel> AcceptAllAsync(CancellationToken cancellationToken = default) =>
        _accepted.Reader.ReadAllAsync(cancellationToken);

    internal bool TryEnqueue(Endpoint endpoint, int clientDomain) => !_disposed && _accepted.Writer.TryWrite(new DomainChannel(endpoint, Name, Domain, clientDomain));

    /// <summary>Withdraws the name from the name service.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _accepted.Writer.TryComplete();
        _monitor.Unexport(this);
        while (_accepted.Reader.TryRead(out DomainChannel? queued))
        {
            _ = queued.DisposeAsync(); // completes synchronously: closes the endpoint on this core
        }
    }

    /// <summary>As <see cref="Dispose"/>.</summary>
    public ValueTask DisposeAsync()
    {
        Dispose();
        return default;
    }
}
