using System.Buffers;
using System.Buffers.Text;
using System.Collections.Frozen;
using System.IO.Pipelines;
using System.Text;
using System.Text.Json;

namespace Multikernel.Apps.Http;

/// <summary>
/// One HTTP connection: parses request heads from the transport, discards bodies, and writes
/// responses in order (pipelined requests are answered back to back and flushed together).
/// Two timers guard it: a read deadline (idle keep-alive, then the head-and-body deadline from
/// the request's first byte, which a dribbling client cannot extend) and a send deadline per
/// flushed chunk (a peer that stops reading is cut off).
/// </summary>
internal sealed class HttpConnection : IDisposable
{
    private static readonly FrozenSet<string> KnownMethods = FrozenSet.ToFrozenSet(["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"], StringComparer.Ordinal);

    private readonly HttpServer _server;
    private readonly HttpOptions _options;
    private readonly TimeProvider _time;
    private readonly PipeReader _reader;
    private readonly PipeWriter _writer;
    private readonly HttpRequestParser _parser;
    private readonly HttpRequestHead _head = new();
    private readonly List<string> _segments = [];
    private readonly ITimer _readTimer;
    private readonly ITimer _sendTimer;
    private long _readDeadline = long.MaxValue;
    private long _sendDeadline = long.MaxValue;
    private bool _inRequest;
    private bool _inBody;
    private long _bodyRemaining;
    private ReadOnlySequence<byte> _buffer;

