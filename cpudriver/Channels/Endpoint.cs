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
public sealed partial class Endpoint : ICoreOperationOwner
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

    // Waiters: each await gets its own pooled operation, so a second reader (or a reader whose
    // last result is not yet taken) never recycles an operation someone still awaits.
    private readonly List<CoreOperation<Message>> _readers = [];
    private readonly List<CoreOperation<bool>> _readWaiters = [];
    private readonly List<CoreOperation<bool>> _writeWaiters = [];
    private readonly Stack<CoreOperation<Message>> _messagePool = new();
    private readonly Stack<CoreOperation<bool>> _boolPool = new();
    private readonly int _maxWaiters;
    private CoreOperation<bool>? _writeOperation;
    private Message _pendingWrite;
    private bool _writePending;
    private Activity? _pendingSend;
    private long _sent;
    private long _received;
    private Exception? _completionError;
    private bool _remoteError;
    private TaskCompletionSource? _completion;
    private int _completionClaimed;

    internal Endpoint(CoreKernel kernel, uint id, string name, int window)
    {
        _kernel = kernel;
        Id = id;
        Name = name;
        _window = window;
        _queue = new Message[window];
        _maxWaiters = kernel.Options.MaxWaitersPerEndpoint;
        _grantWindow = kernel.Options.ChannelGrantWindow;
        _messagePool.Push(new CoreOperation<Message>(kernel) { Owner = this });
        _boolPool.Push(new CoreOperation<bool>(kernel) { Owner = this });
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

    /// <summary>
    /// Completes when the reader has seen the end: the other end completed its writer (or went
    /// away) and every message was read, or this end was closed. Faults with a
    /// <see cref="ChannelClosedException"/> when the writer completed with an error.
    /// </summary>
    public Task Completion
    {
        get
        {
            if (_completion is null)
            {
                _completion = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                CheckCompletion();
            }

            return _completion.Task;
        }
    }

    /// <summary>The typed reader adapter cached by <see cref="UrpcChannelReader{T}.Of"/>.</summary>
    internal object? CachedReader { get; set; }

    /// <summary>The typed writer adapter cached by <see cref="UrpcChannelWriter{T}.Of"/>.</summary>
    internal object? CachedWriter { get; set; }

    /// <summary>Context of the last <c>process</c> span this endpoint made (typed readers parent the handler's sends on it).</summary>
    internal ActivityContext LastProcessContext;

    /// <summary>Parent of a send made outside any span (set by a typed reader while its value is handled; default: none).</summary>
    internal ActivityContext HandlingContext;

    /// <summary>The domain that owns this endpoint (it forgets the endpoint when it closes).</summary>
    internal Domains.Domain? OwningDomain { get; set; }

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
        _grantCredits = _grantWindow;
    }

    // ---------------------------------------------------------------- sending

    /// <summary>
    /// Sends without waiting; false when the window or the ring is full (nothing is queued), or
    /// once this end is completed or the other end is gone (as <see cref="ChannelWriter{T}.TryWrite"/>).
    /// </summary>
    public bool TryWrite(in Message message)
    {
        _kernel.CheckThread();
        ThrowIfNotConnected();
        if (_localClosed || _peerGone || _writePending || _credits == 0)
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
        m.Flags &= ~(MessageFlags.Control | MessageFlags.HasTraceContext | MessageFlags.TraceSampled | MessageFlags.ContinuedTrace);
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
        if (Activity.Current is null && HandlingContext.TraceId != default)
        {
            return MessageTracing.StartSend(ref m, in HandlingContext, Core, RemoteCore, Name, _kernel.OutboundDepth(RemoteCore));
        }

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
    public ValueTask WriteAsync(in Message message) => WriteAsync(in message, CancellationToken.None);

    /// <summary>As <see cref="WriteAsync(in Message)"/>; a cancelled stalled write is abandoned (never sent).</summary>
    public ValueTask WriteAsync(in Message message, CancellationToken cancellationToken)
    {
        _kernel.CheckThread();
        ThrowIfCannotWrite();
        if (_writePending)
        {
            throw new InvalidOperationException($"Endpoint {Name} already has a write in progress; await it before writing again.");
        }

        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled(cancellationToken);
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
        CoreOperation<bool> operation = RentBool();
        _writeOperation = operation;
        if (_credits > 0)
        {
            _kernel.EnqueueStalled(this); // ring full: retried by the kernel loop
        }
        else
        {
            _kernel.Counters.WindowStallsTo[RemoteCore]++; // the receiver has not consumed: wait for credits
        }

        RegisterCancellation(operation, cancellationToken);
        return operation.AsValueTaskNonGeneric();
    }

    /// <summary>Completes the writing side: the reader sees the end after the messages already sent.</summary>
    public void Complete() => TryComplete(null);

    /// <summary>
    /// Completes the writing side once (true the first time, false after): the reader sees the
    /// end after the messages already sent, as a failure when <paramref name="error"/> is given
    /// (only that there was one crosses the channel: exceptions are not shared between cores).
    /// Later writes fail with <see cref="ChannelClosedException"/>, <see cref="WaitToWriteAsync()"/>
    /// answers false (or throws <paramref name="error"/>), <see cref="TryWrite"/> returns false.
    /// </summary>
    public bool TryComplete(Exception? error)
    {
        _kernel.CheckThread();
        if (!TryClaimCompletion())
        {
            return false;
        }

        CompleteClaimed(error);
        return true;
    }

    /// <summary>Claims the one completion (any thread): true for the first caller only.</summary>
    internal bool TryClaimCompletion() => Interlocked.Exchange(ref _completionClaimed, 1) == 0;

    /// <summary>Completes after <see cref="TryClaimCompletion"/> won. Core thread.</summary>
    internal void CompleteClaimed(Exception? error)
    {
        _kernel.CheckThread();
        if (_localClosed)
        {
            return; // closed meanwhile: the peer already hears that
        }

        _localClosed = true;
        _completionError = error;
        WakeWriteWaiters(false);
        if (RemoteCore < 0)
        {
            return;
        }

        _closeToSend = true;
        if (!_writePending)
        {
            TrySendControlOrStall();
        }
    }

    private void ThrowIfNotConnected()
    {
        if (RemoteCore < 0)
        {
            throw new InvalidOperationException($"Endpoint {Name} is not connected.");
        }
    }

    private void ThrowIfCannotWrite()
    {
        ThrowIfNotConnected();
        if (_localClosed)
        {
            throw new ChannelClosedException($"Endpoint {Name} was completed; no more writes.", _completionError);
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

        if (_grantCreditToReturn > 0)
        {
            Message grantCredit = ControlMessage(CoreKernel.GrantCreditMessage, (ulong)_grantCreditToReturn);
            if (!Send(in grantCredit, firstInLine))
            {
                return false;
            }

            _grantCreditToReturn = 0;
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
            CoreOperation<bool> written = _writeOperation!;
            _writeOperation = null;
            written.SetResult(true);
        }

        if (_writeWaiters.Count > 0 && !_writePending && !_localClosed && _credits > 0)
        {
            // "Writable" means a write would succeed now: room in the ring and nobody ahead.
            if (!(firstInLine ? _kernel.HasRoom(RemoteCore) : _kernel.CanSendNow(RemoteCore)))
            {
                return false;
            }

            WakeWriteWaiters(true);
        }

        if (_closeToSend)
        {
            Message close = ControlMessage(CoreKernel.CloseMessage, _completionError is null ? 0UL : 1UL);
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

    private void WakeWriteWaiters(bool result)
    {
        for (int i = 0; i < _writeWaiters.Count; i++)
        {
            _writeWaiters[i].SetResult(result);
        }

        _writeWaiters.Clear();
    }

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
        if (_readers.Count > 0)
        {
            Debug.Assert(_queueCount == 0, "a reader waits only on an empty queue");
            CoreOperation<Message> reader = _readers[0];
            _readers.RemoveAt(0);
            Consumed();
            TraceDelivery(in message);
            reader.SetResult(message);
            return;
        }

        // Never overflows: the sender holds at most one window of credits.
        Debug.Assert(_queueCount < _queue.Length, "credit window violated");
        _queue[(_queueHead + _queueCount) & (_queue.Length - 1)] = message;
        _queueCount++;
        for (int i = 0; i < _readWaiters.Count; i++)
        {
            _readWaiters[i].SetResult(true);
        }

        _readWaiters.Clear();
    }

    private void OnControl(in Message message)
    {
        switch (message.Type)
        {
            case CoreKernel.CreditMessage:
                _credits += (int)message.Word0;
                Debug.Assert(_credits <= _window, "more credits than the window");
                if (_writePending || _writeWaiters.Count > 0)
                {
                    // The stalled write can go now (and write waiters may be told), behind anyone already waiting.
                    TrySendControlOrStall();
                }

                break;
            case CoreKernel.GrantCreditMessage:
                OnGrantCredits((int)message.Word0);
                break;
            case CoreKernel.CloseMessage:
                _remoteError = message.Word0 != 0;
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
            foreach (CoreOperation<Message> reader in _readers)
            {
                reader.SetException(ClosedForReaders());
            }

            _readers.Clear();
            foreach (CoreOperation<bool> waiter in _readWaiters)
            {
                if (_remoteError)
                {
                    waiter.SetException(ClosedForReaders());
                }
                else
                {
                    waiter.SetResult(false);
                }
            }

            _readWaiters.Clear();
        }

        CheckCompletion();
    }

    private ChannelClosedException ClosedForReaders() => _remoteError
        ? new ChannelClosedException($"The writer of {Name} completed with an error.")
        : new ChannelClosedException();

    // Completion completes once the end has been read (or this end is closed).
    private void CheckCompletion()
    {
        if (_completion is null || _completion.Task.IsCompleted)
        {
            return;
        }

        if (_released || (_remoteClosed && _queueCount == 0))
        {
            if (_remoteError && !_released)
            {
                _completion.TrySetException(ClosedForReaders());
            }
            else
            {
                _completion.TrySetResult();
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
        if (_remoteClosed && _queueCount == 0)
        {
            CheckCompletion();
        }
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
        if (_remoteClosed && _queueCount == 0)
        {
            CheckCompletion();
        }

        return true;
    }

    /// <summary>
    /// Reads up to <paramref name="destination"/>.Length waiting messages without blocking and
    /// returns how many (credits go back in the usual batches). Core thread.
    /// </summary>
    public int TryReadBatch(Span<Message> destination)
    {
        _kernel.CheckThread();
        int n = Math.Min(destination.Length, _queueCount);
        for (int i = 0; i < n; i++)
        {
            destination[i] = _queue[_queueHead];
            _queueHead = (_queueHead + 1) & (_queue.Length - 1);
            _queueCount--;
            Consumed();
            TraceDelivery(in destination[i]);
        }

        if (n > 0 && _remoteClosed && _queueCount == 0)
        {
            CheckCompletion();
        }

        return n;
    }

    /// <summary>
    /// Sends as many of <paramref name="messages"/> as the channel window and the ring take now,
    /// checking for ring space once, and returns how many went (0 when completed, behind a stalled
    /// write, or the window is empty). Batched messages carry no trace context. Core thread.
    /// </summary>
    public int TryWriteBatch(ReadOnlySpan<Message> messages)
    {
        _kernel.CheckThread();
        ThrowIfNotConnected();
        if (_localClosed || _peerGone || _writePending || _credits == 0 || messages.IsEmpty)
        {
            return 0;
        }

        int n = _kernel.TrySendBatch(RemoteCore, messages[..Math.Min(messages.Length, _credits)], RemoteId);
        _credits -= n;
        _sent += n;
        return n;
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
            LastProcessContext = span.Context;
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
    public ValueTask<Message> ReadAsync() => ReadAsync(CancellationToken.None);

    /// <summary>
    /// As <see cref="ReadAsync()"/>; several readers may wait at once (served in order), and a
    /// cancelled read leaves the line without taking a message. At most <c>MaxWaitersPerEndpoint</c> waiters.
    /// </summary>
    public ValueTask<Message> ReadAsync(CancellationToken cancellationToken)
    {
        if (TryRead(out Message message))
        {
            return new ValueTask<Message>(message);
        }

        if (_remoteClosed)
        {
            return ValueTask.FromException<Message>(ClosedForReaders());
        }

        if (_released)
        {
            return ValueTask.FromException<Message>(new ChannelClosedException($"Endpoint {Name} was closed."));
        }

        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<Message>(cancellationToken);
        }

        CheckWaiterLimit();
        CoreOperation<Message> reader = _messagePool.Count > 0 ? _messagePool.Pop() : new CoreOperation<Message>(_kernel) { Owner = this };
        reader.Reset();
        _readers.Add(reader);
        RegisterCancellation(reader, cancellationToken);
        return reader.AsValueTask();
    }

    /// <summary>Waits until a message can be read (true) or the writer completed (false).</summary>
    public ValueTask<bool> WaitToReadAsync() => WaitToReadAsync(CancellationToken.None);

    /// <summary>As <see cref="WaitToReadAsync()"/>, cancellable; several waiters may wait at once.</summary>
    public ValueTask<bool> WaitToReadAsync(CancellationToken cancellationToken)
    {
        _kernel.CheckThread();
        if (_queueCount > 0)
        {
            return new ValueTask<bool>(true);
        }

        if (_remoteClosed)
        {
            return _remoteError ? ValueTask.FromException<bool>(ClosedForReaders()) : new ValueTask<bool>(false);
        }

        if (_released)
        {
            return new ValueTask<bool>(false);
        }

        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<bool>(cancellationToken);
        }

        CheckWaiterLimit();
        CoreOperation<bool> waiter = RentBool();
        _readWaiters.Add(waiter);
        RegisterCancellation(waiter, cancellationToken);
        return waiter.AsValueTask();
    }

    /// <summary>
    /// Waits until a <see cref="TryWrite"/> would succeed — credits in the window, room in the
    /// ring, no stalled write and no sender to that core queued ahead — (true), or returns false
    /// once completed or the other end is gone. So <c>while (await WaitToWriteAsync()) if
    /// (TryWrite(m)) break;</c> never spins on the core.
    /// </summary>
    public ValueTask<bool> WaitToWriteAsync() => WaitToWriteAsync(CancellationToken.None);

    /// <summary>As <see cref="WaitToWriteAsync()"/>, cancellable.</summary>
    public ValueTask<bool> WaitToWriteAsync(CancellationToken cancellationToken)
    {
        _kernel.CheckThread();
        ThrowIfNotConnected();
        if (_localClosed)
        {
            return _completionError is null ? new ValueTask<bool>(false) : ValueTask.FromException<bool>(_completionError);
        }

        if (_peerGone || _released)
        {
            return new ValueTask<bool>(false);
        }

        if (_credits > 0 && !_writePending && _kernel.CanSendNow(RemoteCore))
        {
            return new ValueTask<bool>(true);
        }

        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<bool>(cancellationToken);
        }

        CheckWaiterLimit();
        CoreOperation<bool> waiter = RentBool();
        _writeWaiters.Add(waiter);
        if (_credits > 0 && !_writePending)
        {
            _kernel.EnqueueStalled(this); // the ring is full or others wait ahead: told when it is our turn
        }

        RegisterCancellation(waiter, cancellationToken);
        return waiter.AsValueTask();
    }

    private void CheckWaiterLimit()
    {
        if (_readers.Count + _readWaiters.Count + _writeWaiters.Count >= _maxWaiters)
        {
            throw new InvalidOperationException($"Endpoint {Name} already has {_maxWaiters} waiters (MaxWaitersPerEndpoint).");
        }
    }

    private CoreOperation<bool> RentBool()
    {
        CoreOperation<bool> operation = _boolPool.Count > 0 ? _boolPool.Pop() : new CoreOperation<bool>(_kernel) { Owner = this };
        operation.Reset();
        return operation;
    }

    void ICoreOperationOwner.OnConsumed(object operation)
    {
        const int Retained = 4;
        if (operation is CoreOperation<Message> reader)
        {
            if (_messagePool.Count < Retained)
            {
                _messagePool.Push(reader);
            }
        }
        else if (_boolPool.Count < Retained)
        {
            _boolPool.Push((CoreOperation<bool>)operation);
        }
    }

    // The registration's state is the operation itself (nothing allocated unless it fires); the
    // callback names the operation and its version, so a late cancellation can only cancel the
    // await it was registered for. The registration is released when the operation completes.
    private static void RegisterCancellation<T>(CoreOperation<T> operation, CancellationToken cancellationToken)
    {
        if (!cancellationToken.CanBeCanceled)
        {
            return;
        }

        operation.AttachRegistration(cancellationToken.UnsafeRegister(static (s, token) =>
        {
            var op = (CoreOperation<T>)s!;
            var endpoint = (Endpoint)op.Owner!;
            _ = endpoint._kernel.TryPostInternal(static x =>
            {
                var (e, o, version, t) = ((Endpoint, CoreOperation<T>, short, CancellationToken))x!;
                e.CancelOperation(o, version, t);
            }, (endpoint, op, op.Version, token));
        }, operation));
    }

    private void CancelOperation<T>(CoreOperation<T> operation, short version, CancellationToken token)
    {
        if (!operation.IsPending || operation.Version != version)
        {
            return; // completed already, or the operation serves a later await now
        }

        bool removed = operation switch
        {
            CoreOperation<Message> reader => _readers.Remove(reader),
            CoreOperation<bool> waiter when ReferenceEquals(waiter, _writeOperation) => AbandonWrite(),
            CoreOperation<bool> waiter => _readWaiters.Remove(waiter) || _writeWaiters.Remove(waiter),
            _ => false,
        };
        if (removed)
        {
            operation.SetException(new OperationCanceledException(token));
        }
    }

    private bool AbandonWrite()
    {
        _writePending = false;
        _writeOperation = null;
        _pendingSend?.SetStatus(ActivityStatusCode.Error, "cancelled");
        EndPendingSend();
        return true;
    }

    /// <summary>Wakes waiting readers with <paramref name="exception"/> (cancellation). Core thread.</summary>
    public void CancelReaders(Exception exception)
    {
        _kernel.CheckThread();
        foreach (CoreOperation<Message> reader in _readers)
        {
            reader.SetException(exception);
        }

        _readers.Clear();
        foreach (CoreOperation<bool> waiter in _readWaiters)
        {
            waiter.SetException(exception);
        }

        _readWaiters.Clear();
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
            CoreOperation<bool> write = _writeOperation!;
            _writePending = false;
            _writeOperation = null;
            _pendingSend?.SetStatus(ActivityStatusCode.Error, exception.Message);
            EndPendingSend();
            write.SetException(exception);
        }

        foreach (CoreOperation<bool> waiter in _writeWaiters)
        {
            waiter.SetException(exception);
        }

        _writeWaiters.Clear();
        CancelGrantWaiters(exception);
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
        OwningDomain?.ForgetEndpoint(this);
        OwningDomain = null;
        CheckCompletion();
    }

    /// <inheritdoc />
    public override string ToString() => $"{Name} (core {Core} ep {Id:x} -> core {RemoteCore} ep {RemoteId:x})";
}
