using Multikernel.Apps.Kv;
using Multikernel.Apps.Kv.Store;

namespace Multikernel.Tests.Apps.Kv;

public sealed class KvExpiryTests
{
    [Fact]
    public async Task KeysExpireOnTheManualClock_TtlAndPttlCountDown()
    {
        var time = new ManualTimeProvider();
        await using var kv = new KvHarness(time: time);
        Assert.Equal("OK", await kv.Call("SET", "k", "v", "EX", "10"));
        Assert.Equal("(integer) 10", await kv.Call("TTL", "k"));
        Assert.Equal("(integer) 10000", await kv.Call("PTTL", "k"));
        time.Advance(TimeSpan.FromMilliseconds(9_400));
        Assert.Equal("(integer) 1", await kv.Call("TTL", "k"));
        Assert.Equal("(integer) 600", await kv.Call("PTTL", "k"));
        Assert.Equal("\"v\"", await kv.Call("GET", "k"));
        time.Advance(TimeSpan.FromMilliseconds(600));
        Assert.Equal("(nil)", await kv.Call("GET", "k"));
        Assert.Equal("(integer) -2", await kv.Call("TTL", "k"));
        Assert.Equal("(integer) 0", await kv.Call("DBSIZE"));
    }

    [Fact]
    public async Task Expire_Persist_KeepTtl_AndOverwriteClearsTtl()
    {
        var time = new ManualTimeProvider();
        await using var kv = new KvHarness(time: time);
        Assert.Equal("(integer) 0", await kv.Call("EXPIRE", "missing", "10"));
        Assert.Equal("OK", await kv.Call("SET", "k", "v"));
        Assert.Equal("(integer) -1", await kv.Call("TTL", "k"));
        Assert.Equal("(integer) 1", await kv.Call("PEXPIRE", "k", "5000"));
        Assert.Equal("(integer) 0", await kv.Call("EXPIRE", "k", "100", "NX"));
        Assert.Equal("(integer) 0", await kv.Call("EXPIRE", "k", "1", "GT"));
        Assert.Equal("(integer) 1", await kv.Call("EXPIRE", "k", "100", "GT"));
        Assert.Equal("(integer) 100", await kv.Call("TTL", "k"));
        Assert.Equal("OK", await kv.Call("SET", "k", "v2", "KEEPTTL"));
        Assert.Equal("(integer) 100", await kv.Call("TTL", "k"));
        Assert.Equal("OK", await kv.Call("SET", "k", "v3"));
        Assert.Equal("(integer) -1", await kv.Call("TTL", "k"));
        Assert.Equal("(integer) 1", await kv.Call("EXPIRE", "k", "3"));
        Assert.Equal("(integer) 1", await kv.Call("PERSIST", "k"));
        Assert.Equal("(integer) 0", await kv.Call("PERSIST", "k"));
        time.Advance(TimeSpan.FromSeconds(10));
        Assert.Equal("\"v3\"", await kv.Call("GET", "k"));
        Assert.Equal("OK", await kv.Call("SETEX", "s", "2", "x"));
        Assert.Equal("OK", await kv.Call("PSETEX", "p", "1500", "x"));
        Assert.Equal("(integer) 1", await kv.Call("EXPIREAT", "k", (time.GetUtcNow().ToUnixTimeSeconds() + 1).ToString(System.Globalization.CultureInfo.InvariantCulture)));
        time.Advance(TimeSpan.FromSeconds(2));
        Assert.Equal("[(nil), (nil), (nil)]", await kv.Call("MGET", "s", "p", "k"));
        // A deadline in the past deletes at once, as in redis.
        Assert.Equal("OK", await kv.Call("SET", "gone", "x"));
        Assert.Equal("(integer) 1", await kv.Call("EXPIRE", "gone", "-1"));
        Assert.Equal("(integer) 0", await kv.Call("EXISTS", "gone"));
    }

    [Fact]
    public void ActiveSweep_RemovesExpiredKeysNobodyTouches_InBoundedSteps()
    {
        var time = new ManualTimeProvider();
        var shard = new KvShard(0, new ShardLimits(10_000, 1 << 24, ExpireSweepKeys: 20, ExpireSweepEveryOperations: 1_000_000), time);
        long deadline = time.GetUtcNow().ToUnixTimeMilliseconds() + 1000;
        for (int i = 0; i < 100; i++)
        {
            Assert.Equal(KvStatus.Ok, shard.Set(System.Text.Encoding.ASCII.GetBytes("v" + i), "x"u8, SetCondition.Always, deadline, false, out _));
            Assert.Equal(KvStatus.Ok, shard.Set(System.Text.Encoding.ASCII.GetBytes("p" + i), "x"u8, SetCondition.Always, 0, false, out _));
        }

        Assert.Equal(0, shard.SweepExpired(20));
        Assert.Equal(100, shard.VolatileCount);
        time.Advance(TimeSpan.FromSeconds(2));
        Assert.Equal(200, shard.Count);
        int steps = 0;
        while (shard.VolatileCount > 0)
        {
            int removed = shard.SweepExpired(20);
            Assert.InRange(removed, 1, 20);
            steps++;
        }

        Assert.Equal(5, steps);
        Assert.Equal(100, shard.Count);
        Assert.Equal(100, shard.ExpiredKeys);
        Assert.Equal(Enumerable.Range(0, 100).Sum(i => ("p" + i).Length + 1 + KvShard.EntryOverhead), shard.UsedBytes);
    }

    [Fact]
    public async Task WritesRunSweepSteps_SoExpiredKeysDoNotAccumulate()
    {
        var time = new ManualTimeProvider();
        var options = new KvOptions { ExpireSweepEveryOperations = 4, ExpireSweepKeys = 10 };
        await using var kv = new KvHarness(options, time);
        for (int i = 0; i < 50; i++)
        {
            Assert.Equal("OK", await kv.Call("SET", "t" + i, "x", "PX", "100"));
        }

        time.Advance(TimeSpan.FromSeconds(1));
        for (int i = 0; i < 40; i++)
        {
            Assert.Equal("OK", await kv.Call("SET", "n" + i, "x"));
        }

        Assert.Equal("(integer) 40", await kv.Call("DBSIZE"));
        Assert.Equal(0, await kv.Server.SweepExpiredAsync());
    }
}
