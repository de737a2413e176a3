using System.Buffers;
using System.IO.Pipelines;
using System.Runtime.CompilerServices;
using Multikernel.Apps.Kv.Resp;
using Multikernel.Apps.Kv.Store;

namespace Multikernel.Apps.Kv.Server;

/// <summary>What a shard operation hands back to the connection to serialize.</summary>
internal readonly record struct ShardReply(KvStatus Status, long Integer = 0, byte[]? Bulk = null, byte[][]? Items = null);

/// <summary>
/// One client connection: reads commands from the transport, routes each to the shard(s) that
/// own its keys, and writes the replies in order. Pipelined commands are executed back to back
/// and their replies flushed together (at most <see cref="KvOptions.MaxPipelineDepth"/> or
/// <see cref="KvOptions.FlushThresholdBytes"/> at a time), so a pipelining client costs one
/// flush per batch; a flush that waits (the peer does not read) stops the reading too.
/// </summary>
internal sealed partial class KvConnection : IDisposable
{
    private readonly KvServer _server;
    private readonly IShardInvoker _shards;
    private readonly KvOptions _options;
    private readonly PipeReader _input;
    private readonly PipeWriter _output;
    private readonly OrderedReplies _out;
    private readonly RespParser _parser;
    // The command being parsed and run. One whose reply waits on another core keeps its buffer
    // (that core's shard reads the arguments in place) and the next command gets a spare: at
    // most MaxRemoteRepliesInFlight + 1 buffers, each only as large as its commands made it.
    private RespCommand _command;
    private readonly Stack<RespCommand> _spareCommands = new();
    private readonly List<RespCommand> _allCommands = [];
    private readonly ValueTask<long>[] _remote;
    private int[] _owners = new int[16];
    private bool _quit;

    public KvConnection(KvServer server, IDuplexPipe transport, long id)
    {
        _server = server;
        _shards = server.Shards;
        _options = server.Options;
        _input = transport.Input;
        _output = transport.Output;
        _out = new OrderedReplies(_output, _options.MaxRemoteRepliesInFlight, (reply, kind) => Write(reply, (ReplyKind)kind), owner => _spareCommands.Push((RespCommand)owner));
        _parser = new RespParser(_options);
        _command = NewCommand();
        _remote = new ValueTask<long>[_shards.ShardCount];
        Id = id;
    }

    public long Id { get; }

    public string? Name { get; private set; }

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        // The connection's own thread's context (a core's): the loop must stay there.
        SynchronizationContext? home = SynchronizationContext.Current;
        try
        {
            while (true)
            {
                ReadResult read = await _input.ReadAsync(cancellationToken);

                // A pipe whose writer completes the read from another thread while this await is
                // being registered runs the continuation on the thread pool, its captured context
                // not yet recorded (System.IO.Pipelines' already-completed path): the flake of the
                // kv runtime tests ("the server closed the connection", a shard touched off its
                // core). Come home before touching shards; free when already there.
                await new ReturnTo(home);
                ReadOnlySequence<byte> buffer = read.Buffer;
                bool close = false;
                int depth = 0;
                try
                {
                    while (!close)
                    {
                        RespParseStatus status = _parser.TryParse(ref buffer, _command, out string? error);
                        if (status is RespParseStatus.Incomplete or RespParseStatus.TooLarge)
                        {
                            if (status == RespParseStatus.TooLarge || buffer.Length > _options.MaxQueryBufferBytes)
                            {
                                // Redis closes such a client without a reply; so do we.
                                _server.CountQueryBufferOverflow();
                                KvLog.QueryBufferOverflow(_server.Logger, Id, buffer.Length);
                                close = true;
                            }

                            break;
                        }

                        if (status == RespParseStatus.Error)
                        {
                            _server.CountProtocolError();
                            KvLog.ProtocolError(_server.Logger, Id, error!);
                            RespWriter.WriteError(_out, error!);
                            close = true;
                            break;
                        }

                        if (status == RespParseStatus.Empty)
                        {
                            continue;
                        }

                        _server.CountCommand();
                        if (_out.IsFull)
                        {
                            // Before the command sends anything: the runtime's call record of the
                            // oldest reply is taken (and reusable) before this command takes a slot.
                            await _out.MakeRoomAsync().ConfigureAwait(false);
                            await new ReturnTo(home);
                        }

                        ValueTask run = ExecuteAsync(_command);
                        if (!run.IsCompletedSuccessfully)
                        {
                            // Every command's awaits resume on the connection's own context, so
                            // `run` completes on this core's thread and the loop can go on inline
                            // there: capturing the context again would post the continuation back
                            // to the same core through a new callback and a tuple (64 B per call
                            // to another core's shard; RemoteGets_AllocateNothingPerCall_… checks).
                            await run.ConfigureAwait(false);

                            // Belt and braces: should `run` ever complete on another thread (a
                            // path that finishes a command from another core or the pool), come
                            // back before touching shards or buffers. Free when already home.
                            await new ReturnTo(home);
                        }

                        if (_out.TakeQueuedCount() > 0)
                        {
                            // Its reply waits on another core, which reads its arguments where they are.
                            if (_out.PendingCount > 1)
                            {
                                _server.CountOverlappedReply(); // it went out while an earlier one still waited
                            }

                            _out.Attach(_command);
                            _command = _spareCommands.Count > 0 ? _spareCommands.Pop() : NewCommand();
                        }

                        if (_quit)
                        {
                            close = true;
                            break;
                        }

                        if (++depth >= _options.MaxPipelineDepth ||
                            (_output.CanGetUnflushedBytes && _output.UnflushedBytes >= _options.FlushThresholdBytes))
                        {
                            depth = 0;
                            await DrainRepliesAsync(home);
                            FlushResult mid = await _output.FlushAsync(cancellationToken);
                            await new ReturnTo(home);
                            close = mid.IsCompleted;
                        }
                    }
                }
                finally
                {
                    // Everything parsed is consumed; an incomplete tail stays, examined, so the next read waits for more.
                    _input.AdvanceTo(buffer.Start, buffer.End);
                }

                await DrainRepliesAsync(home);
                FlushResult flushed = await _output.FlushAsync(cancellationToken);
                await new ReturnTo(home);
                if (close || flushed.IsCompleted || read.IsCompleted)
                {
                    break;
                }
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // The host is stopping.
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or ObjectDisposedException)
        {
            KvLog.TransportEnded(_server.Logger, Id, e);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A bug in a command must cost this connection only, never the server.
            KvLog.CommandFailed(_server.Logger, Id, e);
        }
        finally
        {
            // Replies still waiting on other cores are not written any more, but their commands'
            // argument buffers are read there until they answer: only then may Dispose give the
            // buffers back to the pool (another connection's bytes must never become this key).
            await _out.AbandonAsync();
            await _input.CompleteAsync();
            await _output.CompleteAsync();
        }
    }

