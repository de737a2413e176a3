using System.Runtime.CompilerServices;
using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Urpc;
using Multikernel.Monitor.Hosting;

namespace Multikernel.Monitor;

/// <summary>
/// One instance of <typeparamref name="TService"/> per core (Seastar's <c>sharded&lt;T&gt;</c>):
/// each instance lives in its own domain on its core and is touched only there. Code on any core
/// (or on a host thread) reaches an instance with <see cref="InvokeOnAsync{TResult}(int, Func{TService, ValueTask{TResult}})"/>;
/// <see cref="InvokeOnAllAsync"/> and <see cref="MapReduceAsync{TMapped, TResult}"/> fan out to every core.
/// </summary>
/// <remarks>
/// <para><b>Transport.</b> Between every ordered pair of cores the service has one channel over
/// the URPC ring of that pair (a client end on the calling core, a server end on the serving
/// core). A call takes a <i>slot</i> of the caller's budget to that core, fills it with the work
/// and sends the slot's index; the serving core runs the work on its instance and sends the index
/// back; the caller reads the result from the slot. A slot is written by one core at a time and
/// handed over by the ring message (release on write, acquire on read), exactly like a ring slot
/// with a larger payload: no lock anywhere. The serving side never waits for a handler before
/// reading the next request, so a channel always drains.</para>
/// <para><b>Bounded, and nested calls cannot deadlock.</b> Each core has
/// <c>ShardedRequestsInFlight</c> slots per destination core <i>per nesting level</i>. A call made
/// from inside a handler is one level deeper than the call that handler serves and draws from
/// that level's budget, so a waiting call waits only for calls one level deeper, which never wait
/// for it (Seastar gives nested work its own <c>smp_service_group</c> for this reason: a single
/// shared budget deadlocks once every slot is held by a call whose handler calls back). A call
/// deeper than <c>ShardedMaxNesting</c> fails with <see cref="InvalidOperationException"/>; at most
/// <c>ShardedMaxWaiting</c> callers per core, destination and level wait for a slot, further ones
/// fail at once.</para>
/// <para><b>Cost.</b> A remote call allocates nothing in the steady state (0 B/call on either
/// core, measured by <c>bench sharded</c> and a test): slots and their call records are reused (a
/// slot keeps the record of the last argument and result types it carried), the caller awaits the
/// record's <see cref="CpuDriver.Kernel.CoreOperation{T}"/> (continued through the core's run
/// queue, not the synchronization context), the serving core runs each handler under a cached
/// execution context of its nesting level (no AsyncLocal set per call), and the ring carries one
/// message each way. The
/// work delegate is the caller's: a static lambda with the <c>arg</c> overloads allocates nothing;
/// a capturing lambda allocates its closure.</para>
/// </remarks>
/// <typeparam name="TService">The per-core service.</typeparam>
public sealed class Sharded<TService> : IShardedCalls where TService : class
{
    internal const ushort RequestMessage = 0x0210;
    internal const ushort ReplyMessage = 0x0211;

    private readonly MultikernelRuntime _runtime;
    private readonly TService?[] _instances;
    private readonly Lane?[][] _lanes; // [caller core][serving core]
    private readonly int _levels;

    internal Sharded(MultikernelRuntime runtime, string name)
    {
        _runtime = runtime;
        Name = name;
        int cores = runtime.Cores;
        _instances = new TService?[cores];
        _lanes = new Lane?[cores][];
        _levels = runtime.Options.ShardedMaxNesting;
        for (int k = 0; k < cores; k++)
        {
            _lanes[k] = new Lane?[cores];
        }
    }

    /// <summary>The service's name (its domains are named after it).</summary>
    public string Name { get; }

    /// <summary>Number of shards (one per core).</summary>
    public int Cores => _instances.Length;

    /// <summary>The instance on the calling core. Only on a core of this machine.</summary>
    public TService Local
    {
        get
        {
            int core = _runtime.CurrentCore();
            return core >= 0 ? Instance(core) : throw new InvalidOperationException($"{Name}.Local is only defined on a core of the machine (a host thread has no shard).");
        }
    }

    /// <summary>Runs <paramref name="work"/> on core <paramref name="core"/>'s instance and returns its result here.</summary>
    public ValueTask<TResult> InvokeOnAsync<TResult>(int core, Func<TService, ValueTask<TResult>> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        return InvokeOnAsync(core, work, static (s, w) => w(s));
    }

