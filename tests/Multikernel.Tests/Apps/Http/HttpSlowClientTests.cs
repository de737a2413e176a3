using System.IO.Pipelines;
using System.Text;
using Multikernel.Apps.Http;

namespace Multikernel.Tests.Apps.Http;

/// <summary>Slowloris and readers that never read cost only their own bounded buffers, and time out on the manual clock.</summary>
public sealed class HttpSlowClientTests
{
    [Fact]
    public async Task Slowloris_HeaderDribbledAByteAtATime_Gets408AtTheHeaderDeadline()
    {
        var time = new ManualTimeProvider();
        await using var http = new HttpHarness(new HttpOptions { HeaderTimeout = TimeSpan.FromSeconds(10) }, time);
        byte[] head = Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + new string('z', 100));
        // The first byte arms the head deadline; later bytes must not push it back.
        await http.Connection.SendAsync(head.AsSpan(0, 1).ToArray());
        Assert.True(await ManualTimeProvider.EventuallyAsync(() => time.HasTimerDueIn(TimeSpan.FromSeconds(10))));
        time.Advance(TimeSpan.FromSeconds(1));
        for (int i = 1; i < 9; i++)
        {
            await http.Connection.SendAsync(head.AsSpan(i, 1).ToArray());
            time.Advance(TimeSpan.FromSeconds(1));
        }

        // Nine seconds in and still dribbling: open, and the deadline is still the one the first byte set.
        Assert.False(http.Serving.IsCompleted);
        Assert.True(time.HasTimerDueIn(TimeSpan.FromSeconds(1)));
        await http.Connection.SendAsync(head.AsSpan(9, 1).ToArray());
        time.Advance(TimeSpan.FromSeconds(1));
        byte[] reply = await http.Connection.ReadToEndAsync();
        Assert.Equal(408, Assert.Single(HttpWire.Parse(reply)).Status);
        await http.Serving.WaitAsync(PipeConnection.Patience);
        Assert.Equal(1, http.Server.Statistics.HeaderTimeouts);
    }

    [Fact]
    public async Task IdleKeepAliveConnection_IsClosedSilently()
    {
        var time = new ManualTimeProvider();
        await using var http = new HttpHarness(new HttpOptions { KeepAliveTimeout = TimeSpan.FromSeconds(5) }, time);
        Assert.Equal(200, (await http.GetAsync("/hello.txt")).Status);
        time.Advance(TimeSpan.FromSeconds(4));
        Assert.False(http.Serving.IsCompleted);
        Assert.Equal(200, (await http.GetAsync("/hello.txt")).Status); // the request re-armed the idle timer
        Assert.True(time.HasTimerDueIn(TimeSpan.FromSeconds(5)));
        time.Advance(TimeSpan.FromSeconds(4));
        Assert.False(http.Serving.IsCompleted);
        time.Advance(TimeSpan.FromSeconds(2));
        Assert.Empty(await http.Connection.ReadToEndAsync());
        await http.Serving.WaitAsync(PipeConnection.Patience);
    }

    [Fact]
    public async Task EndlessHeader_IsCutAtTheHeaderLimit_NotBuffered()
    {
        var options = new HttpOptions { MaxHeaderBytes = 8192 };
        await using var http = new HttpHarness(options);
        await http.Connection.SendAsync("GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ");
        byte[] chunk = Encoding.ASCII.GetBytes(new string('e', 1000));
        bool closed = false;
        for (int i = 0; i < 100 && !closed; i++)
        {
            FlushResult r = await http.Connection.ClientOutput.WriteAsync(chunk);
            closed = r.IsCompleted;
        }

        HttpReply reply = Assert.Single(HttpWire.Parse(await http.Connection.ReadToEndAsync()));
        Assert.Equal(431, reply.Status);
        await http.Serving.WaitAsync(PipeConnection.Patience);
    }

    [Fact]
    public async Task ReaderThatNeverReads_HoldsBoundedBuffers_IsCutAtTheSendTimeout_OthersAreServed()
    {
        using var site = new TempSite();
        byte[] big = new byte[8 << 20];
        new Random(1).NextBytes(big);
        site.Write("big.bin", big);
        var time = new ManualTimeProvider();
        var options = new HttpOptions { Root = site.Root, ResponseChunkBytes = 16 * 1024, SendTimeout = TimeSpan.FromSeconds(30) };
        var server = new HttpServer(options, time);
        const long OutputBytes = 64 * 1024;
        await using var stuck = new HttpHarness(server, serverOutputBytes: OutputBytes);
        await stuck.Connection.SendAsync("GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n");

        // The response stops once the transport's bounded buffer is full.
        Assert.True(await ManualTimeProvider.EventuallyAsync(() => server.Statistics.BodyBytesSent > 0));
        long sent = -1;
        for (int i = 0; i < 100 && sent != server.Statistics.BodyBytesSent; i++)
        {
            sent = server.Statistics.BodyBytesSent;
            await Task.Delay(20);
        }

        Assert.InRange(server.Statistics.BodyBytesSent, 1, OutputBytes + options.ResponseChunkBytes);

        // Another connection on the same server is unaffected.
        await using (var other = new HttpHarness(server))
        {
            HttpReply part = await other.GetAsync("/big.bin", "Range: bytes=0-99\r\n");
            Assert.Equal(206, part.Status);
            Assert.Equal(big.AsSpan(0, 100).ToArray(), part.Body);
        }

        // The stuck peer is cut off once a flush has waited SendTimeout.
        time.Advance(TimeSpan.FromSeconds(31));
        await stuck.Serving.WaitAsync(PipeConnection.Patience);
        Assert.Equal(1, server.Statistics.SendTimeouts);
    }

    [Fact]
    public async Task SlowReader_GetsTheWholeFile_InChunks()
    {
        using var site = new TempSite();
        byte[] big = new byte[3 << 20];
        new Random(2).NextBytes(big);
        site.Write("big.bin", big);
        await using var http = new HttpHarness(new HttpOptions { Root = site.Root, ResponseChunkBytes = 8192 }, serverOutputBytes: 16 * 1024);
        await http.Connection.SendAsync("GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n");
        var received = new MemoryStream();
        while (true)
        {
            ReadResult read = await http.Connection.ClientInput.ReadAsync();
            foreach (ReadOnlyMemory<byte> segment in read.Buffer)
            {
                received.Write(segment.Span);
            }

            http.Connection.ClientInput.AdvanceTo(read.Buffer.End);
            if (HttpWire.Parse(received.ToArray()).Count == 1)
            {
                break;
            }
        }

        Assert.Equal(big, HttpWire.Parse(received.ToArray())[0].Body);
    }
}
