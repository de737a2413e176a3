using System.Collections.Concurrent;
using System.Diagnostics.CodeAnalysis;
using Multikernel.Apps.Kv;
using Multikernel.Apps.Kv.Store;

namespace Multikernel.Tests.Apps.Kv;

/// <summary>
/// A stand-in for the runtime's cores in kv tests: one dedicated thread per "core", each a
/// single-threaded synchronization context owning one shard. Work for another core's shard is
/// posted to that core and the answer comes back to the caller's core, the way the runtime's
/// <c>InvokeOnAsync</c> forwards over the rings. Not a mock of the store: the real
/// <see cref="KvShard"/>s and router run on it.
/// </summary>
public sealed class CoreLoops : IShardInvoker, IDisposable
{
    private readonly Core[] _cores;
    private readonly KvShard[] _shards;

    public CoreLoops(int cores, KvOptions options, TimeProvider time)
    {
        ShardLimits limits = options.LimitsPerShard(cores);
        _cores = new Core[cores];
        _shards = new KvShard[cores];
        for (int i = 0; i < cores; i++)
        {
            _shards[i] = new KvShard(i, limits, time);
            _cores[i] = new Core(i);
        }
    }

    public int ShardCount => _shards.Length;

    /// <summary>Operations each shard ran on a thread other than its own core's (must stay 0).</summary>
    public long WrongThreadOperations => _cores.Sum(c => Interlocked.Read(ref c.WrongThread));

    /// <summary>Operations forwarded to another core.</summary>
    public long Forwarded => _cores.Sum(c => Interlocked.Read(ref c.Forwarded));

    public KvShard Shard(int i) => _shards[i];

    public bool TryGetLocal(int shard, [NotNullWhen(true)] out KvShard? local)
    {
        if (SynchronizationContext.Current == _cores[shard])
        {
            local = _shards[shard];
            return true;
        }

        local = null;
        return false;
    }

    public ValueTask<TResult> InvokeOnAsync<TState, TResult>(int shard, TState state, Func<KvShard, TState, TResult> operation)
    {
        Core core = _cores[shard];
        if (SynchronizationContext.Current == core)
        {
            return new ValueTask<TResult>(operation(_shards[shard], state));
        }

        Interlocked.Increment(ref core.Forwarded);
        var done = new TaskCompletionSource<TResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        core.Post(_ =>
        {
            if (Environment.CurrentManagedThreadId != core.ThreadId)
            {
                Interlocked.Increment(ref core.WrongThread);
            }

            try
            {
                done.SetResult(operation(_shards[shard], state));
            }
            catch (Exception e)
            {
                done.SetException(e);
            }
        }, null);
        return new ValueTask<TResult>(done.Task);
    }

    /// <summary>Runs <paramref name="work"/> on core <paramref name="core"/> (its awaits resume there).</summary>
    public Task RunOn(int core, Func<Task> work)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _cores[core].Post(async _ =>
        {
            try
            {
                await work();
                done.SetResult();
            }
            catch (Exception e)
            {
                done.SetException(e);
            }
        }, null);
        return done.Task;
    }

    /// <summary>Runs <paramref name="work"/> on core <paramref name="core"/> and returns its result.</summary>
    public Task<T> RunOn<T>(int core, Func<T> work)
    {
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        _cores[core].Post(_ => done.SetResult(work()), null);
        return done.Task;
    }

    public void Dispose()
    {
        foreach (Core core in _cores)
        {
            core.Stop();
        }
    }

    private sealed class Core : SynchronizationContext
    {
        private readonly BlockingCollection<(SendOrPostCallback, object?)> _queue = new(100_000);
        private readonly Thread _thread;
        public long WrongThread;
        public long Forwarded;

        public Core(int index)
        {
            _thread = new Thread(Loop) { IsBackground = true, Name = $"test core {index}" };
            _thread.Start();
        }

        public int ThreadId => _thread.ManagedThreadId;

        public override void Post(SendOrPostCallback d, object? state) => _queue.Add((d, state));

        public override void Send(SendOrPostCallback d, object? state) => throw new NotSupportedException();

        public override SynchronizationContext CreateCopy() => this;

        public void Stop()
        {
            _queue.CompleteAdding();
            _thread.Join(TimeSpan.FromSeconds(10));
        }

        private void Loop()
        {
            SetSynchronizationContext(this);
            foreach ((SendOrPostCallback d, object? state) in _queue.GetConsumingEnumerable())
            {
                d(state);
            }
        }
    }
}