    /// <summary>Runs synchronous <paramref name="work"/> on core <paramref name="core"/>'s instance and returns its result here.</summary>
    public ValueTask<TResult> InvokeOnAsync<TResult>(int core, Func<TService, TResult> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        return InvokeOnAsync(core, work, static (s, w) => new ValueTask<TResult>(w(s)));
    }

    /// <summary>
    /// Runs <paramref name="work"/> with <paramref name="argument"/> on core <paramref name="core"/>'s
    /// instance. With a static lambda nothing is allocated per call (the hot path of a sharded store).
    /// </summary>
    public ValueTask<TResult> InvokeOnAsync<TArg, TResult>(int core, TArg argument, Func<TService, TArg, ValueTask<TResult>> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        if ((uint)core >= (uint)Cores)
        {
            throw new ArgumentOutOfRangeException(nameof(core), core, $"There are {Cores} cores (0..{Cores - 1}).");
        }

        int here = _runtime.CurrentCore();
        if (here == core)
        {
            return work(Instance(core), argument);
        }

        return here < 0 ? FromHost(core, argument, work) : RemoteAsync(here, core, argument, work);
    }

    // A host thread is no core: it has no ring to send on. Its call goes through the destination
    // kernel's queue for foreign work, which the host API uses anyway. (Its own method: a lambda
    // capturing the parameters in InvokeOnAsync would allocate its closure on every call, the
    // remote path's included.)
    private ValueTask<TResult> FromHost<TArg, TResult>(int core, TArg argument, Func<TService, TArg, ValueTask<TResult>> work) =>
        new(_runtime.RunOnKernelAsync(core, () => work(Instance(core), argument).AsTask()));

    /// <summary>Runs <paramref name="work"/> on every core's instance and completes when all have.</summary>
    public async Task InvokeOnAllAsync(Func<TService, ValueTask> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        var calls = new Task<bool>[Cores];
        for (int k = 0; k < Cores; k++)
        {
            calls[k] = InvokeOnAsync(k, work, static async (s, w) =>
            {
                await w(s);
                return true;
            }).AsTask();
        }

        await Task.WhenAll(calls);
    }

    /// <summary>
    /// Runs <paramref name="map"/> on every core's instance and folds the results, in core order,
    /// with <paramref name="reduce"/> starting from <paramref name="initial"/>.
    /// </summary>
    public async Task<TResult> MapReduceAsync<TMapped, TResult>(Func<TService, ValueTask<TMapped>> map, TResult initial, Func<TResult, TMapped, TResult> reduce)
    {
        ArgumentNullException.ThrowIfNull(map);
        ArgumentNullException.ThrowIfNull(reduce);
        var calls = new Task<TMapped>[Cores];
        for (int k = 0; k < Cores; k++)
        {
            calls[k] = InvokeOnAsync(k, map).AsTask();
        }

        TResult result = initial;
        foreach (Task<TMapped> call in calls)
        {
            result = reduce(result, await call);
        }

        return result;
    }

    private TService Instance(int core) => _instances[core] ?? throw new InvalidOperationException($"{Name} has no instance on core {core} (it is not started, or stopped).");

    // ------------------------------------------------------------------ the remote path

    // No async method here: the caller awaits the call record's own CoreOperation, completed by
    // the reply loop on this core and continued through the run queue as a struct (an async
    // method's box would be continued through the synchronization context, allocating per call).
    private ValueTask<TResult> RemoteAsync<TArg, TResult>(int from, int to, TArg argument, Func<TService, TArg, ValueTask<TResult>> work)
    {
        int level = _runtime.ShardedDepth;
        if (level >= _levels)
        {
            return ValueTask.FromException<TResult>(new InvalidOperationException($"{Name}: sharded calls nested {level + 1} deep; at most {_levels} levels (ShardedMaxNesting) each have their own budget so nested calls cannot deadlock."));
        }

        if (_lanes[from][to] is not { } lane)
        {
            return ValueTask.FromException<TResult>(new InvalidOperationException($"{Name} is not running (no channel from core {from} to core {to})."));
        }

        Slot? slot = lane.TryTake(level);
        return slot is null ? WaitForSlotAsync(lane, level, argument, work) : Start(lane, slot, level, argument, work);
    }

    // Past the budget: wait for a slot (rare; allocates), then the same call.
    private static async ValueTask<TResult> WaitForSlotAsync<TArg, TResult>(Lane lane, int level, TArg argument, Func<TService, TArg, ValueTask<TResult>> work)
    {
        Slot slot = await lane.WaitForSlotAsync(level);
        return await Start(lane, slot, level, argument, work);
    }

