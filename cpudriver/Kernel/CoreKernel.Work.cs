using Multikernel.CpuDriver.Domains;

namespace Multikernel.CpuDriver.Kernel;

// CoreKernel, part: work queues (local run queue, work posted from other threads) and domains.
public sealed partial class CoreKernel
{
    // ---------------------------------------------------------------- work queues

    /// <summary>
    /// Queues a callback to run on this core. From the core itself it costs no allocation. Throws
    /// <see cref="InvalidOperationException"/> when the run queue (<c>RunQueueCapacity</c>) or the
    /// queue of work from other threads (<c>MaxForeignWork</c>) is full, or the core has halted.
    /// </summary>
    public void Post(Action<object?> callback, object? state)
    {
        ArgumentNullException.ThrowIfNull(callback);
        PostResult result = TryPost(callback, state, kernelWork: false);
        if (result != PostResult.Queued)
        {
            throw PostFailure(result);
        }
    }

    /// <summary>As <see cref="Post"/>, returning false instead of throwing at a limit or after halt.</summary>
    public bool TryPost(Action<object?> callback, object? state)
    {
        ArgumentNullException.ThrowIfNull(callback);
        return TryPost(callback, state, kernelWork: false) == PostResult.Queued;
    }

    /// <summary>Queues a <see cref="SendOrPostCallback"/> to run on this core (the synchronization context).</summary>
    internal void PostCallback(SendOrPostCallback callback, object? state)
    {
        PostResult result = TryPost(callback, state, kernelWork: false);
        if (result != PostResult.Queued)
        {
            throw PostFailure(result);
        }
    }

    /// <summary>The kernel's own continuations (a completed operation wakes its awaiter): they use the reserve.</summary>
    internal void PostInternal(Action<object?> callback, object? state)
    {
        PostResult result = TryPost(callback, state, kernelWork: true);
        if (result != PostResult.Queued)
        {
            throw PostFailure(result);
        }
    }

    internal bool TryPostInternal(Action<object?> callback, object? state) => TryPost(callback, state, kernelWork: true) == PostResult.Queued;

    private PostResult TryPost(Delegate callback, object? state, bool kernelWork)
    {
        var item = new WorkItem(callback, state);
        if (IsCurrentThread)
        {
            if (_runQueue.TryEnqueue(in item, kernelWork))
            {
                return PostResult.Queued;
            }

            Counters.RefusedPosts++;
            return PostResult.Full;
        }

        // From another thread (a thread-pool timer, an I/O completion, the host).
        PostResult result = _foreign.TryEnqueue(in item);
        if (result == PostResult.Queued)
        {
            _doorbells[Id].Ring();
        }

        return result;
    }

    private InvalidOperationException PostFailure(PostResult result) => result switch
    {
        PostResult.Closed => new InvalidOperationException($"Core {Id} has halted; work posted to it would never run."),
        _ when IsCurrentThread => new InvalidOperationException($"Core {Id}'s run queue is full ({_runQueue.DomainLimit} items, RunQueueCapacity): its domains queued more work than the kernel allows."),
        _ => new InvalidOperationException($"Core {Id} already holds {_options.MaxForeignWork} items posted from other threads (MaxForeignWork); try again once it has caught up."),
    };

    // ---------------------------------------------------------------- domains

    /// <summary>Domains running on this core. Core thread only.</summary>
    public IReadOnlyList<Domain> Domains => _domains;

    /// <summary>
    /// Creates a domain's dispatcher on this core and starts <paramref name="main"/> on the
    /// core's scheduler. Core thread only (the monitor does this on request).
    /// </summary>
    public Domain StartDomain(string name, Func<Domain, Task> main) => StartDomain(name, main, prepare: null);

    /// <summary>As <see cref="StartDomain(string, Func{Domain, Task})"/>, running <paramref name="prepare"/> (give it capabilities) before the domain's first step.</summary>
    public Domain StartDomain(string name, Func<Domain, Task> main, Action<Domain>? prepare)
    {
        ArgumentNullException.ThrowIfNull(main);
        CheckThread();
        if (_domains.Count >= _options.MaxDomainsPerCore)
        {
            throw new InvalidOperationException($"Core {Id} already runs {_domains.Count} domains (MaxDomainsPerCore = {_options.MaxDomainsPerCore}).");
        }

        var domain = new Domain(this, ((ulong)(uint)Id << 32) | ++_nextDomain, name);
        prepare?.Invoke(domain);
        _domains.Add(domain);
        domain.Start(main);
        return domain;
    }

    internal void RemoveDomain(Domain domain) => _domains.Remove(domain);
}
