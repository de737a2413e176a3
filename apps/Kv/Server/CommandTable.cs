using System.Collections.Frozen;
using System.Collections.Immutable;

namespace Multikernel.Apps.Kv.Server;

/// <summary>Commands the server knows.</summary>
internal enum CommandId
{
    Ping,
    Echo,
    Get,
    Set,
    SetNx,
    SetEx,
    PSetEx,
    GetSet,
    Del,
    Exists,
    Incr,
    Decr,
    IncrBy,
    DecrBy,
    Append,
    StrLen,
    MGet,
    MSet,
    Expire,
    PExpire,
    ExpireAt,
    PExpireAt,
    Persist,
    Ttl,
    PTtl,
    Type,
    DbSize,
    FlushAll,
    FlushDb,
    Select,
    Quit,
    Config,
    Command,
    Client,
    Hello,
    Info,
    LPush,
    RPush,
    LPop,
    RPop,
    LLen,
    LRange,
    Keys,
    Time,
    Auth,
}

/// <summary>
/// One command's static description: redis's name, arity (positive = exact, negative = at
/// least), flags and key positions as COMMAND reports them.
/// </summary>
internal sealed record CommandSpec(CommandId Id, string Name, int Arity, ImmutableArray<string> Flags, int FirstKey, int LastKey, int Step)
{
    /// <summary>True when <paramref name="argc"/> arguments (name included) satisfy the arity.</summary>
    public bool ArityAllows(int argc) => Arity > 0 ? argc == Arity : argc >= -Arity;

    /// <summary>A write that may grow memory: refused with OOM at the limit (redis's "denyoom").</summary>
    public bool DenyOom => Flags.Contains("denyoom");
}

/// <summary>The immutable command table (built once; no mutable static state).</summary>
internal static class CommandTable
{
    private static readonly ImmutableArray<string> ReadFast = ["readonly", "fast"];
    private static readonly ImmutableArray<string> Write = ["write", "denyoom"];
    private static readonly ImmutableArray<string> WriteFast = ["write", "denyoom", "fast"];
    private static readonly ImmutableArray<string> WriteOnly = ["write"];
    private static readonly ImmutableArray<string> WriteOnlyFast = ["write", "fast"];
    private static readonly ImmutableArray<string> Fast = ["fast"];
    private static readonly ImmutableArray<string> Admin = ["loading", "stale"];
    private static readonly ImmutableArray<string> ReadOnly = ["readonly"];

