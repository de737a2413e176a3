using Microsoft.Extensions.Logging;
using Multikernel.Monitor;
using Multikernel.Monitor.Hosting;

namespace Multikernel.Apps.Kv.Store;

/// <summary>
/// The key-value store sharded the multikernel way: one <see cref="KvShard"/> per core of the
/// machine, each made on its core inside the store's domain there and touched only there
/// (<see cref="MultikernelRuntime.StartShardedAsync{TService}"/>). Every kv server on every core
/// reaches all of them through <see cref="InvokerFor"/>; a key's owner core answers, the others
/// forward over the rings. Start it once per machine; every kv application shares it.
/// </summary>
/// <remarks>
/// Expiry runs on the owner's core and clock: each shard reads its own core's
/// <see cref="TimeProvider"/> for lazy expiry and relative deadlines (EX/PX/EXPIRE are resolved
/// by the owner, not the connection), and sweeps its expired keys on a timer of its own core
/// every <see cref="SweepInterval"/> — no connection or other core is involved.
/// </remarks>
public sealed class KvStore
{
    /// <summary>How often each shard runs one bounded active-expiry step on its core.</summary>
    public static readonly TimeSpan SweepInterval = TimeSpan.FromMilliseconds(100);

    private KvStore(Sharded<KvShard> shards, KvOptions options)
    {
        Shards = shards;
        Options = options;
    }

    /// <summary>The per-core shards.</summary>
    public Sharded<KvShard> Shards { get; }

    /// <summary>The store's limits (each shard enforces its share).</summary>
    public KvOptions Options { get; }

    /// <summary>
    /// Starts one shard on every core of <paramref name="runtime"/> in a domain named
    /// <paramref name="name"/>. <paramref name="clock"/> picks each shard's clock (default: its
    /// core's, <see cref="DomainContext.Time"/>; tests give cores clocks of their own).
    /// </summary>
    public static async Task<KvStore> StartAsync(MultikernelRuntime runtime, KvOptions options, string name = "kv-store", Func<DomainContext, TimeProvider>? clock = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(runtime);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (runtime.Cores > 64)
        {
            throw new ArgumentException($"The kv store tracks shards in 64-bit masks; the machine has {runtime.Cores} cores.", nameof(runtime));
        }

        ShardLimits limits = options.LimitsPerShard(runtime.Cores);
        int sweepKeys = options.ExpireSweepKeys;
        Sharded<KvShard> shards = await runtime.StartShardedAsync(name, ctx =>
        {
            var shard = new KvShard(ctx.Core, limits, clock?.Invoke(ctx) ?? ctx.Time);
            _ = SweepAsync(ctx, shard, sweepKeys);
            return shard;
        }, cancellationToken);
        return new KvStore(shards, options);
    }

    /// <summary>The router's invoker for code on core <paramref name="core"/> (use it only there).</summary>
    public IShardInvoker InvokerFor(int core) => new ShardedShardInvoker(Shards, core);

    /// <summary>A kv server for connections served in <paramref name="ctx"/>'s domain (one per accepting core).</summary>
    public KvServer CreateServer(DomainContext ctx, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        return new KvServer(InvokerFor(ctx.Core), Options, ctx.Time, logger);
    }

    // On the shard's core, on its timers, until the store's domain there stops.
    private static async Task SweepAsync(DomainContext ctx, KvShard shard, int keys)
    {
        try
        {
            while (true)
            {
                await ctx.Delay(SweepInterval, ctx.Stopping);
                shard.SweepExpired(keys);
            }
        }
        catch (OperationCanceledException) when (ctx.Stopping.IsCancellationRequested)
        {
            // The machine (or the store's domain on this core) is stopping.
        }
    }
}
