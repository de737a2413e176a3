using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Multikernel.CpuDriver.Diagnostics;
using Multikernel.CpuDriver.Kernel;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.CpuDriver.Channels;

/// <summary>
/// One end of a channel between two domains (on the same core or on two cores). A channel is
/// multiplexed over the URPC ring of its ordered core pair and flow-controlled with credits:
/// the sender may have at most <c>ChannelWindow</c> messages in flight, which is exactly the
/// receiver's queue size, so the receiving kernel always has room and keeps draining the ring
/// for everyone else. A domain that does not read stalls only its own senders (seed 002).
/// Credits return in batches of half a window.
/// </summary>
/// <remarks>Used only from its core's thread; the awaitables are reusable and allocation-free.</remarks>
public sealed class Endpoint
{
    private readonly CoreKernel _kernel;
    private readonly Message[] _queue;
    private readonly int _window;
    private int _queueHead;
    private int _queueCount;
    private int _credits;
    private int _consumedSinceCredit;
    private int _creditToReturn;
    private bool _closeToSend;
    private bool _localClosed;
    private bool _remoteClosed;
    private bool _peerGone;
    private bool _goneToSend;
    private bool _released;

    private readonly CoreOperation<Message> _readOperation;
    private readonly CoreOperation<bool> _waitOperation;
    private readonly CoreOperation<bool> _writeOperation;
    private readonly CoreOperation<bool> _waitWriteOperation;
    private Message _pendingWrite;
    private bool _writePending;
    private Activity? _pendingSend;
    private long _sent;
    private long _received;

    internal Endpoint(CoreKernel kernel, uint id, string name, int window)
    {
        _kernel = kernel;
        Id = id;
        Name = name;
        _window = window;
        _queue = new Message[window];
        _readOperation = new CoreOperation<Message>(kernel);
        _waitOperation = new CoreOperation<bool>(kernel);
        _writeOperation = new CoreOperation<bool>(kernel);
        _waitWriteOperation = new CoreOperation<bool>(kernel);
        RemoteCore = -1;
    }

    /// <summary>Endpoint id on its core (generation in the high 16 bits, table index in the low 16).</summary>
    public uint Id { get; }

    /// <summary>What the endpoint is for (diagnostics and traces).</summary>
    public string Name { get; }

    /// <summary>The core this endpoint lives on.</summary>
    public int Core => _kernel.Id;

    /// <summary>The core of the other end, or -1 until connected.</summary>
    public int RemoteCore { get; private set; }

    /// <summary>The endpoint id of the other end.</summary>
    public uint RemoteId { get; private set; }

    /// <summary>The kernel that owns this endpoint (kernel side only: a domain holding its endpoint must not reach the kernel through it).</summary>
    internal CoreKernel Kernel => _kernel;

    /// <summary>Messages waiting to be read.</summary>
    public int QueuedCount => _queueCount;

    /// <summary>Send credits left before the sender stalls.</summary>
    public int Credits => _credits;

    /// <summary>Messages sent through this endpoint.</summary>
    public long SentCount => _sent;

    /// <summary>Messages received by this endpoint.</summary>
    public long ReceivedCount => _received;

    /// <summary>True once the other end has completed its writer and every message was read.</summary>
    public bool IsCompleted => _remoteClosed && _queueCount == 0;

    internal Endpoint? NextStalled { get; set; }

    internal bool InStalledList { get; set; }

    /// <summary>Connects this end to its peer. Both ends are connected by the monitor that binds them.</summary>
    internal void Connect(int remoteCore, uint remoteId)
    {
        if (RemoteCore >= 0)
        {
            throw new InvalidOperationException($"Endpoint {Name} is already connected.");
        }

        RemoteCore = remoteCore;
        RemoteId = remoteId;
        _credits = _window;
    }

    // ---------------------------------------------------------------- sending

