using Multikernel.CpuDriver.Kernel;

namespace Multikernel.Cli.Display;

/// <summary>The counters of every core at one instant, read racily from outside the cores.</summary>
internal sealed class MachineSnapshot
{
    private MachineSnapshot(long timestamp, long[,] sent, long[,] stalls, long[,] windowStalls, long[] busy, long[] idle, long[] parks, long[] received)
    {
        WindowStalls = windowStalls;
        Timestamp = timestamp;
        Sent = sent;
        Stalls = stalls;
        Busy = busy;
        Idle = idle;
        Parks = parks;
        Received = received;
    }

    public long Timestamp { get; }

    /// <summary>[source, destination] messages sent.</summary>
    public long[,] Sent { get; }

    /// <summary>[source, destination] ring-full stalls.</summary>
    public long[,] Stalls { get; }

    /// <summary>[source, destination] sends that waited for their channel's credits.</summary>
    public long[,] WindowStalls { get; }

    public long[] Busy { get; }

    public long[] Idle { get; }

    public long[] Parks { get; }

    public long[] Received { get; }

    public int Cores => Busy.Length;

    public static MachineSnapshot Take(Machine machine, TimeProvider time)
    {
        int n = machine.Cores;
        var sent = new long[n, n];
        var stalls = new long[n, n];
        var windowStalls = new long[n, n];
        var busy = new long[n];
        var idle = new long[n];
        var parks = new long[n];
        var received = new long[n];
        for (int s = 0; s < n; s++)
        {
            CoreCounters c = machine.Kernels[s].Counters;
            for (int d = 0; d < n; d++)
            {
                sent[s, d] = c.Sent(d);
                stalls[s, d] = c.Stalls(d);
                windowStalls[s, d] = c.WindowStalls(d);
            }

            busy[s] = c.Busy;
            idle[s] = c.Idle;
            parks[s] = c.ParkCount;
            received[s] = c.TotalReceived;
        }

        return new MachineSnapshot(time.GetTimestamp(), sent, stalls, windowStalls, busy, idle, parks, received);
    }
}
