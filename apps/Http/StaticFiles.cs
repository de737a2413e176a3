using System.Collections.Frozen;
using System.Reflection;
using Microsoft.Win32.SafeHandles;

namespace Multikernel.Apps.Http;

/// <summary>Result of looking a path up in a <see cref="IStaticFileSource"/>.</summary>
public enum StaticFileLookup
{
    /// <summary>Opened.</summary>
    Found,

    /// <summary>No such file (or a directory without index.html).</summary>
    NotFound,

    /// <summary>The path resolves outside the root (a symlink leading out).</summary>
    Forbidden,
}

/// <summary>An open file being served: read by offset in bounded chunks, never loaded whole.</summary>
public interface IStaticFile : IDisposable
{
    /// <summary>File name (its extension picks the Content-Type).</summary>
    string Name { get; }

    /// <summary>Length in bytes, fixed when opened.</summary>
    long Length { get; }

    /// <summary>Last write time, if known.</summary>
    DateTimeOffset? LastModified { get; }

    /// <summary>Reads up to <paramref name="buffer"/>'s length from <paramref name="offset"/>; 0 at the end.</summary>
    ValueTask<int> ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken);
}

/// <summary>Where static files come from. Segments are already decoded and checked (no empty, ".", "..", '/', '\', NUL).</summary>
public interface IStaticFileSource
{
    /// <summary>Opens the file at <paramref name="segments"/> (a directory means its index.html).</summary>
    StaticFileLookup TryOpen(IReadOnlyList<string> segments, out IStaticFile? file);
}

/// <summary>
/// Files under a directory. Every lookup resolves the real path component by component
/// (following symlinks the way the kernel would) and refuses anything whose real path is not
/// inside the root's real path, so neither <c>..</c> nor a symlink can lead out.
/// </summary>
/// <remarks>
/// The check and the open are two steps: a file swapped for a symlink in between is not caught (the
/// root is assumed not writable by attackers). A resolved path is remembered for
/// <see cref="ResolutionLifetime"/> (nginx's <c>open_file_cache_valid</c>, shorter), so a hot file
/// costs one <c>open</c> per request instead of a <c>stat</c> per path component; a file removed
/// meanwhile is still a 404 (the open fails), a symlink changed is seen within that time. Reads of
/// at most <see cref="SynchronousReadBytes"/> are one synchronous <c>pread</c> — for a file in
/// the page cache a microsecond, where an asynchronous read is a thread-pool round trip and a
/// wake-up of the core — larger ones stay asynchronous so a big file never holds the core.
/// </remarks>
public sealed class PhysicalFileSource : IStaticFileSource
{
    private const int MaxLinkDepth = 40;
    private readonly string _root;
    private readonly TimeProvider _time;
    private readonly Dictionary<string, (string Real, long ValidUntil)> _resolved = new(StringComparer.Ordinal);

    /// <summary>How long a resolved path is reused without resolving it again. 1 s.</summary>
    public static readonly TimeSpan ResolutionLifetime = TimeSpan.FromSeconds(1);

    /// <summary>Resolved paths remembered; when full the table starts over. 256.</summary>
    public const int MaxResolvedPaths = 256;

    /// <summary>Reads up to this size are synchronous (see remarks). 64 KiB.</summary>
    public const int SynchronousReadBytes = 64 * 1024;

    /// <summary>Serves <paramref name="root"/>.</summary>
    public PhysicalFileSource(string root)
        : this(root, TimeProvider.System)
    {
    }

    /// <summary>Serves <paramref name="root"/>; <paramref name="time"/> ages resolved paths.</summary>
    public PhysicalFileSource(string root, TimeProvider time)
    {
        ArgumentException.ThrowIfNullOrEmpty(root);
        ArgumentNullException.ThrowIfNull(time);
        _time = time;
        _root = RealPath(Path.GetFullPath(root), 0) ?? throw new DirectoryNotFoundException($"Root '{root}' does not exist.");
        if (!Directory.Exists(_root))
        {
            throw new DirectoryNotFoundException($"Root '{root}' is not a directory.");
        }
    }

