using System.Text;
using System.Text.Json;
using Multikernel.Apps.Http;

namespace Multikernel.Tests.Apps.Http;

public sealed class HttpServerTests
{
    [Fact]
    public async Task BuiltInSite_IsServedWithHeaders()
    {
        await using var http = new HttpHarness();
        HttpReply index = await http.GetAsync("/");
        Assert.Equal(200, index.Status);
        Assert.Equal("text/html; charset=utf-8", index["Content-Type"]);
        Assert.Contains("<h1>Multikernel</h1>", index.Text, StringComparison.Ordinal);
        Assert.Equal("Multikernel", index["Server"]);
        Assert.True(DateTimeOffset.TryParseExact(index["Date"], "r", null, System.Globalization.DateTimeStyles.None, out _), index["Date"]);
        Assert.Equal("bytes", index["Accept-Ranges"]);
        Assert.Equal("text/css; charset=utf-8", (await http.GetAsync("/style.css"))["Content-Type"]);
        Assert.Equal("image/svg+xml", (await http.GetAsync("/favicon.svg"))["Content-Type"]);
        Assert.Equal("Hello from the multikernel.\n", (await http.GetAsync("/hello.txt")).Text);
        Assert.Equal(404, (await http.GetAsync("/nope.html")).Status);
    }

    [Fact]
    public async Task KeepAlive_And_Pipelining_AnswerInOrder()
    {
        await using var http = new HttpHarness();
        string pipelined = string.Concat(Enumerable.Range(0, 20).Select(i => i % 2 == 0
            ? "GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n"
            : "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n"));
        List<HttpReply> replies = await http.ExchangeAsync(pipelined, 20);
        for (int i = 0; i < 20; i++)
        {
            Assert.Equal(i % 2 == 0 ? 200 : 404, replies[i].Status);
            Assert.Null(replies[i]["Connection"]);
        }

        // Still open: one more request on the same connection.
        Assert.Equal(200, (await http.GetAsync("/hello.txt")).Status);
        Assert.False(http.Serving.IsCompleted);
    }

