using System.IO.Pipelines;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Multikernel.Apps.Kv.Resp;
using Multikernel.Apps.Kv.Server;
using Multikernel.Apps.Kv.Store;

namespace Multikernel.Apps.Kv;

/// <summary>
/// The RESP2 key-value server engine: serves connections handed to it as duplex pipes, so it
/// runs over any transport (in-memory pipes, loopback sockets, the library-OS TCP stack). Keys
/// live in the shards behind an <see cref="IShardInvoker"/>; a connection on any core reaches
/// every key, forwarding to the owning shard when the key is not local.
/// </summary>
/// <remarks>
/// Create one server per accepting core: its counters are updated with interlocked operations
/// that would bounce a cache line between cores if one instance served several.
/// </remarks>
public sealed class KvServer
{
    private readonly ILogger _logger;
    private long _active;
    private long _accepted;
    private long _refused;
    private long _commands;
    private long _overlapped;
    private long _protocolErrors;
    private long _queryBufferOverflows;
    private long _nextClientId;

    /// <summary>Creates a server over <paramref name="shards"/>.</summary>
    public KvServer(IShardInvoker shards, KvOptions options, TimeProvider? time = null, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(shards);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (shards.ShardCount is < 1 or > 64)
        {
            throw new ArgumentException($"ShardCount must be 1 … 64 (cores are tracked in 64-bit masks); it is {shards.ShardCount}.", nameof(shards));
        }

        Shards = shards;
        Options = options;
        Time = time ?? TimeProvider.System;
        _logger = logger ?? NullLogger.Instance;
        StartedAt = Time.GetUtcNow();
    }

    /// <summary>The shards this server reaches.</summary>
    public IShardInvoker Shards { get; }

    /// <summary>The limits.</summary>
    public KvOptions Options { get; }

    /// <summary>Time source for expiry deadlines and INFO.</summary>
    public TimeProvider Time { get; }

    internal DateTimeOffset StartedAt { get; }

    internal ILogger Logger => _logger;

    /// <summary>A snapshot of the server's counters.</summary>
    public KvServerStatistics Statistics => new(
        Interlocked.Read(ref _active),
        Interlocked.Read(ref _accepted),
        Interlocked.Read(ref _refused),
        Interlocked.Read(ref _commands),
        Interlocked.Read(ref _protocolErrors),
        Interlocked.Read(ref _queryBufferOverflows),
        Interlocked.Read(ref _overlapped));

    /// <summary>
    /// Serves one connection until the peer closes it, sends QUIT, breaks the protocol, or
    /// <paramref name="cancellationToken"/> fires; then completes both halves of
    /// <paramref name="transport"/>. Past <see cref="KvOptions.MaxConnections"/> the connection
    /// gets redis's "max number of clients reached" and is closed. Never throws for anything
    /// the peer sends.
    /// </summary>
    /// <remarks>
    /// The transport's input must be able to buffer <see cref="KvOptions.RequiredInputBufferBytes"/>
    /// unconsumed; its output's pause threshold is the bound on replies queued for a peer that
    /// does not read (the connection stops reading until the peer catches up).
    /// </remarks>
    public async Task RunConnectionAsync(IDuplexPipe transport, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(transport);
        if (Interlocked.Increment(ref _active) > Options.MaxConnections)
        {
            Interlocked.Decrement(ref _active);
            Interlocked.Increment(ref _refused);
            KvLog.ConnectionRefused(_logger, Options.MaxConnections);
            try
            {
                RespWriter.WriteError(transport.Output, "ERR max number of clients reached");
                await transport.Output.FlushAsync(cancellationToken);
            }
            catch (Exception e) when (e is IOException or OperationCanceledException or InvalidOperationException)
            {
                // The peer is gone already; nothing more to tell it.
            }
            finally
            {
                await transport.Input.CompleteAsync();
                await transport.Output.CompleteAsync();
            }

            return;
        }

        Interlocked.Increment(ref _accepted);
        try
        {
            using var connection = new KvConnection(this, transport, Interlocked.Increment(ref _nextClientId));
            await connection.RunAsync(cancellationToken);
        }
        finally
        {
            Interlocked.Decrement(ref _active);
        }
    }

    /// <summary>
    /// One bounded active-expiry step on every shard (each on its own core): the host calls this
    /// from a periodic timer. Returns the keys removed.
    /// </summary>
    public async ValueTask<long> SweepExpiredAsync()
    {
        int keys = Options.ExpireSweepKeys;
        long removed = 0;
        for (int shard = 0; shard < Shards.ShardCount; shard++)
        {
            removed += Shards.TryGetLocal(shard, out KvShard? local)
                ? local.SweepExpired(keys)
                : await Shards.InvokeOnAsync(shard, keys, static (s, k) => (long)s.SweepExpired(k));
        }

        return removed;
    }

    internal void CountCommand() => Interlocked.Increment(ref _commands);

    internal void CountOverlappedReply() => Interlocked.Increment(ref _overlapped);

    internal void CountProtocolError() => Interlocked.Increment(ref _protocolErrors);

    internal void CountQueryBufferOverflow() => Interlocked.Increment(ref _queryBufferOverflows);
}

/// <summary>Counters of a <see cref="KvServer"/>.</summary>
public readonly record struct KvServerStatistics(
    long ActiveConnections,
    long AcceptedConnections,
    long RefusedConnections,
    long CommandsProcessed,
    long ProtocolErrors,
    long QueryBufferOverflows,
    long OverlappedRemoteReplies = 0);

/// <summary>Source-generated log messages of the key-value server (event ids 1100–1199).</summary>
internal static partial class KvLog
{
    [LoggerMessage(1100, LogLevel.Warning, "Refused a connection: {MaxConnections} connections are being served")]
    public static partial void ConnectionRefused(ILogger logger, int maxConnections);

    [LoggerMessage(1101, LogLevel.Debug, "Client {ClientId}: protocol error ({Error}); closing")]
    public static partial void ProtocolError(ILogger logger, long clientId, string error);

    [LoggerMessage(1102, LogLevel.Warning, "Client {ClientId}: closing client that reached the max query buffer length ({Bytes} bytes)")]
    public static partial void QueryBufferOverflow(ILogger logger, long clientId, long bytes);

    [LoggerMessage(1103, LogLevel.Debug, "Client {ClientId}: transport ended")]
    public static partial void TransportEnded(ILogger logger, long clientId, Exception exception);

    [LoggerMessage(1104, LogLevel.Error, "Client {ClientId}: command failed; closing the connection")]
    public static partial void CommandFailed(ILogger logger, long clientId, Exception exception);
}