    private static ValueTask<TResult> Start<TArg, TResult>(Lane lane, Slot slot, int level, TArg argument, Func<TService, TArg, ValueTask<TResult>> work)
    {
        if (lane.Closed is { } closed)
        {
            // The channel ended (this core's or the serving core's shard stopped): its reply
            // reader has failed every call in flight and will read no more, so a request sent
            // now would never be answered. Fail it here instead of leaving the caller waiting.
            lane.Release(slot);
            return ValueTask.FromException<TResult>(new InvalidOperationException($"{lane.Name}: the channel to core {lane.RemoteCore} is closed (a shard stopped).", closed));
        }

        // The record is reused once its last caller has taken the result (a caller that never
        // awaits keeps its record; the slot itself is back in the budget either way).
        if (slot.Cached is not Call<TArg, TResult> call || call.IsUnobserved)
        {
            call = new Call<TArg, TResult>(lane.Kernel);
            slot.Cached = call;
        }

        call.Argument = argument;
        call.Work = work;
        call.Level = level;
        slot.Call = call;
        ValueTask<TResult> result = call.Arm();
        lane.Send(slot);
        return result;
    }

    // Serving core: the slot's work runs on this core's instance one nesting level deeper.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask ServeAsync(Server server, Slot slot)
    {
        ShardCall call = slot.Call!;
        try
        {
            await call.RunAsync(Instance(server.Core)); // under the level's context (ServeLoopAsync)
        }
#pragma warning disable CA1031 // handed to the caller
        catch (Exception ex)
#pragma warning restore CA1031
        {
            call.Error = ex;
        }

        server.Reply(slot.Index);
    }

    // ------------------------------------------------------------------ start

    /// <summary>Core <paramref name="core"/>, in its shard domain: the instance and this core's channel ends, not yet connected.</summary>
    internal (Endpoint?[] Clients, Endpoint?[] Servers) CreateShard(int core, DomainContext context, Func<DomainContext, TService> factory)
    {
        _instances[core] = factory(context) ?? throw new InvalidOperationException($"The factory of {Name} returned null on core {core}.");
        var clients = new Endpoint?[Cores];
        var servers = new Endpoint?[Cores];
        for (int peer = 0; peer < Cores; peer++)
        {
            if (peer != core)
            {
                clients[peer] = context.Domain.CreateEndpoint(Name);
                servers[peer] = context.Domain.CreateEndpoint(Name);
            }
        }

        return (clients, servers);
    }

    /// <summary>Core <paramref name="core"/>: connects its ends to the peers' and starts reading.</summary>
    internal void ConnectShard(int core, Endpoint?[][] clients, Endpoint?[][] servers)
    {
        int slots = _runtime.Options.ShardedRequestsInFlight;
        for (int peer = 0; peer < Cores; peer++)
        {
            if (peer == core)
            {
                continue;
            }

            Endpoint client = clients[core][peer]!;
            Endpoint server = servers[core][peer]!;
            client.Connect(peer, servers[peer][core]!.Id);
            server.Connect(peer, clients[peer][core]!.Id);
            var lane = new Lane(client, _levels, slots, _runtime.Options.ShardedMaxWaiting);
            _lanes[core][peer] = lane;
            _ = lane.ReadRepliesAsync();
        }
    }

    /// <summary>Core <paramref name="core"/>: serves requests from every peer (after every core connected).</summary>
    internal void ServeShard(int core, Endpoint?[][] servers)
    {
        // The execution context of each nesting level, captured once per core: a handler at level
        // l + 1 runs under depths[l + 1], so nested calls draw from the right budget without an
        // AsyncLocal set (and its new ExecutionContext) per call.
        var depths = new ExecutionContext[_levels + 1];
        for (int level = 0; level <= _levels; level++)
        {
            depths[level] = _runtime.CaptureShardedDepth(level);
        }

        for (int peer = 0; peer < Cores; peer++)
        {
            if (peer != core)
            {
                _ = ServeLoopAsync(new Server(core, servers[core][peer]!, _lanes[peer][core]!, depths));
            }
        }
    }

    internal void StopShard(int core) => _instances[core] = null;