    /// <summary>The root's real path.</summary>
    public string Root => _root;

    /// <inheritdoc/>
    public StaticFileLookup TryOpen(IReadOnlyList<string> segments, out IStaticFile? file)
    {
        ArgumentNullException.ThrowIfNull(segments);
        file = null;
        string relative = string.Join('/', segments);
        long now = _time.GetTimestamp();
        lock (_resolved)
        {
            if (_resolved.TryGetValue(relative, out (string Real, long ValidUntil) hit) && now < hit.ValidUntil)
            {
                if (Open(hit.Real, out file))
                {
                    return StaticFileLookup.Found;
                }

                _resolved.Remove(relative); // gone or changed: resolve it again
            }
        }

        string candidate = segments.Count == 0 ? _root : Path.Join(_root, relative);
        string? real = RealPath(candidate, 0);
        if (real is null)
        {
            return StaticFileLookup.NotFound;
        }

        if (!Inside(real))
        {
            return StaticFileLookup.Forbidden;
        }

        if (Directory.Exists(real))
        {
            real = RealPath(Path.Join(real, "index.html"), 0);
            if (real is null)
            {
                return StaticFileLookup.NotFound;
            }

            if (!Inside(real))
            {
                return StaticFileLookup.Forbidden;
            }
        }

        if (!Open(real, out file)) // missing, a directory, or unreadable
        {
            return StaticFileLookup.NotFound;
        }

        lock (_resolved)
        {
            if (_resolved.Count >= MaxResolvedPaths)
            {
                _resolved.Clear();
            }

            _resolved[relative] = (real, now + (long)(ResolutionLifetime.TotalSeconds * _time.TimestampFrequency));
        }

        return StaticFileLookup.Found;
    }

    private static bool Open(string real, out IStaticFile? file)
    {
        try
        {
            SafeFileHandle handle = File.OpenHandle(real, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
            try
            {
                file = new PhysicalFile(handle, Path.GetFileName(real), RandomAccess.GetLength(handle), File.GetLastWriteTimeUtc(handle));
                return true;
            }
            catch
            {
                handle.Dispose();
                throw;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            file = null;
            return false;
        }
    }

    private bool Inside(string real) => real == _root || real.StartsWith(_root.EndsWith('/') ? _root : _root + "/", StringComparison.Ordinal);

    /// <summary>The path with every symlink resolved (realpath(3)), or null if a component does not exist or links loop.</summary>
    internal static string? RealPath(string path, int depth)
    {
        if (depth > MaxLinkDepth)
        {
            return null;
        }

        string current = "/";
        foreach (string part in Path.GetFullPath(path).Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            if (part == "..")
            {
                current = Path.GetDirectoryName(current) ?? "/";
                continue;
            }

            string next = current == "/" ? "/" + part : current + "/" + part;
            var info = new FileInfo(next);
            string? target = info.LinkTarget;
            if (target is not null)
            {
                string? resolved = RealPath(Path.IsPathRooted(target) ? target : Path.Join(current, target), depth + 1);
                if (resolved is null)
                {
                    return null;
                }

                current = resolved;
            }
            else if (info.Exists || Directory.Exists(next))
            {
                current = next;
            }
            else
            {
                return null;
            }
        }

        return current;
    }

    private sealed class PhysicalFile(SafeFileHandle handle, string name, long length, DateTime lastWrite) : IStaticFile
    {
        public string Name => name;

        public long Length => length;

        public DateTimeOffset? LastModified => new DateTimeOffset(lastWrite, TimeSpan.Zero);

        public ValueTask<int> ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken) =>
            buffer.Length <= SynchronousReadBytes
                ? new ValueTask<int>(RandomAccess.Read(handle, buffer.Span, offset))
                : RandomAccess.ReadAsync(handle, buffer, offset, cancellationToken);

        public void Dispose() => handle.Dispose();
    }
}

/// <summary>The small site built into this assembly (resources named <c>site/…</c>), served when no root is given.</summary>
public sealed class EmbeddedFileSource : IStaticFileSource
{
    private const string Prefix = "site/";
    private readonly Assembly _assembly;
    private readonly FrozenDictionary<string, string> _resources;

