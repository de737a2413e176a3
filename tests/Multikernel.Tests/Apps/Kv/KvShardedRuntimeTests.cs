using System.IO.Pipelines;
using System.Text;
using Multikernel.Apps.Kv;
using Multikernel.Apps.Kv.Store;
using Multikernel.Cli.Apps;
using Multikernel.Monitor;
using Multikernel.Monitor.Hosting;
using Multikernel.Net;
using Multikernel.Net.Tcp;
using Multikernel.Netd.Daemon;
using Multikernel.Netd.Drivers;
using Multikernel.Netd.Wire;
using Multikernel.Tests.Net.Domain;

namespace Multikernel.Tests.Apps.Kv;

/// <summary>
/// The kv store on the real runtime: a <see cref="KvShard"/> per core in a
/// <see cref="Sharded{TService}"/> (<see cref="KvStore"/>), connections served in domains on
/// different cores through <see cref="ShardedShardInvoker"/>, calls to other cores' shards over
/// the URPC rings.
/// </summary>
public sealed class KvShardedRuntimeTests
{
    private static readonly TimeSpan Patience = TestMachine.Patience;

    [Fact]
    public async Task KeysSpreadOverEveryCoresShard_AndAConnectionOnAnotherCoreReadsEveryOne_OverTheRings()
    {
        MultikernelRuntime runtime = await TestMachine.StartAsync(3);
        var writer = new CorePipe();
        var reader = new CorePipe();
        Task writing = Task.CompletedTask, reading = Task.CompletedTask;
        try
        {
            KvStore store = await KvStore.StartAsync(runtime, new KvOptions()).WaitAsync(Patience);
            writing = runtime.InvokeAsync(0, ctx => store.CreateServer(ctx).RunConnectionAsync(writer.ServerSide));
            reading = runtime.InvokeAsync(2, ctx => store.CreateServer(ctx).RunConnectionAsync(reader.ServerSide));
            string[] keys = [.. Enumerable.Range(0, 90).Select(i => "user:" + i)];
            int[] owners = [.. keys.Select(k => KeyHasher.ShardOf(Encoding.ASCII.GetBytes(k), 3))];
            Assert.All(Enumerable.Range(0, 3), s => Assert.Contains(s, owners));

            long[] sentBefore = Sent(runtime, from: 0);
            foreach (string key in keys)
            {
                Assert.Equal("OK", await writer.CallAsync("SET", key, "v-" + key));
            }

            // Every key sits in its owner core's shard, and nowhere else: each shard counted on its own core.
            for (int core = 0; core < 3; core++)
            {
                (int index, int count) = await store.Shards.InvokeOnAsync(core, 0, static (s, _) => new ValueTask<(int, int)>((s.Index, s.Count))).AsTask().WaitAsync(Patience);
                Assert.Equal(core, index);
                Assert.Equal(owners.Count(o => o == core), count);
            }

            // Core 0's connection reached shards 1 and 2 with ring messages, one request per key at least.
            long[] sentAfter = Sent(runtime, from: 0);
            for (int core = 1; core < 3; core++)
            {
                Assert.True(sentAfter[core] - sentBefore[core] >= owners.Count(o => o == core), $"core 0 sent {sentAfter[core] - sentBefore[core]} messages to core {core} for {owners.Count(o => o == core)} keys it owns");
            }

            foreach (string key in keys)
            {
                Assert.Equal($"\"v-{key}\"", await reader.CallAsync("GET", key));
            }

            Assert.Equal("(integer) 90", await reader.CallAsync("DBSIZE"));
        }
        finally
        {
            await writer.CloseAsync(writing);
            await reader.CloseAsync(reading);
            await runtime.StopCleanlyAsync();
        }
    }

