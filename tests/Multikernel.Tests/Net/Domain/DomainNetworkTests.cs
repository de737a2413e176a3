using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Multikernel.Cli.Apps;
using Multikernel.Monitor.Hosting;
using Multikernel.Net;
using Multikernel.Net.Netd;
using Multikernel.Net.Tcp;
using Multikernel.Net.Udp;
using Multikernel.Netd.Daemon;
using Multikernel.Netd.Drivers;
using Multikernel.Netd.Wire;

namespace Multikernel.Tests.Net.Domain;

/// <summary>
/// Our stack in application domains over netd (a real machine: pinned cores, netd on core 1, the
/// in-memory switch) against a second instance of the stack on another switch port — the
/// "second machine", run by its own thread. The applications are the ones <c>multikernel run
/// --app</c> starts (<see cref="NetworkApps"/>): echo, http and kv, each with its own address.
/// </summary>
public sealed class DomainNetworkTests
{
    internal static readonly Ipv4Address PeerIp = Ipv4Address.Parse("10.77.0.1");
    internal static readonly Ipv4Address EchoIp = Ipv4Address.Parse("10.77.0.2");
    internal static readonly Ipv4Address HttpIp = Ipv4Address.Parse("10.77.0.3");
    internal static readonly Ipv4Address KvIp = Ipv4Address.Parse("10.77.0.4");
    internal static readonly Ipv4Address CopyIp = Ipv4Address.Parse("10.77.0.5");
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    internal sealed class Rig : IAsyncDisposable
    {
        public required MultikernelRuntime Runtime { get; init; }

        public required NetdHost Host { get; init; }

        public required PeerStack Peer { get; init; }

        public required NetworkApps Apps { get; init; }

        public required string Root { get; init; }

        public async ValueTask DisposeAsync()
        {
            try
            {
                await Apps.DrainAsync(TimeSpan.FromSeconds(10));
                await Runtime.StopCleanlyAsync();
            }
            finally
            {
                Peer.Dispose();
                Host.Dispose();
                Directory.Delete(Root, recursive: true);
            }
        }
    }

    internal static async Task<Rig> StartAsync(FaultInjectionOptions? faults = null, Action<MultikernelOptions>? programs = null)
    {
        string root = Directory.CreateTempSubdirectory("mk-http-").FullName;
        var host = new NetdHost(new VirtualSwitch());
        SwitchPort port = host.Switch!.AddPort("peer", MacAddress.FromUInt64(0x02_00_00_00_00_01UL), new SwitchPortOptions { Faults = faults });
        var apps = new NetworkApps(
            [new NetworkAppSpec("echo", 0, EchoIp, 7), new NetworkAppSpec("http", 0, HttpIp, 80), new NetworkAppSpec("kv", 0, KvIp, 6379)],
            new NetworkAppsSettings { HttpRoot = root, CloseTimeout = TimeSpan.FromSeconds(2) });
        MultikernelRuntime runtime = await TestMachine.StartAsync(2, o =>
        {
            o.DomainMemory = "2MiB";
            o.AddNetd(n => n.Core = 1, host);
            apps.Register(o);
            programs?.Invoke(o);
        });
        PeerStack? peer = null;
        try
        {
            await apps.WhenReadyAsync().WaitAsync(Patience);
            peer = new PeerStack(port, PeerIp);
            return new Rig { Runtime = runtime, Host = host, Peer = peer, Apps = apps, Root = root };
        }
        catch
        {
            peer?.Dispose();
            await runtime.StopAsync();
            host.Dispose();
            throw;
        }
    }

    internal static string Drops(NetworkStack s) =>
        string.Join(",", Enum.GetValues<Multikernel.Net.DropReason>().Where(r => s.Counters.Drops(r) > 0).Select(r => $"{r}={s.Counters.Drops(r)}"));

