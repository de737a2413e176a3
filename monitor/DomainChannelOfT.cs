using Multikernel.CpuDriver.Channels;

namespace Multikernel.Monitor;

/// <summary>
/// A bound channel carrying values of <typeparamref name="T"/> (unmanaged, at most 24 bytes)
/// both ways: <see cref="Reader"/> and <see cref="Writer"/> are the familiar
/// <see cref="System.Threading.Channels"/> shapes over the URPC endpoint, built once.
/// </summary>
/// <remarks>
/// Tracing: a value written through <see cref="Writer"/> while the domain handles a value read
/// from <see cref="Reader"/> (after the read, before the next one) and outside any span of its
/// own joins the trace of the message it read, as a child of that message's <c>process</c> span.
/// </remarks>
/// <typeparam name="T">The value type.</typeparam>
public sealed class DomainChannel<T> : IAsyncDisposable where T : unmanaged
{
    internal DomainChannel(DomainChannel channel, ushort messageType)
    {
        Channel = channel;
        MessageType = messageType;
        Reader = new UrpcChannelReader<T>(channel.Endpoint);
        Writer = new UrpcChannelWriter<T>(channel.Endpoint, messageType);
    }

    /// <summary>The untyped channel (raw messages, capability transfer).</summary>
    public DomainChannel Channel { get; }

    /// <summary>The message type the writer tags values with.</summary>
    public ushort MessageType { get; }

    /// <summary>Reads values sent by the other end (<c>await foreach</c> over <c>ReadAllAsync</c>).</summary>
    public UrpcChannelReader<T> Reader { get; }

    /// <summary>Writes values to the other end; a full channel stalls the writer, never buffers.</summary>
    public UrpcChannelWriter<T> Writer { get; }

    /// <summary>The service this channel was bound to.</summary>
    public string Service => Channel.Service;

    /// <summary>The core of the other end.</summary>
    public int RemoteCore => Channel.RemoteCore;

    /// <summary>Closes this end (see <see cref="DomainChannel.DisposeAsync"/>).</summary>
    public ValueTask DisposeAsync() => Channel.DisposeAsync();

    /// <inheritdoc />
    public override string ToString() => Channel.ToString();
}
