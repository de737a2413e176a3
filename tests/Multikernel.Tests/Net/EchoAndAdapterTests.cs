using System.Buffers;
using System.IO.Pipelines;
using Multikernel.Net;
using Multikernel.Net.Apps;
using Multikernel.Net.Tcp;
using Multikernel.Net.Udp;

namespace Multikernel.Tests.Net;

public sealed class EchoAndAdapterTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromMinutes(5);

    [Fact]
    public void Echo_Tcp_EchoesUntilTheHalfClose_ThenCloses_UnderLoss()
    {
        using var net = new SimNetwork(60, new SimFaults { Loss = 0.02, Reorder = 0.02 });
        SimPort server = net.AddHost(1);
        SimPort client = net.AddHost(2);
        using var echo = new EchoServer(server.S, 7);
        Task run = net.Spawn(echo.RunAsync);
        byte[] data = Packets.Pattern(1_000_000, 60);
        Task<byte[]> session = net.Spawn(async () =>
        {
            TcpConnection c = await client.S.ConnectAsync(new Ipv4Endpoint(server.Ip, 7));
            var received = new MemoryStream();
            byte[] buffer = new byte[8192];
            Task pump = ReadAll(c, received, buffer);
            for (int i = 0; i < data.Length; i += 10_000)
            {
                await c.WriteAsync(data.AsMemory(i, Math.Min(10_000, data.Length - i)));
            }

            c.Shutdown();
            await pump;
            return received.ToArray();
        });
        byte[] echoed = net.Await(session, Limit);
        Assert.True(data.AsSpan().SequenceEqual(echoed));
        net.RunUntil(() => echo.Completed == 1 && server.S.ConnectionCount == 0, Limit, "the server side to close");
        echo.Stop();
        net.Await(run, Limit);
    }

    private static async Task ReadAll(TcpConnection c, MemoryStream into, byte[] buffer)
    {
        int n;
        while ((n = await c.ReadAsync(buffer)) > 0)
        {
            into.Write(buffer, 0, n);
        }
    }

    [Fact]
    public void Echo_Udp_ReturnsEachDatagram()
    {
        using var net = new SimNetwork(61);
        SimPort server = net.AddHost(1);
        SimPort client = net.AddHost(2);
        using var echo = new EchoServer(server.S, 7);
        net.Spawn(echo.RunAsync);
        UdpSocket socket = client.S.BindUdp(0);
        Task<UdpReceiveResult> reply = net.Spawn(async () => await socket.ReceiveAsync(new byte[100]));
        Assert.True(socket.TrySend(new Ipv4Endpoint(server.Ip, 7), "ping"u8));
        UdpReceiveResult r = net.Await(reply, Limit);
        Assert.Equal(4, r.Length);
        Assert.Equal(new Ipv4Endpoint(server.Ip, 7), r.Remote);
    }

    [Fact]
    public void Stream_Adapter_CarriesLinesBothWays()
    {
        using var net = new SimNetwork(64);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        Task serverSide = net.Spawn(async () =>
        {
            using TcpStream stream = server.AsStream();
            using var reader = new StreamReader(stream, leaveOpen: true);
            string? line = await reader.ReadLineAsync();
            await stream.WriteAsync(System.Text.Encoding.ASCII.GetBytes(line!.ToUpperInvariant() + "\n"));
        });
        Task<string?> clientSide = net.Spawn(async () =>
        {
            using TcpStream stream = client.AsStream();
            await stream.WriteAsync("hello stream\n"u8.ToArray());
            using var reader = new StreamReader(stream, leaveOpen: true);
            return await reader.ReadLineAsync();
        });
        Assert.Equal("HELLO STREAM", net.Await(clientSide, Limit));
        net.Await(serverSide, Limit);
        Assert.Throws<NotSupportedException>(() => client.AsStream().Read(new byte[1], 0, 1));
    }

    [Fact]
    public void StreamAndPipe_Adapters_CarryLinesBothWays()
    {
        using var net = new SimNetwork(62);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        Task<string?> serverSide = net.Spawn(async () =>
        {
            TcpPipe pipe = server.AsPipe();
            while (true)
            {
                ReadResult result = await pipe.Input.ReadAsync();
                ReadOnlySequence<byte> buffer = result.Buffer;
                SequencePosition? newline = buffer.PositionOf((byte)'\n');
                if (newline is { } p)
                {
                    string line = System.Text.Encoding.ASCII.GetString(buffer.Slice(0, p).ToArray());
                    pipe.Input.AdvanceTo(buffer.GetPosition(1, p));
                    await pipe.Output.WriteAsync(System.Text.Encoding.ASCII.GetBytes(line.ToUpperInvariant() + "\n"));
                    return line;
                }

                pipe.Input.AdvanceTo(buffer.Start, buffer.End);
                if (result.IsCompleted)
                {
                    return null;
                }
            }
        });
        Task<string?> clientSide = net.Spawn(async () =>
        {
            using TcpStream stream = client.AsStream();
            await stream.WriteAsync("hello pipe\n"u8.ToArray());
            using var reader = new StreamReader(stream, leaveOpen: true);
            return await reader.ReadLineAsync();
        });
        Assert.Equal("hello pipe", net.Await(serverSide, Limit));
        Assert.Equal("HELLO PIPE", net.Await(clientSide, Limit));
        Assert.Throws<NotSupportedException>(() => client.AsStream().Read(new byte[1], 0, 1));
    }

    [Fact]
    public void Reads_AndWrites_AreBounded_AWriterStallsUntilThePeerReads()
    {
        using var net = new SimNetwork(63);
        SimPort a = net.AddHost(1, o => o.SendBufferSize = 8192);
        SimPort b = net.AddHost(2, o => o.ReceiveBufferSize = 8192);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b);
        Task write = net.Spawn(async () => await client.WriteAsync(new byte[100_000]));
        net.RunFor(TimeSpan.FromSeconds(5));
        Assert.False(write.IsCompleted, "the writer stalls: send buffer and peer window are full");
        Assert.True(client.BufferedToSend <= 8192);
        Assert.True(server.UnreadBytes <= 8192);
        Task<int> secondWrite = net.Spawn(async () => { try { await client.WriteAsync(new byte[1]); return 0; } catch (InvalidOperationException) { return 1; } });
        Assert.Equal(1, net.Await(secondWrite, Limit)); // one write at a time, a clear error otherwise
    }
}
