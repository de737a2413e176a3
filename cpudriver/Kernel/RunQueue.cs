using System.Collections.Concurrent;
using System.Diagnostics;

namespace Multikernel.CpuDriver.Kernel;

/// <summary>A callback queued to run on a core: a struct, so queuing it allocates nothing.</summary>
internal readonly record struct WorkItem(Delegate Callback, object? State);

/// <summary>
/// The core's own run queue: a ring that grows by doubling up to a fixed bound and never past it.
/// Work a domain queues (<see cref="CoreKernel.Post"/>, its synchronization context, its task
/// scheduler) may fill it to <c>RunQueueCapacity</c>; beyond that the post is refused with a
/// clear error. Above that bound a reserve is kept for the kernel's own continuations (a
/// completed read, write or timer wakes exactly one awaiter each, so their number is bounded
/// by the operations the kernel has), which therefore always find room.
/// Core thread only.
/// </summary>
internal sealed class RunQueue
{
    private readonly int _domainLimit;
    private readonly int _capacity;
    private WorkItem[] _items;
    private int _head;
    private int _count;

    public RunQueue(int domainLimit, int reserve)
    {
        _domainLimit = domainLimit;
        _capacity = domainLimit + reserve;
        _items = new WorkItem[Math.Min(256, _capacity)];
    }

    public int Count => _count;

    /// <summary>The bound on domain work.</summary>
    public int DomainLimit => _domainLimit;

    /// <summary>Queues <paramref name="item"/>; false at the bound (the domain bound, or the whole ring for kernel work).</summary>
    public bool TryEnqueue(in WorkItem item, bool kernelWork)
    {
        if (_count >= (kernelWork ? _capacity : _domainLimit))
        {
            return false;
        }

        if (_count == _items.Length)
        {
            Grow();
        }

        int tail = _head + _count;
        if (tail >= _items.Length)
        {
            tail -= _items.Length;
        }

        _items[tail] = item;
        _count++;
        return true;
    }

    public WorkItem Dequeue()
    {
        Debug.Assert(_count > 0, "dequeue from an empty run queue");
        WorkItem item = _items[_head];
        _items[_head] = default;
        if (++_head == _items.Length)
        {
            _head = 0;
        }

        _count--;
        return item;
    }

    private void Grow()
    {
        var bigger = new WorkItem[Math.Min(_capacity, _items.Length * 2)];
        for (int i = 0; i < _count; i++)
        {
            int index = _head + i;
            bigger[i] = _items[index >= _items.Length ? index - _items.Length : index];
        }

        _items = bigger;
        _head = 0;
    }
}

/// <summary>How a post from another thread fared.</summary>
internal enum PostResult
{
    Queued,
    Full,
    Closed,
}

/// <summary>
/// Work posted to a core from other threads (the host, thread-pool completions): the one
/// multi-producer queue a core has, bounded by <c>MaxForeignWork</c>. A post beyond the bound, or
/// after the core has halted, fails its caller at once instead of queuing work nobody will run.
/// </summary>
/// <remarks>
/// Close protocol: a poster counts itself in (interlocked, a full fence) before it reads the
/// closed flag; the closing core sets the flag (a full fence) and then drains until the count is
/// zero. So every poster that saw the queue open has its item run, and every later one fails.
/// </remarks>
internal sealed class ForeignQueue
{
    private readonly ConcurrentQueue<WorkItem> _queue = new();
    private readonly int _capacity;
    private int _count;
    private int _closed;

    public ForeignQueue(int capacity) => _capacity = capacity;

    /// <summary>Items queued (or being queued). Any thread.</summary>
    public int Count => Volatile.Read(ref _count);

    public bool IsClosed => Volatile.Read(ref _closed) != 0;

    public PostResult TryEnqueue(in WorkItem item)
    {
        if (Interlocked.Increment(ref _count) > _capacity)
        {
            Interlocked.Decrement(ref _count);
            return PostResult.Full;
        }

        if (Volatile.Read(ref _closed) != 0)
        {
            Interlocked.Decrement(ref _count);
            return PostResult.Closed;
        }

        _queue.Enqueue(item);
        return PostResult.Queued;
    }

    /// <summary>Takes one item. Core thread.</summary>
    public bool TryDequeue(out WorkItem item)
    {
        if (_queue.TryDequeue(out item))
        {
            Interlocked.Decrement(ref _count);
            return true;
        }

        return false;
    }

    /// <summary>Refuses new posts; the caller then drains with <see cref="DrainClosed"/>.</summary>
    public void Close() => Interlocked.Exchange(ref _closed, 1);

    /// <summary>After <see cref="Close"/>: runs every item a poster got in before the close.</summary>
    public void DrainClosed(Action<WorkItem> run)
    {
        var spin = new SpinWait();
        while (Volatile.Read(ref _count) > 0)
        {
            if (TryDequeue(out WorkItem item))
            {
                run(item);
            }
            else
            {
                spin.SpinOnce(); // a poster counted in and is about to enqueue
            }
        }
    }
}