    /// <summary>Serves the built-in site.</summary>
    public EmbeddedFileSource()
    {
        _assembly = typeof(EmbeddedFileSource).Assembly;
        _resources = _assembly.GetManifestResourceNames()
            .Where(n => n.StartsWith(Prefix, StringComparison.Ordinal))
            .ToFrozenDictionary(n => n[Prefix.Length..].Replace('\\', '/'), n => n, StringComparer.Ordinal);
    }

    /// <summary>Paths of the built-in files (relative, '/'-separated).</summary>
    public IEnumerable<string> Paths => _resources.Keys;

    /// <inheritdoc/>
    public StaticFileLookup TryOpen(IReadOnlyList<string> segments, out IStaticFile? file)
    {
        ArgumentNullException.ThrowIfNull(segments);
        file = null;
        string path = string.Join('/', segments);
        if (!_resources.TryGetValue(path, out string? resource) &&
            !_resources.TryGetValue(path.Length == 0 ? "index.html" : path + "/index.html", out resource))
        {
            return StaticFileLookup.NotFound;
        }

        Stream? stream = _assembly.GetManifestResourceStream(resource);
        if (stream is null)
        {
            return StaticFileLookup.NotFound;
        }

        file = new EmbeddedFile(stream, resource[(resource.LastIndexOf('/') + 1)..]);
        return StaticFileLookup.Found;
    }

    private sealed class EmbeddedFile(Stream stream, string name) : IStaticFile
    {
        public string Name => name;

        public long Length => stream.Length;

        public DateTimeOffset? LastModified => null;

        public async ValueTask<int> ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken)
        {
            stream.Position = offset;
            return await stream.ReadAsync(buffer, cancellationToken);
        }

        public void Dispose() => stream.Dispose();
    }
}

/// <summary>Content-Type by file extension.</summary>
public static class ContentTypes
{
    private static readonly FrozenDictionary<string, string> ByExtension = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
    {
        [".html"] = "text/html; charset=utf-8",
        [".htm"] = "text/html; charset=utf-8",
        [".css"] = "text/css; charset=utf-8",
        [".js"] = "text/javascript; charset=utf-8",
        [".mjs"] = "text/javascript; charset=utf-8",
        [".json"] = "application/json",
        [".txt"] = "text/plain; charset=utf-8",
        [".md"] = "text/markdown; charset=utf-8",
        [".csv"] = "text/csv; charset=utf-8",
        [".xml"] = "application/xml",
        [".svg"] = "image/svg+xml",
        [".png"] = "image/png",
        [".jpg"] = "image/jpeg",
        [".jpeg"] = "image/jpeg",
        [".gif"] = "image/gif",
        [".webp"] = "image/webp",
        [".ico"] = "image/x-icon",
        [".wasm"] = "application/wasm",
        [".pdf"] = "application/pdf",
        [".zip"] = "application/zip",
        [".gz"] = "application/gzip",
        [".woff"] = "font/woff",
        [".woff2"] = "font/woff2",
        [".mp4"] = "video/mp4",
        [".webm"] = "video/webm",
        [".mp3"] = "audio/mpeg",
    }.ToFrozenDictionary(StringComparer.OrdinalIgnoreCase);

    /// <summary>The type for <paramref name="fileName"/>; <c>application/octet-stream</c> when unknown.</summary>
    public static string For(string fileName) =>
        ByExtension.TryGetValue(Path.GetExtension(fileName), out string? type) ? type : "application/octet-stream";
}
