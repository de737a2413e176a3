using System.Buffers;

namespace Multikernel.Apps.Kv.Resp;

/// <summary>
/// One parsed command: its arguments are slices of an arena the connection owns and reuses, so
/// parsing allocates nothing once the arena has grown to the connection's working size. The
/// slices stay valid until the next parse; a shard that keeps a key or value copies it.
/// </summary>
/// <remarks>
/// A slice may be read on another core while the connection awaits that core's answer: the
/// connection does not parse again until the answer is back, so the arena is not written
/// concurrently (the invoker's completion orders the accesses).
/// </remarks>
public sealed class RespCommand : IDisposable
{
    private const int InitialArena = 256;
    private const int InitialArgs = 8;

    private readonly int _maxArenaBytes;
    private byte[] _arena;
    private int _used;
    private int[] _offsets = new int[InitialArgs];
    private int[] _lengths = new int[InitialArgs];

    /// <summary>Creates a command buffer whose arena grows up to <paramref name="maxArenaBytes"/>.</summary>
    public RespCommand(int maxArenaBytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxArenaBytes, 16);
        _maxArenaBytes = maxArenaBytes;
        _arena = ArrayPool<byte>.Shared.Rent(Math.Min(InitialArena, maxArenaBytes));
    }

    /// <summary>Number of arguments, the command name included.</summary>
    public int Count { get; private set; }

    /// <summary>Argument <paramref name="index"/> (0 is the command name).</summary>
    public ReadOnlySpan<byte> this[int index]
    {
        get
        {
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)index, (uint)Count, nameof(index));
            return _arena.AsSpan(_offsets[index], _lengths[index]);
        }
    }

    /// <summary>Argument <paramref name="index"/> as memory, to hand to another core's shard.</summary>
    public ReadOnlyMemory<byte> Memory(int index)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)index, (uint)Count, nameof(index));
        return _arena.AsMemory(_offsets[index], _lengths[index]);
    }

    /// <summary>Bytes of arguments held (the arena's use).</summary>
    public int ArgumentBytes => _used;

    internal void Reset()
    {
        Count = 0;
        _used = 0;
    }

    /// <summary>Reserves room for one more argument of <paramref name="length"/> bytes, or returns false at the arena limit.</summary>
    internal bool TryAppend(int length, out Span<byte> destination)
    {
        destination = default;
        if (length < 0 || (long)_used + length > _maxArenaBytes)
        {
            return false;
        }

        if (_used + length > _arena.Length)
        {
            int size = (int)Math.Min(_maxArenaBytes, Math.Max((long)_arena.Length * 2, (long)_used + length));
            byte[] bigger = ArrayPool<byte>.Shared.Rent(size);
            _arena.AsSpan(0, _used).CopyTo(bigger);
            ArrayPool<byte>.Shared.Return(_arena);
            _arena = bigger;
        }

        if (Count == _offsets.Length)
        {
            Array.Resize(ref _offsets, Count * 2);
            Array.Resize(ref _lengths, Count * 2);
        }

        _offsets[Count] = _used;
        _lengths[Count] = length;
        destination = _arena.AsSpan(_used, length);
        _used += length;
        Count++;
        return true;
    }

    /// <summary>Returns the arena to the pool.</summary>
    public void Dispose()
    {
        byte[] arena = _arena;
        _arena = [];
        Count = 0;
        _used = 0;
        if (arena.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(arena);
        }
    }
}