    private async Task ServeLoopAsync(Server server)
    {
        while (true)
        {
            Message message;
            try
            {
                message = await server.Endpoint.ReadAsync();
            }
            catch (System.Threading.Channels.ChannelClosedException)
            {
                return;
            }

            int index = (int)message.Word0;
            if (message.Type != RequestMessage || (uint)index >= (uint)server.CallerLane.Slots.Length)
            {
                continue; // not ours: a hostile or confused peer cannot make this core index out of range
            }

            Slot slot = server.CallerLane.Slots[index];
            if (slot.Call is not { } call || (uint)call.Level >= (uint)_levels)
            {
                continue; // a slot with no call in it: not a request this lane sent
            }

            // Start the handler under its level's context and come back to the loop's own: the
            // handler's first await captures the level's context, so its continuations keep it.
            ExecutionContext loop = ExecutionContext.Capture()!;
            ExecutionContext.Restore(server.Depths[call.Level + 1]);
            try
            {
                _ = ServeAsync(server, slot);
            }
            finally
            {
                ExecutionContext.Restore(loop);
            }
        }
    }

    // ------------------------------------------------------------------ parts

    /// <summary>The serving end on one core for one calling core.</summary>
    private sealed class Server(int core, Endpoint endpoint, Lane callerLane, ExecutionContext[] depths)
    {
        /// <summary>The execution context of each nesting level on this core (index = level).</summary>
        public ExecutionContext[] Depths { get; } = depths;

        private readonly Pump _pump = new(endpoint, callerLane.Slots.Length);

        public int Core { get; } = core;

        public Endpoint Endpoint { get; } = endpoint;

        /// <summary>The caller's lane to this core: its slots hold the calls this server runs.</summary>
        public Lane CallerLane { get; } = callerLane;

        public void Reply(int index) => _pump.Send(Message.Create(ReplyMessage, (ulong)index));
    }

    /// <summary>A calling core's budget and channel end to one serving core (used only on the calling core).</summary>
    private sealed class Lane
    {
        private readonly Endpoint _client;
        private readonly Pump _pump;
        // First in, first out: a slot comes back into use as late as possible, so a caller that
        // takes its result later than the reply came (a pipelining connection) has done so by then
        // and the slot's call record is reused instead of replaced.
        private readonly Queue<Slot>[] _free;
        private readonly Queue<TaskCompletionSource<Slot>>[] _waiting;
        private readonly int _maxWaiting;

        public Lane(Endpoint client, int levels, int slotsPerLevel, int maxWaiting)
        {
            _client = client;
            _maxWaiting = maxWaiting;
            Slots = new Slot[levels * slotsPerLevel];
            _free = new Queue<Slot>[levels];
            _waiting = new Queue<TaskCompletionSource<Slot>>[levels];
            for (int level = 0; level < levels; level++)
            {
                _free[level] = new Queue<Slot>(slotsPerLevel);
                _waiting[level] = new Queue<TaskCompletionSource<Slot>>();
                for (int i = slotsPerLevel - 1; i >= 0; i--)
                {
                    var slot = new Slot((level * slotsPerLevel) + i, level);
                    Slots[slot.Index] = slot;
                    _free[level].Enqueue(slot);
                }
            }

            _pump = new Pump(client, Slots.Length);
        }

        public Slot[] Slots { get; }

        public CpuDriver.Kernel.CoreKernel Kernel => _client.Kernel;

        public string Name => _client.Name;

        public int RemoteCore => _client.RemoteCore;

        /// <summary>Why the channel ended, once its reply reader saw it end (then no call can complete through it).</summary>
        public Exception? Closed { get; private set; }

        public Slot? TryTake(int level) => _free[level].TryDequeue(out Slot? slot) ? slot : null;

        public Task<Slot> WaitForSlotAsync(int level)
        {
            Queue<TaskCompletionSource<Slot>> waiting = _waiting[level];
            if (waiting.Count >= _maxWaiting)
            {
                throw new InvalidOperationException($"{_client.Name}: {waiting.Count} callers already wait for one of {Slots.Length / _free.Length} requests in flight to core {_client.RemoteCore} (ShardedMaxWaiting = {_maxWaiting}).");
            }

            var waiter = new TaskCompletionSource<Slot>();
            waiting.Enqueue(waiter);
            return waiter.Task;
        }

        public void Release(Slot slot)
        {
            // A waiting caller takes the slot over directly: FIFO, and no other caller can overtake it.
            if (_waiting[slot.Level].TryDequeue(out TaskCompletionSource<Slot>? waiter))
            {
                waiter.SetResult(slot);
                return;
            }

            _free[slot.Level].Enqueue(slot);
        }

        public void Send(Slot slot) => _pump.Send(Message.Create(RequestMessage, (ulong)slot.Index));

