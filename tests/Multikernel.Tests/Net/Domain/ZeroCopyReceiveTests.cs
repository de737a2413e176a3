using System.Security.Cryptography;
using Multikernel.Net;
using Multikernel.Net.Netd;
using Multikernel.Net.Tcp;

namespace Multikernel.Tests.Net.Domain;

/// <summary>
/// Received data stays in the pages netd wrote it to until the application reads it (DESIGN.md §7,
/// issue 10): the stack holds slices of the consumer's own receive pages, and each page goes back
/// to netd when its last byte is read. Bounded: the stack holds at most half the pages, and copies
/// beyond that, so netd always has buffers for the segment that fills a hole.
/// </summary>
public sealed class ZeroCopyReceiveTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    private sealed record Held(int PagesHeld, int MaxPagesHeld, long InPlace, int Unread);

    [Fact]
    public async Task UnreadData_StaysInNetdsPages_AtMostHalfOfThem_AndThePagesGoBackWhenRead()
    {
        const int Bytes = 240_000; // ~166 full segments, inside the 256 KiB window: more than half the 256 pages
        var options = new DomainNetworkOptions { Stack = new NetworkStackOptions { Address = DomainNetworkTests.CopyIp } };
        var listening = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var beforeRead = new TaskCompletionSource<Held>(TaskCreationOptions.RunContinuationsAsynchronously);
        var afterRead = new TaskCompletionSource<(Held Held, byte[] Data)>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using DomainNetworkTests.Rig rig = await DomainNetworkTests.StartAsync(programs: o =>
        {
            o.AddProgram("holder", async ctx =>
            {
                try
                {
                    await using DomainNetwork net = await DomainNetwork.StartAsync(ctx, options);
                    using Multikernel.Net.Tcp.TcpListener listener = net.Stack.Listen(9);
                    listening.SetResult();
                    TcpConnection c = await listener.AcceptAsync(ctx.Stopping);
                    // Read nothing until everything has arrived.
                    while (c.UnreadBytes < Bytes)
                    {
                        await ctx.Delay(TimeSpan.FromMilliseconds(2));
                    }

                    beforeRead.SetResult(new Held(net.PagesHeld, net.MaxPagesHeld, net.FramesReceivedInPlace, c.UnreadBytes));
                    var data = new MemoryStream();
                    byte[] buffer = new byte[8192];
                    while (data.Length < Bytes)
                    {
                        int n = await c.ReadAsync(buffer, ctx.Stopping);
                        data.Write(buffer, 0, n);
                    }

                    afterRead.SetResult((new Held(net.PagesHeld, net.MaxPagesHeld, net.FramesReceivedInPlace, c.UnreadBytes), data.ToArray()));
                    c.Close();
                    await net.ShutdownAsync(TimeSpan.FromSeconds(2));
                }
                catch (Exception ex)
                {
                    listening.TrySetException(ex);
                    beforeRead.TrySetException(ex);
                    afterRead.TrySetException(ex);
                }
            });
            o.SpawnAtBoot("holder", core: 0);
        });
        await listening.Task.WaitAsync(Patience);
        byte[] sent = RandomNumberGenerator.GetBytes(Bytes);
        await rig.Peer.RunAsync(async s =>
        {
            TcpConnection c = await s.ConnectAsync(new Ipv4Endpoint(DomainNetworkTests.CopyIp, 9));
            await c.WriteAsync(sent);
        }).WaitAsync(Patience);

        Held before = await beforeRead.Task.WaitAsync(Patience);
        int half = options.ReceivePages / 2;
        // Pages hold data (the first full segments, in place), never half of them or more (with
        // the frames still on their way to the pump); the rest was copied.
        Assert.True(before.PagesHeld > half / 2, $"only {before.PagesHeld} pages hold data");
        Assert.True(before.MaxPagesHeld <= half, $"{before.MaxPagesHeld} pages held at once, more than half");
        Assert.True(before.InPlace >= before.PagesHeld, $"{before.PagesHeld} pages held, {before.InPlace} frames received in place");
        Assert.True(before.MaxPagesHeld > half * 3 / 4, $"the stack held at most {before.MaxPagesHeld} pages: the limit was not reached");

        (Held after, byte[] received) = await afterRead.Task.WaitAsync(Patience);
        Assert.True(sent.AsSpan().SequenceEqual(received), "the data read from the pages differs from what was sent");
        Assert.Equal(0, after.PagesHeld); // every page went back to netd as its data was read
        Assert.Equal(0, after.Unread);
        // And netd has every page of every consumer posted again (the holder's included).
        await TestMachine.EventuallyAsync(
            () => rig.Host.ConsumerStatsAsync().Result is { Length: >= 4 } all && all.All(c => c.PostedPages == options.ReceivePages),
            "netd to hold every receive page again");
    }
}