    [Fact]
    public async Task Http10_ClosesByDefault_KeepsAliveWhenAsked()
    {
        await using (var http = new HttpHarness())
        {
            await http.Connection.SendAsync("GET /hello.txt HTTP/1.0\r\n\r\n");
            List<HttpReply> replies = HttpWire.Parse(await http.Connection.ReadToEndAsync());
            Assert.Equal("close", Assert.Single(replies)["Connection"]);
            await http.Serving.WaitAsync(PipeConnection.Patience);
        }

        await using (var http = new HttpHarness())
        {
            HttpReply first = (await http.ExchangeAsync("GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")).Single();
            Assert.Equal("keep-alive", first["Connection"]);
            Assert.Equal(200, (await http.ExchangeAsync("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")).Single().Status);
        }

        await using (var http = new HttpHarness())
        {
            await http.Connection.SendAsync("GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
            Assert.Single(HttpWire.Parse(await http.Connection.ReadToEndAsync()));
        }
    }

    [Fact]
    public async Task Head_HasTheHeadersOfGet_AndNoBody()
    {
        await using var http = new HttpHarness();
        List<HttpReply> replies = await http.ExchangeAsync("HEAD /hello.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n", 2, headCount: 1);
        Assert.Equal(replies[1]["Content-Length"], replies[0]["Content-Length"]);
        Assert.Empty(replies[0].Body);
        Assert.Equal("Hello from the multikernel.\n", replies[1].Text);
    }

    [Theory]
    [InlineData("POST /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, false)]
    [InlineData("DELETE / HTTP/1.1\r\nHost: x\r\n\r\n", 405, false)]
    [InlineData("BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 501, false)]
    [InlineData("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 501, true)]
    [InlineData("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", 413, true)]
    [InlineData("GET / HTTP/3.0\r\nHost: x\r\n\r\n", 505, true)]
    [InlineData("GET / HTTP/1.1\r\n\r\n", 400, true)]
    [InlineData("GET relative HTTP/1.1\r\nHost: x\r\n\r\n", 400, false)]
    public async Task Errors_HaveTheRightStatus_AndCloseWhenFramingIsLost(string raw, int status, bool closes)
    {
        await using var http = new HttpHarness();
        HttpReply reply = (await http.ExchangeAsync(raw)).Single();
        Assert.Equal(status, reply.Status);
        Assert.Equal($"{status} {reply.Reason}\n", reply.Text);
        if (status == 405)
        {
            Assert.Equal("GET, HEAD", reply["Allow"]);
        }

        Assert.Equal(closes, reply["Connection"] == "close");
        Assert.Equal(closes, await http.Connection.ServerClosedAsync(closes ? PipeConnection.Patience : TimeSpan.FromMilliseconds(200)));
    }

    [Fact]
    public async Task Oversized_RequestLine_414_Headers_431()
    {
        await using (var http = new HttpHarness())
        {
            Assert.Equal(414, (await http.GetAsync("/" + new string('a', 9000))).Status);
        }

        await using (var http = new HttpHarness())
        {
            string many = string.Concat(Enumerable.Range(0, 101).Select(i => $"X-{i}: v\r\n"));
            Assert.Equal(431, (await http.GetAsync("/", many)).Status);
        }

        await using (var http = new HttpHarness())
        {
            Assert.Equal(431, (await http.GetAsync("/", $"X-Big: {new string('b', 40_000)}\r\n")).Status);
        }
    }

    [Fact]
    public async Task RequestBody_IsDiscarded_AndTheNextRequestIsServed()
    {
        await using var http = new HttpHarness();
        List<HttpReply> replies = await http.ExchangeAsync(
            "GET /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello worldGET / HTTP/1.1\r\nHost: x\r\n\r\n", 2);
        Assert.Equal([200, 200], replies.Select(r => r.Status));
        Assert.Contains("<h1>", replies[1].Text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Ranges_206_416_AndIgnoredRanges()
    {
        using var site = new TempSite();
        site.Write("digits.txt", "0123456789");
        await using var http = new HttpHarness(new HttpOptions { Root = site.Root });
        HttpReply part = await http.GetAsync("/digits.txt", "Range: bytes=2-4\r\n");
        Assert.Equal(206, part.Status);
        Assert.Equal("234", part.Text);
        Assert.Equal("bytes 2-4/10", part["Content-Range"]);
        Assert.Equal("3", part["Content-Length"]);
        Assert.Equal("789", (await http.GetAsync("/digits.txt", "Range: bytes=-3\r\n")).Text);
        Assert.Equal("9", (await http.GetAsync("/digits.txt", "Range: bytes=9-\r\n")).Text);
        HttpReply unsatisfiable = await http.GetAsync("/digits.txt", "Range: bytes=10-\r\n");
        Assert.Equal(416, unsatisfiable.Status);
        Assert.Equal("bytes */10", unsatisfiable["Content-Range"]);
        Assert.Empty(unsatisfiable.Body);
        HttpReply multi = await http.GetAsync("/digits.txt", "Range: bytes=0-1,4-5\r\n");
        Assert.Equal(200, multi.Status);
        Assert.Equal("0123456789", multi.Text);
        Assert.Equal(200, (await http.GetAsync("/digits.txt", "Range: bytes=5-2\r\n")).Status);
        Assert.Equal("text/plain; charset=utf-8", part["Content-Type"]);
        Assert.NotNull(part["Last-Modified"]);
    }

    [Fact]
    public async Task AServedFile_ThatIsRemoved_IsA404Next_AndOneReplaced_ServesItsNewContent()
    {
        // The resolved path is remembered for a second; the open per request still sees the file as it is now.
        using var site = new TempSite();
        site.Write("page.txt", "first");
        await using var http = new HttpHarness(new HttpOptions { Root = site.Root });
        Assert.Equal("first", (await http.GetAsync("/page.txt")).Text);
        File.Delete(Path.Combine(site.Root, "page.txt"));
        Assert.Equal(404, (await http.GetAsync("/page.txt")).Status);
        site.Write("page.txt", "second, longer");
        HttpReply again = await http.GetAsync("/page.txt");
        Assert.Equal(200, again.Status);
        Assert.Equal("second, longer", again.Text);
    }

    [Fact]
    public async Task ASymlinkRetargetedOutsideTheRoot_AfterItWasServed_IsNeverFollowedOut()
    {
        // What is remembered is the real path inside the root, never the link: a link swapped to
        // lead out serves the old inside file or nothing, never the outside one.
        using var site = new TempSite();
        File.WriteAllText(Path.Combine(site.Path, "secret.txt"), "SECRET");
        site.Write("sub/inside.txt", "inside");
        string link = Path.Combine(site.Root, "link.txt");
        File.CreateSymbolicLink(link, Path.Combine(site.Root, "sub", "inside.txt"));
        await using var http = new HttpHarness(new HttpOptions { Root = site.Root });
        Assert.Equal("inside", (await http.GetAsync("/link.txt")).Text);
        File.Delete(link);
        File.CreateSymbolicLink(link, Path.Combine(site.Path, "secret.txt"));
        for (int i = 0; i < 3; i++)
        {
            HttpReply reply = await http.GetAsync("/link.txt");
            Assert.DoesNotContain("SECRET", reply.Text, StringComparison.Ordinal);
        }
    }

    [Theory]
    [InlineData("/../secret.txt", 400)]
    [InlineData("/%2e%2e/secret.txt", 400)]
    [InlineData("/%2E%2e/secret.txt", 400)]
    [InlineData("/sub/..%2f..%2fsecret.txt", 400)]
    [InlineData("/sub/%2e%2e/%2e%2e/secret.txt", 400)]
    [InlineData("/..\\secret.txt", 400)]
    [InlineData("/sub%5c..%5c..%5csecret.txt", 400)]
    [InlineData("/%00secret.txt", 400)]
    [InlineData("/%zz", 400)]
    [InlineData("/%c0%ae%c0%ae/secret.txt", 400)]
    [InlineData("//etc/passwd", 404)]
    [InlineData("/%2fetc%2fpasswd", 404)]
    [InlineData("http://evil/../secret.txt", 400)]
    [InlineData("/.hidden", 404)]
    [InlineData("/out/secret.txt", 403)]
    [InlineData("/outfile.txt", 403)]
    public async Task Traversal_IsRefused(string target, int status)
    {
        using var site = new TempSite();
        File.WriteAllText(Path.Combine(site.Path, "secret.txt"), "SECRET");
        site.Write("sub/inside.txt", "inside");
        site.Write(".hidden", "hidden");
        File.CreateSymbolicLink(Path.Combine(site.Root, "out"), site.Path);
        File.CreateSymbolicLink(Path.Combine(site.Root, "outfile.txt"), Path.Combine(site.Path, "secret.txt"));
        await using var http = new HttpHarness(new HttpOptions { Root = site.Root });
        HttpReply reply = await http.GetAsync(target);
        Assert.Equal(status, reply.Status);
        Assert.DoesNotContain("SECRET", reply.Text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task SymlinksInsideTheRoot_AreServed_AndAbsoluteFormTargetsWork()
    {
        using var site = new TempSite();
        site.Write("sub/inside.txt", "inside");
        File.CreateSymbolicLink(Path.Combine(site.Root, "link.txt"), Path.Combine(site.Root, "sub", "inside.txt"));
        File.CreateSymbolicLink(Path.Combine(site.Root, "dirlink"), "sub");
        await using var http = new HttpHarness(new HttpOptions { Root = site.Root });
        Assert.Equal("inside", (await http.GetAsync("/link.txt")).Text);
        Assert.Equal("inside", (await http.GetAsync("/dirlink/inside.txt")).Text);
        Assert.Equal("inside", (await http.GetAsync("/sub/./inside.txt?query=1")).Text);
        Assert.Equal("inside", (await http.GetAsync("http://host/sub/inside.txt")).Text);
        Assert.Equal("inside", (await http.GetAsync("/sub/inside%2Etxt")).Text);
        Assert.Equal(404, (await http.GetAsync("/sub/")).Status); // no index.html, no listing
    }

    [Fact]
    public async Task Stats_IsJson_WithTheServersCounters_AndTheProvidersFields()
    {
        var options = new HttpOptions
        {
            StatsProvider = (json, _) =>
            {
                json.WriteStartArray("cores");
                json.WriteNumberValue(7);
                json.WriteEndArray();
                return ValueTask.CompletedTask;
            },
        };
        await using var http = new HttpHarness(options);
        await http.GetAsync("/hello.txt");
        HttpReply stats = await http.GetAsync("/stats");
        Assert.Equal("application/json", stats["Content-Type"]);
        Assert.Equal("no-store", stats["Cache-Control"]);
        using JsonDocument doc = JsonDocument.Parse(stats.Body);
        Assert.Equal(2, doc.RootElement.GetProperty("requests").GetInt64());
        Assert.Equal(1, doc.RootElement.GetProperty("responses").GetProperty("2xx").GetInt64());
        Assert.Equal(1, doc.RootElement.GetProperty("connections").GetProperty("active").GetInt64());
        Assert.Equal(7, doc.RootElement.GetProperty("cores")[0].GetInt32());
    }

    [Fact]
    public async Task ConnectionLimit_Answers503AndCloses()
    {
        var server = new HttpServer(new HttpOptions { MaxConnections = 1 });
        await using var first = new HttpHarness(server);
        Assert.Equal(200, (await first.GetAsync("/hello.txt")).Status);
        var second = new PipeConnection();
        Task serving = server.RunConnectionAsync(second.ServerSide);
        HttpReply refused = Assert.Single(HttpWire.Parse(await second.ReadToEndAsync()));
        Assert.Equal(503, refused.Status);
        await serving.WaitAsync(PipeConnection.Patience);
        Assert.Equal(1, server.Statistics.RefusedConnections);
    }

    [Fact]
    public async Task Fuzz_ServerAnswersGarbageWithHttpOrCloses()
    {
        int seed = Environment.TickCount;
        var random = new Random(seed);
        var server = new HttpServer(new HttpOptions { MaxHeaderBytes = 4096, MaxRequestLineBytes = 1024 });
        string[] valid = ["GET / HTTP/1.1\r\nHost: a\r\n\r\n", "HEAD /hello.txt HTTP/1.0\r\n\r\n", "GET /hello.txt HTTP/1.1\r\nHost: a\r\nRange: bytes=1-3\r\n\r\n", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"];
        for (int round = 0; round < 300; round++)
        {
            var connection = new PipeConnection(server.Options.RequiredInputBufferBytes);
            Task serving = server.RunConnectionAsync(connection.ServerSide);
            byte[] bytes = [.. Enumerable.Range(0, random.Next(1, 6)).SelectMany(_ => random.Next(3) == 0
                ? Kv.RespParserTests.RandomBytes(random)
                : Kv.RespParserTests.Mutate(Encoding.ASCII.GetBytes(valid[random.Next(valid.Length)]), random))];
            for (int at = 0; at < bytes.Length;)
            {
                int n = Math.Min(bytes.Length - at, random.Next(1, 64));
                await connection.ClientOutput.WriteAsync(bytes.AsMemory(at, n));
                at += n;
            }

            await connection.ClientOutput.CompleteAsync();
            byte[] replies = await connection.ReadToEndAsync();
            await serving.WaitAsync(PipeConnection.Patience);
            string text = Encoding.ASCII.GetString(replies);
            Assert.True(text.Length == 0 || text.StartsWith("HTTP/1.1 ", StringComparison.Ordinal), $"seed {seed} round {round}: {text}");
        }

        Assert.Equal(0, server.Statistics.ActiveConnections);
    }
}
