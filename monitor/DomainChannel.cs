using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Domains;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.Monitor;

/// <summary>
/// One domain's end of a bound channel: raw URPC messages through <see cref="Endpoint"/>, typed
/// <see cref="System.Threading.Channels.ChannelReader{T}"/>/<see cref="System.Threading.Channels.ChannelWriter{T}"/>
/// adapters, and capabilities passed to the domain at the other end.
/// </summary>
/// <remarks>
/// Disposing closes this end: the other end's writers fail and its readers see the end of the
/// stream after what was already sent. A domain's channels are also closed when it ends.
/// </remarks>
public sealed partial class DomainChannel : IAsyncDisposable
{
    private readonly Domain _domain;
    private object? _typed; // the last typed view handed out (DomainChannel<T>), reused while T and the message type stay

    internal DomainChannel(Endpoint endpoint, string service, Domain domain, int remoteDomain)
    {
        Endpoint = endpoint;
        Service = service;
        _domain = domain;
        RemoteDomain = remoteDomain;
    }

    /// <summary>The endpoint (send/receive <see cref="Message"/>s directly, allocation-free).</summary>
    public Endpoint Endpoint { get; }

    /// <summary>The service this channel was bound to.</summary>
    public string Service { get; }

    /// <summary>The core of the other end.</summary>
    public int RemoteCore => Endpoint.RemoteCore;

    /// <summary>The capability domain id of the other end on its core (-1 when it has none).</summary>
    public int RemoteDomain { get; }

    /// <summary>A typed reader over the channel (the cached one of <see cref="As{T}"/>: no allocation after the first call).</summary>
    public UrpcChannelReader<T> Reader<T>() where T : unmanaged => As<T>().Reader;

    /// <summary>A typed writer over the channel (cached as <see cref="Reader{T}"/>).</summary>
    public UrpcChannelWriter<T> Writer<T>(ushort messageType = 1) where T : unmanaged => As<T>(messageType).Writer;

    /// <summary>
    /// The channel as a typed channel of <typeparamref name="T"/>: its reader and writer are built
    /// once and reused, so a loop that asks for them per message allocates nothing.
    /// </summary>
    public DomainChannel<T> As<T>(ushort messageType = 1) where T : unmanaged
    {
        if (_typed is DomainChannel<T> typed && typed.MessageType == messageType)
        {
            return typed;
        }

        typed = new DomainChannel<T>(this, messageType);
        _typed = typed;
        return typed;
    }

    /// <summary>True once this end was closed (disposed, or its domain ended).</summary>
    public bool IsClosed { get; private set; }

    /// <summary>Closes this end (its core's thread only); the other end sees the channel end. Idempotent.</summary>
    public ValueTask DisposeAsync()
    {
        if (!IsClosed)
        {
            IsClosed = true;
            Endpoint.Close();
        }

        return default;
    }

    /// <inheritdoc />
    public override string ToString() => $"{Service}: {Endpoint}";
}
