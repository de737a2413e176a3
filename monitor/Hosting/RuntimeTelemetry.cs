namespace Multikernel.Monitor.Hosting;

/// <summary>Counters of monitor operations, kept per runtime (no static state).</summary>
public sealed class RuntimeTelemetry
{
    private long _exports;
    private long _binds;
    private long _spawns;

    /// <summary>Exports done.</summary>
    public long Exports => Volatile.Read(ref _exports);

    /// <summary>Binds done.</summary>
    public long Binds => Volatile.Read(ref _binds);

    /// <summary>Spawns done.</summary>
    public long Spawns => Volatile.Read(ref _spawns);

    internal void MonitorOperation(string operation)
    {
        switch (operation)
        {
            case "export":
                Interlocked.Increment(ref _exports);
                break;
            case "bind":
                Interlocked.Increment(ref _binds);
                break;
            case "spawn":
                Interlocked.Increment(ref _spawns);
                break;
            default:
                break;
        }
    }
}