    [Fact]
    public async Task APipelineSpreadOverTwoCoresShards_IsAnsweredInOrder_WhileRemoteRepliesOverlap()
    {
        // A pipelined command whose shard is on the other core does not wait for its reply before
        // the next runs; its reply, and every later one, still reach the client in command order.
        MultikernelRuntime runtime = await TestMachine.StartAsync(2);
        var client = new CorePipe();
        Task serving = Task.CompletedTask;
        try
        {
            KvStore store = await KvStore.StartAsync(runtime, new KvOptions()).WaitAsync(Patience);
            KvServer server = null!;
            serving = runtime.InvokeAsync(0, ctx =>
            {
                server = store.CreateServer(ctx);
                return server.RunConnectionAsync(client.ServerSide);
            });
            string r1 = KeyOwnedBy(1, 2);
            string r2 = Enumerable.Range(0, 1000).Select(i => "other" + i).First(k => KeyHasher.ShardOf(Encoding.ASCII.GetBytes(k), 2) == 1);
            string l1 = KeyOwnedBy(0, 2);
            var commands = new List<(string[] Command, string Reply)>
            {
                (["SET", r1, "a"], "OK"),
                (["GET", r1], "\"a\""),
                (["SET", l1, "b"], "OK"),
                (["INCR", r1], "(error) ERR value is not an integer or out of range"),
                (["GET", l1], "\"b\""),
                (["PING"], "PONG"),
                (["GET", r1 + "-none"], "(nil)"),
                (["INCR", r2], "(integer) 1"),
                (["INCR", r2], "(integer) 2"),
                (["GET"], "(error) ERR wrong number of arguments for 'get' command"),
                (["MGET", r1, l1, r2], "[\"a\", \"b\", \"2\"]"),
                (["DEL", r1], "(integer) 1"),
                (["GET", r1], "(nil)"),
                (["ECHO", "hi"], "\"hi\""),
            };
            for (int i = 0; i < 40; i++)
            {
                commands.Add((["INCR", r2], $"(integer) {3 + i}"));
                commands.Add((["GET", l1], "\"b\""));
            }

            byte[] batch = [.. commands.SelectMany(c => Resp.Command(c.Command))];
            List<string> replies = await client.PipelineRepliesAsync(batch, commands.Count);
            Assert.Equal(commands.Select(c => c.Reply), replies);
            Assert.True(server.Statistics.OverlappedRemoteReplies > 0, "no remote reply overlapped another: each command still waited for the one before");
        }
        finally
        {
            await client.CloseAsync(serving);
            await runtime.StopCleanlyAsync();
        }
    }

    [Fact]
    public async Task RemoteGets_AllocateNothingPerCall_OnTheConnectionsCore()
    {
        // Pipelined GETs of a key core 1 owns, from a connection on core 0: the commands are all
        // buffered before the server reads them, so its only waits are the shard calls (each one
        // over the rings and back before the next command runs). Core 0's thread must allocate
        // nothing per call: no closure, no await box, no call record.
        MultikernelRuntime runtime = await TestMachine.StartAsync(2);
        var client = new CorePipe();
        Task serving = Task.CompletedTask;
        try
        {
            KvStore store = await KvStore.StartAsync(runtime, new KvOptions()).WaitAsync(Patience);
            serving = runtime.InvokeAsync(0, ctx => store.CreateServer(ctx).RunConnectionAsync(client.ServerSide));
            string remote = KeyOwnedBy(1, 2);
            Assert.Equal("OK", await client.CallAsync("SET", remote, "value"));
            byte[] get = Resp.Command("GET", remote);
            const int Calls = 4000;
            byte[] batch = [.. Enumerable.Repeat(get, Calls).SelectMany(b => b)];
            long forwardedBefore = runtime.Machine.Kernels[0].Counters.Sent(1);
            await client.PipelineAsync(batch, Calls, "\"value\""); // warm up: tier-up, pooled records

            long before = await runtime.InvokeAsync(0, _ => GC.GetAllocatedBytesForCurrentThread());
            await client.PipelineAsync(batch, Calls, "\"value\"");
            long after = await runtime.InvokeAsync(0, _ => GC.GetAllocatedBytesForCurrentThread());
            Assert.True(runtime.Machine.Kernels[0].Counters.Sent(1) - forwardedBefore >= 2 * Calls, "the GETs did not cross the rings");
            double perCall = (after - before) / (double)Calls;
            Assert.True(perCall < 8, $"{perCall:F1} B allocated on the connection's core per remote GET");
        }
        finally
        {
            await client.CloseAsync(serving);
            await runtime.StopCleanlyAsync();
        }
    }

