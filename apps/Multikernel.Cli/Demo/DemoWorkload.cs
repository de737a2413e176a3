using Multikernel.Monitor;
using Multikernel.Monitor.Hosting;

namespace Multikernel.Cli.Demo;

/// <summary>
/// The built-in cross-core workload of <c>multikernel demo</c>: on every core a sink service and
/// one streamer per other core (so every ordered pair of cores carries a stream), plus a token
/// ring through every core. All traffic goes through monitors' bind and URPC channels.
/// </summary>
internal static class DemoWorkload
{
    public const string Sink = "demo-sink";
    public const string Streamer = "demo-stream";
    public const string RingNode = "demo-ring";
    private const ushort DataMessage = 1;
    private const ushort TokenMessage = 2;

    /// <summary>Registers the demo programs and spawns them at boot.</summary>
    public static void Configure(MultikernelOptions options, DemoCounters counters)
    {
        options.AddProgram(Sink, ctx => UntilStopped(ctx, SinkAsync));
        options.AddProgram(RingNode, ctx => UntilStopped(ctx, c => RingNodeAsync(c, counters)));
        options.AddProgram(Streamer, ctx => UntilStopped(ctx, StreamAsync));
        options.SpawnAtBoot(Sink);
        options.SpawnAtBoot(RingNode);
        options.SpawnAtBoot(Streamer);
        options.AddProgram(Holder, ctx => UntilStopped(ctx, HolderAsync));
        options.AddProgram(Revoker, ctx => UntilStopped(ctx, c => RevokerAsync(c, counters)));
    }

    public const string Holder = "demo-holder";
    public const string Revoker = "demo-revoker";

    private const int CapabilityRounds = 5;

    // Capabilities: a frame written on core 0, shared read-only with a domain on every other
    // core (each reads it in place, no copy), then revoked everywhere at once; a few rounds, so
    // the figure is not the first, cold (JIT-compiling) revoke.
    private static async Task HolderAsync(DomainContext ctx)
    {
        using ServiceListener listener = await ctx.ExportAsync($"holder-{ctx.Core}");
        DomainChannel channel = await listener.AcceptAsync(ctx.Stopping);
        for (int round = 0; round < CapabilityRounds; round++)
        {
            int slot = await channel.ReceiveCapabilityAsync();
            CpuDriver.Memory.FrameHandle frame = ctx.Capabilities.GetFrame(slot);
            await channel.Writer<long>().WriteAsync(BitConverter.ToInt64(frame.ReadOnlySpan), ctx.Stopping);
            _ = await channel.Reader<long>().ReadAsync(ctx.Stopping); // "revoked"
            bool revoked;
            try
            {
                _ = frame.ReadOnlySpan[0];
                revoked = false;
            }
            catch (CpuDriver.Capabilities.CapabilityRevokedException)
            {
                revoked = true;
            }

            await channel.Writer<long>().WriteAsync(revoked ? 1 : 0, ctx.Stopping);
        }
    }

    private static async Task RevokerAsync(DomainContext ctx, DemoCounters counters)
    {
        const long Stamp = 0x6d756c74696b726eL;
        var caps = ctx.Capabilities;
        int frame = caps.Retype(ctx.RamSlot, CpuDriver.Capabilities.CapabilityType.Frame, 1);
        BitConverter.TryWriteBytes(caps.GetFrame(frame).Span, Stamp);
        var holders = new List<DomainChannel>();
        for (int k = 1; k < ctx.CoreCount; k++)
        {
            holders.Add(await ctx.BindAsync($"holder-{k}", TimeSpan.FromSeconds(10)));
        }

        int sawIt = 0;
        int lost = 0;
        var times = new List<TimeSpan>();
        for (int round = 0; round < CapabilityRounds; round++)
        {
            foreach (DomainChannel channel in holders)
            {
                await channel.SendCapabilityAsync(frame, CpuDriver.Capabilities.TransferMode.Copy, CpuDriver.Capabilities.CapabilityRights.Read);
            }

            sawIt = 0;
            foreach (DomainChannel channel in holders)
            {
                sawIt += await channel.Reader<long>().ReadAsync(ctx.Stopping) == Stamp ? 1 : 0;
            }

            long start = System.Diagnostics.Stopwatch.GetTimestamp();
            await caps.RevokeAsync(frame, CpuDriver.Capabilities.RevokeMode.Multicast);
            times.Add(System.Diagnostics.Stopwatch.GetElapsedTime(start));
            lost = 0;
            foreach (DomainChannel channel in holders)
            {
                await channel.Writer<long>().WriteAsync(1, ctx.Stopping);
                lost += await channel.Reader<long>().ReadAsync(ctx.Stopping) == 1 ? 1 : 0;
            }
        }

        times.Sort();
        counters.Capabilities.TrySetResult((holders.Count, sawIt, lost, times[times.Count / 2]));
    }