    public static readonly ImmutableArray<CommandSpec> All =
    [
        new(CommandId.Ping, "ping", -1, Fast, 0, 0, 0),
        new(CommandId.Echo, "echo", 2, Fast, 0, 0, 0),
        new(CommandId.Get, "get", 2, ReadFast, 1, 1, 1),
        new(CommandId.Set, "set", -3, Write, 1, 1, 1),
        new(CommandId.SetNx, "setnx", 3, WriteFast, 1, 1, 1),
        new(CommandId.SetEx, "setex", 4, Write, 1, 1, 1),
        new(CommandId.PSetEx, "psetex", 4, Write, 1, 1, 1),
        new(CommandId.GetSet, "getset", 3, WriteFast, 1, 1, 1),
        new(CommandId.Del, "del", -2, WriteOnly, 1, -1, 1),
        new(CommandId.Del, "unlink", -2, WriteOnlyFast, 1, -1, 1),
        new(CommandId.Exists, "exists", -2, ReadFast, 1, -1, 1),
        new(CommandId.Incr, "incr", 2, WriteFast, 1, 1, 1),
        new(CommandId.Decr, "decr", 2, WriteFast, 1, 1, 1),
        new(CommandId.IncrBy, "incrby", 3, WriteFast, 1, 1, 1),
        new(CommandId.DecrBy, "decrby", 3, WriteFast, 1, 1, 1),
        new(CommandId.Append, "append", 3, WriteFast, 1, 1, 1),
        new(CommandId.StrLen, "strlen", 2, ReadFast, 1, 1, 1),
        new(CommandId.MGet, "mget", -2, ReadFast, 1, -1, 1),
        new(CommandId.MSet, "mset", -3, Write, 1, -1, 2),
        new(CommandId.Expire, "expire", -3, WriteOnlyFast, 1, 1, 1),
        new(CommandId.PExpire, "pexpire", -3, WriteOnlyFast, 1, 1, 1),
        new(CommandId.ExpireAt, "expireat", -3, WriteOnlyFast, 1, 1, 1),
        new(CommandId.PExpireAt, "pexpireat", -3, WriteOnlyFast, 1, 1, 1),
        new(CommandId.Persist, "persist", 2, WriteOnlyFast, 1, 1, 1),
        new(CommandId.Ttl, "ttl", 2, ReadFast, 1, 1, 1),
        new(CommandId.PTtl, "pttl", 2, ReadFast, 1, 1, 1),
        new(CommandId.Type, "type", 2, ReadFast, 1, 1, 1),
        new(CommandId.DbSize, "dbsize", 1, ReadFast, 0, 0, 0),
        new(CommandId.FlushAll, "flushall", -1, WriteOnly, 0, 0, 0),
        new(CommandId.FlushDb, "flushdb", -1, WriteOnly, 0, 0, 0),
        new(CommandId.Select, "select", 2, Admin, 0, 0, 0),
        new(CommandId.Quit, "quit", -1, Admin, 0, 0, 0),
        new(CommandId.Config, "config", -2, Admin, 0, 0, 0),
        new(CommandId.Command, "command", -1, Admin, 0, 0, 0),
        new(CommandId.Client, "client", -2, Admin, 0, 0, 0),
        new(CommandId.Hello, "hello", -1, Fast, 0, 0, 0),
        new(CommandId.Info, "info", -1, Admin, 0, 0, 0),
        new(CommandId.LPush, "lpush", -3, WriteFast, 1, 1, 1),
        new(CommandId.RPush, "rpush", -3, WriteFast, 1, 1, 1),
        new(CommandId.LPop, "lpop", -2, WriteOnlyFast, 1, 1, 1),
        new(CommandId.RPop, "rpop", -2, WriteOnlyFast, 1, 1, 1),
        new(CommandId.LLen, "llen", 2, ReadFast, 1, 1, 1),
        new(CommandId.LRange, "lrange", 4, ReadOnly, 1, 1, 1),
        new(CommandId.Keys, "keys", 2, ReadOnly, 0, 0, 0),
        new(CommandId.Time, "time", 1, Fast, 0, 0, 0),
        new(CommandId.Auth, "auth", -2, Fast, 0, 0, 0),
    ];

    private static readonly FrozenDictionary<string, CommandSpec> ByName =
        All.ToFrozenDictionary(c => c.Name, StringComparer.OrdinalIgnoreCase);

    private static readonly FrozenDictionary<string, CommandSpec>.AlternateLookup<ReadOnlySpan<char>> ByNameSpan =
        ByName.GetAlternateLookup<ReadOnlySpan<char>>();

    /// <summary>Longest command name, so lookups decode into a small stack buffer.</summary>
    private const int MaxNameLength = 16;

    /// <summary>Finds a command by its (case-insensitive) name without allocating.</summary>
    public static CommandSpec? Find(ReadOnlySpan<byte> name)
    {
        if (name.IsEmpty || name.Length > MaxNameLength)
        {
            return null;
        }

        Span<char> chars = stackalloc char[MaxNameLength];
        for (int i = 0; i < name.Length; i++)
        {
            byte b = name[i];
            if (b >= 0x80)
            {
                return null;
            }

            chars[i] = (char)b;
        }

        return ByNameSpan.TryGetValue(chars[..name.Length], out CommandSpec? spec) ? spec : null;
    }

    /// <summary>Subcommand arities (redis 7's <c>container|sub</c> names).</summary>
    public static readonly FrozenDictionary<string, int> SubcommandArity = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase)
    {
        ["config|get"] = -3,
        ["config|set"] = -4,
        ["config|resetstat"] = 2,
        ["config|help"] = 2,
        ["command|count"] = 2,
        ["command|docs"] = -2,
        ["command|info"] = -2,
        ["command|list"] = -2,
        ["command|help"] = 2,
        ["client|id"] = 2,
        ["client|setname"] = 3,
        ["client|getname"] = 2,
        ["client|setinfo"] = 4,
        ["client|info"] = 2,
        ["client|list"] = -2,
        ["client|help"] = 2,
    }.ToFrozenDictionary(StringComparer.OrdinalIgnoreCase);
}
