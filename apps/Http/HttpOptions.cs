using System.Text.Json;

namespace Multikernel.Apps.Http;

/// <summary>
/// Writes extra properties into the <c>/stats</c> JSON object (the writer is positioned inside
/// the root object): the host plugs per-core statistics in here, gathering them across cores
/// if it must (hence asynchronous).
/// </summary>
public delegate ValueTask HttpStatsProvider(Utf8JsonWriter json, CancellationToken cancellationToken);

/// <summary>
/// Limits and content of the HTTP server. Every value is checked when it is set, so an invalid
/// configuration stops start-up instead of surfacing as a misbehaving connection.
/// </summary>
public sealed class HttpOptions
{
    private int _maxRequestLineBytes = 8 * 1024;
    private int _maxHeaderBytes = 32 * 1024;
    private int _maxHeaderCount = 100;
    private long _maxBodyBytes = 1024 * 1024;
    private int _maxConnections = 1024;
    private int _responseChunkBytes = 64 * 1024;
    private TimeSpan _headerTimeout = TimeSpan.FromSeconds(10);
    private TimeSpan _keepAliveTimeout = TimeSpan.FromSeconds(30);
    private TimeSpan _sendTimeout = TimeSpan.FromSeconds(60);
    private string _serverName = "Multikernel";

    /// <summary>
    /// Directory of the static files, or null (the default) for the small site built into the
    /// assembly. Files are served only from inside it: no <c>..</c>, no symlink leading out.
    /// </summary>
    public string? Root { get; set; }

    /// <summary>Longest request line (method, target, version); a longer one gets 414. Default 8 KiB.</summary>
    public int MaxRequestLineBytes
    {
        get => _maxRequestLineBytes;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 64);
            _maxRequestLineBytes = value;
        }
    }

    /// <summary>Most bytes of a request head (request line and headers); more gets 431. Default 32 KiB.</summary>
    public int MaxHeaderBytes
    {
        get => _maxHeaderBytes;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 256);
            _maxHeaderBytes = value;
        }
    }

    /// <summary>Most header fields in one request; more gets 431. Default 100.</summary>
    public int MaxHeaderCount
    {
        get => _maxHeaderCount;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            _maxHeaderCount = value;
        }
    }

    /// <summary>Largest request body (read and discarded: no endpoint takes one); larger gets 413. Default 1 MiB.</summary>
    public long MaxBodyBytes
    {
        get => _maxBodyBytes;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            _maxBodyBytes = value;
        }
    }

    /// <summary>Connections served at once by one <see cref="HttpServer"/>; the next gets 503 and is closed. Default 1024.</summary>
    public int MaxConnections
    {
        get => _maxConnections;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            _maxConnections = value;
        }
    }

    /// <summary>
    /// Bytes of a file read and queued per step; the response then waits until the transport
    /// has taken them, so a connection holds at most this (plus its transport's buffer) of a
    /// file. Default 64 KiB.
    /// </summary>
    public int ResponseChunkBytes
    {
        get => _responseChunkBytes;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 512);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(value, 1024 * 1024);
            _responseChunkBytes = value;
        }
    }

    /// <summary>
    /// Time from the first byte of a request until its head (and body) must be complete, however
    /// slowly it dribbles in (slowloris); then 408 and close. Default 10 s.
    /// </summary>
    public TimeSpan HeaderTimeout
    {
        get => _headerTimeout;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(value, TimeSpan.Zero);
            _headerTimeout = value;
        }
    }

    /// <summary>How long an idle connection waits for the first byte of its next request before it is closed. Default 30 s.</summary>
    public TimeSpan KeepAliveTimeout
    {
        get => _keepAliveTimeout;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(value, TimeSpan.Zero);
            _keepAliveTimeout = value;
        }
    }

    /// <summary>How long one chunk of a response may wait for the peer to take it (a reader that never reads); then the connection is closed. Default 60 s.</summary>
    public TimeSpan SendTimeout
    {
        get => _sendTimeout;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(value, TimeSpan.Zero);
            _sendTimeout = value;
        }
    }

    /// <summary>The <c>Server</c> header. Default "Multikernel".</summary>
    public string ServerName
    {
        get => _serverName;
        set
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(value);
            if (value.Any(c => c is < ' ' or > '~'))
            {
                throw new ArgumentException("ServerName must be printable ASCII.", nameof(value));
            }

            _serverName = value;
        }
    }

    /// <summary>Extra properties for <c>/stats</c> (per-core statistics from the host); null for the server's own counters only.</summary>
    public HttpStatsProvider? StatsProvider { get; set; }

    /// <summary>The pause threshold the transport's input pipe needs so that the largest legal request head fits.</summary>
    public int RequiredInputBufferBytes => MaxHeaderBytes + 4096;

    /// <summary>Checks the relations between options (each is range-checked when set).</summary>
    public void Validate()
    {
        if (MaxRequestLineBytes > MaxHeaderBytes)
        {
            throw new ArgumentException($"MaxRequestLineBytes ({MaxRequestLineBytes}) cannot exceed MaxHeaderBytes ({MaxHeaderBytes}).");
        }

        if (Root is not null && !Directory.Exists(Root))
        {
            throw new ArgumentException($"Root '{Root}' is not a directory.");
        }
    }
}
