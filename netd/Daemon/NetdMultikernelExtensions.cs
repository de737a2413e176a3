using Multikernel.Netd.Daemon;

namespace Multikernel.Monitor.Hosting;

/// <summary>Plugs netd into a machine's options, the way ASP.NET Core components add themselves to a builder.</summary>
public static class NetdMultikernelExtensions
{
    /// <summary>
    /// Registers the netd program and spawns it at boot on <see cref="NetdOptions.Core"/>
    /// (the last core by default). Returns the host-side handle of netd (its switch and counters).
    /// </summary>
    public static NetdHost AddNetd(this MultikernelOptions options, Action<NetdOptions>? configure = null, NetdHost? host = null)
    {
        var netd = new NetdOptions();
        configure?.Invoke(netd);
        return options.AddNetd(netd, host);
    }

    /// <summary>
    /// Registers the netd program with <paramref name="netd"/> (bound from <c>Multikernel:Netd</c>
    /// and the command line) and spawns it at boot on <see cref="NetdOptions.Core"/>.
    /// </summary>
    public static NetdHost AddNetd(this MultikernelOptions options, NetdOptions netd, NetdHost? host = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(netd);
        host ??= new NetdHost();
        host.IsAdded = true;
        host.Options = netd;
        var program = new NetdProgram(netd, host);
        options.AddProgram(NetdProgram.ProgramName, program.RunAsync);
        // netd is the machine's NIC program: its core's monitor makes the Nic at boot, over a
        // device region big enough for its receive pool, and moves it to netd alone at spawn.
        options.NicProgram = NetdProgram.ProgramName;
        options.NicCore = netd.Core;
        if (options.DeviceFrames < netd.RxBurst)
        {
            options.DeviceMemory = $"{netd.RxBurst * 4}KiB";
        }

        options.SpawnAtBoot(NetdProgram.ProgramName, core: netd.Core);
        return host;
    }
}
