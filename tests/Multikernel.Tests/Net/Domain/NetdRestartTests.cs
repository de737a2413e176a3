using System.Security.Cryptography;
using Multikernel.Net;
using Multikernel.Net.Tcp;

namespace Multikernel.Tests.Net.Domain;

/// <summary>
/// Seed 003 for the stack: netd restarts while a TCP connection to an application domain is
/// established. The application's stack binds the new netd (its NetdClient re-registers), and
/// the connection carries on: retransmission covers what was lost meanwhile, byte-exact.
/// </summary>
public sealed class NetdRestartTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task AnEstablishedConnection_SurvivesANetdRestart_ByteExact()
    {
        await using DomainNetworkTests.Rig rig = await DomainNetworkTests.StartAsync();
        byte[] first = RandomNumberGenerator.GetBytes(200_000);
        byte[] second = RandomNumberGenerator.GetBytes(200_000);
        var received = new MemoryStream();
        TcpConnection connection = await rig.Peer.RunAsync(s => s.ConnectAsync(new Ipv4Endpoint(DomainNetworkTests.EchoIp, 7)).AsTask()).WaitAsync(Patience);
        Task reading = rig.Peer.RunAsync(_ => DomainNetworkTests.ReadToEndAsync(connection, received));
        await rig.Peer.RunAsync(async _ => await connection.WriteAsync(first)).WaitAsync(Patience);
        await TestMachine.EventuallyAsync(() => rig.Peer.RunAsync(_ => Task.FromResult(received.Length)).Result == first.Length, "the first half echoed before the restart");
        ulong before = rig.Host.DomainId;

        await rig.Host.RestartAsync(rig.Runtime, Patience);
        Assert.NotEqual(before, rig.Host.DomainId);

        // Written while the application's stack is binding the new netd: some segments are lost
        // on the way, retransmission brings them through.
        await rig.Peer.RunAsync(async _ =>
        {
            await connection.WriteAsync(second);
            connection.Shutdown();
        }).WaitAsync(Patience);
        await reading.WaitAsync(Patience);

        byte[] all = received.ToArray();
        Assert.Equal(first.Length + second.Length, all.Length);
        Assert.True(all.AsSpan(0, first.Length).SequenceEqual(first), "the bytes before the restart differ");
        Assert.True(all.AsSpan(first.Length).SequenceEqual(second), "the bytes after the restart differ");
        Assert.Equal(2, rig.Host.Starts);
    }
}
