using System.Buffers;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using Multikernel.Apps.Kv.Resp;
using Multikernel.Apps.Kv.Store;

namespace Multikernel.Apps.Kv.Server;

/// <summary>The commands: argument checks happen here, on the connection's core, before anything is routed.</summary>
internal sealed partial class KvConnection
{
    private const string ServerVersion = "7.0.0";

    private ValueTask ExecuteAsync(RespCommand c)
    {
        CommandSpec? spec = CommandTable.Find(c[0]);
        if (spec is null)
        {
            WriteUnknownCommand(c);
            return default;
        }

        if (!spec.ArityAllows(c.Count))
        {
            WriteError(Errors.WrongArity(spec.Name));
            return default;
        }

        switch (spec.Id)
        {
            case CommandId.Ping:
                if (c.Count > 2)
                {
                    WriteError(Errors.WrongArity("ping"));
                }
                else if (c.Count == 2)
                {
                    RespWriter.WriteBulk(_out, c[1]);
                }
                else
                {
                    RespWriter.WriteRaw(_out, "+PONG\r\n"u8);
                }

                return default;
            case CommandId.Echo:
                RespWriter.WriteBulk(_out, c[1]);
                return default;
            case CommandId.Get:
                return Reply(OnKey(c[1], c, static (s, c) => new ShardReply(s.TryGet(c[1], out byte[]? v), Bulk: v)), ReplyKind.BulkOrNull);
            case CommandId.Set:
                return Set(c);
            case CommandId.SetNx:
                return Reply(
                    OnKey(c[1], c, static (s, c) => new ShardReply(s.Set(c[1], c[2], SetCondition.IfMissing, 0, false, out _))),
                    ReplyKind.OneIfOk);
            case CommandId.SetEx:
            case CommandId.PSetEx:
                return SetEx(c, spec);
            case CommandId.GetSet:
                return Reply(
                    OnKey(c[1], c, static (s, c) =>
                    {
                        KvStatus status = s.Set(c[1], c[2], SetCondition.Always, 0, true, out byte[]? old);
                        return new ShardReply(status == KvStatus.Ok && old is null ? KvStatus.NotFound : status, Bulk: old);
                    }),
                    ReplyKind.BulkOrNull);
            case CommandId.Del:
                return CountKeys(c, static (s, st) =>
                {
                    long n = 0;
                    for (int i = 1; i < st.Command.Count; i++)
                    {
                        if (st.Owners[i] == s.Index && s.Remove(st.Command[i]))
                        {
                            n++;
                        }
                    }

                    return n;
                });
            case CommandId.Exists:
                return CountKeys(c, static (s, st) =>
                {
                    long n = 0;
                    for (int i = 1; i < st.Command.Count; i++)
                    {
                        if (st.Owners[i] == s.Index && s.ContainsKey(st.Command[i]))
                        {
                            n++;
                        }
                    }

                    return n;
                });
            case CommandId.Incr:
                return IncrementBy(c, 1);
            case CommandId.Decr:
                return IncrementBy(c, -1);
            case CommandId.IncrBy:
            case CommandId.DecrBy:
                if (!RespParser.TryParseInt64(c[2], out long delta))
                {
                    WriteError(Errors.NotInteger);
                    return default;
                }

                if (spec.Id == CommandId.DecrBy)
                {
                    if (delta == long.MinValue)
                    {
                        WriteError(Errors.DecrementOverflow);
                        return default;
                    }

                    delta = -delta;
                }

                return IncrementBy(c, delta);
            case CommandId.Append:
                return Reply(
                    OnKey(c[1], c, static (s, c) => new ShardReply(s.Append(c[1], c[2], out long n), n)),
                    ReplyKind.Integer);
            case CommandId.StrLen:
                return Reply(
                    OnKey(c[1], c, static (s, c) =>
                    {
                        KvStatus status = s.TryGet(c[1], out byte[]? v);
                        return status == KvStatus.WrongType ? new ShardReply(status) : new ShardReply(KvStatus.Ok, v?.Length ?? 0);
                    }),
                    ReplyKind.Integer);
            case CommandId.MGet:
                return MGet(c);
            case CommandId.MSet:
                return MSet(c);
            case CommandId.Expire:
            case CommandId.PExpire:
            case CommandId.ExpireAt:
            case CommandId.PExpireAt:
                return Expire(c, spec);
            case CommandId.Persist:
                return Reply(OnKey(c[1], c, static (s, c) => new ShardReply(s.Persist(c[1]) ? KvStatus.Ok : KvStatus.NotApplied)), ReplyKind.OneIfOk);
            case CommandId.Ttl:
                return Reply(
                    OnKey(c[1], c, static (s, c) =>
                    {
                        long ms = s.TimeToLiveMs(c[1]);
                        return new ShardReply(KvStatus.Ok, ms < 0 ? ms : (ms + 500) / 1000);
                    }),
                    ReplyKind.Integer);
            case CommandId.PTtl:
                return Reply(OnKey(c[1], c, static (s, c) => new ShardReply(KvStatus.Ok, s.TimeToLiveMs(c[1]))), ReplyKind.Integer);
            case CommandId.Type:
                return Reply(OnKey(c[1], c, static (s, c) => new ShardReply(KvStatus.Ok, (long)s.TypeOf(c[1]))), ReplyKind.Type);
            case CommandId.DbSize:
                return WriteInteger(MapShards(AllShards, 0, static (s, _) => s.Count));
            case CommandId.FlushAll:
            case CommandId.FlushDb:
                if (c.Count > 2 || (c.Count == 2 && !Is(c[1], "async") && !Is(c[1], "sync")))
                {
                    WriteError(Errors.Syntax);
                    return default;
                }

                return WriteOkAfter(MapShards(AllShards, 0, static (s, _) => s.Clear()));
            case CommandId.Select:
                if (!RespParser.TryParseInt64(c[1], out long db))
                {
                    WriteError(Errors.NotInteger);
                }
                else if (db != 0)
                {
                    WriteError(Errors.DbIndex);
                }
                else
                {
                    WriteOk();
                }

                return default;
            case CommandId.Quit:
                WriteOk();
                _quit = true;
                return default;
            case CommandId.Config:
                Config(c);
                return default;
            case CommandId.Command:
                Command(c);
                return default;
            case CommandId.Client:
                Client(c);
                return default;
            case CommandId.Hello:
                Hello(c);
                return default;
            case CommandId.Info:
                return Info(c);
            case CommandId.LPush:
            case CommandId.RPush:
                return Reply(
                    OnKey(c[1], (c, Left: spec.Id == CommandId.LPush), static (s, st) =>
                    {
                        long length = 0;
                        for (int i = 2; i < st.c.Count; i++)
                        {
                            KvStatus status = s.Push(st.c[1], st.c[i], st.Left, out length);
                            if (status != KvStatus.Ok)
                            {
                                return new ShardReply(status);
                            }
                        }

                        return new ShardReply(KvStatus.Ok, length);
                    }),
                    ReplyKind.Integer);
            case CommandId.LPop:
            case CommandId.RPop:
                return Pop(c, spec.Id == CommandId.LPop);
            case CommandId.LLen:
                return Reply(OnKey(c[1], c, static (s, c) => new ShardReply(s.ListLength(c[1], out long n), n)), ReplyKind.Integer);
            case CommandId.LRange:
                if (!RespParser.TryParseInt64(c[2], out long start) || !RespParser.TryParseInt64(c[3], out long stop))
                {
                    WriteError(Errors.NotInteger);
                    return default;
                }

                return Reply(
                    OnKey(c[1], (c, start, stop), static (s, st) => new ShardReply(s.ListRange(st.c[1], st.start, st.stop, out byte[][] items), Items: items)),
                    ReplyKind.Items);
            case CommandId.Keys:
                return Keys(c);
            case CommandId.Time:
                long micros = _server.Time.GetUtcNow().ToUnixTimeMilliseconds() * 1000;
                RespWriter.WriteArrayHeader(_out, 2);
                RespWriter.WriteBulk(_out, micros / 1_000_000);
                RespWriter.WriteBulk(_out, micros % 1_000_000);
                return default;
            case CommandId.Auth:
                WriteError(Errors.Auth);
                return default;
            default:
                WriteUnknownCommand(c);
                return default;
        }
    }

