using Multikernel.Apps.Kv;
using Xunit.Abstractions;

namespace Multikernel.Tests.Apps.Kv;

/// <summary>The kv engine over loopback TCP, two test cores, with the real redis-cli and redis-benchmark.</summary>
public sealed class KvRealClientTests(ITestOutputHelper output)
{
    private static readonly TimeSpan ToolTimeout = TimeSpan.FromSeconds(120);

    private sealed class Rig : IAsyncDisposable
    {
        private int _next;

        public Rig()
        {
            Options = new KvOptions();
            Cores = new CoreLoops(2, Options, TimeProvider.System);
            Server = new KvServer(Cores, Options);
            Host = LoopbackHost.Start((pipe, ct) => Cores.RunOn(Interlocked.Increment(ref _next) % 2, () => Server.RunConnectionAsync(pipe, ct)), Options.RequiredInputBufferBytes);
        }

        public KvOptions Options { get; }

        public CoreLoops Cores { get; }

        public KvServer Server { get; }

        public LoopbackHost Host { get; }

        public string Port => Host.Port.ToString(System.Globalization.CultureInfo.InvariantCulture);

        public async ValueTask DisposeAsync()
        {
            await Host.DisposeAsync();
            Cores.Dispose();
        }
    }

    [ToolFact("redis-cli")]
    public async Task RedisCli_RoundTrips()
    {
        await using var rig = new Rig();
        async Task<string> Cli(params string[] args)
        {
            ExternalTools.Result r = await ExternalTools.RunAsync("redis-cli", ["-h", "127.0.0.1", "-p", rig.Port, .. args], ToolTimeout);
            Assert.True(r.ExitCode == 0, r.Stderr);
            return r.Stdout.TrimEnd('\n');
        }

        Assert.Equal("PONG", await Cli("PING"));
        Assert.Equal("OK", await Cli("SET", "greeting", "hello world"));
        Assert.Equal("hello world", await Cli("GET", "greeting"));
        Assert.Equal("1", await Cli("INCR", "n"));
        Assert.Equal("OK", await Cli("MSET", "a", "1", "b", "2", "c", "3"));
        Assert.Equal("1\n\n3", await Cli("MGET", "a", "missing", "c"));
        Assert.Equal("OK", await Cli("SET", "t", "x", "EX", "100"));
        Assert.Equal("100", await Cli("TTL", "t"));
        Assert.Equal("6", await Cli("DBSIZE"));
        Assert.Equal("ERR unknown command 'FOO', with args beginning with: 'bar' ", await Cli("FOO", "bar"));
        Assert.Equal("ERR wrong number of arguments for 'get' command", await Cli("GET"));

        // redis-cli reading commands from standard input pipelines them on one connection.
        ExternalTools.Result piped = await ExternalTools.RunAsync("redis-cli", ["-h", "127.0.0.1", "-p", rig.Port], ToolTimeout, "SET p 1\nINCRBY p 41\nGET p\n"u8.ToArray());
        Assert.Equal("OK\n42\n42\n", piped.Stdout);
        Assert.Equal(0, rig.Cores.WrongThreadOperations);
    }

    [ToolFact("redis-benchmark")]
    public async Task RedisBenchmark_PingSetGet_PlainAndPipelined_NoErrors()
    {
        await using var rig = new Rig();
        foreach (string[] extra in new[] { Array.Empty<string>(), ["-P", "16"] })
        {
            ExternalTools.Result r = await ExternalTools.RunAsync(
                "redis-benchmark",
                ["-h", "127.0.0.1", "-p", rig.Port, "-t", "ping,set,get", "-n", "20000", "-c", "20", "-q", .. extra],
                ToolTimeout);
            output.WriteLine(string.Join(' ', extra) + "\n" + r.Stdout + r.Stderr);
            Assert.Equal(0, r.ExitCode);
            foreach (string test in new[] { "PING_INLINE", "PING_MBULK", "SET", "GET" })
            {
                Assert.Contains(test + ": ", r.Stdout, StringComparison.Ordinal);
            }

            Assert.DoesNotContain("error", r.Stdout + r.Stderr, StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain("WARNING", r.Stdout + r.Stderr, StringComparison.Ordinal);
        }

        Assert.Equal(0, rig.Server.Statistics.ProtocolErrors);
        Assert.Equal(0, rig.Cores.WrongThreadOperations);
    }
}