        // The reply (or the channel's end) for a slot: the caller's await completes, the slot goes back.
        private void Finish(Slot slot, Exception? error)
        {
            if (slot.Call is not { } call)
            {
                return; // no call in it: a stale or hostile reply
            }

            slot.Call = null;
            call.Finish(error);
            Release(slot);
        }

        public async Task ReadRepliesAsync()
        {
            while (true)
            {
                Message message;
                try
                {
                    message = await _client.ReadAsync();
                }
                catch (System.Threading.Channels.ChannelClosedException ex)
                {
                    FailAll(ex);
                    return;
                }

                int index = (int)message.Word0;
                if (message.Type == ReplyMessage && (uint)index < (uint)Slots.Length)
                {
                    Finish(Slots[index], null);
                }
            }
        }

        private void FailAll(Exception ex)
        {
            Closed = ex;
            foreach (Slot slot in Slots)
            {
                Finish(slot, ex);
            }
        }
    }

    /// <summary>
    /// Sends on one endpoint without making the sender wait: at once when the window and the ring
    /// have room, else in order behind earlier messages. At most one message per slot is ever
    /// outstanding, so the queue never holds more than <c>capacity</c>.
    /// </summary>
    private sealed class Pump(Endpoint endpoint, int capacity)
    {
        private readonly Queue<Message> _queue = new(capacity);
        private bool _pumping;

        public void Send(in Message message)
        {
            if (!_pumping && endpoint.TryWrite(in message))
            {
                return;
            }

            System.Diagnostics.Debug.Assert(_queue.Count < capacity, "one message per slot");
            _queue.Enqueue(message);
            if (!_pumping)
            {
                _pumping = true;
                _ = PumpAsync();
            }
        }

        private async Task PumpAsync()
        {
            try
            {
                while (_queue.TryPeek(out Message message))
                {
                    await endpoint.WriteAsync(in message);
                    _queue.Dequeue();
                }
            }
            catch (System.Threading.Channels.ChannelClosedException)
            {
                _queue.Clear(); // the peer is gone: its reply reader fails every slot
            }
            finally
            {
                _pumping = false;
            }
        }
    }

    /// <summary>One request in flight: written by the caller, then by the server, then read by the caller.</summary>
    private sealed class Slot(int index, int level)
    {
        public int Index { get; } = index;

        public int Level { get; } = level;

        public ShardCall? Call { get; set; }

        /// <summary>The call record last used in this slot (reused while the types stay the same and its caller took the result).</summary>
        public object? Cached { get; set; }
    }

    private abstract class ShardCall
    {
        public int Level { get; set; }

        public Exception? Error { get; set; }

        public abstract ValueTask RunAsync(TService service);

        /// <summary>Calling core: completes the caller's await with the result, the handler's error or <paramref name="error"/>.</summary>
        public abstract void Finish(Exception? error);
    }

    /// <remarks>
    /// The caller awaits <see cref="Arm"/>'s <see cref="CpuDriver.Kernel.CoreOperation{T}"/> of the
    /// calling core: the reply loop completes it there and the continuation is queued on that
    /// core's run queue as a struct, so the steady state allocates nothing.
    /// </remarks>
    private sealed class Call<TArg, TResult>(CpuDriver.Kernel.CoreKernel kernel) : ShardCall
    {
        private readonly CpuDriver.Kernel.CoreOperation<TResult> _done = new(kernel);

        public bool IsUnobserved => _done.IsUnobserved || _done.IsPending;

        public ValueTask<TResult> Arm()
        {
            _done.Reset();
            return _done.AsValueTask();
        }

        public override void Finish(Exception? error)
        {
            Exception? failure = error ?? Error;
            TResult result = Result!;
            Clear();
            if (failure is null)
            {
                _done.SetResult(result);
            }
            else
            {
                _done.SetException(failure);
            }
        }

        public TArg? Argument { get; set; }

        public Func<TService, TArg, ValueTask<TResult>>? Work { get; set; }

        public TResult? Result { get; private set; }

        public override ValueTask RunAsync(TService service)
        {
            ValueTask<TResult> run = Work!(service, Argument!);
            if (run.IsCompletedSuccessfully)
            {
                Result = run.Result;
                return default;
            }

            return AwaitAsync(run);
        }

        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
        private async ValueTask AwaitAsync(ValueTask<TResult> run) => Result = await run;

        public void Clear()
        {
            Argument = default;
            Work = null;
            Result = default;
            Error = null;
        }
    }
}

/// <summary>Marker for sharded services (lets the runtime stop them without knowing their type).</summary>
public interface IShardedCalls
{
    /// <summary>The service's name.</summary>
    string Name { get; }
}
