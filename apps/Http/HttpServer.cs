using System.Buffers.Text;
using System.IO.Pipelines;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Multikernel.Apps.Http;

/// <summary>
/// The HTTP/1.1 server engine: serves connections handed to it as duplex pipes, so it runs over
/// any transport (in-memory pipes, loopback sockets, the library-OS TCP stack). Static files
/// from <see cref="HttpOptions.Root"/> (or the built-in site) and one dynamic endpoint,
/// <c>/stats</c>.
/// </summary>
/// <remarks>
/// Create one server per accepting core: its counters are updated with interlocked operations
/// that would bounce a cache line between cores if one instance served several.
/// </remarks>
public sealed class HttpServer
{
    private readonly ILogger _logger;
    private long _active;
    private long _accepted;
    private long _refused;
    private long _requests;
    private long _bodyBytes;
    private long _headerTimeouts;
    private long _sendTimeouts;
    private readonly long[] _responses = new long[6];
    private DateStamp _date = new(long.MinValue, []);

    /// <summary>Creates a server over the files of <paramref name="options"/> (its root, or the built-in site).</summary>
    public HttpServer(HttpOptions options, TimeProvider? time = null, ILogger? logger = null)
        : this(options, CreateSource(options), time, logger)
    {
    }

    /// <summary>Creates a server over <paramref name="files"/>.</summary>
    public HttpServer(HttpOptions options, IStaticFileSource files, TimeProvider? time = null, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(files);
        options.Validate();
        Options = options;
        Files = files;
        Time = time ?? TimeProvider.System;
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>The limits.</summary>
    public HttpOptions Options { get; }

    /// <summary>Where files come from.</summary>
    public IStaticFileSource Files { get; }

    /// <summary>Time source for the Date header and the timeouts.</summary>
    public TimeProvider Time { get; }

    internal ILogger Logger => _logger;

    /// <summary>A snapshot of the server's counters.</summary>
    public HttpServerStatistics Statistics => new(
        Interlocked.Read(ref _active),
        Interlocked.Read(ref _accepted),
        Interlocked.Read(ref _refused),
        Interlocked.Read(ref _requests),
        Interlocked.Read(ref _responses[2]),
        Interlocked.Read(ref _responses[3]),
        Interlocked.Read(ref _responses[4]),
        Interlocked.Read(ref _responses[5]),
        Interlocked.Read(ref _bodyBytes),
        Interlocked.Read(ref _headerTimeouts),
        Interlocked.Read(ref _sendTimeouts));

    /// <summary>
    /// Serves one connection until it closes (the peer, an error response, a timeout, or
    /// <paramref name="cancellationToken"/>); then completes both halves of
    /// <paramref name="transport"/>. Past <see cref="HttpOptions.MaxConnections"/> the connection
    /// gets 503 and is closed. Never throws for anything the peer sends.
    /// </summary>
    /// <remarks>
    /// The transport's input must be able to buffer <see cref="HttpOptions.RequiredInputBufferBytes"/>
    /// unconsumed; its output's pause threshold bounds what a peer that does not read can hold
    /// (the response waits, then is cut after <see cref="HttpOptions.SendTimeout"/>).
    /// </remarks>
    public async Task RunConnectionAsync(IDuplexPipe transport, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(transport);
        if (Interlocked.Increment(ref _active) > Options.MaxConnections)
        {
            Interlocked.Decrement(ref _active);
            Interlocked.Increment(ref _refused);
            HttpLog.ConnectionRefused(_logger, Options.MaxConnections);
            using var refused = new HttpConnection(this, transport);
            await refused.RefuseAsync(cancellationToken);
            return;
        }

        Interlocked.Increment(ref _accepted);
        try
        {
            using var connection = new HttpConnection(this, transport);
            await connection.RunAsync(cancellationToken);
        }
        finally
        {
            Interlocked.Decrement(ref _active);
        }
    }

    internal void CountRequest() => Interlocked.Increment(ref _requests);

    internal void CountResponse(int status) => Interlocked.Increment(ref _responses[Math.Clamp(status / 100, 0, 5)]);

    internal void CountBodyBytes(long n) => Interlocked.Add(ref _bodyBytes, n);

    internal void CountHeaderTimeout() => Interlocked.Increment(ref _headerTimeouts);

    internal void CountSendTimeout() => Interlocked.Increment(ref _sendTimeouts);

    /// <summary>The Date header value (IMF-fixdate), formatted once per second and shared by every connection.</summary>
    internal ReadOnlySpan<byte> Date()
    {
        DateTimeOffset now = Time.GetUtcNow();
        long second = now.ToUnixTimeSeconds();
        DateStamp stamp = Volatile.Read(ref _date);
        if (stamp.Second != second)
        {
            var bytes = new byte[29];
            Utf8Formatter.TryFormat(DateTimeOffset.FromUnixTimeSeconds(second), bytes, out _, new System.Buffers.StandardFormat('R'));
            stamp = new DateStamp(second, bytes);
            // A racing writer installs an equal stamp; readers see either whole object.
            Volatile.Write(ref _date, stamp);
        }

        return stamp.Bytes;
    }

    private static IStaticFileSource CreateSource(HttpOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return options.Root is null ? new EmbeddedFileSource() : new PhysicalFileSource(options.Root);
    }

    private sealed record DateStamp(long Second, byte[] Bytes);
}

/// <summary>Counters of an <see cref="HttpServer"/>.</summary>
public readonly record struct HttpServerStatistics(
    long ActiveConnections,
    long AcceptedConnections,
    long RefusedConnections,
    long Requests,
    long Responses2xx,
    long Responses3xx,
    long Responses4xx,
    long Responses5xx,
    long BodyBytesSent,
    long HeaderTimeouts,
    long SendTimeouts);

/// <summary>Source-generated log messages of the HTTP server (event ids 1000–1099).</summary>
internal static partial class HttpLog
{
    [LoggerMessage(1000, LogLevel.Warning, "Refused a connection: {MaxConnections} connections are being served")]
    public static partial void ConnectionRefused(ILogger logger, int maxConnections);

    [LoggerMessage(1001, LogLevel.Debug, "Request refused with {Status}")]
    public static partial void Refused(ILogger logger, int status);

    [LoggerMessage(1002, LogLevel.Debug, "Connection timed out ({What})")]
    public static partial void TimedOut(ILogger logger, string what);

    [LoggerMessage(1003, LogLevel.Debug, "Transport ended")]
    public static partial void TransportEnded(ILogger logger, Exception exception);

    [LoggerMessage(1004, LogLevel.Error, "Request failed; closing the connection")]
    public static partial void RequestFailed(ILogger logger, Exception exception);
}
