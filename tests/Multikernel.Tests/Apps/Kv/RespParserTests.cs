using System.Buffers;
using System.Text;
using Multikernel.Apps.Kv;
using Multikernel.Apps.Kv.Resp;
using Xunit.Abstractions;

namespace Multikernel.Tests.Apps.Kv;

public sealed class RespParserTests(ITestOutputHelper output)
{
    private static (RespParseStatus Status, string[] Args, string? Error, long Consumed) Parse(string input, KvOptions? options = null)
    {
        var parser = new RespParser(options ?? new KvOptions());
        using var command = new RespCommand(4 << 20);
        var buffer = new ReadOnlySequence<byte>(Encoding.Latin1.GetBytes(input));
        long before = buffer.Length;
        RespParseStatus status = parser.TryParse(ref buffer, command, out string? error);
        string[] args = status == RespParseStatus.Command ? [.. Enumerable.Range(0, command.Count).Select(i => Encoding.Latin1.GetString(command[i]))] : [];
        return (status, args, error, before - buffer.Length);
    }

    [Fact]
    public void Multibulk_ParsesArguments_AndConsumesExactlyOneCommand()
    {
        var r = Parse("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n*1\r\n$4\r\nPING\r\n");
        Assert.Equal(RespParseStatus.Command, r.Status);
        Assert.Equal(["SET", "k", ""], r.Args);
        Assert.Equal("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n".Length, r.Consumed);
    }

    [Theory]
    [InlineData("PING\r\n", new[] { "PING" })]
    [InlineData("PING\n", new[] { "PING" })]
    [InlineData("  set  a   b \r\n", new[] { "set", "a", "b" })]
    [InlineData("SET k \"a b\\r\\n\\x41\"\r\n", new[] { "SET", "k", "a b\r\nA" })]
    [InlineData("SET k 'it\\'s'\r\n", new[] { "SET", "k", "it's" })]
    public void Inline_SplitsLikeSdssplitargs(string input, string[] expected)
    {
        var r = Parse(input);
        Assert.Equal(RespParseStatus.Command, r.Status);
        Assert.Equal(expected, r.Args);
    }

    [Theory]
    [InlineData("*0\r\n")]
    [InlineData("*-1\r\n")]
    [InlineData("\r\n")]
    [InlineData("   \r\n")]
    public void IgnoredInput_IsConsumedAsEmpty(string input)
    {
        var r = Parse(input);
        Assert.Equal(RespParseStatus.Empty, r.Status);
        Assert.Equal(input.Length, r.Consumed);
    }

    [Theory]
    [InlineData("*x\r\n", "ERR Protocol error: invalid multibulk length")]
    [InlineData("*+1\r\n", "ERR Protocol error: invalid multibulk length")]
    [InlineData("*1\r\n$-1\r\n", "ERR Protocol error: invalid bulk length")]
    [InlineData("*1\r\n$abc\r\n", "ERR Protocol error: invalid bulk length")]
    [InlineData("*1\r\n:3\r\n", "ERR Protocol error: expected '$', got ':'")]
    [InlineData("SET k \"abc\r\n", "ERR Protocol error: unbalanced quotes in request")]
    [InlineData("SET k \"abc\"x\r\n", "ERR Protocol error: unbalanced quotes in request")]
    [InlineData("SET k 'abc\r\n", "ERR Protocol error: unbalanced quotes in request")]
    public void MalformedInput_GetsRedisProtocolErrors(string input, string error)
    {
        var r = Parse(input);
        Assert.Equal(RespParseStatus.Error, r.Status);
        Assert.Equal(error, r.Error);
    }

    [Fact]
    public void OversizedInput_IsRefusedBeforeAnythingIsBuffered()
    {
        var options = new KvOptions { MaxBulkBytes = 1024, MaxArguments = 16 };
        Assert.Equal("ERR Protocol error: invalid bulk length", Parse("*1\r\n$1025\r\n", options).Error);
        Assert.Equal(RespParseStatus.Incomplete, Parse("*1\r\n$1024\r\n", options).Status);
        Assert.Equal("ERR Protocol error: invalid multibulk length", Parse("*17\r\n", options).Error);
        Assert.Equal("ERR Protocol error: invalid multibulk length", Parse("*99999999999999999999999\r\n", options).Error);
        Assert.Equal("ERR Protocol error: too big inline request", Parse(new string('a', RespParser.MaxInlineBytes + 1), options).Error);
        Assert.Equal("ERR Protocol error: too big mbulk count string", Parse("*" + new string('1', RespParser.MaxInlineBytes + 1), options).Error);
        Assert.Equal(RespParseStatus.Incomplete, Parse(new string('a', RespParser.MaxInlineBytes - 1), options).Status);
    }

    [Fact]
    public void EveryTruncation_IsIncomplete_AndConsumesNothing()
    {
        string whole = "*3\r\n$3\r\nSET\r\n$5\r\nhello\r\n$5\r\nworld\r\n";
        for (int cut = 0; cut < whole.Length; cut++)
        {
            var r = Parse(whole[..cut]);
            Assert.True(r.Status == RespParseStatus.Incomplete, $"cut at {cut}: {r.Status}");
            Assert.Equal(0, r.Consumed);
        }

        Assert.Equal(RespParseStatus.Command, Parse(whole).Status);
    }

