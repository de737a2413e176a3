using System.Collections.Concurrent;
using System.Diagnostics;
using Multikernel.Net;
using Multikernel.Netd.Drivers;
using Multikernel.Netd.Wire;

namespace Multikernel.Tests.Net.Domain;

/// <summary>
/// The "second machine": our stack (a second instance) on its own port of netd's in-memory
/// switch, run by one dedicated thread — its own synchronization context, its own timers, and a
/// loop that moves frames between the port and the stack. Test code runs on that thread through
/// <see cref="RunAsync{T}"/>, exactly as application code runs on a core.
/// </summary>
internal sealed class PeerStack : IDisposable
{
    private readonly SwitchPort _port;
    private readonly LoopContext _context;
    private readonly LoopTime _time;
    private readonly Thread _thread;
    private readonly TaskCompletionSource _started = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile bool _stopping;
    private NetworkStack? _stack;

    public PeerStack(SwitchPort port, Ipv4Address address, Action<NetworkStackOptions>? configure = null)
    {
        _port = port;
        _context = new LoopContext();
        _time = new LoopTime();
        var options = new NetworkStackOptions { Address = address, PrefixLength = 24 };
        configure?.Invoke(options);
        _thread = new Thread(() => Loop(options)) { IsBackground = true, Name = $"peer {address}" };
        _thread.Start();
        if (!_started.Task.Wait(TestMachine.Patience))
        {
            throw new TimeoutException("the peer's thread did not start");
        }

        _started.Task.GetAwaiter().GetResult();
    }

    /// <summary>The peer's stack: touch it only inside <see cref="RunAsync{T}"/>.</summary>
    public NetworkStack Stack => _stack!;

    /// <summary>Runs <paramref name="work"/> on the peer's thread (its awaits come back there).</summary>
    public Task<T> RunAsync<T>(Func<NetworkStack, Task<T>> work)
    {
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        _context.Post(async _ =>
        {
            try
            {
                done.TrySetResult(await work(Stack));
            }
            catch (Exception ex)
            {
                done.TrySetException(ex);
            }
        }, null);
        return done.Task;
    }

    public Task RunAsync(Func<NetworkStack, Task> work) => RunAsync(async s => { await work(s); return true; });

    private void Loop(NetworkStackOptions options)
    {
        SynchronizationContext.SetSynchronizationContext(_context);
        try
        {
            _stack = new NetworkStack(options, new PortLink(_port), _time, _context);
            _stack.Start();
            _started.SetResult();
        }
        catch (Exception ex)
        {
            _started.SetException(ex);
            return;
        }

        byte[] frame = new byte[_port.MaxFrameLength()];
        int idle = 0;
        while (!_stopping)
        {
            bool worked = _context.RunPending() > 0;
            for (int i = 0; i < 64; i++)
            {
                int n = _port.ReceiveOne(frame);
                if (n == 0)
                {
                    break;
                }

                _stack.Receive(frame.AsSpan(0, n));
                worked = true;
            }

            worked |= _time.FireDue() > 0;
            idle = worked ? 0 : idle + 1;
            if (idle > 200)
            {
                _context.WaitForWork(TimeSpan.FromMilliseconds(1));
            }
            else if (idle > 50)
            {
                Thread.Yield();
            }
        }

        _stack.Dispose();
    }

    public void Dispose()
    {
        _stopping = true;
        _context.Wake();
        _thread.Join(TestMachine.Patience);
        _port.Dispose();
    }

    private sealed class PortLink(SwitchPort port) : ILinkPort
    {
        public int Mtu => port.Mtu;

        public MacAddress Mac => port.MacAddress;

        public bool TryTransmit(ReadOnlySpan<byte> frame) => port.TransmitOne(frame);
    }

    /// <summary>A single-threaded context: posts from any thread queue up; the loop runs them.</summary>
    private sealed class LoopContext : SynchronizationContext
    {
        private readonly ConcurrentQueue<(SendOrPostCallback, object?)> _queue = new();
        private readonly SemaphoreSlim _signal = new(0);

        public override void Post(SendOrPostCallback d, object? state)
        {
            _queue.Enqueue((d, state));
            Wake();
        }

        public override void Send(SendOrPostCallback d, object? state) => throw new NotSupportedException("The peer's loop never blocks.");

        public void Wake()
        {
            if (_signal.CurrentCount == 0)
            {
                _signal.Release();
            }
        }

        public void WaitForWork(TimeSpan timeout) => _signal.Wait(timeout);

        public int RunPending()
        {
            int n = 0;
            while (n < 1024 && _queue.TryDequeue(out (SendOrPostCallback Callback, object? State) item))
            {
                item.Callback(item.State);
                n++;
            }

            return n;
        }
    }

    /// <summary>Real time whose timers fire on the loop's thread (the contract of a core's timer wheel).</summary>
    private sealed class LoopTime : TimeProvider
    {
        private readonly List<LoopTimer> _timers = [];

        public override long GetTimestamp() => Stopwatch.GetTimestamp();

        public override long TimestampFrequency => Stopwatch.Frequency;

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = new LoopTimer(this, callback, state);
            lock (_timers)
            {
                _timers.Add(timer);
            }

            timer.Change(dueTime, period);
            return timer;
        }

        public int FireDue()
        {
            long now = GetTimestamp();
            LoopTimer[] due;
            lock (_timers)
            {
                due = [.. _timers.Where(t => t.DueAt <= now)];
            }

            foreach (LoopTimer t in due)
            {
                t.Fire(now);
            }

            return due.Length;
        }

        private void Remove(LoopTimer t)
        {
            lock (_timers)
            {
                _timers.Remove(t);
            }
        }

        private sealed class LoopTimer(LoopTime owner, TimerCallback callback, object? state) : ITimer
        {
            private long _period = -1;

            public long DueAt { get; private set; } = long.MaxValue;

            public bool Change(TimeSpan dueTime, TimeSpan period)
            {
                DueAt = dueTime == Timeout.InfiniteTimeSpan ? long.MaxValue : owner.GetTimestamp() + (long)(dueTime.TotalSeconds * Stopwatch.Frequency);
                _period = period == Timeout.InfiniteTimeSpan || period == TimeSpan.Zero ? -1 : (long)(period.TotalSeconds * Stopwatch.Frequency);
                return true;
            }

            public void Fire(long now)
            {
                if (DueAt > now)
                {
                    return;
                }

                DueAt = _period > 0 ? now + _period : long.MaxValue;
                callback(state);
            }

            public void Dispose() => owner.Remove(this);

            public ValueTask DisposeAsync()
            {
                Dispose();
                return ValueTask.CompletedTask;
            }
        }
    }
}
