using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Kernel;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.Tests.Telemetry;

/// <summary>
/// Two real core kernels, the two rings between them and one connected channel ("ping": core 0
/// → core 1), built the way the boot loader builds a machine. Domains run as async code posted to
/// a core, so sends and receives happen on the kernels' own threads.
/// </summary>
internal sealed class TwoCoreRig : IDisposable
{
    private readonly UrpcRing _ring01 = new(16);
    private readonly UrpcRing _ring10 = new(16);
    private readonly Doorbell[] _doorbells = [new Doorbell(), new Doorbell()];

    public TwoCoreRig()
    {
        var options = new KernelOptions { PinThreads = false, RingSlots = 16, ChannelWindow = 8 };
        Core0 = new CoreKernel(0, 0, 2, options, TimeProvider.System, [null, _ring10], [null, _ring01], _doorbells);
        Core1 = new CoreKernel(1, 1, 2, options, TimeProvider.System, [_ring01, null], [_ring10, null], _doorbells);
        Sender = Core0.CreateBootEndpoint(1, "ping");
        Receiver = Core1.CreateBootEndpoint(0, "ping");
        Sender.Connect(1, Receiver.Id);
        Receiver.Connect(0, Sender.Id);
        Core0.Start();
        Core1.Start();
    }

    public CoreKernel Core0 { get; }

    public CoreKernel Core1 { get; }

    /// <summary>The channel end on core 0.</summary>
    public Endpoint Sender { get; }

    /// <summary>The channel end on core 1.</summary>
    public Endpoint Receiver { get; }

    /// <summary>Runs <paramref name="work"/> on <paramref name="core"/>'s thread and waits (bounded) for its result.</summary>
    public static Task<T> On<T>(CoreKernel core, Func<T> work) => core.RunAsync(work).WaitAsync(TimeSpan.FromSeconds(15));

    /// <summary>Runs <paramref name="body"/> as a domain on <paramref name="core"/>.</summary>
    public static Task RunOn(CoreKernel core, Func<Task> body)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        core.Post(_ => _ = Run(), null);
        return done.Task;

        async Task Run()
        {
            try
            {
                await body();
                done.SetResult();
            }
#pragma warning disable CA1031 // handed to the test through the task
            catch (Exception ex)
#pragma warning restore CA1031
            {
                done.SetException(ex);
            }
        }
    }

    public void Dispose()
    {
        Core0.Halt();
        Core1.Halt();
        Core0.Join(TimeSpan.FromSeconds(10));
        Core1.Join(TimeSpan.FromSeconds(10));
        _ring01.Dispose();
        _ring10.Dispose();
        foreach (Doorbell doorbell in _doorbells)
        {
            doorbell.Dispose();
        }
    }
}
