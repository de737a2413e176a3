using System.Diagnostics.CodeAnalysis;

namespace Multikernel.Apps.Kv.Store;

/// <summary>
/// How the command router reaches a shard: the seam where the runtime's per-core
/// <c>sharded&lt;KvShard&gt;</c> plugs in. Shard <c>i</c> lives on one core and is only ever touched
/// there; <see cref="InvokeOnAsync{TState, TResult}"/> runs an operation on the owner's core and
/// returns its result to the caller's core (over the rings, in the runtime:
/// <see cref="ShardedShardInvoker"/>).
/// </summary>
/// <remarks>
/// The operation reads argument bytes that belong to the calling connection (slices of its
/// <see cref="Resp.RespCommand"/>); the connection does nothing else until the result is back,
/// and the invoker's completion must order the owner's reads before the caller's next write
/// (a ring hand-off or a task completion does).
/// </remarks>
public interface IShardInvoker
{
    /// <summary>Number of shards (cores that own one).</summary>
    int ShardCount { get; }

    /// <summary>
    /// The shard if the calling thread owns it, so the router can run the operation inline
    /// without a closure or a message; false when it belongs to another core.
    /// </summary>
    bool TryGetLocal(int shard, [NotNullWhen(true)] out KvShard? local);

    /// <summary>
    /// Runs <paramref name="operation"/> with <paramref name="state"/> on the core that owns
    /// <paramref name="shard"/>. The state travels as a value beside the delegate, so a static
    /// lambda costs no closure per call.
    /// </summary>
    ValueTask<TResult> InvokeOnAsync<TState, TResult>(int shard, TState state, Func<KvShard, TState, TResult> operation);
}

/// <summary>
/// All shards owned by the calling thread: every operation runs inline. For a single-core
/// deployment and for tests; callers must not use it from two threads at once.
/// </summary>
public sealed class InlineShardInvoker : IShardInvoker
{
    private readonly KvShard[] _shards;

    /// <summary>Creates <paramref name="shardCount"/> shards with <paramref name="options"/>' limits.</summary>
    public InlineShardInvoker(int shardCount, KvOptions options, TimeProvider time)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(shardCount, 1);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(time);
        ShardLimits limits = options.LimitsPerShard(shardCount);
        _shards = new KvShard[shardCount];
        for (int i = 0; i < shardCount; i++)
        {
            _shards[i] = new KvShard(i, limits, time);
        }
    }

    /// <inheritdoc/>
    public int ShardCount => _shards.Length;

    /// <summary>Shard <paramref name="index"/>, for inspection.</summary>
    public KvShard this[int index] => _shards[index];

    /// <inheritdoc/>
    public bool TryGetLocal(int shard, [NotNullWhen(true)] out KvShard? local)
    {
        local = _shards[shard];
        return true;
    }

    /// <inheritdoc/>
    public ValueTask<TResult> InvokeOnAsync<TState, TResult>(int shard, TState state, Func<KvShard, TState, TResult> operation)
    {
        ArgumentNullException.ThrowIfNull(operation);
        return new ValueTask<TResult>(operation(_shards[shard], state));
    }
}
