using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Multikernel.CpuDriver.Diagnostics;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.CpuDriver.Channels;

/// <summary>
/// <see cref="ChannelReader{T}"/> over a URPC endpoint for unmanaged values of at most 24 bytes,
/// so domains can <c>await foreach</c> over a cross-core channel. Allocation-free when a message
/// is waiting; a read that must wait uses a pooled state machine. Several readers may wait at
/// once; each gets its own message, and a cancelled read takes none. <see cref="Of"/> returns
/// the endpoint's cached adapter, so asking for a reader per read allocates nothing.
/// </summary>
/// <remarks>
/// Tracing: a value carries no trace context of its own, so the reader remembers it for the
/// handler. From a read until the next one, a send on the same endpoint made outside any span
/// (through <see cref="UrpcChannelWriter{T}"/> or the endpoint) joins the trace of the message
/// just read, as a child of that message's <c>process</c> span. A message outside any sampled
/// trace clears it, so one traced message does not pull later ones into its trace. With nobody
/// listening this costs one <c>HasListeners()</c> check per read.
/// </remarks>
public sealed class UrpcChannelReader<T> : ChannelReader<T> where T : unmanaged
{
    private readonly Endpoint _endpoint;

    /// <summary>Wraps <paramref name="endpoint"/>.</summary>
    public UrpcChannelReader(Endpoint endpoint)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        if (Unsafe.SizeOf<T>() > Message.PayloadSize)
        {
            throw new ArgumentException($"{typeof(T).Name} is {Unsafe.SizeOf<T>()} bytes; URPC channels carry at most {Message.PayloadSize} bytes inline.");
        }

        _endpoint = endpoint;
    }

    /// <summary>The reader of <typeparamref name="T"/> cached on <paramref name="endpoint"/> (made on first use).</summary>
    public static UrpcChannelReader<T> Of(Endpoint endpoint)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        if (endpoint.CachedReader is UrpcChannelReader<T> cached)
        {
            return cached;
        }

        var reader = new UrpcChannelReader<T>(endpoint);
        endpoint.CachedReader = reader;
        return reader;
    }

    /// <inheritdoc />
    public override bool CanCount => true;

    /// <inheritdoc />
    public override int Count => _endpoint.QueuedCount;

    /// <inheritdoc />
    public override Task Completion => _endpoint.Completion;

    /// <inheritdoc />
    public override bool TryRead(out T item)
    {
        if (_endpoint.TryRead(out Message message))
        {
            item = Decode(in message);
            Track(in message);
            return true;
        }

        item = default;
        return false;
    }

    /// <inheritdoc />
    public override ValueTask<bool> WaitToReadAsync(CancellationToken cancellationToken = default) =>
        _endpoint.WaitToReadAsync(cancellationToken);

    /// <inheritdoc />
    public override ValueTask<T> ReadAsync(CancellationToken cancellationToken = default)
    {
        if (TryRead(out T item))
        {
            return new ValueTask<T>(item);
        }

        ValueTask<Message> read = _endpoint.ReadAsync(cancellationToken);
        if (read.IsCompletedSuccessfully)
        {
            Message message = read.Result;
            T value = Decode(in message);
            Track(in message);
            return new ValueTask<T>(value);
        }

        return ReadSlowAsync(read);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<T> ReadSlowAsync(ValueTask<Message> read)
    {
        Message message = await read;
        T value = Decode(in message);
        Track(in message);
        return value;
    }

    // The handler's sends join this message's trace (see the remarks).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Track(in Message message)
    {
#if !MULTIKERNEL_NO_TRACING
        if (ActivitySources.Urpc.HasListeners())
        {
            TrackSlow(in message);
        }
#endif
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void TrackSlow(in Message message) =>
        _endpoint.HandlingContext = MessageTracing.HandlingContext(in message, in _endpoint.LastProcessContext);

    private static T Decode(in Message message)
    {
        if (message.Length != Unsafe.SizeOf<T>())
        {
            throw new InvalidDataException($"A message of {message.Length} payload bytes (type {message.Type}) arrived on a channel of {typeof(T).Name} ({Unsafe.SizeOf<T>()} bytes).");
        }

        return message.GetPayload<T>();
    }
}

/// <summary>
/// <see cref="ChannelWriter{T}"/> over a URPC endpoint. A write that finds the channel window or
/// the ring full stalls the calling domain until room frees; it never buffers. After completion
/// <see cref="TryWrite"/> returns false and <see cref="TryComplete"/> returns true exactly once.
/// </summary>
public sealed class UrpcChannelWriter<T> : ChannelWriter<T> where T : unmanaged
{
    private readonly Endpoint _endpoint;
    private readonly ushort _messageType;

    /// <summary>Wraps <paramref name="endpoint"/>; messages are tagged with <paramref name="messageType"/>.</summary>
    public UrpcChannelWriter(Endpoint endpoint, ushort messageType = 1)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        if (Unsafe.SizeOf<T>() > Message.PayloadSize)
        {
            throw new ArgumentException($"{typeof(T).Name} is {Unsafe.SizeOf<T>()} bytes; URPC channels carry at most {Message.PayloadSize} bytes inline.");
        }

        _endpoint = endpoint;
        _messageType = messageType;
    }

    /// <summary>The writer of <typeparamref name="T"/> with <paramref name="messageType"/> cached on <paramref name="endpoint"/> (made on first use).</summary>
    public static UrpcChannelWriter<T> Of(Endpoint endpoint, ushort messageType = 1)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        if (endpoint.CachedWriter is UrpcChannelWriter<T> cached && cached._messageType == messageType)
        {
            return cached;
        }

        var writer = new UrpcChannelWriter<T>(endpoint, messageType);
        endpoint.CachedWriter = writer;
        return writer;
    }

    /// <inheritdoc />
    public override bool TryWrite(T item)
    {
        Message message = Encode(in item);
        return _endpoint.TryWrite(in message);
    }

    /// <inheritdoc />
    public override ValueTask<bool> WaitToWriteAsync(CancellationToken cancellationToken = default) =>
        _endpoint.WaitToWriteAsync(cancellationToken);

    /// <inheritdoc />
    public override ValueTask WriteAsync(T item, CancellationToken cancellationToken = default)
    {
        Message message = Encode(in item);
        return _endpoint.WriteAsync(in message, cancellationToken);
    }

    /// <summary>
    /// Completes the channel (the reader's <c>Completion</c> faults when <paramref name="error"/>
    /// is given): true the first time, false after. From another thread the completion is posted
    /// to the endpoint's core.
    /// </summary>
    public override bool TryComplete(Exception? error = null)
    {
        if (_endpoint.Kernel.IsCurrentThread)
        {
            return _endpoint.TryComplete(error);
        }

        if (!_endpoint.TryClaimCompletion())
        {
            return false;
        }

        return _endpoint.Kernel.TryPost(static s =>
        {
            var (e, ex) = ((Endpoint, Exception?))s!;
            e.CompleteClaimed(ex);
        }, (_endpoint, error));
    }

    private Message Encode(in T item)
    {
        var message = new Message { Type = _messageType };
        message.SetPayload(in item);
        return message;
    }
}
