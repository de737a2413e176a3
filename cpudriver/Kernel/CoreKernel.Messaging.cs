using System.Runtime.CompilerServices;
using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.CpuDriver.Kernel;

// CoreKernel, part: endpoints, sending and receiving over the rings.
public sealed partial class CoreKernel
{
    // ---------------------------------------------------------------- endpoints

    internal Endpoint CreateEndpoint(string name)
    {
        CheckThread();
        if (!_endpoints.TryAllocate(out uint id))
        {
            throw new InvalidOperationException($"Core {Id} has no free channel endpoint (MaxEndpointsPerCore = {_options.MaxEndpointsPerCore}).");
        }

        var endpoint = new Endpoint(this, id, name, _options.ChannelWindow);
        _endpoints.Set(endpoint);
        return endpoint;
    }

    /// <summary>Creates the endpoint with a fixed index during boot (monitor links), before the thread runs.</summary>
    internal Endpoint CreateBootEndpoint(int index, string name)
    {
        if (_thread is not null)
        {
            throw new InvalidOperationException("Boot endpoints are created before the core starts.");
        }

        if (!_endpoints.TryAllocateBoot(index, out uint id))
        {
            throw new ArgumentOutOfRangeException(nameof(index), index, $"Boot endpoints are the unused indices below {_endpoints.BootEndpoints}.");
        }

        var endpoint = new Endpoint(this, id, name, _options.ChannelWindow);
        _endpoints.Set(endpoint);
        return endpoint;
    }

    internal void ReleaseEndpoint(Endpoint endpoint)
    {
        if (_endpoints.Release(endpoint))
        {
            EndpointReleased?.Invoke(endpoint);
        }
    }

    internal Endpoint? FindEndpoint(uint id) => _endpoints.Find(id);

    // ---------------------------------------------------------------- sending

    /// <summary>
    /// Tries to put <paramref name="message"/> on the way to <paramref name="core"/>. Fails only
    /// when the ring is full or other senders to that core are already waiting (FIFO fairness).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TrySend(int core, in Message message)
    {
        // Behind senders already waiting for this ring (FIFO), or first in line.
        if (_stalled.HasWaiters(core) || !TrySendFromStall(core, in message))
        {
            Counters.StallsTo[core]++;
            return false;
        }

        return true;
    }

    /// <summary>
    /// Sends ahead of stalled domain traffic: for the stalled-list flush (already first in line)
    /// and for kernel services, whose protocol messages (a revoke's MARK/COMMIT) must not wait
    /// behind a domain's bulk stream to the same core. Services run before the flush in each
    /// loop iteration, so they get the first free slots. Same-core messages are queued and
    /// dispatched by the receive step, never inside this call.
    /// </summary>
    internal bool TrySendFromStall(int core, in Message message)
    {
        if (core == Id)
        {
            if (!_local.TryWrite(in message))
            {
                return false;
            }

            Counters.SentTo[core]++;
            return true;
        }

        if (!_outbound[core]!.TryWrite(in message))
        {
            return false;
        }

        Counters.SentTo[core]++;
        Touch(core);
        // A parked receiver is rung now, not at the end of this iteration (a plain read; the
        // fenced ring at the end of the iteration catches a receiver that parks meanwhile).
        _doorbells[core].RingIfParked();
        return true;
    }

    /// <summary>
    /// Sends a batch addressed to endpoint <paramref name="remoteId"/> on <paramref name="core"/>:
    /// as many as fit, with one check for ring space, behind nobody (false-free: returns the count,
    /// 0 when senders to that core are already waiting).
    /// </summary>
    internal int TrySendBatch(int core, ReadOnlySpan<Message> messages, uint remoteId)
    {
        if (_stalled.HasWaiters(core))
        {
            Counters.StallsTo[core]++;
            return 0;
        }

        int n;
        if (core == Id)
        {
            n = 0;
            foreach (ref readonly Message message in messages)
            {
                Message m = message;
                m.Endpoint = remoteId;
                m.Flags &= ~(MessageFlags.Control | MessageFlags.HasTraceContext | MessageFlags.TraceSampled);
                if (!_local.TryWrite(in m))
                {
                    break;
                }

                n++;
            }
        }
        else
        {
            n = _outbound[core]!.TryWriteBatchAddressed(messages, remoteId);
            if (n > 0)
            {
                Touch(core);
                _doorbells[core].RingIfParked();
            }
        }

        Counters.SentTo[core] += n;
        if (n < messages.Length)
        {
            Counters.StallsTo[core]++;
        }

        return n;
    }

    /// <summary>True when a send to <paramref name="core"/> would succeed now (nobody waiting ahead, and room).</summary>
    internal bool CanSendNow(int core) => !_stalled.HasWaiters(core) && HasRoom(core);

    /// <summary>True when the ring (or same-core queue) to <paramref name="core"/> has a free slot. Producer side.</summary>
    internal bool HasRoom(int core) => core == Id ? !_local.IsFull : !_outbound[core]!.IsFullForProducer;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Touch(int core)
    {
        if (!_touched[core])
        {
            _touched[core] = true;
            _touchedList[_touchedCount++] = core;
        }
    }

    internal void EnqueueStalled(Endpoint endpoint) => _stalled.Enqueue(endpoint);

    private int FlushStalled()
    {
        if (_stalled.StalledCores == 0)
        {
            return 0;
        }

        int progress = 0;
        for (int core = 0; core < CoreCount; core++)
        {
            while (_stalled.Head(core) is { } endpoint)
            {
                if (!endpoint.FlushOwed(firstInLine: true))
                {
                    break; // ring still full: keep FIFO order, try again next iteration
                }

                progress++;
                _stalled.PopHead(core);
            }
        }

        return progress;
    }

    // ---------------------------------------------------------------- receiving

    private int PollInbound()
    {
        int total = PollLocal();
        int batch = _options.ReceiveBatch;
        for (int core = 0; core < _inbound.Length; core++)
        {
            UrpcRing? ring = _inbound[core];
            if (ring is null)
            {
                continue;
            }

            int n = 0;
            while (n < batch)
            {
                ref readonly Message message = ref ring.Peek();
                if (Unsafe.IsNullRef(in message))
                {
                    break;
                }

                Dispatch(in message);
                ring.Advance();
                n++;
            }

            if (n > 0)
            {
                Counters.ReceivedFrom[core] += n;
                ring.PublishConsumed();
                // The producer is rung only when it marked that it waits for room.
                if (ring.TakeProducerStall())
                {
                    _doorbells[core].Ring();
                }

                total += n;
            }
        }

        return total;
    }

    private int PollLocal()
    {
        // Only what was queued before this step: a handler that answers on the same core is
        // answered next iteration, so a same-core ping-pong cannot starve the other rings.
        int n = Math.Min(_local.Count, _options.ReceiveBatch);
        for (int i = 0; i < n; i++)
        {
            Message message = _local.Peek();
            _local.Advance();
            Dispatch(in message);
        }

        Counters.ReceivedFrom[Id] += n;
        return n;
    }

    private void Dispatch(in Message message)
    {
        Endpoint? endpoint = FindEndpoint(message.Endpoint);
        if (endpoint is null)
        {
            Counters.DroppedToClosedEndpoint++;
            return;
        }

        endpoint.OnMessage(in message);
    }
}
