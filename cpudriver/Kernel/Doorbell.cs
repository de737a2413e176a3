namespace Multikernel.CpuDriver.Kernel;

/// <summary>
/// How a sender wakes a parked core: one flag and one semaphore per core. The core announces
/// that it is about to park, re-checks its rings, then sleeps; a sender that finds the flag set
/// wins a compare-and-swap and releases the semaphore once. Either side does a full fence
/// between its write and its read (Dekker), so a wake-up is never lost.
/// </summary>
public sealed class Doorbell : IDisposable
{
    private const int Running = 0;
    private const int Parked = 1;

    private readonly SemaphoreSlim _semaphore = new(0, 1);
    private int _state;
    private long _rings;

    /// <summary>How many times a sender had to ring this doorbell (each one a kernel wake-up).</summary>
    public long Rings => Volatile.Read(ref _rings);

    /// <summary>True while the owning core is parked or about to park.</summary>
    public bool IsParked => Volatile.Read(ref _state) == Parked;

    /// <summary>Owner: announce the intent to park. Must be followed by a re-check of all work, then <see cref="Park"/> or <see cref="CancelPark"/>.</summary>
    public void PrepareToPark()
    {
        // Full fence: the flag is visible before the owner re-reads its rings.
        Interlocked.Exchange(ref _state, Parked);
    }

    /// <summary>Owner: work was found after <see cref="PrepareToPark"/>; stay awake.</summary>
    public void CancelPark()
    {
        if (Interlocked.CompareExchange(ref _state, Running, Parked) != Parked)
        {
            // A sender already flipped the flag and has released (or will release) the
            // semaphore; consume that release so the next park is not a spurious wake.
            _semaphore.Wait();
        }
    }

    /// <summary>Owner: sleep until rung or until <paramref name="timeout"/> passes.</summary>
    public void Park(TimeSpan timeout)
    {
        if (_semaphore.Wait(timeout))
        {
            return; // a sender set Running and released
        }

        CancelPark();
    }

    /// <summary>
    /// Sender: wake the owner if it is parked. The caller has already made its message visible
    /// (a release store); the full fence here orders that store before the flag read.
    /// </summary>
    public void Ring()
    {
        Interlocked.MemoryBarrier();
        if (Volatile.Read(ref _state) == Parked && Interlocked.CompareExchange(ref _state, Running, Parked) == Parked)
        {
            Interlocked.Increment(ref _rings);
            _semaphore.Release();
        }
    }

    /// <inheritdoc />
    public void Dispose() => _semaphore.Dispose();
}