    // Stopping is the normal end of every demo domain; whatever it interrupts is not a fault.
    private static async Task UntilStopped(DomainContext ctx, Func<DomainContext, Task> body)
    {
        try
        {
            await body(ctx);
        }
        catch (Exception ex) when (ctx.Stopping.IsCancellationRequested && ex is OperationCanceledException or MonitorException)
        {
        }
        catch (System.Threading.Channels.ChannelClosedException)
        {
            // The peer domain ended (shutdown reached its core first): this stream is over.
        }
    }

    private static string SinkName(int core) => $"sink-{core}";

    private static string RingName(int core) => $"ring-{core}";

    // A sink per core: accepts streams and consumes them as fast as they come.
    private static async Task SinkAsync(DomainContext ctx)
    {
        using ServiceListener listener = await ctx.ExportAsync(SinkName(ctx.Core), backlog: ctx.CoreCount);
        var drains = new List<Task>();
        for (int i = 0; i < ctx.CoreCount - 1; i++)
        {
            DomainChannel channel = await listener.AcceptAsync(ctx.Stopping);
            drains.Add(DrainAsync(channel, ctx.Stopping));
        }

        await Task.WhenAll(drains);
    }

    private static async Task DrainAsync(DomainChannel channel, CancellationToken stopping)
    {
        await foreach (long _ in channel.Reader<long>().ReadAllAsync(stopping))
        {
        }
    }

    // One streamer domain per core; it binds to every other core's sink and keeps each stream full.
    private static async Task StreamAsync(DomainContext ctx)
    {
        var streams = new List<Task>();
        for (int peer = 0; peer < ctx.CoreCount; peer++)
        {
            if (peer == ctx.Core)
            {
                continue;
            }

            DomainChannel channel = await ctx.BindAsync(SinkName(peer), TimeSpan.FromSeconds(30));
            streams.Add(PumpAsync(channel, ctx.Stopping));
        }

        await Task.WhenAll(streams);
    }

    private static async Task PumpAsync(DomainChannel channel, CancellationToken stopping)
    {
        var writer = channel.Writer<long>(DataMessage);
        long n = 0;
        while (!stopping.IsCancellationRequested)
        {
            await writer.WriteAsync(n++, stopping);
        }
    }

    // A token ring through every core: node k binds to node k+1 and forwards what node k-1 sends.
    private static async Task RingNodeAsync(DomainContext ctx, DemoCounters counters)
    {
        int n = ctx.CoreCount;
        if (n < 2)
        {
            return;
        }

        using ServiceListener listener = await ctx.ExportAsync(RingName(ctx.Core));
        DomainChannel next = await ctx.BindAsync(RingName((ctx.Core + 1) % n), TimeSpan.FromSeconds(30));
        DomainChannel previous = await listener.AcceptAsync(ctx.Stopping);
        var output = next.Writer<long>(TokenMessage);
        var input = previous.Reader<long>();
        if (ctx.Core == 0)
        {
            await output.WriteAsync(0, ctx.Stopping);
        }

        while (!ctx.Stopping.IsCancellationRequested)
        {
            long hops = await input.ReadAsync(ctx.Stopping);
            if (ctx.Core == 0)
            {
                counters.AddLap();
            }

            await output.WriteAsync(hops + 1, ctx.Stopping);
        }
    }
}

/// <summary>Counters the demo reads from outside the cores (written by one core only).</summary>
internal sealed class DemoCounters
{
    private long _laps;

    /// <summary>The capability step: holders, how many read the shared frame, how many lost it at the revoke, how long the revoke took.</summary>
    public TaskCompletionSource<(int Holders, int Read, int Revoked, TimeSpan Took)> Capabilities { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public long Laps => Volatile.Read(ref _laps);

    public void AddLap() => Volatile.Write(ref _laps, _laps + 1);
}