    // ------------------------------------------------------------------ strings

    private ValueTask Set(RespCommand c)
    {
        var condition = SetCondition.Always;
        bool get = false;
        bool keepTtl = false;
        Deadline expireAt = Deadline.None;
        bool hasExpiry = false;
        for (int i = 3; i < c.Count; i++)
        {
            ReadOnlySpan<byte> flag = c[i];
            bool hasNext = i + 1 < c.Count;
            if (Is(flag, "nx") && condition == SetCondition.Always)
            {
                condition = SetCondition.IfMissing;
            }
            else if (Is(flag, "xx") && condition == SetCondition.Always)
            {
                condition = SetCondition.IfExists;
            }
            else if (Is(flag, "get") && !get)
            {
                get = true;
            }
            else if (Is(flag, "keepttl") && !hasExpiry && !keepTtl)
            {
                keepTtl = true;
            }
            else if ((Is(flag, "ex") || Is(flag, "px") || Is(flag, "exat") || Is(flag, "pxat")) && !hasExpiry && !keepTtl && hasNext)
            {
                if (!RespParser.TryParseInt64(c[++i], out long amount))
                {
                    WriteError(Errors.NotInteger);
                    return default;
                }

                bool seconds = Is(flag, "ex") || Is(flag, "exat");
                bool absolute = Is(flag, "exat") || Is(flag, "pxat");
                if (!TryDeadline(amount, seconds, absolute, requirePositive: true, out expireAt))
                {
                    WriteError(Errors.InvalidExpire("set"));
                    return default;
                }

                hasExpiry = true;
            }
            else
            {
                WriteError(Errors.Syntax);
                return default;
            }
        }

        Deadline expiry = keepTtl ? Deadline.KeepTtl : expireAt;
        return Reply(
            OnKey(c[1], (c, condition, expiry, get), static (s, st) =>
            {
                KvStatus status = s.Set(st.c[1], st.c[2], st.condition, st.expiry.On(s), st.get, out byte[]? old);
                if (!st.get)
                {
                    return new ShardReply(status);
                }

                // SET … GET answers the old value (nil when there was none), whether or not it set.
                return status is KvStatus.Ok or KvStatus.NotApplied
                    ? new ShardReply(old is null ? KvStatus.NotFound : KvStatus.Ok, Bulk: old)
                    : new ShardReply(status);
            }),
            get ? ReplyKind.BulkOrNull : ReplyKind.OkOrNull);
    }