    /// <summary>Sends without waiting; false when the window or the ring is full (nothing is queued).</summary>
    public bool TryWrite(in Message message)
    {
        _kernel.CheckThread();
        ThrowIfCannotWrite();
        if (_writePending || _credits == 0)
        {
            return false;
        }

        Message m = Addressed(in message);
        Activity? send = StartSendSpan(ref m);
        bool sent = TrySendCounted(in m);
        send?.Dispose();
        return sent;
    }

    // The message as it travels: addressed to the peer endpoint, never mistaken for control,
    // and carrying only the trace context this send puts in it. A domain that forwards a message
    // it received must not forward that hop's context with it: a stale sampled context would pull
    // every later message into one trace.
    private Message Addressed(in Message message)
    {
        Message m = message;
        m.Endpoint = RemoteId;
        m.Flags &= ~(MessageFlags.Control | MessageFlags.HasTraceContext | MessageFlags.TraceSampled);
        return m;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Activity? StartSendSpan(ref Message m)
    {
#if MULTIKERNEL_NO_TRACING
        return null; // the comparison build: no instrumentation in the path
#else
        // Tracing off: one HasListeners() read, nothing allocated. Checked before the arguments
        // are evaluated: the ring depth reads the line the consumer core writes, a cross-core miss
        // on every send if done unconditionally.
        return ActivitySources.Urpc.HasListeners() ? StartSendSpanSlow(ref m) : null;
#endif
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private Activity? StartSendSpanSlow(ref Message m)
    {
        MessageSampler sampler = _kernel.Sampler;
        if (sampler.IsGating && Activity.Current is null)
        {
            // A message outside any trace: this core decides, and creates nothing when it skips.
            return sampler.SampleRoot()
                ? MessageTracing.StartSendSampledRoot(ref m, Core, RemoteCore, Name, _kernel.OutboundDepth(RemoteCore))
                : null;
        }

        return MessageTracing.StartSend(ref m, Core, RemoteCore, Name, _kernel.OutboundDepth(RemoteCore));
    }

    // One credit and one ring slot, or nothing.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TrySendCounted(in Message m)
    {
        if (!_kernel.TrySend(RemoteCore, in m))
        {
            return false;
        }

        _credits--;
        _sent++;
        return true;
    }

    /// <summary>
    /// Sends a message. Completes at once when the window and the ring have room; otherwise the
    /// calling domain is stalled until the receiver frees room. One write at a time per endpoint.
    /// </summary>
    public ValueTask WriteAsync(in Message message)
    {
        _kernel.CheckThread();
        ThrowIfCannotWrite();
        if (_writePending)
        {
            throw new InvalidOperationException($"Endpoint {Name} already has a write in progress; await it before writing again.");
        }

        Message m = Addressed(in message);
        Activity? send = StartSendSpan(ref m);
        if (_credits > 0 && TrySendCounted(in m))
        {
            send?.Dispose();
            return default;
        }

        // Stalled: the send span stays open until the kernel writes the message, so the stall
        // is its length; the domain's own current span goes back to what it was.
        _pendingSend = send;
        MessageTracing.Detach(send);
        _pendingWrite = m;
        _writePending = true;
        _writeOperation.Reset();
        if (_credits > 0)
        {
            _kernel.EnqueueStalled(this); // ring full: retried by the kernel loop
        }
        else
        {
            _kernel.Counters.WindowStallsTo[RemoteCore]++; // the receiver has not consumed: wait for credits
        }

        return _writeOperation.AsValueTaskNonGeneric();
    }

    /// <summary>Completes the writing side: the reader sees the end after the messages already sent.</summary>
    public void Complete()
    {
        _kernel.CheckThread();
        if (_localClosed || RemoteCore < 0)
        {
            _localClosed = true;
            return;
        }

        _localClosed = true;
        _closeToSend = true;
        if (!_writePending)
        {
            TrySendControlOrStall();
        }
    }

    private void ThrowIfCannotWrite()
    {
        if (RemoteCore < 0)
        {
            throw new InvalidOperationException($"Endpoint {Name} is not connected.");
        }

        if (_localClosed)
        {
            throw new ChannelClosedException($"Endpoint {Name} was completed; no more writes.");
        }

        if (_peerGone)
        {
            throw new ChannelClosedException($"The other end of {Name} was closed.");
        }
    }

    /// <summary>
    /// Sends what this endpoint owes its peer, in order: returned credits, the stalled write, then
    /// close and peer-gone (which must never overtake data). True when nothing is left (a write
    /// waiting for credits leaves the line: credits arriving bring it back).
    /// <paramref name="firstInLine"/>: the kernel's flush of the stalled FIFO, already at its head;
    /// otherwise the attempt queues behind senders already waiting for the ring.
    /// </summary>
    internal bool FlushOwed(bool firstInLine)
    {
        if (_creditToReturn > 0)
        {
            Message credit = ControlMessage(CoreKernel.CreditMessage, (ulong)_creditToReturn);
            if (!Send(in credit, firstInLine))
            {
                return false;
            }

            _creditToReturn = 0;
        }

        if (_writePending)
        {
            if (_credits == 0)
            {
                return true;
            }

            if (!Send(in _pendingWrite, firstInLine))
            {
                return false;
            }

            _credits--;
            _sent++;
            _writePending = false;
            EndPendingSend();
            _writeOperation.SetResult(true);
        }

        if (_closeToSend)
        {
            Message close = ControlMessage(CoreKernel.CloseMessage, 0);
            if (!Send(in close, firstInLine))
            {
                return false;
            }

            _closeToSend = false;
        }

        if (_goneToSend)
        {
            Message gone = ControlMessage(CoreKernel.PeerGoneMessage, 0);
            if (!Send(in gone, firstInLine))
            {
                return false;
            }

            _goneToSend = false;
        }

        return true;
    }

    private bool Send(in Message message, bool firstInLine) =>
        firstInLine ? _kernel.TrySendFromStall(RemoteCore, in message) : _kernel.TrySend(RemoteCore, in message);

    private Message ControlMessage(ushort type, ulong value)
    {
        Message m = Message.Create(type, value);
        m.Flags = MessageFlags.Control;
        m.Endpoint = RemoteId;
        return m;
    }

    private void TrySendControlOrStall()
    {
        // Same path as a stalled write, so control messages keep their order behind data.
        if (InStalledList || !FlushOwed(firstInLine: false))
        {
            _kernel.EnqueueStalled(this);
        }
    }

    // ---------------------------------------------------------------- receiving

    /// <summary>Kernel: a message for this endpoint arrived.</summary>
    internal void OnMessage(in Message message)
    {
        if ((message.Flags & MessageFlags.Control) != 0)
        {
            OnControl(in message);
            return;
        }

        _received++;
        if (_readOperation.IsPending)
        {
            Debug.Assert(_queueCount == 0, "a reader waits only on an empty queue");
            Consumed();
            TraceDelivery(in message);
            _readOperation.SetResult(message);
            return;
        }

        // Never overflows: the sender holds at most one window of credits.
        Debug.Assert(_queueCount < _queue.Length, "credit window violated");
        _queue[(_queueHead + _queueCount) & (_queue.Length - 1)] = message;
        _queueCount++;
        if (_waitOperation.IsPending)
        {
            _waitOperation.SetResult(true);
        }
    }

    private void OnControl(in Message message)
    {
        switch (message.Type)
        {
            case CoreKernel.CreditMessage:
                _credits += (int)message.Word0;
                Debug.Assert(_credits <= _window, "more credits than the window");
                if (_waitWriteOperation.IsPending)
                {
                    _waitWriteOperation.SetResult(true);
                }

                if (_writePending)
                {
                    TrySendControlOrStall(); // the stalled write can go now, behind anyone already waiting
                }

                break;
            case CoreKernel.CloseMessage:
                OnRemoteCompleted();
                break;
            case CoreKernel.PeerGoneMessage:
                // The other end is closed for good: readers see the end after what is queued,
                // writers fail instead of waiting for credits that will never come.
                _peerGone = true;
                CancelWriters(new ChannelClosedException($"The other end of {Name} was closed."));
                OnRemoteCompleted();
                break;
            default:
                Debug.Fail($"unknown control message {message.Type}");
                break;
        }
    }

    // The peer will send no more: a waiting ReadAsync fails as on a completed channel, a waiting
    // WaitToReadAsync answers false, so `await foreach` simply ends.
    private void OnRemoteCompleted()
    {
        _remoteClosed = true;
        if (_queueCount == 0)
        {
            if (_readOperation.IsPending)
            {
                _readOperation.SetException(new ChannelClosedException());
            }

            if (_waitOperation.IsPending)
            {
                _waitOperation.SetResult(false);
            }
        }
    }

    // ---------------------------------------------------------------- kernel services

    /// <summary>
    /// Kernel services (the capability protocol) read their link without consuming until they
    /// know they can handle the message: the head message, or false when none is queued.
    /// </summary>
    internal bool TryPeek(out Message message)
    {
        if (_queueCount == 0)
        {
            message = default;
            return false;
        }

        message = _queue[_queueHead];
        return true;
    }

    /// <summary>Consumes the head message after <see cref="TryPeek"/> (credits flow as usual; no span: the service traces its own protocol).</summary>
    internal void DropHead()
    {
        Debug.Assert(_queueCount > 0, "nothing to drop");
        _queueHead = (_queueHead + 1) & (_queue.Length - 1);
        _queueCount--;
        Consumed();
    }

    /// <summary>Sends for a kernel service: like <see cref="TryWrite"/> but the message keeps the trace context its protocol put in it.</summary>
    internal bool TryWriteUntraced(in Message message)
    {
        if (_writePending || _credits == 0 || RemoteCore < 0)
        {
            return false;
        }

        Message m = message; // keeps the trace context its protocol put in it
        m.Endpoint = RemoteId;
        m.Flags &= ~MessageFlags.Control;
        if (!_kernel.TrySendFromStall(RemoteCore, in m))
        {
            return false;
        }

        _credits--;
        _sent++;
        return true;
    }

    /// <summary>Reads a waiting message without blocking.</summary>
    public bool TryRead(out Message message)
    {
        _kernel.CheckThread();
        if (_queueCount == 0)
        {
            message = default;
            return false;
        }

        message = _queue[_queueHead];
        _queueHead = (_queueHead + 1) & (_queue.Length - 1);
        _queueCount--;
        Consumed();
        TraceDelivery(in message);
        return true;
    }

    // The consumer span ("process core/B") marks the hand-over of a message to the domain on
    // this core: child of and linked to the send span the message carries. It ends at once and
    // does not stay current: were it current while the domain goes on, every later send of a
    // request/response or ring loop would nest under the previous message, and one sampled
    // message would drag all that follow into its trace. A handler that wants its work in the
    // sender's trace says so with MessageTracing.StartHandler.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void TraceDelivery(in Message message)
    {
#if !MULTIKERNEL_NO_TRACING
        if (ActivitySources.Urpc.HasListeners()
            && (MessageTracing.HasTraceContext(in message) || !_kernel.Sampler.IsGating))
        {
            // (With head sampling on, a message that carries no trace was skipped by its sender.)
            TraceDeliverySlow(in message);
        }
#endif
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void TraceDeliverySlow(in Message message)
    {
        if (MessageTracing.StartProcess(in message, RemoteCore, Core, Name) is { } span)
        {
            Stop(span);
        }
    }

    private void EndPendingSend()
    {
        if (_pendingSend is not null)
        {
            Stop(_pendingSend);
            _pendingSend = null;
        }
    }

    // Activity.Stop makes the span's predecessor current again, wherever it is called from. A
    // span ended outside the context that started it (a stalled send finished by the kernel
    // loop, a consumer span ended at the domain's next read) must leave the caller's current
    // span alone.
    private static void Stop(Activity span)
    {
        Activity? current = Activity.Current;
        span.Dispose();
        if (!ReferenceEquals(current, span))
        {
            Activity.Current = current;
        }
    }

    /// <summary>Reads the next message, waiting on this core until one arrives.</summary>
    public ValueTask<Message> ReadAsync()
    {
        if (TryRead(out Message message))
        {
            return new ValueTask<Message>(message);
        }

        if (_remoteClosed)
        {
            return ValueTask.FromException<Message>(new ChannelClosedException());
        }

        if (_readOperation.IsPending || _waitOperation.IsPending)
        {
            throw new InvalidOperationException($"Endpoint {Name} already has a reader waiting.");
        }

        _readOperation.Reset();
        return _readOperation.AsValueTask();
    }

    /// <summary>Waits until a message can be read (true) or the writer completed (false).</summary>
    public ValueTask<bool> WaitToReadAsync()
    {
        _kernel.CheckThread();
        if (_queueCount > 0)
        {
            return new ValueTask<bool>(true);
        }

        if (_remoteClosed)
        {
            return new ValueTask<bool>(false);
        }

        if (_readOperation.IsPending || _waitOperation.IsPending)
        {
            throw new InvalidOperationException($"Endpoint {Name} already has a reader waiting.");
        }

        _waitOperation.Reset();
        return _waitOperation.AsValueTask();
    }

    /// <summary>Waits until a write would not stall for credits (true), or returns false once completed.</summary>
    public ValueTask<bool> WaitToWriteAsync()
    {
        _kernel.CheckThread();
        if (_localClosed)
        {
            return new ValueTask<bool>(false);
        }

        if (_credits > 0 && !_writePending)
        {
            return new ValueTask<bool>(true);
        }

        if (_waitWriteOperation.IsPending)
        {
            throw new InvalidOperationException($"Endpoint {Name} already has a writer waiting.");
        }

        _waitWriteOperation.Reset();
        return _waitWriteOperation.AsValueTask();
    }

    /// <summary>Wakes waiting readers with <paramref name="exception"/> (cancellation). Core thread.</summary>
    public void CancelReaders(Exception exception)
    {
        _kernel.CheckThread();
        if (_readOperation.IsPending)
        {
            _readOperation.SetException(exception);
        }

        if (_waitOperation.IsPending)
        {
            _waitOperation.SetException(exception);
        }
    }

    /// <summary>
    /// Wakes waiting writers with <paramref name="exception"/> (cancellation). A write already
    /// accepted into a ring cannot be taken back; one still waiting for room is abandoned.
    /// </summary>
    public void CancelWriters(Exception exception)
    {
        _kernel.CheckThread();
        if (_writePending)
        {
            _writePending = false;
            _pendingSend?.SetStatus(ActivityStatusCode.Error, exception.Message);
            EndPendingSend();
            _writeOperation.SetException(exception);
        }

        if (_waitWriteOperation.IsPending)
        {
            _waitWriteOperation.SetException(exception);
        }
    }

    private void CancelWaiters(Exception exception)
    {
        CancelReaders(exception);
        CancelWriters(exception);
    }

    private void Consumed()
    {
        if (++_consumedSinceCredit >= _window / 2)
        {
            _creditToReturn += _consumedSinceCredit;
            _consumedSinceCredit = 0;
            TrySendControlOrStall();
        }
    }

    /// <summary>
    /// Closes this end for good: the peer is told (its writers fail, its readers see the end),
    /// local waiters fail, and the table slot is released; later messages to it are dropped and
    /// counted. Called for every endpoint of a domain that ends.
    /// </summary>
    public void Close()
    {
        _kernel.CheckThread();
        if (_released)
        {
            return;
        }

        _released = true;
        CancelWaiters(new ChannelClosedException($"Endpoint {Name} was closed."));
        if (RemoteCore >= 0 && !_peerGone)
        {
            _localClosed = true;
            _goneToSend = true;
            TrySendControlOrStall();
        }

        _kernel.ReleaseEndpoint(this);
    }

    /// <inheritdoc />
    public override string ToString() => $"{Name} (core {Core} ep {Id:x} -> core {RemoteCore} ep {RemoteId:x})";
}
