using System.Buffers;
using System.Text;
using Multikernel.Apps.Http;
using Multikernel.Tests.Apps.Kv;
using Xunit.Abstractions;

namespace Multikernel.Tests.Apps.Http;

public sealed class HttpRequestParserTests(ITestOutputHelper output)
{
    private static (HttpParseStatus Status, int Code, int Consumed, HttpRequestHead Head) Parse(string raw, HttpOptions? options = null)
    {
        var parser = new HttpRequestParser(options ?? new HttpOptions());
        var head = new HttpRequestHead();
        HttpParseStatus status = parser.TryParse(new ReadOnlySequence<byte>(Encoding.Latin1.GetBytes(raw)), head, out int consumed, out int code);
        return (status, code, consumed, head);
    }

    [Fact]
    public void ValidRequest_ParsesWhatTheServerNeeds()
    {
        string raw = "GET /a/b?x=1 HTTP/1.1\r\nHost: example\r\nRange: bytes=0-9\r\nConnection: keep-alive, close\r\nContent-Length: 3\r\n\r\nabc";
        var r = Parse(raw);
        Assert.Equal(HttpParseStatus.Complete, r.Status);
        Assert.Equal(raw.Length - 3, r.Consumed);
        Assert.Equal("GET", r.Head.Method);
        Assert.Equal("/a/b?x=1", r.Head.Target);
        Assert.Equal(11, r.Head.Version);
        Assert.Equal("example", r.Head.Host);
        Assert.Equal("bytes=0-9", r.Head.Range);
        Assert.Equal(3, r.Head.ContentLength);
        Assert.True(r.Head.ConnectionClose);
        Assert.False(r.Head.KeepAlive);
    }

    [Theory]
    [InlineData("GET / HTTP/1.1\nHost: x\n\n", 11, true)]
    [InlineData("\r\nGET / HTTP/1.0\r\n\r\n", 10, false)]
    [InlineData("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 10, true)]
    [InlineData("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", 11, true)]
    public void LenientWhereTheRfcAllows(string raw, int version, bool keepAlive)
    {
        var r = Parse(raw);
        Assert.Equal(HttpParseStatus.Complete, r.Status);
        Assert.Equal(version, r.Head.Version);
        Assert.Equal(keepAlive, r.Head.KeepAlive);
    }

    [Theory]
    [InlineData("GET / HTTP/1.1\r\n\r\n", 400)] // no Host
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400)]
    [InlineData("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400)]
    [InlineData("G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400)]
    [InlineData("GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400)]
    [InlineData("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505)]
    [InlineData("GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505)]
    [InlineData("GET / FTP/1.1\r\nHost: a\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400)] // whitespace before the colon
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400)] // obsolete line folding
    [InlineData("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400)] // bare CR
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nX: \x00\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400)]
    public void MalformedRequests_AreRefusedWithTheRightStatus(string raw, int code)
    {
        var r = Parse(raw);
        Assert.Equal(HttpParseStatus.Error, r.Status);
        Assert.Equal(code, r.Code);
    }

    [Fact]
    public void Limits_414_431_AtTheConfiguredSizes()
    {
        var options = new HttpOptions { MaxRequestLineBytes = 100, MaxHeaderBytes = 1000, MaxHeaderCount = 5 };
        Assert.Equal(HttpParseStatus.Complete, Parse($"GET /{new string('a', 80)} HTTP/1.1\r\nHost: a\r\n\r\n", options).Status);
        Assert.Equal(414, Parse($"GET /{new string('a', 100)} HTTP/1.1\r\nHost: a\r\n\r\n", options).Code);
        Assert.Equal(414, Parse($"GET /{new string('a', 200)}", options).Code); // not even finished
        string headers = string.Concat(Enumerable.Range(0, 6).Select(i => $"X-{i}: v\r\n"));
        Assert.Equal(431, Parse($"GET / HTTP/1.1\r\nHost: a\r\n{headers}\r\n", options).Code);
        Assert.Equal(431, Parse($"GET / HTTP/1.1\r\nHost: a\r\nX: {new string('v', 1000)}\r\n\r\n", options).Code);
        Assert.Equal(431, Parse($"GET / HTTP/1.1\r\nHost: a\r\nX: {new string('v', 2000)}", options).Code); // never ends
    }

    [Fact]
    public void EveryTruncation_IsIncomplete()
    {
        string raw = "GET /index.html HTTP/1.1\r\nHost: x\r\nRange: bytes=1-2\r\n\r\n";
        for (int cut = 0; cut < raw.Length; cut++)
        {
            Assert.Equal(HttpParseStatus.Incomplete, Parse(raw[..cut]).Status);
        }

        Assert.Equal(HttpParseStatus.Complete, Parse(raw).Status);
    }

    [Fact]
    public void MultiSegmentHeads_ParseAsContiguous()
    {
        byte[] raw = Encoding.ASCII.GetBytes("GET /x HTTP/1.1\r\nHost: x\r\nRange: bytes=5-\r\n\r\nGET");
        var parser = new HttpRequestParser(new HttpOptions());
        var head = new HttpRequestHead();
        for (int split = 1; split < raw.Length; split++)
        {
            Assert.Equal(HttpParseStatus.Complete, parser.TryParse(Segments.Split(raw, split), head, out int consumed, out _));
            Assert.Equal(raw.Length - 3, consumed);
            Assert.Equal("bytes=5-", head.Range);
        }
    }

    [Fact]
    public void Fuzz_RandomAndMutatedHeads_NeverThrow_ErrorsAreHttpStatuses()
    {
        int seed = Environment.TickCount;
        output.WriteLine($"seed {seed}");
        var random = new Random(seed);
        var options = new HttpOptions { MaxHeaderBytes = 2048, MaxRequestLineBytes = 512, MaxHeaderCount = 20 };
        var parser = new HttpRequestParser(options);
        var head = new HttpRequestHead();
        string[] valid = ["GET / HTTP/1.1\r\nHost: a\r\n\r\n", "HEAD /x.txt HTTP/1.0\r\nRange: bytes=0-1\r\n\r\n", "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody"];
        for (int round = 0; round < 20_000; round++)
        {
            byte[] bytes = round % 4 == 0 ? RespParserTests.RandomBytes(random) : RespParserTests.Mutate(Encoding.ASCII.GetBytes(valid[random.Next(valid.Length)]), random);
            HttpParseStatus status;
            int consumed, code;
            try
            {
                status = parser.TryParse(Segments.Split(bytes, random.Next(1, bytes.Length + 1)), head, out consumed, out code);
            }
            catch (Exception e)
            {
                Assert.Fail($"seed {seed} round {round}: {e}");
                throw;
            }

            Assert.InRange(consumed, 0, bytes.Length);
            if (status == HttpParseStatus.Error)
            {
                Assert.Contains(code, new[] { 400, 414, 431, 505 });
            }
        }
    }
}