    private ValueTask SetEx(RespCommand c, CommandSpec spec)
    {
        if (!RespParser.TryParseInt64(c[2], out long amount))
        {
            WriteError(Errors.NotInteger);
            return default;
        }

        if (!TryDeadline(amount, spec.Id == CommandId.SetEx, absolute: false, requirePositive: true, out Deadline expireAt))
        {
            WriteError(Errors.InvalidExpire(spec.Name));
            return default;
        }

        return Reply(
            OnKey(c[1], (c, expireAt), static (s, st) => new ShardReply(s.Set(st.c[1], st.c[3], SetCondition.Always, st.expireAt.On(s), false, out _))),
            ReplyKind.OkOrNull);
    }

    private ValueTask IncrementBy(RespCommand c, long delta) => Reply(
        OnKey(c[1], (c, delta), static (s, st) => new ShardReply(s.IncrementBy(st.c[1], st.delta, out long v), v)),
        ReplyKind.Integer);

    /// <summary>
    /// A deadline from a relative or absolute amount; false when it overflows (or is not positive
    /// when required). A relative one stays relative: the owner shard adds it to its own core's
    /// clock (<see cref="Deadline.On"/>), so expiry never depends on the connection's core.
    /// </summary>
    private bool TryDeadline(long amount, bool seconds, bool absolute, bool requirePositive, out Deadline atMs)
    {
        atMs = Deadline.None;
        if (requirePositive && amount <= 0)
        {
            return false;
        }

        long ms = amount;
        if (seconds && (amount > long.MaxValue / 1000 || amount < long.MinValue / 1000))
        {
            return false;
        }

        if (seconds)
        {
            ms = amount * 1000;
        }

        if (absolute)
        {
            atMs = new Deadline(ms, Relative: false);
            return ms > 0 || !requirePositive;
        }

        // Redis refuses a relative time that overflows once added to now; the owner's clock reads
        // the same wall time within microseconds, and Deadline.On saturates for the difference.
        long now = _server.Time.GetUtcNow().ToUnixTimeMilliseconds();
        if (ms > 0 && now > long.MaxValue - ms)
        {
            return false;
        }

        atMs = new Deadline(ms, Relative: true);
        return true;
    }

    // ------------------------------------------------------------------ multi-key

    private readonly record struct KeysState(RespCommand Command, int[] Owners);