    [Fact]
    public void MultiSegmentInput_ParsesTheSameAsContiguous()
    {
        byte[] whole = Encoding.ASCII.GetBytes("*2\r\n$4\r\nECHO\r\n$11\r\nhello world\r\nPING x\r\n");
        var parser = new RespParser(new KvOptions());
        using var command = new RespCommand(1 << 20);
        for (int split = 1; split < whole.Length; split++)
        {
            ReadOnlySequence<byte> buffer = Segments.Split(whole, split);
            Assert.Equal(RespParseStatus.Command, parser.TryParse(ref buffer, command, out _));
            Assert.Equal("hello world", Encoding.ASCII.GetString(command[1]));
            Assert.Equal(RespParseStatus.Command, parser.TryParse(ref buffer, command, out _));
            Assert.Equal("x", Encoding.ASCII.GetString(command[1]));
            Assert.True(buffer.IsEmpty);
        }
    }

    [Fact]
    public void Fuzz_RandomAndMutatedInput_NeverThrows_NeverOverConsumes()
    {
        int seed = Environment.TickCount;
        output.WriteLine($"seed {seed}");
        var random = new Random(seed);
        var options = new KvOptions { MaxBulkBytes = 4096, MaxArguments = 64 };
        var parser = new RespParser(options);
        using var command = new RespCommand(options.MaxQueryBufferBytes);
        string[] valid =
        [
            "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n", "*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n", "PING\r\n",
            "SET a \"b\\x41 c\" EX 10\r\n", "*1\r\n$4\r\nPING\r\n", "MGET a b c\r\n",
        ];
        for (int round = 0; round < 20_000; round++)
        {
            byte[] bytes = round % 3 == 0
                ? RandomBytes(random)
                : Mutate(Encoding.ASCII.GetBytes(string.Concat(Enumerable.Range(0, random.Next(1, 4)).Select(_ => valid[random.Next(valid.Length)]))), random);
            ReadOnlySequence<byte> buffer = Segments.Split(bytes, random.Next(1, bytes.Length + 1));
            for (int guard = 0; guard < 64 && !buffer.IsEmpty; guard++)
            {
                long before = buffer.Length;
                RespParseStatus status;
                try
                {
                    status = parser.TryParse(ref buffer, command, out _);
                }
                catch (Exception e)
                {
                    Assert.Fail($"seed {seed} round {round}: {e}");
                    throw;
                }

                Assert.True(buffer.Length <= before);
                if (status is RespParseStatus.Incomplete or RespParseStatus.Error or RespParseStatus.TooLarge)
                {
                    Assert.Equal(before, buffer.Length);
                    break;
                }

                Assert.True(buffer.Length < before, $"seed {seed} round {round}: progress");
                Assert.True(command.ArgumentBytes <= bytes.Length);
            }
        }
    }

    internal static byte[] RandomBytes(Random random)
    {
        byte[] alphabet = "*$\r\n:+-0123456789 \"'\\xabcSETGET"u8.ToArray();
        var bytes = new byte[random.Next(1, 200)];
        for (int i = 0; i < bytes.Length; i++)
        {
            bytes[i] = random.Next(4) == 0 ? (byte)random.Next(256) : alphabet[random.Next(alphabet.Length)];
        }

        return bytes;
    }

    internal static byte[] Mutate(byte[] valid, Random random)
    {
        var bytes = new List<byte>(valid);
        int mutations = random.Next(1, 5);
        for (int m = 0; m < mutations && bytes.Count > 0; m++)
        {
            int at = random.Next(bytes.Count);
            switch (random.Next(5))
            {
                case 0:
                    bytes[at] = (byte)random.Next(256);
                    break;
                case 1:
                    bytes.RemoveAt(at);
                    break;
                case 2:
                    bytes.Insert(at, (byte)"\r\n*$-0123456789"[random.Next(15)]);
                    break;
                case 3:
                    bytes.RemoveRange(at, bytes.Count - at);
                    break;
                default:
                    bytes.InsertRange(at, Encoding.ASCII.GetBytes(random.Next(2) == 0 ? "99999999999" : "-1"));
                    break;
            }
        }

        return bytes.Count == 0 ? [(byte)'*'] : [.. bytes];
    }
}

/// <summary>Sequences of several segments, to exercise parsing across segment boundaries.</summary>
public static class Segments
{
    public static ReadOnlySequence<byte> Split(byte[] data, int segmentLength)
    {
        if (data.Length == 0)
        {
            return ReadOnlySequence<byte>.Empty;
        }

        segmentLength = Math.Max(1, segmentLength);
        var first = new Segment(data.AsMemory(0, Math.Min(segmentLength, data.Length)), 0);
        Segment last = first;
        for (int i = segmentLength; i < data.Length; i += segmentLength)
        {
            last = last.Append(data.AsMemory(i, Math.Min(segmentLength, data.Length - i)));
        }

        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }
}
