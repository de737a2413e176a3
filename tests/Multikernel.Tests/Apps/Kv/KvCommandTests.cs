using System.Buffers;
using System.IO.Pipelines;
using System.Text;
using Multikernel.Apps.Kv;
using Multikernel.Apps.Kv.Store;
using Xunit.Abstractions;

namespace Multikernel.Tests.Apps.Kv;

public sealed class KvCommandTests(ITestOutputHelper output)
{
    [Fact]
    public async Task ErrorTexts_AreRedisServer7sWordForWord()
    {
        await using var kv = new KvHarness();
        Assert.Equal("(error) ERR unknown command 'foo', with args beginning with: 'a' 'b c' ", await kv.Call("foo", "a", "b c"));
        Assert.Equal("(error) ERR unknown command 'FOO', with args beginning with: ", await kv.Call("FOO"));
        Assert.Equal("(error) ERR wrong number of arguments for 'get' command", await kv.Call("GET"));
        Assert.Equal("(error) ERR wrong number of arguments for 'get' command", await kv.Call("get", "a", "b"));
        Assert.Equal("(error) ERR wrong number of arguments for 'mset' command", await kv.Call("MSET", "a", "1", "b"));
        Assert.Equal("(error) ERR wrong number of arguments for 'config|get' command", await kv.Call("CONFIG", "GET"));
        Assert.Equal("(error) ERR unknown subcommand 'nope'. Try CONFIG HELP.", await kv.Call("CONFIG", "nope"));
        Assert.Equal("(integer) 1", await kv.Call("LPUSH", "list", "x"));
        Assert.Equal("(error) WRONGTYPE Operation against a key holding the wrong kind of value", await kv.Call("GET", "list"));
        Assert.Equal("(error) WRONGTYPE Operation against a key holding the wrong kind of value", await kv.Call("INCR", "list"));
        Assert.Equal("OK", await kv.Call("SET", "s", "abc"));
        Assert.Equal("(error) ERR value is not an integer or out of range", await kv.Call("INCR", "s"));
        Assert.Equal("(error) ERR value is not an integer or out of range", await kv.Call("INCRBY", "n", "1.5"));
        Assert.Equal("(error) ERR value is not an integer or out of range", await kv.Call("EXPIRE", "s", "x"));
        Assert.Equal("(error) ERR syntax error", await kv.Call("SET", "k", "v", "NX", "XX"));
        Assert.Equal("(error) ERR syntax error", await kv.Call("SET", "k", "v", "EX", "10", "PX", "5"));
        Assert.Equal("(error) ERR syntax error", await kv.Call("SET", "k", "v", "BOGUS"));
        Assert.Equal("(error) ERR invalid expire time in 'set' command", await kv.Call("SET", "k", "v", "EX", "0"));
        Assert.Equal("(error) ERR invalid expire time in 'setex' command", await kv.Call("SETEX", "k", "-1", "v"));
        Assert.Equal("(error) ERR DB index is out of range", await kv.Call("SELECT", "1"));
        Assert.Equal("OK", await kv.Call("SET", "big", long.MaxValue.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        Assert.Equal("(error) ERR increment or decrement would overflow", await kv.Call("INCR", "big"));
        Assert.Equal("(error) NOPROTO unsupported protocol version", await kv.Call("HELLO", "3"));
    }

    [Fact]
    public async Task UnknownCommand_ArgumentListIsCutAt128Bytes_AndCrLfCannotBreakTheFrame()
    {
        await using var kv = new KvHarness();
        string reply = await kv.Call("x", new string('a', 200), "b");
        Assert.Equal("(error) ERR unknown command 'x', with args beginning with: '" + new string('a', 128) + "' ", reply);
        Assert.Equal("(error) ERR unknown command 'x y', with args beginning with: 'a  b' ", await kv.Call("x\ny", "a\r\nb"));
    }

    [Fact]
    public async Task Strings_Counters_And_Keys_BehaveAsInRedis()
    {
        await using var kv = new KvHarness();
        Assert.Equal("PONG", await kv.Call("PING"));
        Assert.Equal("\"hi\"", await kv.Call("PING", "hi"));
        Assert.Equal("\"hello\"", await kv.Call("ECHO", "hello"));
        Assert.Equal("(nil)", await kv.Call("GET", "k"));
        Assert.Equal("OK", await kv.Call("SET", "k", "v1"));
        Assert.Equal("(nil)", await kv.Call("SET", "k", "v2", "NX"));
        Assert.Equal("\"v1\"", await kv.Call("SET", "k", "v2", "XX", "GET"));
        Assert.Equal("\"v2\"", await kv.Call("GET", "k"));
        Assert.Equal("(nil)", await kv.Call("SET", "other", "x", "XX"));
        Assert.Equal("(integer) 1", await kv.Call("SETNX", "n", "10"));
        Assert.Equal("(integer) 11", await kv.Call("INCR", "n"));
        Assert.Equal("(integer) 6", await kv.Call("DECRBY", "n", "5"));
        Assert.Equal("(integer) 5", await kv.Call("DECR", "n"));
        Assert.Equal("(integer) 105", await kv.Call("INCRBY", "n", "100"));
        Assert.Equal("(integer) -1", await kv.Call("INCRBY", "fresh", "-1"));
        Assert.Equal("(integer) 4", await kv.Call("APPEND", "k", "xy"));
        Assert.Equal("(integer) 4", await kv.Call("STRLEN", "k"));
        Assert.Equal("OK", await kv.Call("MSET", "a", "1", "b", "2"));
        Assert.Equal("[\"1\", (nil), \"2\", \"v2xy\"]", await kv.Call("MGET", "a", "nope", "b", "k"));
        Assert.Equal("(integer) 3", await kv.Call("EXISTS", "a", "a", "b"));
        Assert.Equal("(integer) 2", await kv.Call("DEL", "a", "b", "a", "nope"));
        Assert.Equal("string", await kv.Call("TYPE", "k"));
        Assert.Equal("none", await kv.Call("TYPE", "a"));
        Assert.Equal("(integer) 3", await kv.Call("DBSIZE"));
        Assert.Equal("[\"fresh\"]", await kv.Call("KEYS", "f*"));
        Assert.Equal("OK", await kv.Call("FLUSHALL"));
        Assert.Equal("(integer) 0", await kv.Call("DBSIZE"));
        Assert.Equal("OK", await kv.Call("SELECT", "0"));
    }

    [Fact]
    public async Task Lists_PushPopRange()
    {
        await using var kv = new KvHarness();
        Assert.Equal("(integer) 3", await kv.Call("RPUSH", "l", "a", "b", "c"));
        Assert.Equal("(integer) 4", await kv.Call("LPUSH", "l", "z"));
        Assert.Equal("[\"z\", \"a\", \"b\", \"c\"]", await kv.Call("LRANGE", "l", "0", "-1"));
        Assert.Equal("[\"b\", \"c\"]", await kv.Call("LRANGE", "l", "-2", "100"));
        Assert.Equal("\"z\"", await kv.Call("LPOP", "l"));
        Assert.Equal("[\"c\", \"b\"]", await kv.Call("RPOP", "l", "2"));
        Assert.Equal("(integer) 1", await kv.Call("LLEN", "l"));
        Assert.Equal("\"a\"", await kv.Call("RPOP", "l"));
        Assert.Equal("(integer) 0", await kv.Call("EXISTS", "l"));
        Assert.Equal("(nil array)", await kv.Call("LPOP", "l", "3"));
    }

    [Fact]
    public async Task WhatRedisCliAndBenchmarkSendOnConnect_IsAnswered()
    {
        await using var kv = new KvHarness();
        Assert.Equal("[\"save\", \"\"]", await kv.Call("CONFIG", "GET", "save"));
        Assert.Equal("[\"appendonly\", \"no\"]", await kv.Call("CONFIG", "GET", "appendonly"));
        Assert.StartsWith("[\"maxmemory\", \"", await kv.Call("CONFIG", "GET", "maxmem*"));
        Assert.Equal("[]", await kv.Call("COMMAND", "DOCS"));
        Assert.StartsWith("(integer) ", await kv.Call("COMMAND", "COUNT"));
        Assert.StartsWith("[[\"get\", (integer) 2, [readonly, fast], (integer) 1, (integer) 1, (integer) 1, [], [], [], []]", await kv.Call("COMMAND", "INFO", "get"));
        Assert.Equal("OK", await kv.Call("CLIENT", "SETNAME", "bench"));
        Assert.Equal("\"bench\"", await kv.Call("CLIENT", "GETNAME"));
        Assert.Equal("(error) ERR Client names cannot contain spaces, newlines or special characters.", await kv.Call("CLIENT", "SETNAME", "a b"));
        Assert.Equal("OK", await kv.Call("CLIENT", "SETINFO", "lib-name", "redis-py"));
        Assert.Equal("(integer) 1", await kv.Call("CLIENT", "ID"));
        Assert.StartsWith("[\"server\", \"redis\", \"version\", ", await kv.Call("HELLO"));
        Assert.StartsWith("[\"server\", \"redis\", \"version\", ", await kv.Call("HELLO", "2"));
        Assert.Equal("OK", await kv.Call("SET", "k", "v"));
        string info = await kv.Call("INFO");
        Assert.Contains("redis_version:", info, StringComparison.Ordinal);
        Assert.Contains("db0:keys=1,expires=0", info, StringComparison.Ordinal);
        Assert.DoesNotContain("# Memory", await kv.Call("INFO", "keyspace"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Pipelining_RepliesInOrder_InlineAndMultibulkMixed()
    {
        await using var kv = new KvHarness();
        var raw = new List<byte>();
        for (int i = 0; i < 500; i++)
        {
            raw.AddRange(Resp.Command("SET", "k" + i, "v" + i));
            raw.AddRange(Encoding.ASCII.GetBytes($"GET k{i}\r\n"));
        }

        raw.AddRange(Encoding.ASCII.GetBytes("PING\r\n"));
        List<string> replies = await kv.SendRawAsync([.. raw], 1001);
        for (int i = 0; i < 500; i++)
        {
            Assert.Equal("OK", replies[2 * i]);
            Assert.Equal($"\"v{i}\"", replies[(2 * i) + 1]);
        }

        Assert.Equal("PONG", replies[1000]);
    }

    [Fact]
    public async Task Quit_RepliesOk_ThenCloses()
    {
        await using var kv = new KvHarness();
        await kv.Connection.SendAsync("QUIT\r\nPING\r\n");
        byte[] all = await kv.Connection.ReadToEndAsync();
        Assert.Equal("+OK\r\n", Encoding.ASCII.GetString(all));
        await kv.Serving.WaitAsync(PipeConnection.Patience);
    }

    [Fact]
    public async Task ProtocolError_RepliesThenCloses_AndCounts()
    {
        await using var kv = new KvHarness();
        await kv.Connection.SendAsync("PING\r\n*1\r\n$x\r\nPING\r\n");
        byte[] all = await kv.Connection.ReadToEndAsync();
        Assert.Equal("+PONG\r\n-ERR Protocol error: invalid bulk length\r\n", Encoding.ASCII.GetString(all));
        await kv.Serving.WaitAsync(PipeConnection.Patience);
        Assert.Equal(1, kv.Server.Statistics.ProtocolErrors);
    }

    [Fact]
    public async Task MemoryLimit_RefusesWritesWithRedisOomError_DeletesStillWork()
    {
        var options = new KvOptions { MaxMemoryBytes = 8192 };
        await using var kv = new KvHarness(options);
        string value = new('x', 1000);
        int stored = 0;
        string reply;
        while ((reply = await kv.Call("SET", "k" + stored, value)) == "OK")
        {
            stored++;
            Assert.True(stored < 100, "the limit never refused");
        }

        Assert.Equal("(error) OOM command not allowed when used memory > 'maxmemory'.", reply);
        Assert.InRange(stored, 5, 8);
        Assert.Equal("(error) OOM command not allowed when used memory > 'maxmemory'.", await kv.Call("APPEND", "k0", value));
        Assert.Equal("(error) OOM command not allowed when used memory > 'maxmemory'.", await kv.Call("MSET", "m1", value, "m2", value));
        Assert.Equal("(integer) 1", await kv.Call("DEL", "k0"));
        Assert.Equal("OK", await kv.Call("SET", "again", value));
        Assert.True(((InlineShardInvoker)kv.Shards)[0].UsedBytes <= 8192);
    }

    [Fact]
    public async Task KeyLimit_RefusesNewKeys_ButOverwritesExisting()
    {
        var options = new KvOptions { MaxKeys = 3 };
        await using var kv = new KvHarness(options);
        Assert.Equal("OK", await kv.Call("MSET", "a", "1", "b", "2", "c", "3"));
        Assert.Equal("(error) OOM command not allowed when used memory > 'maxmemory'.", await kv.Call("SET", "d", "4"));
        Assert.Equal("OK", await kv.Call("SET", "a", "9"));
        Assert.Equal("(integer) 3", await kv.Call("DBSIZE"));
    }

    [Fact]
    public async Task QueryBufferLimit_ClosesAClientWhoseCommandNeverEnds()
    {
        var options = new KvOptions { MaxBulkBytes = 64 * 1024, MaxQueryBufferBytes = 256 * 1024 };
        await using var kv = new KvHarness(options, serverInputBytes: options.RequiredInputBufferBytes);
        // 100 arguments of 64 KiB each: every bulk is legal, the command as a whole is not.
        await kv.Connection.SendAsync("*100\r\n");
        byte[] arg = Encoding.ASCII.GetBytes("$65536\r\n" + new string('a', 65536) + "\r\n");
        Task sending = Task.Run(async () =>
        {
            for (int i = 0; i < 99; i++)
            {
                FlushResult r = await kv.Connection.ClientOutput.WriteAsync(arg);
                if (r.IsCompleted)
                {
                    return;
                }
            }
        });
        Assert.True(await kv.Connection.ServerClosedAsync(PipeConnection.Patience));
        await kv.Serving.WaitAsync(PipeConnection.Patience);
        Assert.Equal(1, kv.Server.Statistics.QueryBufferOverflows);
        await sending.WaitAsync(PipeConnection.Patience);
    }

    [Fact]
    public async Task PeerThatNeverReads_StallsTheConnection_AtBoundedBuffers()
    {
        var options = new KvOptions { MaxPipelineDepth = 64 };
        const long OutputBytes = 16 * 1024;
        await using var kv = new KvHarness(options, serverInputBytes: options.RequiredInputBufferBytes, serverOutputBytes: OutputBytes);
        Assert.Equal("OK", await kv.Call("SET", "k", new string('v', 100)));
        byte[] get = Resp.Command("GET", "k");
        const int Total = 50_000;
        // One write: the server sees the whole pipeline in one read and must still flush every MaxPipelineDepth replies.
        Task writer = Task.Run(async () => await kv.Connection.ClientOutput.WriteAsync(Enumerable.Repeat(get, Total).SelectMany(b => b).ToArray()));

        // Replies pile up only to the output pipe's bound; then the server stops executing.
        Assert.True(await ManualTimeProvider.EventuallyAsync(() => kv.Server.Statistics.CommandsProcessed > 100));
        long last = -1;
        for (int i = 0; i < 50; i++)
        {
            await Task.Delay(20);
            long now = kv.Server.Statistics.CommandsProcessed;
            if (now == last)
            {
                break;
            }

            last = now;
        }

        long processed = kv.Server.Statistics.CommandsProcessed;
        long replyBytes = 108; // "$100\r\n" + 100 + "\r\n"
        output.WriteLine($"processed {processed} of {Total} while the client did not read");
        Assert.True(processed < Total / 2, $"processed {processed}");
        Assert.True((processed - 1) * replyBytes <= OutputBytes + (options.MaxPipelineDepth * replyBytes) + 65536, $"processed {processed}");

        // Reading resumes it: every reply arrives, in order.
        long received = 0;
        byte[] tail = [];
        using var cts = new CancellationTokenSource(PipeConnection.Patience);
        while (received < Total * replyBytes)
        {
            ReadResult read = await kv.Connection.ClientInput.ReadAsync(cts.Token);
            received += read.Buffer.Length;
            tail = read.Buffer.Slice(Math.Max(0, read.Buffer.Length - replyBytes)).ToArray();
            kv.Connection.ClientInput.AdvanceTo(read.Buffer.End);
        }

        Assert.Equal(Total * replyBytes, received);
        Assert.Equal("$100\r\n" + new string('v', 100) + "\r\n", Encoding.ASCII.GetString(tail));
        await writer.WaitAsync(PipeConnection.Patience);
    }

    [Fact]
    public async Task ConnectionLimit_RefusesTheNextClientWithRedisError()
    {
        var options = new KvOptions { MaxConnections = 1 };
        var shards = new InlineShardInvoker(1, options, TimeProvider.System);
        await using var first = new KvHarness(options, shards: shards);
        Assert.Equal("PONG", await first.Call("PING"));
        var second = new PipeConnection();
        Task serving = first.Server.RunConnectionAsync(second.ServerSide);
        Assert.Equal("-ERR max number of clients reached\r\n", Encoding.ASCII.GetString(await second.ReadToEndAsync()));
        await serving.WaitAsync(PipeConnection.Patience);
        Assert.Equal(1, first.Server.Statistics.RefusedConnections);
    }

    [Fact]
    public async Task Fuzz_ServerSurvivesGarbage_EveryConnectionEndsCleanly()
    {
        int seed = Environment.TickCount;
        output.WriteLine($"seed {seed}");
        var random = new Random(seed);
        var options = new KvOptions { MaxBulkBytes = 4096, MaxArguments = 64, MaxQueryBufferBytes = 128 * 1024 };
        var shards = new InlineShardInvoker(3, options, TimeProvider.System);
        var server = new KvServer(shards, options);
        string[] valid = ["*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n", "MGET a b c\r\n", "INCR a\r\n", "LPUSH l x y\r\n", "EXPIRE a 100\r\n", "CONFIG GET *\r\n", "COMMAND\r\n", "INFO\r\n"];
        for (int round = 0; round < 300; round++)
        {
            var connection = new PipeConnection(options.RequiredInputBufferBytes);
            Task serving = server.RunConnectionAsync(connection.ServerSide);
            byte[] bytes = [.. Enumerable.Range(0, random.Next(1, 8)).SelectMany(_ => random.Next(3) == 0
                ? RespParserTests.RandomBytes(random)
                : RespParserTests.Mutate(Encoding.ASCII.GetBytes(valid[random.Next(valid.Length)]), random))];
            for (int at = 0; at < bytes.Length;)
            {
                int n = Math.Min(bytes.Length - at, random.Next(1, 64));
                await connection.ClientOutput.WriteAsync(bytes.AsMemory(at, n));
                at += n;
            }

            await connection.ClientOutput.CompleteAsync();
            byte[] replies = await connection.ReadToEndAsync();
            await serving.WaitAsync(PipeConnection.Patience);
            // Whatever came back is well-formed RESP.
            Resp.ParseAll(replies, out int consumed);
            Assert.True(consumed == replies.Length, $"seed {seed} round {round}: malformed reply stream");
        }

        Assert.Equal(0, server.Statistics.ActiveConnections);
    }
}
