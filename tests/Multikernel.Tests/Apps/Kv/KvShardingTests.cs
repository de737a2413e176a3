using System.Text;
using Multikernel.Apps.Kv;
using Multikernel.Apps.Kv.Store;

namespace Multikernel.Tests.Apps.Kv;

public sealed class KvShardingTests
{
    [Theory]
    [InlineData("foo", 12182)]
    [InlineData("bar", 5061)]
    [InlineData("hello", 866)]
    [InlineData("foo{bar}{zap}", 5061)]
    public void Slot_IsRedisClustersKeySlot(string key, int slot) => Assert.Equal(slot, KeyHasher.Slot(Encoding.ASCII.GetBytes(key)));

    [Theory]
    [InlineData("{user1000}.following", "user1000")]
    [InlineData("{user1000}.followers", "user1000")]
    [InlineData("foo{{bar}}zap", "{bar")]
    [InlineData("a{b}", "b")]
    public void HashTags_HashOnlyTheTag(string key, string tag) =>
        Assert.Equal(KeyHasher.Crc16(Encoding.ASCII.GetBytes(tag)) & 16383, KeyHasher.Slot(Encoding.ASCII.GetBytes(key)));

    [Theory]
    [InlineData("foo{}{bar}")]
    [InlineData("foo{bar")]
    [InlineData("}foo{")]
    public void KeysWithoutAUsableTag_HashWhole(string key) =>
        Assert.Equal(KeyHasher.Crc16(Encoding.ASCII.GetBytes(key)) & 16383, KeyHasher.Slot(Encoding.ASCII.GetBytes(key)));

    [Fact]
    public void Crc16_MatchesTheXmodemCheckValue() => Assert.Equal(0x31C3, KeyHasher.Crc16("123456789"u8));

    [Fact]
    public async Task MultiKeyCommands_SplitAcrossShardsOnTheirOwnCores_AndMergeInOrder()
    {
        var options = new KvOptions();
        using var cores = new CoreLoops(4, options, TimeProvider.System);
        var server = new KvServer(cores, options);
        var connection = new PipeConnection();
        // The connection lives on core 1: keys of shards 0, 2 and 3 are forwarded.
        Task serving = cores.RunOn(1, () => server.RunConnectionAsync(connection.ServerSide));
        try
        {
            string[] keys = [.. Enumerable.Range(0, 64).Select(i => "key:" + i)];
            int[] owners = [.. keys.Select(k => KeyHasher.ShardOf(Encoding.ASCII.GetBytes(k), 4))];
            Assert.Equal(4, owners.Distinct().Count());

            var mset = new List<string> { "MSET" };
            foreach (string k in keys)
            {
                mset.AddRange([k, "value-of-" + k]);
            }

            Assert.Equal("OK", await Call(connection, [.. mset]));
            for (int s = 0; s < 4; s++)
            {
                int shard = s;
                Assert.Equal(owners.Count(o => o == shard), await cores.RunOn(shard, () => cores.Shard(shard).Count));
            }

            string[] query = [.. keys.Reverse().Append("missing").Prepend("MGET")];
            string expected = "[" + string.Join(", ", keys.Reverse().Select(k => $"\"value-of-{k}\"").Append("(nil)")) + "]";
            Assert.Equal(expected, await Call(connection, query));
            Assert.Equal("(integer) 64", await Call(connection, "DBSIZE"));
            Assert.Equal("(integer) 65", await Call(connection, [.. keys.Append("key:0").Append("nope").Prepend("EXISTS")]));
            Assert.Equal("\"value-of-key:7\"", await Call(connection, "GET", "key:7"));
            Assert.Equal("(integer) 32", await Call(connection, [.. keys.Take(32).Prepend("DEL")]));
            Assert.Equal("OK", await Call(connection, "FLUSHALL"));
            Assert.Equal("(integer) 0", await Call(connection, "DBSIZE"));
            Assert.True(cores.Forwarded > 0);
            Assert.Equal(0, cores.WrongThreadOperations);
        }
        finally
        {
            await connection.ClientOutput.CompleteAsync();
            await serving.WaitAsync(PipeConnection.Patience);
        }
    }

    [Fact]
    public async Task ManyConnectionsOnDifferentCores_SeeOneStore()
    {
        var options = new KvOptions();
        using var cores = new CoreLoops(3, options, TimeProvider.System);
        var server = new KvServer(cores, options);
        var connections = Enumerable.Range(0, 6).Select(_ => new PipeConnection()).ToArray();
        Task[] serving = [.. connections.Select((c, i) => cores.RunOn(i % 3, () => server.RunConnectionAsync(c.ServerSide)))];
        try
        {
            await Task.WhenAll(connections.Select(async (c, i) =>
            {
                for (int n = 0; n < 200; n++)
                {
                    Assert.StartsWith("(integer) ", await Call(c, "INCR", "counter:" + (n % 7)));
                }
            }));

            long total = 0;
            for (int n = 0; n < 7; n++)
            {
                string reply = await Call(connections[0], "GET", "counter:" + n);
                total += long.Parse(reply.Trim('"'), System.Globalization.CultureInfo.InvariantCulture);
            }

            Assert.Equal(6 * 200, total);
            Assert.Equal(0, cores.WrongThreadOperations);
        }
        finally
        {
            foreach (PipeConnection c in connections)
            {
                await c.ClientOutput.CompleteAsync();
            }

            await Task.WhenAll(serving).WaitAsync(PipeConnection.Patience);
        }
    }

    private static async Task<string> Call(PipeConnection connection, params string[] args)
    {
        await connection.SendAsync(Resp.Command(args));
        byte[] got = await connection.ReadUntilAsync(b => Resp.ParseAll(b, out _).Count >= 1);
        return Resp.ParseAll(got, out _).Single();
    }
}