    private ValueTask CountKeys(RespCommand c, Func<KvShard, KeysState, long> op)
    {
        ulong mask = MapOwners(c, 1, 1);
        return WriteInteger(MapShards(mask, new KeysState(c, _owners), op));
    }

    private readonly record struct MGetState(RespCommand Command, int[] Owners, byte[]?[] Values);

    private ValueTask MGet(RespCommand c)
    {
        ulong mask = MapOwners(c, 1, 1);
        byte[]?[] values = ArrayPool<byte[]?>.Shared.Rent(c.Count);
        // Each shard fills only the slots of its own keys, so shards on different cores write disjoint elements.
        ValueTask<long> pending = MapShards(mask, new MGetState(c, _owners, values), static (s, st) =>
        {
            for (int i = 1; i < st.Command.Count; i++)
            {
                if (st.Owners[i] == s.Index)
                {
                    st.Values[i] = s.TryGet(st.Command[i], out byte[]? v) == KvStatus.Ok ? v : null;
                }
            }

            return 0;
        });
        if (pending.IsCompletedSuccessfully)
        {
            WriteValues(values, c.Count);
            return default;
        }

        return AwaitValues(pending, values, c.Count);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))] // a remote shard answers asynchronously every time: no box per call
    private async ValueTask AwaitValues(ValueTask<long> pending, byte[]?[] values, int count)
    {
        try
        {
            await pending;
        }
        catch
        {
            ArrayPool<byte[]?>.Shared.Return(values, clearArray: true);
            throw;
        }

        WriteValues(values, count);
    }

    private void WriteValues(byte[]?[] values, int count)
    {
        RespWriter.WriteArrayHeader(_out, count - 1);
        for (int i = 1; i < count; i++)
        {
            if (values[i] is { } v)
            {
                RespWriter.WriteBulk(_out, v);
            }
            else
            {
                RespWriter.WriteNullBulk(_out);
            }
        }

        ArrayPool<byte[]?>.Shared.Return(values, clearArray: true);
    }

    private ValueTask MSet(RespCommand c)
    {
        if ((c.Count - 1) % 2 != 0)
        {
            WriteError(Errors.WrongArity("mset"));
            return default;
        }

        ulong mask = MapOwners(c, 1, 2);
        // Each shard returns how many of its pairs it refused at its memory limit (the store is not
        // transactional across shards: pairs on other shards are written regardless).
        ValueTask<long> pending = MapShards(mask, new KeysState(c, _owners), static (s, st) =>
        {
            long refused = 0;
            for (int i = 1; i + 1 < st.Command.Count; i += 2)
            {
                if (st.Owners[i] == s.Index && s.Set(st.Command[i], st.Command[i + 1], SetCondition.Always, 0, false, out _) == KvStatus.OutOfMemory)
                {
                    refused++;
                }
            }

            return refused;
        });
        if (pending.IsCompletedSuccessfully)
        {
            WriteMSet(pending.Result);
            return default;
        }

        return AwaitMSet(pending);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))] // a remote shard answers asynchronously every time: no box per call
    private async ValueTask AwaitMSet(ValueTask<long> pending) => WriteMSet(await pending);

    private void WriteMSet(long refused)
    {
        if (refused > 0)
        {
            WriteError(Errors.OutOfMemory);
        }
        else
        {
            WriteOk();
        }
    }

    private ValueTask WriteInteger(ValueTask<long> pending)
    {
        if (pending.IsCompletedSuccessfully)
        {
            RespWriter.WriteInteger(_out, pending.Result);
            return default;
        }

        return Awaited(pending);

        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
        async ValueTask Awaited(ValueTask<long> p) => RespWriter.WriteInteger(_out, await p);
    }

    private ValueTask WriteOkAfter(ValueTask<long> pending)
    {
        if (pending.IsCompletedSuccessfully)
        {
            WriteOk();
            return default;
        }

        return Awaited(pending);

        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
        async ValueTask Awaited(ValueTask<long> p)
        {
            await p;
            WriteOk();
        }
    }

    private ValueTask Keys(RespCommand c)
    {
        var found = new List<byte[]>[_shards.ShardCount];
        for (int i = 0; i < found.Length; i++)
        {
            found[i] = [];
        }

        ValueTask<long> pending = MapShards(AllShards, (c, found), static (s, st) => s.CollectKeys(st.c[1], st.found[s.Index]));
        if (pending.IsCompletedSuccessfully)
        {
            WriteKeys(found);
            return default;
        }

        return Awaited(pending, found);

        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
        async ValueTask Awaited(ValueTask<long> p, List<byte[]>[] f)
        {
            await p;
            WriteKeys(f);
        }
    }

    private void WriteKeys(List<byte[]>[] found)
    {
        RespWriter.WriteArrayHeader(_out, found.Sum(l => l.Count));
        foreach (List<byte[]> list in found)
        {
            foreach (byte[] key in list)
            {
                RespWriter.WriteBulk(_out, key);
            }
        }
    }

    // ------------------------------------------------------------------ expiry and lists

    private ValueTask Expire(RespCommand c, CommandSpec spec)
    {
        if (!RespParser.TryParseInt64(c[2], out long amount))
        {
            WriteError(Errors.NotInteger);
            return default;
        }

        var condition = ExpireCondition.Always;
        bool nx = false, xx = false, gt = false, lt = false;
        for (int i = 3; i < c.Count; i++)
        {
            if (Is(c[i], "nx"))
            {
                nx = true;
            }
            else if (Is(c[i], "xx"))
            {
                xx = true;
            }
            else if (Is(c[i], "gt"))
            {
                gt = true;
            }
            else if (Is(c[i], "lt"))
            {
                lt = true;
            }
            else
            {
                WriteError($"ERR Unsupported option {Encoding.UTF8.GetString(c[i])}");
                return default;
            }
        }

        if (nx && (xx || gt || lt))
        {
            WriteError("ERR NX and XX, GT or LT options at the same time are not compatible");
            return default;
        }

        if (gt && lt)
        {
            WriteError("ERR GT and LT options at the same time are not compatible");
            return default;
        }

        condition = nx ? ExpireCondition.IfNone : gt ? ExpireCondition.IfGreater : lt ? ExpireCondition.IfLess : xx ? ExpireCondition.IfSome : condition;
        bool seconds = spec.Id is CommandId.Expire or CommandId.ExpireAt;
        bool absolute = spec.Id is CommandId.ExpireAt or CommandId.PExpireAt;
        if (!TryDeadline(amount, seconds, absolute, requirePositive: false, out Deadline atMs))
        {
            WriteError(Errors.InvalidExpire(spec.Name));
            return default;
        }

        return Reply(
            OnKey(c[1], (c, atMs, condition), static (s, st) => new ShardReply(s.Expire(st.c[1], st.atMs.On(s), st.condition))),
            ReplyKind.OneIfOk);
    }

    private ValueTask Pop(RespCommand c, bool left)
    {
        if (c.Count > 3)
        {
            WriteError(Errors.Syntax);
            return default;
        }

        if (c.Count == 2)
        {
            return Reply(
                OnKey(c[1], (c, left), static (s, st) => new ShardReply(s.Pop(st.c[1], st.left, out byte[]? e), Bulk: e)),
                ReplyKind.BulkOrNull);
        }

        if (!RespParser.TryParseInt64(c[2], out long count) || count < 0)
        {
            WriteError(Errors.NotPositive);
            return default;
        }

        return Reply(
            OnKey(c[1], (c, left, count), static (s, st) =>
            {
                if (s.ListLength(st.c[1], out long length) == KvStatus.WrongType)
                {
                    return new ShardReply(KvStatus.WrongType);
                }

                if (length == 0)
                {
                    return new ShardReply(KvStatus.Ok);
                }

                var items = new byte[Math.Min(length, st.count)][];
                for (int i = 0; i < items.Length; i++)
                {
                    s.Pop(st.c[1], st.left, out byte[]? e);
                    items[i] = e!;
                }

                return new ShardReply(KvStatus.Ok, Items: items);
            }),
            ReplyKind.ItemsOrNullArray);
    }

    // ------------------------------------------------------------------ connection and server commands

    private bool CheckSubcommand(RespCommand c, string container, out string sub)
    {
        sub = Encoding.UTF8.GetString(c[1]).ToLowerInvariant();
        string full = container + "|" + sub;
        if (!CommandTable.SubcommandArity.TryGetValue(full, out int arity))
        {
            WriteError(Errors.UnknownSubcommand(Encoding.UTF8.GetString(c[1]), container));
            return false;
        }

        if (arity > 0 ? c.Count != arity : c.Count < -arity)
        {
            WriteError(Errors.WrongArity(full));
            return false;
        }

        return true;
    }

    private void Config(RespCommand c)
    {
        if (!CheckSubcommand(c, "config", out string sub))
        {
            return;
        }

        switch (sub)
        {
            case "get":
                var pairs = new List<(string Name, string Value)>();
                for (int i = 2; i < c.Count; i++)
                {
                    foreach ((string name, string value) in ConfigValues())
                    {
                        if (Glob.Match(c[i], Encoding.ASCII.GetBytes(name), ignoreCase: true) && !pairs.Exists(p => p.Name == name))
                        {
                            pairs.Add((name, value));
                        }
                    }
                }

                RespWriter.WriteArrayHeader(_out, pairs.Count * 2);
                foreach ((string name, string value) in pairs)
                {
                    RespWriter.WriteBulk(_out, name);
                    RespWriter.WriteBulk(_out, value);
                }

                break;
            case "set":
                // The limits are fixed at start-up (they are validated options, not runtime knobs).
                WriteError($"ERR Unknown option or number of arguments for CONFIG SET - '{Encoding.UTF8.GetString(c[2])}'");
                break;
            case "resetstat":
                WriteOk();
                break;
            default:
                WriteHelp("CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:", "GET <pattern>", "RESETSTAT");
                break;
        }
    }

    private IEnumerable<(string Name, string Value)> ConfigValues()
    {
        string Num(long v) => v.ToString(CultureInfo.InvariantCulture);
        yield return ("save", "");
        yield return ("appendonly", "no");
        yield return ("databases", "1");
        yield return ("maxclients", Num(_options.MaxConnections));
        yield return ("maxmemory", Num(_options.MaxMemoryBytes));
        yield return ("maxmemory-policy", "noeviction");
        yield return ("proto-max-bulk-len", Num(_options.MaxBulkBytes));
        yield return ("client-query-buffer-limit", Num(_options.MaxQueryBufferBytes));
        yield return ("timeout", "0");
        yield return ("port", "0");
    }

    private void Command(RespCommand c)
    {
        if (c.Count == 1)
        {
            RespWriter.WriteArrayHeader(_out, CommandTable.All.Length);
            foreach (CommandSpec spec in CommandTable.All)
            {
                WriteCommandInfo(spec);
            }

            return;
        }

        if (!CheckSubcommand(c, "command", out string sub))
        {
            return;
        }

        switch (sub)
        {
            case "count":
                RespWriter.WriteInteger(_out, CommandTable.All.Length);
                break;
            case "docs":
                // No documentation is served: an empty map (redis-cli then offers no hints).
                RespWriter.WriteArrayHeader(_out, 0);
                break;
            case "info":
                RespWriter.WriteArrayHeader(_out, c.Count - 2);
                for (int i = 2; i < c.Count; i++)
                {
                    if (CommandTable.Find(c[i]) is { } spec)
                    {
                        WriteCommandInfo(spec);
                    }
                    else
                    {
                        RespWriter.WriteNullArray(_out);
                    }
                }

                break;
            case "list":
                RespWriter.WriteArrayHeader(_out, CommandTable.All.Length);
                foreach (CommandSpec spec in CommandTable.All)
                {
                    RespWriter.WriteBulk(_out, spec.Name);
                }

                break;
            default:
                WriteHelp("COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:", "(no subcommand)", "COUNT", "DOCS", "INFO <command-name>", "LIST");
                break;
        }
    }

    private void WriteCommandInfo(CommandSpec spec)
    {
        // Redis 7's ten-element entry: name, arity, flags, first key, last key, step, ACL categories, tips, key specs, subcommands.
        RespWriter.WriteArrayHeader(_out, 10);
        RespWriter.WriteBulk(_out, spec.Name);
        RespWriter.WriteInteger(_out, spec.Arity);
        RespWriter.WriteArrayHeader(_out, spec.Flags.Length);
        foreach (string flag in spec.Flags)
        {
            RespWriter.WriteSimpleString(_out, Encoding.ASCII.GetBytes(flag));
        }

        RespWriter.WriteInteger(_out, spec.FirstKey);
        RespWriter.WriteInteger(_out, spec.LastKey);
        RespWriter.WriteInteger(_out, spec.Step);
        for (int i = 0; i < 4; i++)
        {
            RespWriter.WriteArrayHeader(_out, 0);
        }
    }

    private void Client(RespCommand c)
    {
        if (!CheckSubcommand(c, "client", out string sub))
        {
            return;
        }

        switch (sub)
        {
            case "id":
                RespWriter.WriteInteger(_out, Id);
                break;
            case "setname":
                ReadOnlySpan<byte> name = c[2];
                foreach (byte b in name)
                {
                    if (b is < (byte)'!' or > (byte)'~')
                    {
                        WriteError(Errors.ClientName);
                        return;
                    }
                }

                Name = name.IsEmpty ? null : Encoding.ASCII.GetString(name);
                WriteOk();
                break;
            case "getname":
                if (Name is null)
                {
                    RespWriter.WriteNullBulk(_out);
                }
                else
                {
                    RespWriter.WriteBulk(_out, Name);
                }

                break;
            case "setinfo":
                if (!Is(c[2], "lib-name") && !Is(c[2], "lib-ver"))
                {
                    WriteError($"ERR Unrecognized option '{Encoding.UTF8.GetString(c[2])}'");
                    return;
                }

                WriteOk();
                break;
            case "info":
                RespWriter.WriteBulk(_out, ClientLine() + "\n");
                break;
            case "list":
                RespWriter.WriteBulk(_out, ClientLine() + "\n");
                break;
            default:
                WriteHelp("CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:", "ID", "SETNAME <name>", "GETNAME", "SETINFO <option> <value>", "INFO", "LIST");
                break;
        }
    }

    private string ClientLine() => string.Create(CultureInfo.InvariantCulture, $"id={Id} name={Name} db=0 resp=2");

    private void Hello(RespCommand c)
    {
        if (c.Count >= 2)
        {
            if (!RespParser.TryParseInt64(c[1], out long version) || version < 2)
            {
                WriteError(Errors.HelloVersion);
                return;
            }

            if (version != 2)
            {
                WriteError(Errors.NoProto);
                return;
            }

            for (int i = 2; i < c.Count; i++)
            {
                if (Is(c[i], "setname") && i + 1 < c.Count)
                {
                    Name = Encoding.ASCII.GetString(c[++i]);
                }
                else if (Is(c[i], "auth") && i + 2 < c.Count)
                {
                    WriteError(Errors.Auth);
                    return;
                }
                else
                {
                    WriteError($"ERR Syntax error in HELLO option '{Encoding.UTF8.GetString(c[i])}'");
                    return;
                }
            }
        }

        RespWriter.WriteArrayHeader(_out, 14);
        RespWriter.WriteBulk(_out, "server");
        RespWriter.WriteBulk(_out, "redis");
        RespWriter.WriteBulk(_out, "version");
        RespWriter.WriteBulk(_out, ServerVersion);
        RespWriter.WriteBulk(_out, "proto");
        RespWriter.WriteInteger(_out, 2);
        RespWriter.WriteBulk(_out, "id");
        RespWriter.WriteInteger(_out, Id);
        RespWriter.WriteBulk(_out, "mode");
        RespWriter.WriteBulk(_out, "standalone");
        RespWriter.WriteBulk(_out, "role");
        RespWriter.WriteBulk(_out, "master");
        RespWriter.WriteBulk(_out, "modules");
        RespWriter.WriteArrayHeader(_out, 0);
    }

    private readonly record struct InfoState(long[] Figures);

    private async ValueTask Info(RespCommand c)
    {
        // Four figures per shard, each shard writing only its own four slots.
        var figures = new long[_shards.ShardCount * 4];
        await MapShards(AllShards, new InfoState(figures), static (s, st) =>
        {
            st.Figures[(s.Index * 4) + 0] = s.Count;
            st.Figures[(s.Index * 4) + 1] = s.VolatileCount;
            st.Figures[(s.Index * 4) + 2] = s.UsedBytes;
            st.Figures[(s.Index * 4) + 3] = s.ExpiredKeys;
            return 0;
        });
        long keys = 0, expires = 0, used = 0, expired = 0;
        for (int i = 0; i < _shards.ShardCount; i++)
        {
            keys += figures[i * 4];
            expires += figures[(i * 4) + 1];
            used += figures[(i * 4) + 2];
            expired += figures[(i * 4) + 3];
        }

        KvServerStatistics stats = _server.Statistics;
        var sections = new List<(string Name, string Body)>
        {
            ("server", $"redis_version:{ServerVersion}\r\nredis_mode:standalone\r\nmultikernel_shards:{_shards.ShardCount}\r\nuptime_in_seconds:{(long)(_server.Time.GetUtcNow() - _server.StartedAt).TotalSeconds}\r\n"),
            ("clients", $"connected_clients:{stats.ActiveConnections}\r\nmaxclients:{_options.MaxConnections}\r\n"),
            ("memory", $"used_memory:{used}\r\nmaxmemory:{_options.MaxMemoryBytes}\r\nmaxmemory_policy:noeviction\r\n"),
            ("persistence", "loading:0\r\naof_enabled:0\r\nrdb_changes_since_last_save:0\r\n"),
            ("stats", $"total_connections_received:{stats.AcceptedConnections}\r\ntotal_commands_processed:{stats.CommandsProcessed}\r\nrejected_connections:{stats.RefusedConnections}\r\nexpired_keys:{expired}\r\nmultikernel_overlapped_remote_replies:{stats.OverlappedRemoteReplies}\r\n"),
            ("replication", "role:master\r\nconnected_slaves:0\r\n"),
            ("keyspace", keys > 0 ? $"db0:keys={keys},expires={expires},avg_ttl=0\r\n" : ""),
        };
        var text = new StringBuilder();
        foreach ((string name, string body) in sections)
        {
            bool wanted = c.Count == 1;
            for (int i = 1; i < c.Count && !wanted; i++)
            {
                wanted = Is(c[i], name) || Is(c[i], "all") || Is(c[i], "default") || Is(c[i], "everything");
            }

            if (wanted)
            {
                if (text.Length > 0)
                {
                    text.Append("\r\n");
                }

                text.Append("# ").Append(char.ToUpperInvariant(name[0])).Append(name.AsSpan(1)).Append("\r\n").Append(body);
            }
        }

        RespWriter.WriteBulk(_out, text.ToString());
    }

    private void WriteHelp(params string[] lines)
    {
        RespWriter.WriteArrayHeader(_out, lines.Length);
        foreach (string line in lines)
        {
            RespWriter.WriteSimpleString(_out, Encoding.ASCII.GetBytes(line));
        }
    }

    /// <summary>
    /// Redis 7's text: <c>unknown command '%.128s', with args beginning with: </c> then <c>'%.*s' </c> per
    /// argument while the list is under 128 bytes, each argument cut to what is left of the 128
    /// and at its first NUL (C's <c>%s</c>).
    /// </summary>
    private void WriteUnknownCommand(RespCommand c)
    {
        var message = new ArrayBufferWriter<byte>(256);
        message.Write("ERR unknown command '"u8);
        message.Write(CString(c[0], 128));
        message.Write("', with args beginning with: "u8);
        int args = 0;
        for (int i = 1; i < c.Count && args < 128; i++)
        {
            ReadOnlySpan<byte> arg = CString(c[i], 128 - args);
            message.Write("'"u8);
            message.Write(arg);
            message.Write("' "u8);
            args += arg.Length + 3;
        }

        RespWriter.WriteError(_out, message.WrittenSpan);
    }

    private static ReadOnlySpan<byte> CString(ReadOnlySpan<byte> s, int max)
    {
        int nul = s.IndexOf((byte)0);
        if (nul >= 0)
        {
            s = s[..nul];
        }

        return s.Length > max ? s[..max] : s;
    }

    /// <summary>ASCII case-insensitive comparison of an argument with a lower-case keyword.</summary>
    private static bool Is(ReadOnlySpan<byte> argument, string keyword)
    {
        if (argument.Length != keyword.Length)
        {
            return false;
        }

        for (int i = 0; i < argument.Length; i++)
        {
            byte b = argument[i];
            if ((b is >= (byte)'A' and <= (byte)'Z' ? b | 0x20 : b) != keyword[i])
            {
                return false;
            }
        }

        return true;
    }
}

/// <summary>
/// An expiry as the connection parsed it: absolute unix milliseconds (0 = none, −1 = keep the
/// current one) or milliseconds from now, resolved on the owner shard's core.
/// </summary>
internal readonly record struct Deadline(long Milliseconds, bool Relative)
{
    public static Deadline None => default;

    public static Deadline KeepTtl => new(-1, Relative: false);

    /// <summary>The unix-ms deadline on <paramref name="shard"/>'s clock (called on its core).</summary>
    public long On(KvShard shard)
    {
        if (!Relative)
        {
            return Milliseconds;
        }

        long now = shard.NowMs;
        return Milliseconds > 0 && now > long.MaxValue - Milliseconds ? long.MaxValue
            : Milliseconds < 0 && now < long.MinValue - Milliseconds ? long.MinValue
            : now + Milliseconds;
    }
}
