using Microsoft.Extensions.Hosting;
using Multikernel.Apps.Kv;
using Multikernel.Apps.Kv.Store;
using Multikernel.Monitor;
using Multikernel.Monitor.Hosting;
using Multikernel.Net;
using Multikernel.Net.Netd;
using Multikernel.Netd.Wire;

namespace Multikernel.Cli.Apps;

/// <summary>What every application domain shares: the subnet, the HTTP root, how long closing may take.</summary>
internal sealed class NetworkAppsSettings
{
    /// <summary>Prefix length of the applications' subnet (from <c>--host-ip</c> when given). Default 24.</summary>
    public int PrefixLength { get; init; } = 24;

    /// <summary>Default gateway of the stacks. Default none (the subnet only).</summary>
    public Ipv4Address Gateway { get; init; }

    /// <summary><c>--http-root</c>: the directory the http application serves; null = the built-in site.</summary>
    public string? HttpRoot { get; init; }

    /// <summary>How long the connections get to close with FIN at shutdown before the rest are reset. Default 2 s.</summary>
    public TimeSpan CloseTimeout { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>How the stacks are set up beyond address, prefix and gateway (tests shorten timers). Default none.</summary>
    public Action<NetworkStackOptions>? ConfigureStack { get; init; }
}

/// <summary>
/// The host's side of the network applications: one domain per <see cref="NetworkAppSpec"/>,
/// each on its own core with its own stack over netd. The host learns when each is listening,
/// and at shutdown it asks them to close their connections (FIN, RST after
/// <see cref="NetworkAppsSettings.CloseTimeout"/>) <em>before</em> the machine stops — netd stops
/// with the machine, so a FIN sent after that would never reach the peer.
/// </summary>
internal sealed class NetworkApps
{
    private readonly NetworkAppsSettings _settings;
    private readonly Dictionary<NetworkAppSpec, AppState> _states = [];
    private readonly TaskCompletionSource _drain = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private KvStore? _kvStore;
    private NetworkStackMetrics? _stackMetrics;

    public NetworkApps(IReadOnlyList<NetworkAppSpec> specs, NetworkAppsSettings settings)
    {
        ArgumentNullException.ThrowIfNull(specs);
        ArgumentNullException.ThrowIfNull(settings);
        Specs = specs;
        _settings = settings;
        foreach (NetworkAppSpec spec in specs)
        {
            _states.Add(spec, new AppState());
        }
    }

    public IReadOnlyList<NetworkAppSpec> Specs { get; }

    /// <summary>The limits of the kv store (shared by every kv application). Default <see cref="KvOptions"/>' defaults.</summary>
    public KvOptions KvOptions { get; } = new();

    /// <summary>The applications' stacks' instruments in the machine's <c>Multikernel</c> meter (null until it booted).</summary>
    public NetworkStackMetrics? StackMetrics => Volatile.Read(ref _stackMetrics);

    /// <summary>The machine's kv store once booted (null before, or when no kv application is configured).</summary>
    public KvStore? KvStore => Volatile.Read(ref _kvStore);

    /// <summary>
    /// Registers one program per application and spawns it at boot on its core. With any kv
    /// application, the sharded kv store starts once the machine has booted (a shard on every
    /// core) before the applications spawn; every kv application serves from it.
    /// </summary>
    public void Register(MultikernelOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.OnBooted((runtime, _) =>
        {
            Volatile.Write(ref _stackMetrics, new NetworkStackMetrics(runtime.Metrics.Meter, runtime.Cores));
            return Task.CompletedTask;
        });
        if (Specs.Any(s => s.Name == "kv"))
        {
            options.OnBooted(async (runtime, cancellationToken) =>
                Volatile.Write(ref _kvStore, await KvStore.StartAsync(runtime, KvOptions, cancellationToken: cancellationToken)));
        }

        foreach (NetworkAppSpec spec in Specs)
        {
            options.AddProgram(spec.ProgramName, ctx => RunAsync(spec, ctx));
            options.SpawnAtBoot(spec.ProgramName, spec.Core);
        }
    }

    /// <summary>Completes when every application listens (faults with the first one that could not start).</summary>
    public Task WhenReadyAsync() => Task.WhenAll(_states.Values.Select(s => s.Ready.Task));

    /// <summary>The last counters each application's domain published (read on the host; refreshed every 100 ms and at the end).</summary>
    public AppSnapshot Snapshot(NetworkAppSpec spec) => Volatile.Read(ref _states[spec].Snapshot);

    /// <summary>
    /// Asks every application to close its connections (FIN; RST for what has not finished after
    /// the close timeout) and waits until every domain has done so, at most <paramref name="timeout"/>.
    /// </summary>
    public async Task<bool> DrainAsync(TimeSpan timeout)
    {
        _drain.TrySetResult();
        Task finished = Task.WhenAll(_states.Values.Select(s => s.Finished.Task));
        try
        {
            await finished.WaitAsync(timeout);
            return true;
        }
        catch (TimeoutException)
        {
            return false;
        }
    }

