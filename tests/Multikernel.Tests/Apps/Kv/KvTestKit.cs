using System.Globalization;
using System.Text;
using Multikernel.Apps.Kv;
using Multikernel.Apps.Kv.Store;

namespace Multikernel.Tests.Apps.Kv;

/// <summary>RESP reply decoding for tests, rendered the way redis-cli prints replies.</summary>
public static class Resp
{
    public static byte[] Command(params string[] args)
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"*{args.Length}\r\n");
        foreach (string a in args)
        {
            sb.Append(CultureInfo.InvariantCulture, $"${Encoding.UTF8.GetByteCount(a)}\r\n{a}\r\n");
        }

        return Encoding.UTF8.GetBytes(sb.ToString());
    }

    /// <summary>Parses one reply at <paramref name="pos"/>; null when incomplete. Throws on malformed replies.</summary>
    public static string? TryParse(byte[] data, ref int pos)
    {
        int start = pos;
        string? result = Parse(data, ref pos);
        if (result is null)
        {
            pos = start;
        }

        return result;
    }

    private static string? Parse(byte[] data, ref int pos)
    {
        if (pos >= data.Length)
        {
            return null;
        }

        int lineEnd = Array.IndexOf(data, (byte)'\n', pos);
        if (lineEnd < 0)
        {
            return null;
        }

        Assert.Equal((byte)'\r', data[lineEnd - 1]);
        char type = (char)data[pos];
        string line = Encoding.UTF8.GetString(data, pos + 1, lineEnd - pos - 2);
        pos = lineEnd + 1;
        switch (type)
        {
            case '+':
                return line;
            case '-':
                return "(error) " + line;
            case ':':
                return "(integer) " + long.Parse(line, CultureInfo.InvariantCulture);
            case '$':
                int len = int.Parse(line, CultureInfo.InvariantCulture);
                if (len < 0)
                {
                    return "(nil)";
                }

                if (pos + len + 2 > data.Length)
                {
                    return null;
                }

                string value = Encoding.UTF8.GetString(data, pos, len);
                Assert.Equal((byte)'\r', data[pos + len]);
                Assert.Equal((byte)'\n', data[pos + len + 1]);
                pos += len + 2;
                return "\"" + value + "\"";
            case '*':
                int count = int.Parse(line, CultureInfo.InvariantCulture);
                if (count < 0)
                {
                    return "(nil array)";
                }

                var items = new List<string>();
                for (int i = 0; i < count; i++)
                {
                    string? item = Parse(data, ref pos);
                    if (item is null)
                    {
                        return null;
                    }

                    items.Add(item);
                }

                return "[" + string.Join(", ", items) + "]";
            default:
                throw new InvalidDataException($"not a RESP reply type: '{type}'");
        }
    }

    public static List<string> ParseAll(byte[] data, out int consumed)
    {
        var replies = new List<string>();
        int pos = 0;
        while (TryParse(data, ref pos) is { } reply)
        {
            replies.Add(reply);
        }

        consumed = pos;
        return replies;
    }
}

/// <summary>A kv server on an in-memory connection.</summary>
public sealed class KvHarness : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();

    public KvHarness(KvOptions? options = null, TimeProvider? time = null, IShardInvoker? shards = null, long serverInputBytes = 8 << 20, long serverOutputBytes = 64 * 1024)
    {
        Options = options ?? new KvOptions();
        Time = time ?? TimeProvider.System;
        Shards = shards ?? new InlineShardInvoker(1, Options, Time);
        Server = new KvServer(Shards, Options, Time);
        Connection = new PipeConnection(serverInputBytes, serverOutputBytes);
        Serving = Server.RunConnectionAsync(Connection.ServerSide, _stop.Token);
    }

    public KvOptions Options { get; }

    public TimeProvider Time { get; }

    public IShardInvoker Shards { get; }

    public KvServer Server { get; }

    public PipeConnection Connection { get; }

    public Task Serving { get; }

    /// <summary>Sends raw bytes and returns exactly <paramref name="replies"/> replies.</summary>
    public async Task<List<string>> SendRawAsync(byte[] raw, int replies)
    {
        await Connection.SendAsync(raw);
        byte[] got = await Connection.ReadUntilAsync(b => Resp.ParseAll(b, out _).Count >= replies);
        List<string> parsed = Resp.ParseAll(got, out int consumed);
        Assert.Equal(got.Length, consumed);
        return parsed;
    }

    public async Task<string> Call(params string[] args) => (await SendRawAsync(Resp.Command(args), 1)).Single();

    public async ValueTask DisposeAsync()
    {
        await Connection.ClientOutput.CompleteAsync();
        await _stop.CancelAsync();
        await Serving.WaitAsync(PipeConnection.Patience);
        _stop.Dispose();
    }
}
