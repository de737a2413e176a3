using System.Buffers;
using System.IO.Pipelines;
using System.Runtime.CompilerServices;

namespace Multikernel.Apps.Kv.Server;

/// <summary>
/// A connection's replies in command order while other cores' shards answer out of it. A
/// pipelined command whose shard is on another core is not awaited before the next command runs:
/// its pending reply is queued here, and everything written after it (local replies, errors)
/// goes to a staging buffer until it has been written. So a <c>-P 16</c> batch whose keys live on
/// two cores costs one round trip to the other core, not one per command.
/// </summary>
/// <remarks>
/// Order per key is kept without waiting: commands for one shard leave on one ordered lane, and
/// the local shard never has a pending command (it runs inline). At most
/// <see cref="KvOptions.MaxRemoteRepliesInFlight"/> replies wait; one more waits for the oldest.
/// Writes go through <see cref="IBufferWriter{T}"/>: straight to the transport when nothing is
/// pending, else to the staging buffer.
/// </remarks>
internal sealed class OrderedReplies : IBufferWriter<byte>
{
    private readonly PipeWriter _pipe;
    private readonly ArrayBufferWriter<byte> _staged = new(4096);
    private readonly Pending[] _ring;
    private readonly Action<ShardReply, int> _write;
    private readonly Action<object> _release;
    private int _head;
    private int _queued;
    private int _count;
    private int _copied;
    private bool _writingHead;

    /// <summary>
    /// Replies to <paramref name="pipe"/>; <paramref name="write"/> serializes one (it writes to
    /// this writer); <paramref name="release"/> gets back what <see cref="Attach"/> gave a reply
    /// once that reply is written.
    /// </summary>
    public OrderedReplies(PipeWriter pipe, int capacity, Action<ShardReply, int> write, Action<object> release)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _pipe = pipe;
        _ring = new Pending[capacity];
        _write = write;
        _release = release;
    }

    /// <summary>Replies queued since the last call (the loop asks after each command whether it left one waiting).</summary>
    public int TakeQueuedCount()
    {
        int n = _queued;
        _queued = 0;
        return n;
    }

    /// <summary>
    /// Hands <paramref name="owner"/> (the command's argument buffer, which the other core's shard
    /// still reads) to the reply queued last; it comes back through the release callback once
    /// that reply — and so every one before it — is written.
    /// </summary>
    public void Attach(object owner)
    {
        int last = (_head + _count - 1) % _ring.Length;
        _ring[last] = _ring[last] with { Owner = owner };
    }

    /// <summary>No reply is waiting: writes go straight to the transport.</summary>
    public bool IsEmpty => _count == 0;

    /// <summary>Replies waiting now.</summary>
    public int PendingCount => _count;

    /// <summary>The most replies that waited at once (how much the pipeline overlapped).</summary>
    public int PeakPending { get; private set; }

    private IBufferWriter<byte> Target => _count == 0 || _writingHead ? _pipe : _staged;

    public void Advance(int count) => Target.Advance(count);

    public Memory<byte> GetMemory(int sizeHint = 0) => Target.GetMemory(sizeHint);

    public Span<byte> GetSpan(int sizeHint = 0) => Target.GetSpan(sizeHint);

    /// <summary>
    /// The reply of the command just run: written now when it is complete and nothing waits
    /// before it, else queued behind the others. Completes at once unless the queue is full.
    /// </summary>
    public ValueTask Add(ValueTask<ShardReply> reply, int kind)
    {
        if (reply.IsCompletedSuccessfully)
        {
            _write(reply.Result, kind); // to the transport, or staged behind what waits
            return default;
        }

        if (_count == _ring.Length)
        {
            return AddWhenRoomAsync(reply, kind);
        }

        Enqueue(reply, kind);
        return default;
    }

    /// <summary>Every slot for a waiting reply is taken: the next command should wait for the oldest first (<see cref="MakeRoomAsync"/>).</summary>
    public bool IsFull => _count == _ring.Length;

    /// <summary>Writes the oldest waiting reply (and what was staged before it).</summary>
    public ValueTask MakeRoomAsync() => _count == 0 ? default : WriteOldestAsync();

    /// <summary>Writes every waiting reply, in order, with what was staged between them.</summary>
    public ValueTask DrainAsync() => _count == 0 ? default : DrainAllAsync();

    /// <summary>
    /// The connection ends: waits for every reply still pending (their shards read the commands'
    /// buffers until they answer), writes none of them, and forgets them. Never throws.
    /// </summary>
    public async ValueTask AbandonAsync()
    {
        while (_count > 0)
        {
            Pending oldest = _ring[_head];
            _ring[_head] = default;
            _head = (_head + 1) % _ring.Length;
            _count--;
            try
            {
                await oldest.Reply;
            }
#pragma warning disable CA1031 // a failed shard call of a closing connection has nobody left to tell
            catch (Exception)
#pragma warning restore CA1031
            {
            }
        }

        _staged.ResetWrittenCount();
        _copied = 0;
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask AddWhenRoomAsync(ValueTask<ShardReply> reply, int kind)
    {
        await WriteOldestAsync();
        Enqueue(reply, kind);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask DrainAllAsync()
    {
        while (_count > 0)
        {
            await WriteOldestAsync();
        }
    }

    private void Enqueue(ValueTask<ShardReply> reply, int kind)
    {
        _ring[(_head + _count) % _ring.Length] = new Pending(reply, kind, _staged.WrittenCount, null);
        _count++;
        _queued++;
        PeakPending = Math.Max(PeakPending, _count);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask WriteOldestAsync()
    {
        Pending oldest = _ring[_head];
        CopyStaged(oldest.StagedBefore); // what the commands before it wrote goes first
        ShardReply reply = await oldest.Reply;
        _ring[_head] = default;
        _head = (_head + 1) % _ring.Length;
        _count--;
        _writingHead = true;
        try
        {
            _write(reply, oldest.Kind);
        }
        finally
        {
            _writingHead = false;
        }

        if (oldest.Owner is { } owner)
        {
            _release(owner);
        }

        if (_count == 0)
        {
            CopyStaged(_staged.WrittenCount);
            _staged.ResetWrittenCount();
            _copied = 0;
        }
    }

    private void CopyStaged(int upTo)
    {
        if (upTo > _copied)
        {
            _pipe.Write(_staged.WrittenSpan[_copied..upTo]);
            _copied = upTo;
        }
    }

    private readonly record struct Pending(ValueTask<ShardReply> Reply, int Kind, int StagedBefore, object? Owner);
}
