using Multikernel.CpuDriver.Capabilities;

namespace Multikernel.Monitor;

/// <summary>
/// Capabilities passed over a bound channel. A channel is the only way a domain names another
/// domain to give it a capability: the receiver is whoever holds the other end (resolved by the
/// receiving core's kernel from its end of the channel), never a (core, domain) pair the sender
/// chooses. The receiving kernel installs the capability and queues a grant for this channel in
/// the receiver's CSpace; the receiver learns the slot from its own kernel, never from a message
/// the peer wrote, so no slot number crosses the channel and data messages and grants share it
/// freely (a reader of data never sees grants, a receiver of grants never consumes data).
/// </summary>
public sealed partial class DomainChannel
{
    private TaskCompletionSource? _grantWaiter;

    /// <summary>
    /// Passes the capability in <paramref name="slot"/> of this domain's CSpace to the domain at
    /// the other end, as a copy (rights diminished to <paramref name="rights"/>; by default
    /// Read, Write and Grant without Revoke, so the receiver cannot revoke what it was given) or a
    /// move (by default with the rights it has). Completes when the
    /// receiver's kernel has installed it (the receiver then takes it with
    /// <see cref="ReceiveCapabilityAsync"/>). Needs the Grant right.
    /// <para>
    /// Flow-controlled like data: while the receiver has not taken the last
    /// <c>ChannelGrantWindow</c> capabilities sent on this channel, the send <b>stalls</b> (does
    /// not complete) until it takes one, the channel closes (<see cref="System.Threading.Channels.ChannelClosedException"/>)
    /// or <paramref name="cancellationToken"/> fires. Fails with a clear
    /// <see cref="CapabilityException"/> when the receiver has no room in its CSpace, or more grants
    /// untaken across all its channels than its share (GrantsPerDomain).
    /// </para>
    /// </summary>
    public async Task SendCapabilityAsync(int slot, TransferMode mode = TransferMode.Copy, CapabilityRights? rights = null, CancellationToken cancellationToken = default)
    {
        CSpace space = _domain.Capabilities ?? throw new InvalidOperationException($"{_domain} has no capability space.");
        if (RemoteDomain < 0)
        {
            throw new InvalidOperationException($"The other end of {Service} has no capability space to receive into.");
        }

        CapabilityRights granted = rights ?? (mode == TransferMode.Move ? CapabilityRights.All : CapabilityRights.Read | CapabilityRights.Write | CapabilityRights.Grant);
        if (mode == TransferMode.Copy && rights is null)
        {
            // The default copy: what the sender has, less Revoke.
            granted = space.Inspect(slot).Rights & ~CapabilityRights.Revoke;
        }

        // Checked before waiting: a send that would be refused anyway fails now, not after the stall.
        _ = space.Inspect(slot);
        await Endpoint.AcquireGrantCreditAsync(cancellationToken);
        try
        {
            await space.TransferAsync(slot, RemoteCore, Endpoint.RemoteId, mode, granted);
        }
        catch
        {
            // Nothing reached the receiver's queue: the credit is the sender's again.
            Endpoint.RefundGrantCredit();
            throw;
        }
    }

    /// <summary>The slot of a capability received on this channel, if one is waiting (one that was revoked before it was taken is skipped).</summary>
    public bool TryReceiveCapability(out int slot)
    {
        CSpace space = _domain.Capabilities ?? throw new InvalidOperationException($"{_domain} has no capability space.");
        slot = space.TakeGrant(Endpoint.Id, out int dequeued);
        Endpoint.ReturnGrantCredits(dequeued);
        return slot >= 0;
    }

    /// <summary>Waits for a capability from the other end and returns its slot in this domain's CSpace (learned from this core's kernel).</summary>
    public async Task<int> ReceiveCapabilityAsync(CancellationToken cancellationToken = default)
    {
        CSpace space = _domain.Capabilities ?? throw new InvalidOperationException($"{_domain} has no capability space.");
        while (true)
        {
            int slot = space.TakeGrant(Endpoint.Id, out int dequeued);
            Endpoint.ReturnGrantCredits(dequeued);
            if (slot >= 0)
            {
                return slot;
            }

            if (_grantWaiter is not null)
            {
                throw new InvalidOperationException($"Another ReceiveCapabilityAsync on {Service} is already waiting.");
            }

            // Woken by the kernel when it queues a grant for this channel (on this core's thread).
            var waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _grantWaiter = waiter;
            Action<uint> wake = channel =>
            {
                if (channel == Endpoint.Id)
                {
                    waiter.TrySetResult();
                }
            };
            space.GrantQueued += wake;
            try
            {
                await waiter.Task.WaitAsync(cancellationToken);
            }
            finally
            {
                space.GrantQueued -= wake;
                _grantWaiter = null;
            }
        }
    }
}
