using Microsoft.Extensions.Logging;
using Multikernel.Netd.Wire;

namespace Multikernel.Netd.Drivers.Tap;

internal static partial class TapLog
{
    [LoggerMessage(901, LogLevel.Information, "TAP {Name} created: host MAC {HostMac}, station MAC {StationMac}, MTU {Mtu}, host address {HostAddress}")]
    public static partial void Created(ILogger logger, string name, MacAddress hostMac, MacAddress stationMac, int mtu, string hostAddress);

    [LoggerMessage(902, LogLevel.Information, "TAP {Name} closed: {Counters}")]
    public static partial void Closed(ILogger logger, string name, DeviceCounters counters);

    [LoggerMessage(903, LogLevel.Warning, "TAP {Name}: {Operation} failed: {Error} (logged once; further failures are only counted)")]
    public static partial void IoFailed(ILogger logger, string name, string operation, string error);

    [LoggerMessage(904, LogLevel.Warning, "TAP {Name} was deleted from outside while open: no more frames; its descriptor is no longer watched")]
    public static partial void Detached(ILogger logger, string name);
}