    public HttpConnection(HttpServer server, IDuplexPipe transport)
    {
        _server = server;
        _options = server.Options;
        _time = server.Time;
        _reader = transport.Input;
        _writer = transport.Output;
        _parser = new HttpRequestParser(_options);
        _readTimer = _time.CreateTimer(static s => ((HttpConnection)s!).OnReadTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        _sendTimer = _time.CreateTimer(static s => ((HttpConnection)s!).OnSendTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    public void Dispose()
    {
        _readTimer.Dispose();
        _sendTimer.Dispose();
    }

    /// <summary>Answers 503 and closes (the server is at its connection limit).</summary>
    public async Task RefuseAsync(CancellationToken cancellationToken)
    {
        try
        {
            WriteSimple(503, keepAlive: false, echoKeepAlive: false, headOnly: false);
            await FlushAsync(cancellationToken);
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or OperationCanceledException)
        {
            // The peer is gone already.
        }
        finally
        {
            await _reader.CompleteAsync();
            await _writer.CompleteAsync();
        }
    }

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        try
        {
            ArmRead(_options.KeepAliveTimeout);
            while (true)
            {
                ReadResult read = await _reader.ReadAsync(cancellationToken);
                ReadOnlySequence<byte> buffer = read.Buffer;
                if (read.IsCanceled && _time.GetTimestamp() >= Volatile.Read(ref _readDeadline))
                {
                    _reader.AdvanceTo(buffer.Start);
                    if (_inRequest || !buffer.IsEmpty)
                    {
                        _server.CountHeaderTimeout();
                        HttpLog.TimedOut(_server.Logger, "request head");
                        WriteSimple(408, keepAlive: false, echoKeepAlive: false, headOnly: false);
                        await FlushAsync(cancellationToken);
                    }
                    else
                    {
                        HttpLog.TimedOut(_server.Logger, "idle keep-alive");
                    }

                    break;
                }

                _buffer = buffer;
                bool keep;
                try
                {
                    keep = await ProcessAsync(cancellationToken);
                }
                finally
                {
                    // Everything answered is consumed; an incomplete head stays, examined, so the next read waits for more.
                    _reader.AdvanceTo(_buffer.Start, _buffer.End);
                    _buffer = default;
                }

                if (!keep || !await FlushAsync(cancellationToken) || read.IsCompleted)
                {
                    break;
                }
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // The host is stopping.
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or ObjectDisposedException)
        {
            HttpLog.TransportEnded(_server.Logger, e);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A bug must cost this connection only, never the server.
            HttpLog.RequestFailed(_server.Logger, e);
        }
        finally
        {
            _readTimer.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            _sendTimer.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            await _reader.CompleteAsync();
            await _writer.CompleteAsync();
        }
    }

    /// <summary>Handles every whole request in <see cref="_buffer"/>, slicing it as it goes; false when the connection must close.</summary>
    private async ValueTask<bool> ProcessAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            if (!_inBody)
            {
                if (_buffer.IsEmpty)
                {
                    return true;
                }

                if (!_inRequest)
                {
                    // The first byte of a request: from now on the whole head (and body) has HeaderTimeout.
                    _inRequest = true;
                    ArmRead(_options.HeaderTimeout);
                }

                HttpParseStatus parsed = _parser.TryParse(_buffer, _head, out int consumed, out int error);
                if (parsed == HttpParseStatus.Incomplete)
                {
                    return true;
                }

                if (parsed == HttpParseStatus.Error)
                {
                    return Refuse(error);
                }

                _buffer = _buffer.Slice(consumed);
                if (_head.TransferEncoding)
                {
                    return Refuse(501);
                }

                if (_head.ContentLength > _options.MaxBodyBytes)
                {
                    return Refuse(413);
                }

                _bodyRemaining = Math.Max(0, _head.ContentLength);
                _inBody = true;
            }

            if (_bodyRemaining > 0)
            {
                long take = Math.Min(_bodyRemaining, _buffer.Length);
                _buffer = _buffer.Slice(take);
                _bodyRemaining -= take;
                if (_bodyRemaining > 0)
                {
                    return true;
                }
            }

            _inBody = false;
            _inRequest = false;
            ArmRead(Timeout.InfiniteTimeSpan);
            if (!await RespondAsync(cancellationToken))
            {
                return false;
            }

            ArmRead(_options.KeepAliveTimeout);
        }
    }

    private bool Refuse(int status)
    {
        HttpLog.Refused(_server.Logger, status);
        WriteSimple(status, keepAlive: false, echoKeepAlive: false, headOnly: false);
        return false;
    }

    // ------------------------------------------------------------------ responses

    /// <summary>Answers the parsed request; false when the connection must close.</summary>
    private async ValueTask<bool> RespondAsync(CancellationToken cancellationToken)
    {
        _server.CountRequest();
        HttpRequestHead head = _head;
        bool keepAlive = head.KeepAlive;
        bool echoKeepAlive = head.Version == 10 && keepAlive;
        bool isHead = head.Method == "HEAD";
        if (head.Method != "GET" && !isHead)
        {
            int status = KnownMethods.Contains(head.Method) ? 405 : 501;
            WriteSimple(status, keepAlive, echoKeepAlive, headOnly: false);
            return keepAlive;
        }

        int problem = ResolveTarget(head.Target, _segments);
        if (problem != 0)
        {
            WriteSimple(problem, keepAlive, echoKeepAlive, isHead);
            return keepAlive;
        }

        if (_segments.Count == 1 && _segments[0] == "stats")
        {
            await WriteStatsAsync(keepAlive, echoKeepAlive, isHead, cancellationToken);
            return keepAlive;
        }

        switch (_server.Files.TryOpen(_segments, out IStaticFile? file))
        {
            case StaticFileLookup.NotFound:
                WriteSimple(404, keepAlive, echoKeepAlive, isHead);
                return keepAlive;
            case StaticFileLookup.Forbidden:
                WriteSimple(403, keepAlive, echoKeepAlive, isHead);
                return keepAlive;
        }

        using (file)
        {
            return await WriteFileAsync(file!, keepAlive, echoKeepAlive, isHead, cancellationToken) && keepAlive;
        }
    }

    private async ValueTask<bool> WriteFileAsync(IStaticFile file, bool keepAlive, bool echoKeepAlive, bool headOnly, CancellationToken cancellationToken)
    {
        long length = file.Length;
        long start = 0;
        long count = length;
        int status = 200;
        string? contentRange = null;
        if (!headOnly && _head.Range is not null)
        {
            switch (HttpRange.Parse(_head.Range, length, out start, out count))
            {
                case RangeResult.Satisfiable:
                    status = 206;
                    contentRange = string.Create(System.Globalization.CultureInfo.InvariantCulture, $"bytes {start}-{start + count - 1}/{length}");
                    break;
                case RangeResult.Unsatisfiable:
                    WriteHead(416, 0, null, keepAlive, echoKeepAlive, contentRange: string.Create(System.Globalization.CultureInfo.InvariantCulture, $"bytes */{length}"));
                    return true;
                default:
                    start = 0;
                    count = length;
                    break;
            }
        }

        WriteHead(status, count, ContentTypes.For(file.Name), keepAlive, echoKeepAlive, file.LastModified, acceptRanges: true, contentRange: contentRange);
        if (headOnly)
        {
            return true;
        }

        long offset = start;
        long remaining = count;
        int chunk = _options.ResponseChunkBytes;
        while (remaining > 0)
        {
            Memory<byte> memory = _writer.GetMemory(chunk);
            int want = (int)Math.Min(Math.Min(memory.Length, chunk), remaining);
            int n = await file.ReadAsync(offset, memory[..want], cancellationToken);
            if (n <= 0)
            {
                // The file shrank under us: the promised length cannot be kept, so the connection ends.
                return false;
            }

            _writer.Advance(n);
            offset += n;
            remaining -= n;
            _server.CountBodyBytes(n);
            if (!await FlushAsync(cancellationToken))
            {
                return false;
            }
        }

        return true;
    }

    private async ValueTask WriteStatsAsync(bool keepAlive, bool echoKeepAlive, bool headOnly, CancellationToken cancellationToken)
    {
        var body = new ArrayBufferWriter<byte>(1024);
        await using (var json = new Utf8JsonWriter(body))
        {
            HttpServerStatistics s = _server.Statistics;
            json.WriteStartObject();
            json.WriteString("server", _options.ServerName);
            json.WriteStartObject("connections");
            json.WriteNumber("active", s.ActiveConnections);
            json.WriteNumber("accepted", s.AcceptedConnections);
            json.WriteNumber("refused", s.RefusedConnections);
            json.WriteEndObject();
            json.WriteNumber("requests", s.Requests);
            json.WriteStartObject("responses");
            json.WriteNumber("2xx", s.Responses2xx);
            json.WriteNumber("3xx", s.Responses3xx);
            json.WriteNumber("4xx", s.Responses4xx);
            json.WriteNumber("5xx", s.Responses5xx);
            json.WriteEndObject();
            json.WriteNumber("bodyBytesSent", s.BodyBytesSent);
            json.WriteNumber("headerTimeouts", s.HeaderTimeouts);
            json.WriteNumber("sendTimeouts", s.SendTimeouts);
            if (_options.StatsProvider is { } provider)
            {
                await provider(json, cancellationToken);
            }

            json.WriteEndObject();
        }

        WriteHead(200, body.WrittenCount, "application/json", keepAlive, echoKeepAlive, noStore: true);
        if (!headOnly)
        {
            _writer.Write(body.WrittenSpan);
        }
    }

    /// <summary>A status with a short text body (errors, 404…).</summary>
    private void WriteSimple(int status, bool keepAlive, bool echoKeepAlive, bool headOnly)
    {
        string reason = Reason(status);
        int bodyLength = 3 + 1 + reason.Length + 1;
        WriteHead(status, bodyLength, "text/plain; charset=utf-8", keepAlive, echoKeepAlive, allow: status == 405);
        if (!headOnly)
        {
            WriteAscii(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{status} {reason}\n"));
        }
    }

    private void WriteHead(
        int status,
        long contentLength,
        string? contentType,
        bool keepAlive,
        bool echoKeepAlive,
        DateTimeOffset? lastModified = null,
        bool acceptRanges = false,
        string? contentRange = null,
        bool allow = false,
        bool noStore = false)
    {
        _server.CountResponse(status);
        WriteAscii("HTTP/1.1 ");
        WriteNumber(status);
        WriteAscii(" ");
        WriteAscii(Reason(status));
        WriteAscii("\r\nServer: ");
        WriteAscii(_options.ServerName);
        WriteAscii("\r\nDate: ");
        _writer.Write(_server.Date());
        if (contentType is not null)
        {
            WriteAscii("\r\nContent-Type: ");
            WriteAscii(contentType);
        }

        WriteAscii("\r\nContent-Length: ");
        WriteNumber(contentLength);
        if (lastModified is { } modified)
        {
            WriteAscii("\r\nLast-Modified: ");
            Span<byte> date = _writer.GetSpan(32);
            Utf8Formatter.TryFormat(modified.ToUniversalTime(), date, out int n, new StandardFormat('R'));
            _writer.Advance(n);
        }

        if (acceptRanges)
        {
            WriteAscii("\r\nAccept-Ranges: bytes");
        }

        if (contentRange is not null)
        {
            WriteAscii("\r\nContent-Range: ");
            WriteAscii(contentRange);
        }

        if (allow)
        {
            WriteAscii("\r\nAllow: GET, HEAD");
        }

        if (noStore)
        {
            WriteAscii("\r\nCache-Control: no-store");
        }

        if (!keepAlive)
        {
            WriteAscii("\r\nConnection: close");
        }
        else if (echoKeepAlive)
        {
            WriteAscii("\r\nConnection: keep-alive");
        }

        WriteAscii("\r\n\r\n");
    }

    private void WriteAscii(string text)
    {
        Span<byte> span = _writer.GetSpan(text.Length);
        int n = Encoding.ASCII.GetBytes(text, span);
        _writer.Advance(n);
    }

    private void WriteNumber(long value)
    {
        Span<byte> span = _writer.GetSpan(20);
        Utf8Formatter.TryFormat(value, span, out int n);
        _writer.Advance(n);
    }

    private static string Reason(int status) => status switch
    {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    };

    // ------------------------------------------------------------------ targets

    /// <summary>
    /// Decodes the target's path into segments; 0 when servable, else the status to answer.
    /// Refused: anything but origin- or absolute-form, bad or NUL escapes, invalid UTF-8,
    /// backslashes, <c>..</c> in any spelling (400); dot-files (404).
    /// </summary>
    internal static int ResolveTarget(string target, List<string> segments)
    {
        segments.Clear();
        string path = target;
        foreach (string scheme in (ReadOnlySpan<string>)["http://", "https://"])
        {
            if (path.StartsWith(scheme, StringComparison.OrdinalIgnoreCase))
            {
                int slash = path.IndexOf('/', scheme.Length);
                path = slash < 0 ? "/" : path[slash..];
                break;
            }
        }

        if (path.Length == 0 || path[0] != '/' || path.Contains('#'))
        {
            return 400;
        }

        int query = path.IndexOf('?');
        if (query >= 0)
        {
            path = path[..query];
        }

        byte[] decoded = new byte[path.Length];
        int length = 0;
        for (int i = 0; i < path.Length; i++)
        {
            char c = path[i];
            if (c == '%')
            {
                if (i + 2 >= path.Length || !char.IsAsciiHexDigit(path[i + 1]) || !char.IsAsciiHexDigit(path[i + 2]))
                {
                    return 400;
                }

                decoded[length++] = (byte)((HexValue(path[i + 1]) << 4) | HexValue(path[i + 2]));
                i += 2;
            }
            else
            {
                decoded[length++] = (byte)c;
            }
        }

        string text;
        try
        {
            text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(decoded, 0, length);
        }
        catch (DecoderFallbackException)
        {
            return 400;
        }

        if (text.Contains('\0') || text.Contains('\\'))
        {
            return 400;
        }

        foreach (string segment in text.Split('/'))
        {
            if (segment.Length == 0 || segment == ".")
            {
                continue;
            }

            if (segment == "..")
            {
                return 400;
            }

            if (segment[0] == '.')
            {
                return 404;
            }

            segments.Add(segment);
        }

        return 0;
    }

    private static int HexValue(char c) => c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;

    // ------------------------------------------------------------------ timers and flushing

    /// <summary>Flushes with the send deadline armed; false when the peer is gone or too slow.</summary>
    private async ValueTask<bool> FlushAsync(CancellationToken cancellationToken)
    {
        Volatile.Write(ref _sendDeadline, Deadline(_options.SendTimeout));
        _sendTimer.Change(_options.SendTimeout, Timeout.InfiniteTimeSpan);
        FlushResult flushed = await _writer.FlushAsync(cancellationToken);
        _sendTimer.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        Volatile.Write(ref _sendDeadline, long.MaxValue);
        if (flushed.IsCanceled)
        {
            _server.CountSendTimeout();
            HttpLog.TimedOut(_server.Logger, "send");
            return false;
        }

        return !flushed.IsCompleted;
    }

    private void ArmRead(TimeSpan timeout)
    {
        Volatile.Write(ref _readDeadline, timeout == Timeout.InfiniteTimeSpan ? long.MaxValue : Deadline(timeout));
        _readTimer.Change(timeout, Timeout.InfiniteTimeSpan);
    }

    private long Deadline(TimeSpan timeout) => _time.GetTimestamp() + (long)(timeout.TotalSeconds * _time.TimestampFrequency);

    private void OnReadTimer()
    {
        // Runs on a timer thread: it only wakes the reader, which re-checks the deadline itself.
        if (_time.GetTimestamp() >= Volatile.Read(ref _readDeadline))
        {
            _reader.CancelPendingRead();
        }
    }

    private void OnSendTimer()
    {
        if (_time.GetTimestamp() >= Volatile.Read(ref _sendDeadline))
        {
            _writer.CancelPendingFlush();
        }
    }
}
