using Microsoft.Extensions.Hosting;

namespace Multikernel.Monitor.Hosting;

/// <summary>Boots the machine when the host starts and shuts it down gracefully when it stops.</summary>
internal sealed class MultikernelHostedService : IHostedService
{
    private readonly MultikernelRuntime _runtime;

    public MultikernelHostedService(MultikernelRuntime runtime) => _runtime = runtime;

    public Task StartAsync(CancellationToken cancellationToken) => _runtime.StartAsync(cancellationToken);

    public Task StopAsync(CancellationToken cancellationToken) => _runtime.StopAsync(CancellationToken.None);
}