    [Fact]
    public async Task MsetMgetDel_AcrossShards_KeepTheirArgumentOrder()
    {
        MultikernelRuntime runtime = await TestMachine.StartAsync(3);
        var client = new CorePipe();
        Task serving = Task.CompletedTask;
        try
        {
            KvStore store = await KvStore.StartAsync(runtime, new KvOptions()).WaitAsync(Patience);
            serving = runtime.InvokeAsync(1, ctx => store.CreateServer(ctx).RunConnectionAsync(client.ServerSide));
            string[] keys = [.. Enumerable.Range(0, 30).Select(i => $"k{i}")];
            Assert.Equal(3, keys.Select(k => KeyHasher.ShardOf(Encoding.ASCII.GetBytes(k), 3)).Distinct().Count());
            Assert.Equal("OK", await client.CallAsync([.. keys.SelectMany(k => new[] { k, "val" + k }).Prepend("MSET")]));

            string[] query = [.. keys.Reverse().Take(10).Append("nope").Concat(keys.Take(5))];
            string expected = "[" + string.Join(", ", query.Select(k => k == "nope" ? "(nil)" : $"\"val{k}\"")) + "]";
            Assert.Equal(expected, await client.CallAsync([.. query.Prepend("MGET")]));

            // DEL counts each key once (the duplicate and the missing one do not count).
            Assert.Equal("(integer) 12", await client.CallAsync([.. keys.Where((_, i) => i % 2 == 0).Take(12).Append("k0").Append("nope").Prepend("DEL")]));
            string afterDel = "[" + string.Join(", ", keys.Take(6).Select((k, i) => i % 2 == 0 ? "(nil)" : $"\"val{k}\"")) + "]";
            Assert.Equal(afterDel, await client.CallAsync([.. keys.Take(6).Prepend("MGET")]));
            Assert.Equal("(integer) 18", await client.CallAsync("DBSIZE"));
        }
        finally
        {
            await client.CloseAsync(serving);
            await runtime.StopCleanlyAsync();
        }
    }

    [Fact]
    public async Task RelativeExpiry_IsResolvedAndRunOnTheOwnerCoresClock()
    {
        // Each shard reads a clock of its own; core 1's runs an hour ahead of core 0's. A deadline
        // computed on the connection's core (0) would already have passed on core 1.
        ManualTimeProvider[] clocks = [new(), new()];
        clocks[1].Advance(TimeSpan.FromHours(1));
        MultikernelRuntime runtime = await TestMachine.StartAsync(2);
        var client = new CorePipe();
        Task serving = Task.CompletedTask;
        try
        {
            KvStore store = await KvStore.StartAsync(runtime, new KvOptions(), clock: ctx => clocks[ctx.Core]).WaitAsync(Patience);
            serving = runtime.InvokeAsync(0, ctx => store.CreateServer(ctx).RunConnectionAsync(client.ServerSide));
            string remote = KeyOwnedBy(1, 2), local = KeyOwnedBy(0, 2);

            Assert.Equal("OK", await client.CallAsync("SET", remote, "x", "EX", "100"));
            Assert.Equal("OK", await client.CallAsync("SET", local, "y", "PX", "5000"));
            Assert.Equal("(integer) 100", await client.CallAsync("TTL", remote));
            Assert.Equal("(integer) 5000", await client.CallAsync("PTTL", local));
            Assert.Equal("(integer) 1", await client.CallAsync("EXPIRE", local, "50"));
            Assert.Equal("(integer) 50", await client.CallAsync("TTL", local));

            clocks[1].Advance(TimeSpan.FromSeconds(99));
            Assert.Equal("(integer) 1", await client.CallAsync("TTL", remote));
            Assert.Equal("(integer) 50", await client.CallAsync("TTL", local)); // core 0's clock did not move
            clocks[1].Advance(TimeSpan.FromSeconds(2));
            Assert.Equal("(nil)", await client.CallAsync("GET", remote));
            Assert.Equal("\"y\"", await client.CallAsync("GET", local));
        }
        finally
        {
            await client.CloseAsync(serving);
            await runtime.StopCleanlyAsync();
        }
    }

