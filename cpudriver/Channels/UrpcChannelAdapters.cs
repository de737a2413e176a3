using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.CpuDriver.Channels;

/// <summary>
/// <see cref="ChannelReader{T}"/> over a URPC endpoint for unmanaged values of at most 24 bytes,
/// so domains can <c>await foreach</c> over a cross-core channel. Allocation-free when a message
/// is waiting; a read that must wait uses a pooled state machine.
/// </summary>
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

    /// <inheritdoc />
    public override bool CanCount => true;

    /// <inheritdoc />
    public override int Count => _endpoint.QueuedCount;

    /// <inheritdoc />
    public override bool TryRead(out T item)
    {
        if (_endpoint.TryRead(out Message message))
        {
            item = Decode(in message);
            return true;
        }

        item = default;
        return false;
    }

    /// <inheritdoc />
    public override ValueTask<bool> WaitToReadAsync(CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        ValueTask<bool> wait = _endpoint.WaitToReadAsync();
        return wait.IsCompleted || !cancellationToken.CanBeCanceled ? wait : WithCancellation(wait, cancellationToken);
    }

    /// <inheritdoc />
    public override ValueTask<T> ReadAsync(CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (TryRead(out T item))
        {
            return new ValueTask<T>(item);
        }

        return ReadSlowAsync(cancellationToken);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<T> ReadSlowAsync(CancellationToken cancellationToken)
    {
        using CancellationTokenRegistration registration = Register(cancellationToken);
        Message message = await _endpoint.ReadAsync();
        return Decode(in message);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<bool> WithCancellation(ValueTask<bool> wait, CancellationToken cancellationToken)
    {
        using CancellationTokenRegistration registration = Register(cancellationToken);
        return await wait;
    }

    private CancellationTokenRegistration Register(CancellationToken cancellationToken) =>
        !cancellationToken.CanBeCanceled ? default : cancellationToken.UnsafeRegister(static (s, ct) =>
        {
            var endpoint = (Endpoint)s!;
            endpoint.Kernel.Post(static x =>
            {
                var (e, token) = ((Endpoint, CancellationToken))x!;
                e.CancelReaders(new OperationCanceledException(token));
            }, (endpoint, ct));
        }, _endpoint);

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
/// the ring full stalls the calling domain until room frees; it never buffers.
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

    /// <inheritdoc />
    public override bool TryWrite(T item)
    {
        Message message = Encode(in item);
        return _endpoint.TryWrite(in message);
    }

    /// <inheritdoc />
    public override ValueTask<bool> WaitToWriteAsync(CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        ValueTask<bool> wait = _endpoint.WaitToWriteAsync();
        return wait.IsCompleted || !cancellationToken.CanBeCanceled ? wait : WithCancellation(wait, cancellationToken);
    }

    /// <inheritdoc />
    public override ValueTask WriteAsync(T item, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        Message message = Encode(in item);
        ValueTask write = _endpoint.WriteAsync(in message);
        return write.IsCompleted || !cancellationToken.CanBeCanceled ? write : WriteSlowAsync(write, cancellationToken);
    }

    /// <inheritdoc />
    public override bool TryComplete(Exception? error = null)
    {
        if (_endpoint.Kernel.IsCurrentThread)
        {
            _endpoint.Complete();
            return true;
        }

        return false;
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask WriteSlowAsync(ValueTask write, CancellationToken cancellationToken)
    {
        using CancellationTokenRegistration registration = Register(cancellationToken);
        await write;
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<bool> WithCancellation(ValueTask<bool> wait, CancellationToken cancellationToken)
    {
        using CancellationTokenRegistration registration = Register(cancellationToken);
        return await wait;
    }

    private CancellationTokenRegistration Register(CancellationToken cancellationToken) =>
        cancellationToken.UnsafeRegister(static (s, ct) =>
        {
            var endpoint = (Endpoint)s!;
            endpoint.Kernel.Post(static x =>
            {
                var (e, token) = ((Endpoint, CancellationToken))x!;
                e.CancelWriters(new OperationCanceledException(token));
            }, (endpoint, ct));
        }, _endpoint);

    private Message Encode(in T item)
    {
        var message = new Message { Type = _messageType };
        message.SetPayload(in item);
        return message;
    }
}
