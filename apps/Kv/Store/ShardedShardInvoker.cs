using System.Diagnostics.CodeAnalysis;
using Multikernel.Monitor;

namespace Multikernel.Apps.Kv.Store;

/// <summary>
/// The key-value router's view of the runtime's per-core <see cref="Sharded{TService}"/> of
/// <see cref="KvShard"/>s, for code running on one core (a kv application's domain): that core's
/// shard is run inline, every other shard through <see cref="Sharded{TService}.InvokeOnAsync{TArg, TResult}(int, TArg, Func{TService, TArg, ValueTask{TResult}})"/>
/// over the URPC rings — a slot of the calling core's budget, one message each way, no lock.
/// </summary>
/// <remarks>
/// One instance per calling core (<see cref="KvStore.InvokerFor"/>): it answers
/// <see cref="TryGetLocal"/> for its own core only, and checks that it is really called there
/// (<see cref="Sharded{TService}.Local"/> is the calling thread's core's instance; an invoker
/// carried to another core or to a host thread throws instead of touching a shard it does not own).
/// The operation and its state travel as one struct argument beside a static lambda, so a
/// remote call allocates nothing per call (the runtime reuses its call records).
/// </remarks>
public sealed class ShardedShardInvoker : IShardInvoker
{
    private readonly Sharded<KvShard> _shards;
    private readonly int _core;

    /// <summary>An invoker for code on core <paramref name="core"/> over <paramref name="shards"/>.</summary>
    public ShardedShardInvoker(Sharded<KvShard> shards, int core)
    {
        ArgumentNullException.ThrowIfNull(shards);
        if ((uint)core >= (uint)shards.Cores)
        {
            throw new ArgumentOutOfRangeException(nameof(core), core, $"{shards.Name} has {shards.Cores} shards (0..{shards.Cores - 1}).");
        }

        _shards = shards;
        _core = core;
    }

    /// <summary>The core this invoker serves.</summary>
    public int Core => _core;

    /// <inheritdoc/>
    public int ShardCount => _shards.Cores;

    /// <inheritdoc/>
    public bool TryGetLocal(int shard, [NotNullWhen(true)] out KvShard? local)
    {
        if (shard != _core)
        {
            local = null;
            return false;
        }

        // Local throws on a host thread and after the shard stopped; on another core it is that
        // core's shard, which this invoker must not hand out as shard `shard`.
        local = _shards.Local;
        if (local.Index != shard)
        {
            throw new InvalidOperationException($"The kv invoker of core {_core} was called on the core of shard {local.Index}; make one per core (KvStore.InvokerFor).");
        }

        return true;
    }

    /// <inheritdoc/>
    public ValueTask<TResult> InvokeOnAsync<TState, TResult>(int shard, TState state, Func<KvShard, TState, TResult> operation)
    {
        ArgumentNullException.ThrowIfNull(operation);
        return _shards.InvokeOnAsync(shard, new Work<TState, TResult>(operation, state), static (s, w) => new ValueTask<TResult>(w.Operation(s, w.State)));
    }

    private readonly record struct Work<TState, TResult>(Func<KvShard, TState, TResult> Operation, TState State);
}
