using System.Runtime.CompilerServices;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.CpuDriver.Kernel;

// CoreKernel, part: the loop: the steps of one iteration, parking and halting.
public sealed partial class CoreKernel
{
    // ---------------------------------------------------------------- timers

    /// <summary>Completes after <paramref name="delay"/> of <see cref="Time"/>, on this core (a pooled timer-wheel entry). Core thread only.</summary>
    public ValueTask Delay(TimeSpan delay, CancellationToken cancellationToken = default)
    {
        CheckThread();
        return _timers.Delay(delay, cancellationToken);
    }

    // ---------------------------------------------------------------- the loop

    private unsafe void Run()
    {
        Volatile.Write(ref _threadId, Environment.CurrentManagedThreadId);
        byte top = 0;
        Volatile.Write(ref _stackTop, (nint)(&top));
        if (_options.PinThreads && !CpuAffinity.TryPinCurrentThread(Cpu, out string? error))
        {
            PinningError = error;
        }

        System.Threading.SynchronizationContext.SetSynchronizationContext(SynchronizationContext);
        _timers.SetCaching(true);
        int idle = 0;
        long idleStart = 0;
        long phaseStart = _time.GetTimestamp();
        bool busy = true;
        try
        {
            while (true)
            {
                _timers.Invalidate(); // after a park or a long iteration, arms read the clock afresh
                int work = PollInbound();
                work += PollServices();
                work += DrainForeign();
                work += RunLocal();
                work += _timers.Fire();
                work += FlushStalled();
                RingTouchedDoorbells();
                Counters.Iterations++;

                if (work > 0)
                {
                    if (!busy)
                    {
                        long now = _time.GetTimestamp();
                        Counters.IdleTicks += now - phaseStart;
                        phaseStart = now;
                        busy = true;
                    }

                    idle = 0;
                    continue;
                }

                if (busy)
                {
                    long now = _time.GetTimestamp();
                    Counters.BusyTicks += now - phaseStart;
                    phaseStart = now;
                    busy = false;
                }

                if (_haltRequested && (_stalled.StalledCores == 0 || HaltGraceExpired()))
                {
                    break;
                }

                if (idle++ == 0)
                {
                    idleStart = _time.GetTimestamp();
                }

                // Spin for a time budget (tens of µs), capped by an iteration budget, then park.
                if (idle <= _options.SpinBudget && _time.GetTimestamp() - idleStart < _spinTicks)
                {
                    if (_options.YieldWhenIdle)
                    {
                        Thread.Yield();
                    }
                    else
                    {
                        Thread.SpinWait(4);
                    }

                    continue;
                }

                idle = 0;
                ParkUntilWork();
            }
        }
        finally
        {
            _timers.SetCaching(false);
            // Work posted before this point runs; later posts fail their callers.
            _foreign.Close();
            _foreign.DrainClosed(item => Invoke(in item));
            RunLocal();
            long end = _time.GetTimestamp();
            if (busy)
            {
                Counters.BusyTicks += end - phaseStart;
            }
            else
            {
                Counters.IdleTicks += end - phaseStart;
            }

            ReleaseResources();
            Volatile.Write(ref _stackTop, 0); // before the thread (and its stack) can be reused
            _stopped.TrySetResult();
        }
    }

    // A halting core keeps retrying stalled sends for a while; a peer that already halted with a
    // full ring would otherwise keep it alive forever.
    private bool HaltGraceExpired()
    {
        if (_haltGraceStart == 0)
        {
            _haltGraceStart = _time.GetTimestamp();
            return false;
        }

        return _time.GetElapsedTime(_haltGraceStart) > TimeSpan.FromSeconds(1);
    }

    private void ParkUntilWork()
    {
        Doorbell doorbell = _doorbells[Id];
        doorbell.PrepareToPark();
        // Re-check every source of work after announcing the park (the Dekker half on this side).
        if (HasWork())
        {
            doorbell.CancelPark();
            return;
        }

        Counters.Parks++;
        long timeout = _timers.NanosecondsUntilNext();
        if (timeout < 0 || timeout > _maxParkNanoseconds)
        {
            timeout = _maxParkNanoseconds;
        }

        _waitSet.Wait(timeout);
    }

    private bool HasWork()
    {
        if (_runQueue.Count > 0 || _foreign.Count > 0 || _haltRequested || _local.Count > 0)
        {
            return true;
        }

        foreach (IKernelService service in _services)
        {
            if (service.HasWork)
            {
                return true;
            }
        }

        foreach (UrpcRing? ring in _inbound)
        {
            if (ring is not null && ring.HasPending)
            {
                return true;
            }
        }

        if (_stalled.StalledCores > 0)
        {
            for (int core = 0; core < CoreCount; core++)
            {
                // Mark the stall so the consumer rings us when it frees room; look once more.
                if (_stalled.HasWaiters(core) && (core == Id || _outbound[core]!.MarkProducerStalled()))
                {
                    return true;
                }
            }
        }

        return _timers.HasDue;
    }

    private int PollServices()
    {
        int work = 0;
        foreach (IKernelService service in _services)
        {
            work += service.Poll();
        }

        return work;
    }

    private void RingTouchedDoorbells()
    {
        if (_touchedCount == 0)
        {
            return;
        }

        for (int i = 0; i < _touchedCount; i++)
        {
            int core = _touchedList[i];
            _touched[core] = false;
            _doorbells[core].Ring();
        }

        _touchedCount = 0;
    }

    private int DrainForeign()
    {
        // Bounded per iteration, so a flood from other threads cannot starve the rings.
        int n = 0;
        int limit = _options.ReceiveBatch * 4;
        while (n < limit && _foreign.Count > 0 && _foreign.TryDequeue(out WorkItem item))
        {
            Invoke(in item);
            n++;
        }

        return n;
    }

    private int RunLocal()
    {
        // Run what is queued now; what those items queue runs on the next iteration, so inbound
        // rings are polled between rounds and a chatty domain cannot starve them.
        int n = _runQueue.Count;
        for (int i = 0; i < n; i++)
        {
            WorkItem item = _runQueue.Dequeue();
            Invoke(in item);
        }

        return n;
    }

    private void Invoke(in WorkItem item)
    {
        Counters.WorkItems++;
        try
        {
            if (item.Callback is Action<object?> action)
            {
                action(item.State);
            }
            else
            {
                ((SendOrPostCallback)item.Callback)(item.State);
            }
        }
#pragma warning disable CA1031 // a domain's fault must not take the core down with it
        catch (Exception ex)
#pragma warning restore CA1031
        {
            ReportUnhandled(ex);
        }

        // A timer armed by the next item counts from a fresh clock read (CoreTimers, the cached now).
        _timers.Invalidate();
    }

    internal void ReportUnhandled(Exception ex)
    {
        if (UnhandledException is { } handler)
        {
            handler(this, ex);
        }
        else
        {
            Console.Error.WriteLine($"core {Id}: unhandled exception in a domain: {ex}");
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void CheckThread()
    {
        if (!IsCurrentThread && _thread is not null)
        {
            ThrowWrongThread();
        }
    }

    private void CheckOwner(string rule)
    {
        if (!IsOwnerThread)
        {
            throw new InvalidOperationException($"Core {Id}: {rule}");
        }
    }

    private void ThrowWrongThread() =>
        throw new InvalidOperationException($"This object belongs to core {Id} and is used only from that core's thread (a domain must not leave its core with ConfigureAwait(false) or Task.Run).");
}
