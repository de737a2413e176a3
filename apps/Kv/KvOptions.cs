namespace Multikernel.Apps.Kv;

/// <summary>
/// Limits of the key-value server. Every value is checked when it is set, so an invalid
/// configuration stops start-up instead of surfacing as a misbehaving connection.
/// </summary>
public sealed class KvOptions
{
    private int _maxBulkBytes = 1024 * 1024;
    private int _maxArguments = 65536;
    private int _maxQueryBufferBytes = 4 * 1024 * 1024;
    private int _maxPipelineDepth = 1024;
    private int _maxRemoteRepliesInFlight = 16;
    private int _flushThresholdBytes = 64 * 1024;
    private int _maxConnections = 10_000;
    private long _maxKeys = 1_000_000;
    private long _maxMemoryBytes = 256L * 1024 * 1024;
    private int _expireSweepKeys = 20;
    private int _expireSweepEveryOperations = 64;

    /// <summary>Largest bulk string (key or value) a client may send. Default 1 MiB (redis's proto-max-bulk-len is 512 MB).</summary>
    public int MaxBulkBytes
    {
        get => _maxBulkBytes;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 64);
            _maxBulkBytes = value;
        }
    }

    /// <summary>Most arguments in one command (a multibulk count). Default 65536.</summary>
    public int MaxArguments
    {
        get => _maxArguments;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 3);
            _maxArguments = value;
        }
    }

    /// <summary>
    /// Most bytes of one not-yet-complete command a connection buffers; a client that sends more
    /// is disconnected (redis's client-query-buffer-limit). Default 4 MiB; must exceed
    /// <see cref="MaxBulkBytes"/> by at least 64 KiB so the largest legal command fits.
    /// The transport's input pipe must be able to hold this much unconsumed (see <see cref="RequiredInputBufferBytes"/>).
    /// </summary>
    public int MaxQueryBufferBytes
    {
        get => _maxQueryBufferBytes;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 64 * 1024 + 64);
            _maxQueryBufferBytes = value;
        }
    }

    /// <summary>Replies a connection buffers before it flushes (and waits for the peer to take them). Default 1024.</summary>
    public int MaxPipelineDepth
    {
        get => _maxPipelineDepth;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            _maxPipelineDepth = value;
        }
    }

    /// <summary>
    /// Pipelined commands of one connection whose (other cores') shards may still be working while
    /// the connection runs the next ones; one more waits for the oldest reply. 1 = each command
    /// waits for its reply before the next runs. Default 16 (a <c>-P 16</c> batch; the runtime's
    /// <c>ShardedRequestsInFlight</c> budget, 32 per pair of cores, is shared by the connections of a core).
    /// </summary>
    public int MaxRemoteRepliesInFlight
    {
        get => _maxRemoteRepliesInFlight;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(value, 4096);
            _maxRemoteRepliesInFlight = value;
        }
    }

    /// <summary>Unflushed reply bytes after which a connection flushes mid-pipeline. Default 64 KiB.</summary>
    public int FlushThresholdBytes
    {
        get => _flushThresholdBytes;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 512);
            _flushThresholdBytes = value;
        }
    }

    /// <summary>Connections served at once by one <see cref="KvServer"/>; the next gets redis's "max number of clients reached". Default 10000.</summary>
    public int MaxConnections
    {
        get => _maxConnections;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            _maxConnections = value;
        }
    }

    /// <summary>Most keys in the whole store, split evenly among the shards. Default 1,000,000.</summary>
    public long MaxKeys
    {
        get => _maxKeys;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            _maxKeys = value;
        }
    }

    /// <summary>
    /// Most bytes of keys, values and per-entry overhead in the whole store, split evenly among
    /// the shards; a write that would pass its shard's share is refused with redis's OOM error.
    /// Default 256 MiB.
    /// </summary>
    public long MaxMemoryBytes
    {
        get => _maxMemoryBytes;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 4096);
            _maxMemoryBytes = value;
        }
    }

    /// <summary>Keys with a time to live examined per active expiry step (redis samples 20). Default 20.</summary>
    public int ExpireSweepKeys
    {
        get => _expireSweepKeys;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            _expireSweepKeys = value;
        }
    }

    /// <summary>A shard runs one active expiry step after this many write operations. Default 64.</summary>
    public int ExpireSweepEveryOperations
    {
        get => _expireSweepEveryOperations;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            _expireSweepEveryOperations = value;
        }
    }

    /// <summary>The pause threshold the transport's input pipe needs so that the largest legal command fits.</summary>
    public int RequiredInputBufferBytes => MaxQueryBufferBytes + 64 * 1024;

    /// <summary>Checks the relations between options (each is range-checked when set).</summary>
    public void Validate()
    {
        if (MaxQueryBufferBytes < (long)MaxBulkBytes + 64 * 1024)
        {
            throw new ArgumentException(
                $"MaxQueryBufferBytes ({MaxQueryBufferBytes}) must exceed MaxBulkBytes ({MaxBulkBytes}) by at least 64 KiB.");
        }
    }

    /// <summary>The limits one of <paramref name="shardCount"/> shards enforces.</summary>
    public ShardLimits LimitsPerShard(int shardCount)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(shardCount, 1);
        return new ShardLimits(
            Math.Max(1, (MaxKeys + shardCount - 1) / shardCount),
            Math.Max(4096, (MaxMemoryBytes + shardCount - 1) / shardCount),
            ExpireSweepKeys,
            ExpireSweepEveryOperations);
    }
}

/// <summary>What one shard enforces: its share of the store's keys and memory, and its expiry pace.</summary>
public readonly record struct ShardLimits(long MaxKeys, long MaxMemoryBytes, int ExpireSweepKeys, int ExpireSweepEveryOperations);
