using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.Monitor;

/// <summary>
/// One domain's end of a bound channel: raw URPC messages through <see cref="Endpoint"/>, or
/// typed <see cref="System.Threading.Channels.ChannelReader{T}"/>/<see cref="System.Threading.Channels.ChannelWriter{T}"/> adapters.
/// </summary>
public sealed class DomainChannel
{
    internal DomainChannel(Endpoint endpoint, string service)
    {
        Endpoint = endpoint;
        Service = service;
    }

    /// <summary>The endpoint (send/receive <see cref="Message"/>s directly, allocation-free).</summary>
    public Endpoint Endpoint { get; }

    /// <summary>The service this channel was bound to.</summary>
    public string Service { get; }

    /// <summary>The core of the other end.</summary>
    public int RemoteCore => Endpoint.RemoteCore;

    /// <summary>A typed reader over the channel.</summary>
    public UrpcChannelReader<T> Reader<T>() where T : unmanaged => new(Endpoint);

    /// <summary>A typed writer over the channel.</summary>
    public UrpcChannelWriter<T> Writer<T>(ushort messageType = 1) where T : unmanaged => new(Endpoint, messageType);

    /// <inheritdoc />
    public override string ToString() => $"{Service}: {Endpoint}";
}