    /// <summary>What the peer's stack and the applications look like now: for a failure message.</summary>
    internal static async Task<string> DiagnoseAsync(Rig rig)
    {
        string peer = await rig.Peer.RunAsync(s => Task.FromResult(string.Join("; ", s.ConnectionsSnapshot().Select(c =>
            $"{c.Key.RemotePort}->{c.State} cwnd={c.CongestionWindow} unsent={c.BufferedToSend} unread={c.UnreadBytes}"))
            + $" | peer retransmits={s.Counters.TcpRetransmits} timeouts={s.Counters.TcpTimeouts} drops={Drops(s)} segs in/out={s.Counters.TcpSegmentsReceived}/{s.Counters.TcpSegmentsSent}")).WaitAsync(TimeSpan.FromSeconds(5));
        string apps = string.Join("; ", rig.Apps.Specs.Select(a => $"{a.Name}: {rig.Apps.Snapshot(a)}"));
        NetdCounters? netd = rig.Host.Counters;
        return $"{peer} | {apps} | netd no-buffer drops={netd?.Dropped(RxDropReason.NoBuffer)} tx refused={netd?.TxRefused}";
    }

    /// <summary>Writes <paramref name="data"/>, half-closes, reads until the server's FIN; returns what came back and the connection.</summary>
    internal static async Task<(byte[] Echoed, TcpConnection Connection)> EchoAsync(NetworkStack s, Ipv4Endpoint to, byte[] data)
    {
        TcpConnection c = await s.ConnectAsync(to);
        var received = new MemoryStream();
        Task reading = ReadToEndAsync(c, received);
        for (int i = 0; i < data.Length; i += 16 * 1024)
        {
            await c.WriteAsync(data.AsMemory(i, Math.Min(16 * 1024, data.Length - i)));
        }

        c.Shutdown();
        await reading;
        return (received.ToArray(), c);
    }

    internal static async Task ReadToEndAsync(TcpConnection c, MemoryStream into)
    {
        byte[] buffer = new byte[16 * 1024];
        int n;
        while ((n = await c.ReadAsync(buffer)) > 0)
        {
            into.Write(buffer, 0, n);
        }
    }

    [Fact]
    public async Task Echo_Tcp_1MB_ByteExact_HalfClose_ThenTheServerCloses()
    {
        await using Rig rig = await StartAsync();
        byte[] data = RandomNumberGenerator.GetBytes(1 << 20);
        (byte[] echoed, TcpState state, bool peerClosed) = await rig.Peer.RunAsync(async s =>
        {
            (byte[] e, TcpConnection c) = await EchoAsync(s, new Ipv4Endpoint(EchoIp, 7), data);
            return (e, c.State, c.PeerClosed);
        }).WaitAsync(Patience);

        Assert.Equal(data.Length, echoed.Length);
        Assert.True(data.AsSpan().SequenceEqual(echoed), "the echo is not byte-exact");
        Assert.True(peerClosed, "the server closed its side after our half-close");
        Assert.Equal(TcpState.TimeWait, state); // we closed first (half-close), then its FIN: a clean close, not a reset
        await TestMachine.EventuallyAsync(() => rig.Apps.Snapshot(rig.Apps.Specs[0]).Served == 1, "the echo app counts the connection served to the end");
    }

