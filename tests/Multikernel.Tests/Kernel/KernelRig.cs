using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Kernel;

namespace Multikernel.Tests.Kernel;

/// <summary>
/// A bare machine of real kernels (no monitors): cores started, work run on them, channels
/// connected by hand. Disposal halts and joins every core before the rings are freed.
/// </summary>
internal sealed class KernelRig : IDisposable
{
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(15);

    public KernelRig(int cores, Action<KernelOptions>? configure = null)
    {
        var options = new KernelOptions { PinThreads = false, MaxPark = TimeSpan.FromSeconds(5) };
        configure?.Invoke(options);
        Machine = new Machine(cores, options, TimeProvider.System, cpuCount: 2);
        try
        {
            for (int i = 0; i < cores; i++)
            {
                Machine.StartCore(i);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public Machine Machine { get; }

    public CoreKernel this[int core] => Machine.Kernels[core];

    /// <summary>Runs <paramref name="work"/> on <paramref name="core"/> and waits (bounded) for its result.</summary>
    public Task<T> On<T>(int core, Func<Task<T>> work) => Machine.Kernels[core].RunAsync(work).WaitAsync(Patience);

    public Task<T> On<T>(int core, Func<T> work) => Machine.Kernels[core].RunAsync(work).WaitAsync(Patience);

    /// <summary>Creates an endpoint on each core and connects them (the monitor's bind, by hand).</summary>
    public async Task<(Endpoint A, Endpoint B)> ConnectAsync(int coreA, int coreB, string name = "test")
    {
        Endpoint a = await On(coreA, () => this[coreA].CreateEndpoint($"{name} a"));
        Endpoint b = await On(coreB, () => this[coreB].CreateEndpoint($"{name} b"));
        await On(coreA, () => { a.Connect(coreB, b.Id); return 0; });
        await On(coreB, () => { b.Connect(coreA, a.Id); return 0; });
        return (a, b);
    }

    public void Dispose()
    {
        bool halted = Machine.HaltAll(Patience);
        if (halted)
        {
            Machine.Dispose(); // only once every core thread has left its loop
        }
    }
}
