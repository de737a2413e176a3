using Multikernel.CpuDriver.Diagnostics;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.CpuDriver.Capabilities;

// The outbox: protocol messages waiting for the kernel loop to flush them onto the rings.
// Bounded, and shared out: a domain's operations may hold at most OutboxShare messages in it
// (billed to the domain, released as they are flushed); multi-message streams (MARK/COMMIT) keep
// half of it free; every handler needs at most _reserve slots. So neither one domain nor a
// revoke stream can take the room another domain's operation or a reply needs.
public sealed partial class CoreCapabilities
{
    private int[] _outCore = [];
    private int[] _outDomain = [];
    private Message[] _outMessages = [];
    private int _outHead;
    private int _outCount;
    private int _reserve;
    private int _outboxShare;

    private void InitializeOutbox()
    {
        _outCore = new int[_options.OutboxCapacity];
        _outDomain = new int[_options.OutboxCapacity];
        _outMessages = new Message[_options.OutboxCapacity];
        // The most messages one handled message or one domain operation can queue at once.
        _reserve = _options.MulticastFanout + 4;
        _outboxShare = _options.OutboxShare;
    }

    /// <summary>Protocol messages waiting to be sent.</summary>
    public int OutboxCount => _outCount;

    private int OutboxFree => _outCore.Length - _outCount;

    private void Dequeue()
    {
        int domain = _outDomain[_outHead];
        if (domain >= 0 && _domains[domain] is { } cs)
        {
            cs.OutboxUsed--;
        }

        _outHead = (_outHead + 1) % _outCore.Length;
        _outCount--;
    }

    /// <summary>Queues a message the kernel itself sends (a protocol step, not billed to a domain).</summary>
    private void Send(int core, in Message message) => Send(core, in message, null);

    /// <summary>Queues a message; <paramref name="billed"/> is the domain whose operation caused it (its outbox share pays).</summary>
    private void Send(int core, in Message message, CSpace? billed)
    {
        // Every caller checked for room first; reaching this is a protocol bug, not load.
        Invariant(_outCount < _outCore.Length, "the outbox overflowed");
        int tail = (_outHead + _outCount) % _outCore.Length;
        _outCore[tail] = core;
        _outDomain[tail] = billed?.Id ?? -1;
        if (billed is not null)
        {
            billed.OutboxUsed++;
        }

        _outMessages[tail] = message;
        // Carry the trace of whatever caused this message (a domain's revoke, a protocol step on
        // this core), so one trace follows the operation to every core and back.
        MessageTracing.InjectCurrent(ref _outMessages[tail]);
        _outCount++;
    }

    /// <summary>Throws unless <paramref name="cs"/> may queue one more message now (its share, and the outbox's reserve).</summary>
    private void EnsureOutbox(CSpace cs, string operation)
    {
        if (cs.OutboxUsed >= _outboxShare)
        {
            throw new CapabilityBusyException($"{cs} already has {cs.OutboxUsed} capability protocol messages queued (its share of core {Core}'s outbox, OutboxShare = {_outboxShare}); the {operation} cannot start now. Retry after the kernel loop has flushed them.");
        }

        if (OutboxFree < _reserve + 1)
        {
            throw new CapabilityBusyException($"Core {Core}'s capability protocol outbox is full ({_outCore.Length} messages); the {operation} cannot start now. Retry after the kernel loop has flushed it.");
        }
    }
}