    [Fact]
    public async Task Echo_Tcp_1MB_ByteExact_UnderSeededLoss()
    {
        var faults = new FaultInjectionOptions { Seed = 20261201, LossProbability = 0.03 };
        await using Rig rig = await StartAsync(faults);
        byte[] data = RandomNumberGenerator.GetBytes(1 << 20);
        Task<(byte[], long)> session = rig.Peer.RunAsync(async s =>
        {
            (byte[] e, TcpConnection c) = await EchoAsync(s, new Ipv4Endpoint(EchoIp, 7), data);
            return (e, s.Counters.TcpRetransmits);
        });
        if (await Task.WhenAny(session, Task.Delay(Patience)) != session)
        {
            Assert.Fail($"the echo under loss did not finish (seed {faults.Seed}): {await DiagnoseAsync(rig)}");
        }

        (byte[] echoed, long retransmits) = await session;

        Assert.True(data.AsSpan().SequenceEqual(echoed), $"the echo under loss is not byte-exact (seed {faults.Seed})");
        long dropped = rig.Host.Switch!.Ports.Single(p => p.Name == "peer").Counters.Dropped(Multikernel.Netd.Drivers.DropReason.FaultLoss);
        Assert.True(dropped > 0, "the seeded faults dropped frames");
        // The echo's own counters reach the host when its domain publishes them (every 100 ms):
        // a quick run can end before the first publish that counts its retransmissions.
        var published = System.Diagnostics.Stopwatch.StartNew();
        while (retransmits + rig.Apps.Snapshot(rig.Apps.Specs[0]).Retransmits == 0 && published.Elapsed < TimeSpan.FromSeconds(3))
        {
            await Task.Delay(20);
        }

        Assert.True(retransmits + rig.Apps.Snapshot(rig.Apps.Specs[0]).Retransmits > 0, "loss was repaired by retransmission");
    }

    [Fact]
    public async Task Echo_Udp_ReturnsEachDatagram()
    {
        await using Rig rig = await StartAsync();
        string[] replies = await rig.Peer.RunAsync(async s =>
        {
            UdpSocket socket = s.BindUdp(0);
            var got = new List<string>();
            byte[] buffer = new byte[2048];
            foreach (string text in new[] { "one", "two", new string('x', 1400) })
            {
                Assert.True(socket.TrySend(new Ipv4Endpoint(EchoIp, 7), Encoding.ASCII.GetBytes(text)) || await RetryAfterArpAsync(socket, text));
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
                Multikernel.Net.Udp.UdpReceiveResult r = await socket.ReceiveAsync(buffer, timeout.Token);
                Assert.Equal(new Ipv4Endpoint(EchoIp, 7), r.Remote);
                got.Add(Encoding.ASCII.GetString(buffer, 0, r.Length));
            }

            socket.Dispose();
            return got.ToArray();
        }).WaitAsync(Patience);
        Assert.Equal(["one", "two", new string('x', 1400)], replies);
    }

    // The first datagram waits in the ARP queue (counted as sent once resolved); TrySend reports false only when it could not be queued.
    private static async Task<bool> RetryAfterArpAsync(UdpSocket socket, string text)
    {
        await Task.Delay(100);
        return socket.TrySend(new Ipv4Endpoint(EchoIp, 7), Encoding.ASCII.GetBytes(text));
    }

    [Fact]
    public async Task Http_Get_OverThePipeAdapter_SmallPageAndAFileByteExact()
    {
        await using Rig rig = await StartAsync();
        byte[] file = RandomNumberGenerator.GetBytes(300_000);
        await File.WriteAllBytesAsync(Path.Combine(rig.Root, "data.bin"), file);
        await File.WriteAllTextAsync(Path.Combine(rig.Root, "index.html"), "<h1>multikernel</h1>");
        (byte[] page, byte[] blob) = await rig.Peer.RunAsync(async s =>
        {
            byte[] a = await GetAsync(s, "/");
            byte[] b = await GetAsync(s, "/data.bin");
            return (a, b);
        }).WaitAsync(Patience);

        string pageText = Encoding.ASCII.GetString(page);
        Assert.StartsWith("HTTP/1.1 200 OK\r\n", pageText, StringComparison.Ordinal);
        Assert.EndsWith("\r\n\r\n<h1>multikernel</h1>", pageText, StringComparison.Ordinal);
        int head = blob.AsSpan().IndexOf("\r\n\r\n"u8) + 4;
        Assert.Contains("Content-Length: 300000\r\n", Encoding.ASCII.GetString(blob, 0, head), StringComparison.Ordinal);
        Assert.True(file.AsSpan().SequenceEqual(blob.AsSpan(head)), "the file arrived altered");
    }