    public void Dispose()
    {
        foreach (RespCommand command in _allCommands)
        {
            command.Dispose();
        }
    }

    private RespCommand NewCommand()
    {
        var command = new RespCommand(_options.MaxQueryBufferBytes);
        _allCommands.Add(command);
        return command;
    }

    /// <summary>The most replies this connection had waiting on other cores at once.</summary>
    internal int PeakRepliesInFlight => _out.PeakPending;

    // Every reply still waiting on another core's shard, in order (before a flush: the client gets whole batches).
    private async ValueTask DrainRepliesAsync(SynchronizationContext? home)
    {
        if (_out.IsEmpty)
        {
            return;
        }

        await _out.DrainAsync().ConfigureAwait(false);
        await new ReturnTo(home);
    }

    // ------------------------------------------------------------------ routing

    /// <summary>Runs <paramref name="op"/> on the shard owning <paramref name="key"/>: inline when local (no closure), else forwarded.</summary>
    private ValueTask<ShardReply> OnKey<TState>(ReadOnlySpan<byte> key, TState state, Func<KvShard, TState, ShardReply> op)
    {
        int shard = KeyHasher.ShardOf(key, _shards.ShardCount);
        if (_shards.TryGetLocal(shard, out KvShard? local))
        {
            return new ValueTask<ShardReply>(op(local, state));
        }

        return _shards.InvokeOnAsync(shard, (op, state), static (s, w) => w.op(s, w.state));
    }