    [Fact]
    public async Task AShardCall_FromAConnectionWhoseCoreIsStopping_FailsPromptly_NotAHang()
    {
        // A domain on core 1 serves a connection and keeps serving after the machine began to
        // stop, until core 1's own shard is gone (its store domain ended, its ring ends closed).
        // A GET for a key core 0 owns must then end promptly — an error or a closed connection —
        // and the machine must still stop in time.
        KvStore? store = null;
        var client = new CorePipe();
        var shardGone = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var served = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o => o.AddProgram("kv-conn", async ctx =>
        {
            Task serving = store!.CreateServer(ctx).RunConnectionAsync(client.ServerSide);
            try
            {
                await ctx.Delay(Timeout.InfiniteTimeSpan, ctx.Stopping);
            }
            catch (OperationCanceledException)
            {
            }

            while (LocalShardAlive(store, ctx.Core))
            {
                await ctx.Delay(TimeSpan.FromMilliseconds(1));
            }

            shardGone.TrySetResult();
            served.TrySetResult(await Task.WhenAny(serving, ctx.Delay(TimeSpan.FromSeconds(5)).AsTask()) == serving);
        }));
        try
        {
            store = await KvStore.StartAsync(runtime, new KvOptions()).WaitAsync(Patience);
            await runtime.SpawnAsync(1, "kv-conn").WaitAsync(Patience);
            string remote = KeyOwnedBy(0, 2);
            Assert.Equal("OK", await client.CallAsync("SET", remote, "v"));

            Task stopping = runtime.StopAsync();
            await shardGone.Task.WaitAsync(Patience);
            await client.SendAsync(Resp.Command("GET", remote));
            byte[] answer = await client.ReadUntilClosedAsync(TimeSpan.FromSeconds(5));
            Assert.True(await served.Task.WaitAsync(Patience), "the connection's call to core 0's shard never finished");
            string text = Encoding.ASCII.GetString(answer);
            Assert.True(text.Length == 0 || text.StartsWith('-'), $"expected an error or a closed connection, got '{text}'");
            await stopping.WaitAsync(Patience);
        }
        finally
        {
            await client.CloseAsync(Task.CompletedTask);
            await runtime.StopCleanlyAsync();
        }
    }

    [Fact]
    public async Task KvApps_OnTwoCores_ShareOneStore_OverNetdAndTheirOwnStacks()
    {
        Ipv4Address kv0 = Ipv4Address.Parse("10.77.0.4"), kv1 = Ipv4Address.Parse("10.77.0.5");
        var host = new NetdHost(new VirtualSwitch());
        SwitchPort port = host.Switch!.AddPort("peer", MacAddress.FromUInt64(0x02_00_00_00_00_01UL));
        var apps = new NetworkApps([new NetworkAppSpec("kv", 0, kv0, 6379), new NetworkAppSpec("kv", 1, kv1, 6379)], new NetworkAppsSettings());
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.DomainMemory = "2MiB";
            o.AddNetd(n => n.Core = 1, host);
            apps.Register(o);
        });
        PeerStack? peer = null;
        try
        {
            await apps.WhenReadyAsync().WaitAsync(Patience);
            Assert.NotNull(apps.KvStore);
            Assert.Equal(2, apps.KvStore.Shards.Cores);
            peer = new PeerStack(port, DomainNetworkTests.PeerIp);
            string[] keys = [.. Enumerable.Range(0, 20).Select(i => "net:" + i)];
            Assert.Equal(2, keys.Select(k => KeyHasher.ShardOf(Encoding.ASCII.GetBytes(k), 2)).Distinct().Count());
            string got = await peer.RunAsync(async s =>
            {
                TcpConnection a = await s.ConnectAsync(new Ipv4Endpoint(kv0, 6379));
                TcpConnection b = await s.ConnectAsync(new Ipv4Endpoint(kv1, 6379));
                var sets = new StringBuilder();
                foreach (string k in keys)
                {
                    sets.Append(Encoding.ASCII.GetString(Resp.Command("SET", k, "from-core-0:" + k)));
                }

                await a.WriteAsync(Encoding.ASCII.GetBytes(sets.ToString()));
                Assert.Equal(string.Concat(Enumerable.Repeat("+OK\r\n", keys.Length)), await ReadAsync(a, keys.Length * 5));
                await b.WriteAsync(Resp.Command([.. keys.Prepend("MGET")]));
                int length = Encoding.ASCII.GetByteCount(ExpectedMget(keys));
                string reply = await ReadAsync(b, length);
                a.Close();
                b.Close();
                return reply;
            }).WaitAsync(Patience);
            Assert.Equal(ExpectedMget(keys), got);

            // Each application's stack reports in the machine's meter, tagged with its core and address.
            var segments = new List<(long Value, Dictionary<string, object?> Tags)>();
            using (var listener = new System.Diagnostics.Metrics.MeterListener())
            {
                listener.InstrumentPublished = (instrument, l) =>
                {
                    if (ReferenceEquals(instrument.Meter, runtime.Metrics.Meter) && instrument.Name == Multikernel.Net.NetworkStackMetrics.Segments)
                    {
                        l.EnableMeasurementEvents(instrument);
                    }
                };
                listener.SetMeasurementEventCallback<long>((_, value, tags, _) => segments.Add((value, tags.ToArray().ToDictionary(t => t.Key, t => t.Value))));
                listener.Start();
                listener.RecordObservableInstruments();
            }

            foreach ((Ipv4Address address, int core) in new[] { (kv0, 0), (kv1, 1) })
            {
                (long value, Dictionary<string, object?> tags) = Assert.Single(segments, s => Equals(s.Tags[Multikernel.Net.NetworkStackMetrics.LocalAddress], address.ToString()) && Equals(s.Tags[Multikernel.Net.NetworkStackMetrics.Direction], "receive"));
                Assert.True(value >= 3, $"{address} received {value} segments (at least the SYN, the ACK and a request)");
                Assert.Equal(core, tags[Multikernel.CpuDriver.Diagnostics.TelemetryTags.Core]);
                Assert.Equal($"app-kv-{address}", tags[Multikernel.CpuDriver.Diagnostics.TelemetryTags.Domain]);
            }
        }
        finally
        {
            await apps.DrainAsync(TimeSpan.FromSeconds(10));
            await runtime.StopCleanlyAsync();
            peer?.Dispose();
            host.Dispose();
        }

        static string ExpectedMget(string[] keys) =>
            $"*{keys.Length}\r\n" + string.Concat(keys.Select(k => $"${("from-core-0:" + k).Length}\r\nfrom-core-0:{k}\r\n"));
    }

    private static async Task<string> ReadAsync(TcpConnection c, int length)
    {
        var got = new StringBuilder();
        byte[] buffer = new byte[4096];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (got.Length < length)
        {
            int n = await c.ReadAsync(buffer, timeout.Token);
            if (n == 0)
            {
                break;
            }

            got.Append(Encoding.ASCII.GetString(buffer, 0, n));
        }

        return got.ToString();
    }

    private static bool LocalShardAlive(KvStore store, int core)
    {
        try
        {
            _ = store.Shards.InvokeOnAsync(core, 0, static (s, _) => new ValueTask<int>(s.Count));
            return true;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    private static long[] Sent(MultikernelRuntime runtime, int from) =>
        [.. Enumerable.Range(0, runtime.Cores).Select(to => runtime.Machine.Kernels[from].Counters.Sent(to))];

    private static string KeyOwnedBy(int shard, int shards) =>
        Enumerable.Range(0, 1000).Select(i => "key" + i).First(k => KeyHasher.ShardOf(Encoding.ASCII.GetBytes(k), shards) == shard);

    /// <summary>
    /// An in-memory connection whose server side continues on the core that awaits it (the
    /// pipes capture the core's synchronization context), as the stack's pipe adapter does.
    /// </summary>
    private sealed class CorePipe
    {
        private readonly Pipe _toServer = new(new PipeOptions(pauseWriterThreshold: 1 << 20, resumeWriterThreshold: 1 << 19, useSynchronizationContext: true));
        private readonly Pipe _toClient = new(new PipeOptions(pauseWriterThreshold: 1 << 20, resumeWriterThreshold: 1 << 19, useSynchronizationContext: true));

        public CorePipe() => ServerSide = new Duplex(_toServer.Reader, _toClient.Writer);

        public IDuplexPipe ServerSide { get; }

        public async Task SendAsync(byte[] bytes) => await _toServer.Writer.WriteAsync(bytes).AsTask().WaitAsync(Patience);

        public Task<string> CallAsync(params string[] args) => CallRawAsync(Resp.Command(args));

        public async Task<string> CallRawAsync(byte[] command)
        {
            await SendAsync(command);
            using var cts = new CancellationTokenSource(Patience);
            while (true)
            {
                ReadResult read = await _toClient.Reader.ReadAsync(cts.Token);
                byte[] bytes = System.Buffers.BuffersExtensions.ToArray(read.Buffer);
                List<string> replies = Resp.ParseAll(bytes, out int consumed);
                if (replies.Count > 0)
                {
                    _toClient.Reader.AdvanceTo(read.Buffer.GetPosition(consumed));
                    return Assert.Single(replies);
                }

                Assert.False(read.IsCompleted, "the server closed the connection");
                _toClient.Reader.AdvanceTo(read.Buffer.Start, read.Buffer.End);
            }
        }

        /// <summary>Sends <paramref name="commands"/> at once and returns the first <paramref name="count"/> replies, in order.</summary>
        public async Task<List<string>> PipelineRepliesAsync(byte[] commands, int count)
        {
            await SendAsync(commands);
            using var cts = new CancellationTokenSource(Patience);
            var all = new List<string>();
            while (all.Count < count)
            {
                ReadResult read = await _toClient.Reader.ReadAsync(cts.Token);
                byte[] bytes = System.Buffers.BuffersExtensions.ToArray(read.Buffer);
                all.AddRange(Resp.ParseAll(bytes, out int consumed));
                Assert.False(read.IsCompleted && all.Count < count, "the server closed the connection");
                _toClient.Reader.AdvanceTo(read.Buffer.GetPosition(consumed), read.Buffer.End);
            }

            return all;
        }

        /// <summary>Sends <paramref name="commands"/> at once and reads <paramref name="count"/> replies, each <paramref name="expected"/>.</summary>
        public async Task PipelineAsync(byte[] commands, int count, string expected) =>
            Assert.All(await PipelineRepliesAsync(commands, count), r => Assert.Equal(expected, r));

        /// <summary>Everything the server sends until it closes; fails if it does not close within <paramref name="within"/>.</summary>
        public async Task<byte[]> ReadUntilClosedAsync(TimeSpan within)
        {
            using var cts = new CancellationTokenSource(within);
            var all = new List<byte>();
            while (true)
            {
                ReadResult read;
                try
                {
                    read = await _toClient.Reader.ReadAsync(cts.Token);
                }
                catch (OperationCanceledException)
                {
                    Assert.Fail($"the server neither answered nor closed within {within.TotalSeconds} s (got '{Encoding.ASCII.GetString([.. all])}')");
                    throw;
                }

                all.AddRange(System.Buffers.BuffersExtensions.ToArray(read.Buffer));
                _toClient.Reader.AdvanceTo(read.Buffer.End);
                if (read.IsCompleted || all.Contains((byte)'\n'))
                {
                    return [.. all];
                }
            }
        }

        public async Task CloseAsync(Task serving)
        {
            await _toServer.Writer.CompleteAsync();
            await serving.WaitAsync(Patience);
        }

        private sealed class Duplex(PipeReader input, PipeWriter output) : IDuplexPipe
        {
            public PipeReader Input => input;

            public PipeWriter Output => output;
        }
    }
}
