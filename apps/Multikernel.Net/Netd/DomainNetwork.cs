using System.Threading.Channels;
using Multikernel.Monitor;
using Multikernel.Netd.Client;
using Multikernel.Netd.Daemon;

namespace Multikernel.Net.Netd;

/// <summary>How an application domain's stack attaches to netd.</summary>
public sealed class DomainNetworkOptions
{
    /// <summary>The stack's settings; <see cref="NetworkStackOptions.Address"/> is the address claimed from netd (required).</summary>
    public required NetworkStackOptions Stack { get; init; }

    /// <summary>
    /// Page buffers posted to netd for large frames. Default 256 (1 MiB of the domain's RAM; with
    /// the small buffers and transmit pages the region is 1.3 MiB of the default 2 MiB
    /// DomainMemory). The stack's receive window is capped to what they hold (see
    /// <see cref="DomainNetwork"/>). They are the receive ring's slack as well: on a shared core
    /// netd reads the device several bursts ahead of the stack (120 of 128 pages were in flight
    /// in a bulk receive over TAP), and the stack keeps unread data in pages (at most half).
    /// </summary>
    public int ReceivePages { get; init; } = 256;

    /// <summary>128-byte buffers posted for small frames. Default 128.</summary>
    public int SmallBuffers { get; init; } = 128;

    /// <summary>Transmit pages (frames in flight towards netd). Default 64.</summary>
    public int TransmitPages { get; init; } = 64;

    /// <summary>Frames the receive pump hands to the stack before it lets other work on the core run. Default 64.</summary>
    public int ReceiveBatch { get; init; } = 64;

    /// <summary>How long to wait for netd to be exported. Default 10 s.</summary>
    public TimeSpan BindTimeout { get; init; } = TimeSpan.FromSeconds(10);
}

/// <summary>
/// One application domain's network: a <see cref="NetworkStack"/> on the domain's core, fed by
/// netd. It binds netd with a <see cref="NetdClient"/> (a region of the domain's own RAM, the
/// stack's address claimed, so netd answers ARP for it), installs the one filter the stack needs
/// (<c>ip.dst == ADDRESS</c>: its TCP, UDP and ICMP), runs the stack on the core's timer wheel
/// (<see cref="DomainContext.Time"/>) and a receive pump that hands each batch of received frames
/// to the stack as one receive burst: a full-page frame in place (its payload stays in the page
/// until the application reads it, then the page goes back to netd), a small one copied into the
/// stack's pool. Everything runs on the domain's core; create it there.
/// </summary>
public sealed class DomainNetwork : IAsyncDisposable
{
    private readonly NetdClient _client;
    private readonly TimeProvider _time;
    private readonly int _transmitPages;
    private readonly int _batch;
    private readonly CancellationTokenSource _stop = new();
    private Task _pump = Task.CompletedTask;
    private bool _disposed;
    private readonly NetdPageBuffer[] _pages;
    private readonly int _holdLimit;

    private DomainNetwork(NetdClient client, NetdLinkPort link, NetworkStack stack, int batch, TimeProvider time, int transmitPages, int receivePages)
    {
        _client = client;
        _time = time;
        _transmitPages = transmitPages;
        Link = link;
        Stack = stack;
        _batch = batch;
        _holdLimit = receivePages / 2;
        _pages = new NetdPageBuffer[receivePages];
        Action released = () => PagesHeld--;
        for (int i = 0; i < _pages.Length; i++)
        {
            _pages[i] = new NetdPageBuffer(client, released);
        }
    }

    /// <summary>
    /// Smallest frame kept in its netd page rather than copied into the stack's pool: 512 bytes. A
    /// smaller one would pin a whole 4 KiB page for little data (the peer's window is in bytes).
    /// </summary>
    public const int HoldMinimum = 512;

    /// <summary>Receive pages the stack holds now (data in them not yet read, or out of order).</summary>
    public int PagesHeld { get; private set; }

    /// <summary>The most receive pages the stack held at once: fewer than half of them (<see cref="DomainNetworkOptions.ReceivePages"/> / 2).</summary>
    public int MaxPagesHeld { get; private set; }

    /// <summary>Frames the stack received in place, in the page netd wrote them to (zero-copy); the rest were copied into its pool.</summary>
    public long FramesReceivedInPlace { get; private set; }

    /// <summary>The stack (use it on this core only; its sockets' adapters marshal from elsewhere).</summary>
    public NetworkStack Stack { get; }

    /// <summary>The link towards netd.</summary>
    public NetdLinkPort Link { get; }

    /// <summary>How long disposing waits for the frames in flight to be sent. 1 s.</summary>
    public static readonly TimeSpan TransmitDrainTimeout = TimeSpan.FromSeconds(1);

    /// <summary>The filter netd installed for this stack.</summary>
    public int FilterId { get; private set; }

    /// <summary>Frames received from netd and handed to the stack.</summary>
    public long FramesReceived { get; private set; }

    /// <summary>Why the receive pump stopped early (netd went away), or null while it runs.</summary>
    public Exception? Fault { get; private set; }

