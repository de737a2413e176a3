using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Domains;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.Monitor;

/// <summary>
/// One domain's end of a bound channel: raw URPC messages through <see cref="Endpoint"/>, typed
/// <see cref="System.Threading.Channels.ChannelReader{T}"/>/<see cref="System.Threading.Channels.ChannelWriter{T}"/>
/// adapters, and capabilities passed to the domain at the other end.
/// </summary>
public sealed partial class DomainChannel
{
    private readonly Domain _domain;

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

    /// <summary>A typed reader over the channel.</summary>
    public UrpcChannelReader<T> Reader<T>() where T : unmanaged => new(Endpoint);

    /// <summary>A typed writer over the channel.</summary>
    public UrpcChannelWriter<T> Writer<T>(ushort messageType = 1) where T : unmanaged => new(Endpoint, messageType);

    /// <inheritdoc />
    public override string ToString() => $"{Service}: {Endpoint}";
}