    /// <summary>One GET with Connection: close, through the peer's Stream adapter; the whole response until the server's FIN.</summary>
    internal static async Task<byte[]> GetAsync(NetworkStack s, string path)
    {
        TcpConnection c = await s.ConnectAsync(new Ipv4Endpoint(HttpIp, 80));
        using TcpStream stream = c.AsStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes($"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"));
        var response = new MemoryStream();
        await stream.CopyToAsync(response);
        return response.ToArray();
    }

    [Fact]
    public async Task Kv_Resp_PingSetGet_AndErrors()
    {
        await using Rig rig = await StartAsync();
        string replies = await rig.Peer.RunAsync(async s =>
        {
            TcpConnection c = await s.ConnectAsync(new Ipv4Endpoint(KvIp, 6379));
            await c.WriteAsync("*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n*1\r\n$6\r\nNOSUCH\r\nINCR key\r\n"u8.ToArray());
            const string Expected = "+PONG\r\n+OK\r\n$5\r\nvalue\r\n-ERR unknown command 'NOSUCH', with args beginning with: \r\n-ERR value is not an integer or out of range\r\n";
            var got = new StringBuilder();
            byte[] buffer = new byte[4096];
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            try
            {
                while (got.Length < Expected.Length)
                {
                    int n = await c.ReadAsync(buffer, timeout.Token);
                    if (n == 0)
                    {
                        break;
                    }

                    got.Append(Encoding.ASCII.GetString(buffer, 0, n));
                }
            }
            catch (OperationCanceledException)
            {
                got.Append("<timed out>");
            }

            c.Close();
            return got.ToString();
        }).WaitAsync(Patience);
        Assert.Equal("+PONG\r\n+OK\r\n$5\r\nvalue\r\n-ERR unknown command 'NOSUCH', with args beginning with: \r\n-ERR value is not an integer or out of range\r\n", replies);
    }

    [Fact]
    public async Task Stream_CopyToAsync_WithFileStreams_IsMarshalledOntoTheCore()
    {
        // A domain that takes an upload into a file and sends the file back, through ordinary
        // Stream.CopyToAsync: FileStream completes its writes and reads on the thread pool, so
        // CopyToAsync calls the socket's stream from there. The stack refuses any call off its
        // core, so this works only if the adapter marshals those calls onto the core.
        string path = Path.Combine(Path.GetTempPath(), $"mk-copy-{Guid.NewGuid():N}.bin");
        var marshalled = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        var listening = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        try
        {
            await using Rig rig = await StartAsync(programs: o =>
            {
                o.AddProgram("filecopy", async ctx =>
                {
                    try
                    {
                        await using DomainNetwork net = await DomainNetwork.StartAsync(ctx, new DomainNetworkOptions { Stack = new NetworkStackOptions { Address = CopyIp } });
                        using Multikernel.Net.Tcp.TcpListener listener = net.Stack.Listen(9);
                        listening.SetResult();
                        TcpConnection c = await listener.AcceptAsync(ctx.Stopping);
                        using TcpStream stream = c.AsStream();
                        await using (var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 4096, useAsync: true))
                        {
                            await stream.CopyToAsync(file, ctx.Stopping);
                        }

                        await using (var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 4096, useAsync: true))
                        {
                            await file.CopyToAsync(stream, ctx.Stopping);
                        }

                        await stream.ShutdownAsync();
                        marshalled.SetResult(stream.MarshalledCalls);
                        await net.ShutdownAsync(TimeSpan.FromSeconds(2));
                    }
                    catch (Exception ex)
                    {
                        listening.TrySetException(ex);
                        marshalled.TrySetException(ex);
                    }
                });
                o.SpawnAtBoot("filecopy", core: 0);
            });
            await listening.Task.WaitAsync(Patience);
            byte[] data = RandomNumberGenerator.GetBytes(1 << 20);
            byte[] back = await rig.Peer.RunAsync(async s => (await EchoAsync(s, new Ipv4Endpoint(CopyIp, 9), data)).Echoed).WaitAsync(Patience);
            Assert.True(data.AsSpan().SequenceEqual(back), "the file round trip is not byte-exact");
            Assert.True(await marshalled.Task.WaitAsync(Patience) > 0, "no call came from another thread: the test did not exercise the marshalling path");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public async Task Shutdown_ClosesIdleConnectionsWithFin_AndResetsAStuckOne()
    {
        await using Rig rig = await StartAsync();
        // Three connections the peer holds open: idle echo, idle http keep-alive after one
        // request, and an echo whose peer never reads (the server cannot finish writing).
        (TcpConnection echo, TcpConnection http, TcpConnection stuck, Task stuckWrite) = await rig.Peer.RunAsync(async s =>
        {
            TcpConnection e = await s.ConnectAsync(new Ipv4Endpoint(EchoIp, 7));
            TcpConnection h = await s.ConnectAsync(new Ipv4Endpoint(HttpIp, 80));
            await h.WriteAsync("GET /nothing-here HTTP/1.1\r\nHost: t\r\n\r\n"u8.ToArray());
            byte[] buffer = new byte[4096];
            Assert.True(await h.ReadAsync(buffer) > 0); // the 404 arrives; the connection stays open (keep-alive)
            TcpConnection st = await s.ConnectAsync(new Ipv4Endpoint(EchoIp, 7));
            Task write = st.WriteAsync(new byte[2 << 20]).AsTask(); // never read: the echo fills our window and stalls
            return (e, h, st, write);
        }).WaitAsync(Patience);
        await TestMachine.EventuallyAsync(() => rig.Apps.Snapshot(rig.Apps.Specs[0]).Connections == 2, "the echo app holds both connections");
        await Task.Delay(300); // let the stuck echo fill both windows

        // The host drains the applications (what `run` does on Ctrl-C before the machine stops):
        // the peer sees a FIN on each idle connection and closes its side; the stuck one is reset.
        Task<bool> drained = rig.Apps.DrainAsync(TimeSpan.FromSeconds(15));
        var watch = rig.Peer.RunAsync(async s =>
        {
            byte[] buffer = new byte[64 * 1024];
            int echoRead = await echo.ReadAsync(buffer);
            TcpState echoState = echo.State;
            int httpRead = await http.ReadAsync(buffer);
            TcpState httpState = http.State;
            echo.Close();
            http.Close();
            string stuckEnd;
            try
            {
                while (await stuck.ReadAsync(buffer) > 0)
                {
                }

                stuckEnd = "fin";
            }
            catch (SocketException e)
            {
                stuckEnd = e.SocketErrorCode.ToString();
            }

            return (echoRead, echoState, httpRead, httpState, stuckEnd);
        });
        if (await Task.WhenAny(watch, Task.Delay(TimeSpan.FromSeconds(30))) != watch)
        {
            Assert.Fail($"the peer's connections did not end: {await DiagnoseAsync(rig)}; drained={drained.IsCompleted}");
        }

        var outcome = await watch;

        Assert.True(await drained, "every application finished closing");
        Assert.Equal(0, outcome.echoRead);
        Assert.Equal(TcpState.CloseWait, outcome.echoState); // FIN received, nothing reset
        Assert.Equal(0, outcome.httpRead);
        Assert.Equal(TcpState.CloseWait, outcome.httpState);
        Assert.Equal(nameof(SocketError.ConnectionReset), outcome.stuckEnd); // data left unread on the server: RST (RFC 9293 §3.10.4)
        await Assert.ThrowsAnyAsync<Exception>(() => stuckWrite);
        Assert.Equal(1, await rig.Peer.RunAsync(s => Task.FromResult(s.Counters.TcpResetsReceived)));
    }
}