    /// <summary>Binds netd, claims the address, installs the filter, starts the stack (a gratuitous ARP) and its receive pump.</summary>
    public static async Task<DomainNetwork> StartAsync(DomainContext ctx, DomainNetworkOptions options)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(options.Stack);
        options.Stack.Validate();
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.ReceiveBatch);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.ReceivePages, 2);
        if (SynchronizationContext.Current is null)
        {
            throw new InvalidOperationException("A domain's network starts on its core (from the domain's own code).");
        }

        NetdClient client = await NetdClient.ConnectAsync(ctx, new NetdClientOptions
        {
            Address = options.Stack.Address,
            ReceivePages = options.ReceivePages,
            SmallBuffers = options.SmallBuffers,
            TransmitPages = options.TransmitPages,
            BindTimeout = options.BindTimeout,
        });
        NetworkStack? stack = null;
        try
        {
            int filter = await client.InstallFilterAsync($"ip.dst == {options.Stack.Address}");
            var link = new NetdLinkPort(client);
            // A window larger than the posted buffers invites a burst netd must drop (no buffer):
            // one connection's window never promises more than the pages netd can fill.
            int fits = options.ReceivePages * (client.Mtu - 40);
            if (options.Stack.ReceiveBufferSize > fits)
            {
                options.Stack.ReceiveBufferSize = Math.Max(fits, 2 * (client.Mtu - 40));
            }

            stack = new NetworkStack(options.Stack, link, ctx.Time);
            var network = new DomainNetwork(client, link, stack, options.ReceiveBatch, ctx.Time, options.TransmitPages, options.ReceivePages) { FilterId = filter };
            stack.Start();
            network._pump = network.PumpAsync();
            return network;
        }
        catch
        {
            stack?.Dispose();
            await client.DisposeAsync();
            throw;
        }
    }

    private async Task PumpAsync()
    {
        CancellationToken stop = _stop.Token;
        try
        {
            while (true)
            {
                await _client.WaitToReceiveAsync(stop);
                int n = 0;
                Stack.BeginReceiveBurst();
                try
                {
                    while (n < _batch && _client.TryReceive(out ReceivedFrame frame))
                    {
                        Receive(in frame);
                        n++;
                    }
                }
                finally
                {
                    FramesReceived += n;
                    // One ACK per connection for the batch; and frames in usually mean transmit
                    // pages home (netd returns them as it sends): connections that held data back go now.
                    Stack.EndReceiveBurst();
                }

                if (n == _batch)
                {
                    await Task.Yield(); // a burst: let timers and the applications run between batches
                }
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
        catch (Exception e) when (e is NetdException or ChannelClosedException)
        {
            Fault = e;
        }
    }

    // A frame of a full page stays in it while the stack holds its data (the page goes back to
    // netd when the application has read it: NetdPageBuffer); a small one is copied into the
    // stack's pool and its buffer goes back at once — and so is any frame while the pages held
    // plus the frames netd delivered that this pump has not reached yet come to half the pages.
    // Those frames are the ring's slack: on a shared core netd reads the device several bursts
    // ahead of the pump (up to 120 of the 128 pages in flight in a bulk receive over TAP), and
    // a stack that held a fixed half regardless left netd without buffers: drops, holes, a
    // duplicate ACK per segment behind each. So netd always keeps half the pages posted or on
    // their way to the pump: a bulk stream is copied, a trickle (or the head of a burst) stays in
    // place, and an application that does not read makes its stack copy (then drop, counted,
    // when the pool is empty) instead of starving netd.
    private void Receive(in ReceivedFrame frame)
    {
        Descriptor d = frame.Descriptor;
        if (!frame.IsSmall && d.Length >= HoldMinimum && PagesHeld + _client.PendingReceives < _holdLimit && d.Tag < (uint)_pages.Length)
        {
            NetdPageBuffer page = _pages[(int)d.Tag];
            page.Attach(in frame);
            if (++PagesHeld > MaxPagesHeld)
            {
                MaxPagesHeld = PagesHeld;
            }

            FramesReceivedInPlace++;
            Stack.Receive(page, (int)d.Length); // its reference is dropped on return; kept slices hold the page
        }
        else
        {
            Stack.Receive(frame.Span);
            _client.Release(frame);
        }
    }

    /// <summary>
    /// Closes every connection so no peer is left hanging: listeners stop, each connection gets
    /// a FIN after its queued data, and whatever has not finished after <paramref name="timeout"/>
    /// is reset (<see cref="NetworkStack.ShutdownAsync"/>). The pump keeps running meanwhile, so
    /// the peers' FINs and ACKs arrive.
    /// </summary>
    /// <remarks>
    /// Then the stack stays up for <see cref="ShutdownLinger"/>: a RST it sent may have landed
    /// beside the peer's RCV.NXT (after a retransmission), and the peer answers it with a challenge
    /// ACK (RFC 5961) or keeps probing; only a live stack answers those with the exact RST that
    /// ends the peer's side. A stack gone silent would leave that peer hanging.
    /// </remarks>
    public async ValueTask ShutdownAsync(TimeSpan timeout)
    {
        bool hadConnections = Stack.ConnectionCount > 0;
        await Stack.ShutdownAsync(timeout);
        if (hadConnections)
        {
            await Task.Delay(ShutdownLinger, _time);
        }
    }

    /// <summary>How long the stack keeps answering after its shutdown completed. 500 ms.</summary>
    public static readonly TimeSpan ShutdownLinger = TimeSpan.FromMilliseconds(500);

    /// <summary>
    /// Waits (at most <see cref="TransmitDrainTimeout"/>) until netd has sent every frame handed to
    /// it — the last FINs, ACKs and RSTs of a shutdown — then stops the pump, disposes the stack and
    /// unbinds netd (the region is deleted: netd loses it at once).
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        long deadline = _time.GetTimestamp() + (long)(TransmitDrainTimeout.TotalSeconds * _time.TimestampFrequency);
        while (Fault is null && _client.FreeTransmitBuffers < _transmitPages && _time.GetTimestamp() < deadline)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(1), _time);
        }

        _stop.Cancel(); // on the core: the pump's wait ends here, not on the thread pool
        await _pump;
        Stack.Dispose();
        await _client.DisposeAsync();
        _stop.Dispose();
    }
}