    /// <summary>
    /// Runs <paramref name="op"/> on every shard in <paramref name="mask"/> and sums the results:
    /// remote shards first (so they work in parallel), then the local one inline.
    /// </summary>
    private ValueTask<long> MapShards<TState>(ulong mask, TState state, Func<KvShard, TState, long> op)
    {
        int pending = 0;
        for (int shard = 0; shard < _shards.ShardCount; shard++)
        {
            if ((mask & (1UL << shard)) != 0 && !_shards.TryGetLocal(shard, out _))
            {
                _remote[pending++] = _shards.InvokeOnAsync(shard, (op, state), static (s, w) => w.op(s, w.state));
            }
        }

        long sum = 0;
        for (int shard = 0; shard < _shards.ShardCount; shard++)
        {
            if ((mask & (1UL << shard)) != 0 && _shards.TryGetLocal(shard, out KvShard? local))
            {
                sum += op(local, state);
            }
        }

        return pending == 0 ? new ValueTask<long>(sum) : AwaitRemote(pending, sum);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))] // a remote shard answers asynchronously every time: no box per call
    private async ValueTask<long> AwaitRemote(int pending, long sum)
    {
        try
        {
            for (int i = 0; i < pending; i++)
            {
                sum += await _remote[i];
            }
        }
        finally
        {
            Array.Clear(_remote, 0, pending);
        }

        return sum;
    }

    private ulong AllShards => _shards.ShardCount == 64 ? ulong.MaxValue : (1UL << _shards.ShardCount) - 1;

    /// <summary>Computes the owner of each key argument (from <paramref name="first"/>, every <paramref name="step"/>); returns the shard mask.</summary>
    private ulong MapOwners(RespCommand command, int first, int step)
    {
        if (_owners.Length < command.Count)
        {
            _owners = new int[Math.Max(command.Count, _owners.Length * 2)];
        }

        ulong mask = 0;
        for (int i = first; i < command.Count; i += step)
        {
            int owner = KeyHasher.ShardOf(command[i], _shards.ShardCount);
            _owners[i] = owner;
            mask |= 1UL << owner;
        }

        return mask;
    }

    // ------------------------------------------------------------------ replies

    private enum ReplyKind
    {
        BulkOrNull,
        Integer,
        OkOrNull,
        OneIfOk,
        Type,
        Items,
        ItemsOrNullArray,
    }

    // A single-key command's reply: written now, or (another core's shard still working) queued in
    // order while the next pipelined commands run — see OrderedReplies.
    private ValueTask Reply(ValueTask<ShardReply> pending, ReplyKind kind) => _out.Add(pending, (int)kind);

    private void Write(ShardReply reply, ReplyKind kind)
    {
        switch (reply.Status)
        {
            case KvStatus.WrongType:
                WriteError(Errors.WrongType);
                return;
            case KvStatus.NotInteger:
                WriteError(Errors.NotInteger);
                return;
            case KvStatus.Overflow:
                WriteError(Errors.Overflow);
                return;
            case KvStatus.OutOfMemory:
                WriteError(Errors.OutOfMemory);
                return;
        }

        bool ok = reply.Status == KvStatus.Ok;
        switch (kind)
        {
            case ReplyKind.BulkOrNull:
                if (ok && reply.Bulk is not null)
                {
                    RespWriter.WriteBulk(_out, reply.Bulk);
                }
                else
                {
                    RespWriter.WriteNullBulk(_out);
                }

                break;
            case ReplyKind.Integer:
                RespWriter.WriteInteger(_out, reply.Integer);
                break;
            case ReplyKind.OkOrNull:
                if (ok)
                {
                    RespWriter.WriteRaw(_out, "+OK\r\n"u8);
                }
                else
                {
                    RespWriter.WriteNullBulk(_out);
                }

                break;
            case ReplyKind.OneIfOk:
                RespWriter.WriteRaw(_out, ok ? ":1\r\n"u8 : ":0\r\n"u8);
                break;
            case ReplyKind.Type:
                RespWriter.WriteRaw(_out, (KvType)reply.Integer switch
                {
                    KvType.String => "+string\r\n"u8,
                    KvType.List => "+list\r\n"u8,
                    _ => "+none\r\n"u8,
                });
                break;
            case ReplyKind.Items:
            case ReplyKind.ItemsOrNullArray:
                if (reply.Items is null)
                {
                    if (kind == ReplyKind.ItemsOrNullArray)
                    {
                        RespWriter.WriteNullArray(_out);
                    }
                    else
                    {
                        RespWriter.WriteArrayHeader(_out, 0);
                    }

                    break;
                }

                RespWriter.WriteArrayHeader(_out, reply.Items.Length);
                foreach (byte[] item in reply.Items)
                {
                    RespWriter.WriteBulk(_out, item);
                }

                break;
        }
    }

    private void WriteError(string message) => RespWriter.WriteError(_out, message);

    private void WriteOk() => RespWriter.WriteRaw(_out, "+OK\r\n"u8);
}

/// <summary>Redis-server 7's error texts, word for word.</summary>
internal static class Errors
{
    public const string WrongType = "WRONGTYPE Operation against a key holding the wrong kind of value";
    public const string NotInteger = "ERR value is not an integer or out of range";
    public const string Overflow = "ERR increment or decrement would overflow";
    public const string DecrementOverflow = "ERR decrement would overflow";
    public const string OutOfMemory = "OOM command not allowed when used memory > 'maxmemory'.";
    public const string Syntax = "ERR syntax error";
    public const string DbIndex = "ERR DB index is out of range";
    public const string NotPositive = "ERR value is out of range, must be positive";
    public const string ClientName = "ERR Client names cannot contain spaces, newlines or special characters.";
    public const string NoProto = "NOPROTO unsupported protocol version";
    public const string HelloVersion = "ERR Protocol version is not an integer or out of range";
    public const string Auth = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";

    public static string WrongArity(string fullName) => $"ERR wrong number of arguments for '{fullName}' command";

    public static string InvalidExpire(string command) => $"ERR invalid expire time in '{command}' command";

    public static string UnknownSubcommand(string sub, string container) => $"ERR unknown subcommand '{Truncate(sub, 128)}'. Try {container.ToUpperInvariant()} HELP.";

    private static string Truncate(string s, int max) => s.Length <= max ? s : s[..max];
}

/// <summary>Resumes on <paramref name="context"/> (completes inline when already running there, or when there is none).</summary>
internal readonly struct ReturnTo(SynchronizationContext? context) : System.Runtime.CompilerServices.ICriticalNotifyCompletion
{
    public ReturnTo GetAwaiter() => this;

    public bool IsCompleted => context is null || SynchronizationContext.Current == context;

    public void GetResult()
    {
    }

    public void OnCompleted(Action continuation) => context!.Post(static c => ((Action)c!)(), continuation);

    public void UnsafeOnCompleted(Action continuation) => context!.Post(static c => ((Action)c!)(), continuation);
}