    private async Task RunAsync(NetworkAppSpec spec, DomainContext ctx)
    {
        AppState state = _states[spec];
        try
        {
            var stackOptions = new NetworkStackOptions
            {
                Address = spec.Address,
                PrefixLength = _settings.PrefixLength,
                Gateway = _settings.Gateway,
                Metrics = StackMetrics,
                Name = spec.ProgramName,
            };
            _settings.ConfigureStack?.Invoke(stackOptions);
            await using DomainNetwork network = await DomainNetwork.StartAsync(ctx, new DomainNetworkOptions { Stack = stackOptions });
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ctx.Stopping);
            INetworkApp app = spec.Name switch
            {
                "echo" => new EchoApp(network.Stack, spec.Port),
                "discard" => new DiscardApp(network.Stack, spec.Port),
                "http" => new HttpApp(network.Stack, spec.Port, _settings.HttpRoot, ctx.Time),
                "kv" => new KvApp(network.Stack, spec.Port, (KvStore ?? throw new InvalidOperationException("The kv store is not started (NetworkApps.Register adds it as a boot step).")).CreateServer(ctx)),
                _ => throw new InvalidOperationException($"Unknown application '{spec.Name}'."),
            };
            Task serving = app.RunAsync(stop.Token);
            Publish(state, network, app);
            state.Ready.TrySetResult();

            // Serve until the host drains the applications (netd still runs) or the machine stops.
            Task stopping = Task.Delay(Timeout.Infinite, ctx.Stopping);
            while (!_drain.Task.IsCompleted && !ctx.Stopping.IsCancellationRequested)
            {
                await Task.WhenAny(_drain.Task, stopping, ctx.Delay(TimeSpan.FromMilliseconds(100)).AsTask());
                Publish(state, network, app);
            }

            app.StopAccepting();
            await network.ShutdownAsync(_settings.CloseTimeout);
            stop.Cancel(); // on the core: the applications' cancellations run here, not on the thread pool
            await serving;
            Publish(state, network, app);
        }
        catch (Exception ex)
        {
            state.Ready.TrySetException(ex);
            throw;
        }
        finally
        {
            state.Finished.TrySetResult();
        }
    }

    private static void Publish(AppState state, DomainNetwork network, INetworkApp app)
    {
        NetworkCounters c = network.Stack.Counters;
        Volatile.Write(ref state.Snapshot, new AppSnapshot(
            network.Stack.ConnectionCount, c.TcpSegmentsReceived, c.TcpSegmentsSent, c.TcpRetransmits, network.FramesReceived,
            network.Link.Transmitted, network.Link.Busy, app.Served, Describe(network.Stack), Drops(network.Stack), c.TcpTimeouts, c.TcpFastRetransmits));
    }

    // Drops by reason, "" for none.
    private static string Drops(NetworkStack stack)
    {
        var text = new System.Text.StringBuilder();
        foreach (DropReason reason in Enum.GetValues<DropReason>())
        {
            if (stack.Counters.Drops(reason) is long n and > 0)
            {
                text.Append(System.Globalization.CultureInfo.InvariantCulture, $"{(text.Length > 0 ? " " : "")}{reason}={n}");
            }
        }

        return text.ToString();
    }

    // Drops by reason and each connection's state, for diagnostics (made on the app's core, read on the host).
    private static string Describe(NetworkStack stack)
    {
        var text = new System.Text.StringBuilder(Drops(stack));
        text.Append(' ');
        foreach (Net.Tcp.TcpConnection c in stack.ConnectionsSnapshot())
        {
            text.Append(System.Globalization.CultureInfo.InvariantCulture, $"[{c.State} cwnd={c.CongestionWindow} unsent={c.BufferedToSend} unread={c.UnreadBytes}] ");
        }

        return text.ToString();
    }

    private sealed class AppState
    {
        public readonly TaskCompletionSource Ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public readonly TaskCompletionSource Finished = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public AppSnapshot Snapshot = new();
    }
}

/// <summary>An application's counters as its domain last published them.</summary>
internal sealed record AppSnapshot(int Connections = 0, long SegmentsReceived = 0, long SegmentsSent = 0, long Retransmits = 0,
    long FramesReceived = 0, long FramesSent = 0, long TransmitBusy = 0, long Served = 0, string Detail = "", string Drops = "",
    long Timeouts = 0, long FastRetransmits = 0);

/// <summary>Waits for the applications to listen at start, and drains them before the machine stops.</summary>
internal sealed class NetworkAppsHostedService(NetworkApps apps, TimeSpan startTimeout) : IHostedService
{
    // Registered after the machine's hosted service: it starts after the machine booted and stops before it.
    public async Task StartAsync(CancellationToken cancellationToken) => await apps.WhenReadyAsync().WaitAsync(startTimeout, cancellationToken);

    public async Task StopAsync(CancellationToken cancellationToken) => await apps.DrainAsync(TimeSpan.FromSeconds(30));
}
