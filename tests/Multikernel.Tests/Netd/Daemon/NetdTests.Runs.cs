using Multikernel.CpuDriver.Capabilities;
using Multikernel.CpuDriver.Memory;
using Multikernel.CpuDriver.Urpc;
using Multikernel.Monitor;
using Multikernel.Netd.Daemon;

namespace Multikernel.Tests.Netd.Daemon;

/// <summary>
/// Runs of small-buffer posts (<see cref="NetdMessages.PostSmallRun"/>) from a hostile domain: each
/// slot is checked as a post of its own (a slot netd already holds is refused alone, the others
/// are taken), and a run of no whole slots or of too many is refused whole, in one completion.
/// </summary>
public sealed partial class NetdTests
{
    [Fact]
    public async Task ARunOfSmallPosts_IsCheckedSlotBySlot_AndAMalformedRunIsRefusedWhole()
    {
        var outcome = new TaskCompletionSource<string[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using Rig rig = await StartAsync(o =>
        {
            o.AddProgram("runs", async ctx =>
            {
                try
                {
                    await using DomainChannel channel = await ctx.BindAsync(NetdMessages.ServiceName, Patience);
                    await channel.Endpoint.ReadAsync(); // Hello
                    int region = ctx.Capabilities.Retype(ctx.RamSlot, CapabilityType.Frame, 4);
                    await channel.SendCapabilityAsync(region, TransferMode.Copy, CapabilityRights.Read | CapabilityRights.Write);
                    await channel.Endpoint.WriteAsync(Message.Create(NetdMessages.AddRegion, 7));
                    ushort id = (ushort)(await channel.Endpoint.ReadAsync()).Word1;
                    const uint Base = PhysicalMemory.FrameSize;
                    const uint Slot = NetdLimits.SmallPacket;
                    Message[] requests =
                    [
                        new Descriptor(id, DescriptorFlags.Small, Base + Slot, Slot, 11).ToMessage(NetdMessages.PostSmall),               // held first
                        new Descriptor(id, DescriptorFlags.Small, Base, 3 * Slot, 10).ToMessage(NetdMessages.PostSmallRun),            // slots 10, 11 (held: refused), 12
                        new Descriptor(id, DescriptorFlags.Small, Base + (8 * Slot), 100, 20).ToMessage(NetdMessages.PostSmallRun),      // no whole slot: refused whole
                        new Descriptor(id, DescriptorFlags.Small, Base, (NetdLimits.MaxSmallRun + 1) * Slot, 30).ToMessage(NetdMessages.PostSmallRun), // too many: refused whole
                    ];
                    foreach (Message m in requests)
                    {
                        await channel.Endpoint.WriteAsync(m);
                    }

                    var seen = new List<string>();
                    for (int i = 0; i < 3; i++)
                    {
                        Message m = await channel.Endpoint.ReadAsync().AsTask().WaitAsync(Patience);
                        seen.Add($"{Descriptor.From(in m).Tag}:{(NetdStatus)m.Word2}");
                    }

                    outcome.SetResult([.. seen]);
                    await Task.Delay(Timeout.Infinite, ctx.Stopping);
                }
                catch (OperationCanceledException) when (ctx.Stopping.IsCancellationRequested)
                {
                }
                catch (Exception ex)
                {
                    outcome.TrySetException(ex);
                }
            });
            o.SpawnAtBoot("runs", core: 0);
        });
        string[] seen = await outcome.Task.WaitAsync(Patience);
        Assert.Equal(["11:BadDescriptor", "20:BadDescriptor", "30:BadDescriptor"], seen);
        await Eventually(() => Stats(rig) is { PostedSmall: 3 }, () => $"netd holds slots 11, 10 and 12 ({Stats(rig)})");
        Assert.Equal(3 * NetdLimits.SmallPacket, Stats(rig).HeldBytes);
    }
}
