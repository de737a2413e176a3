using System.Net.Sockets;
using System.Text;

namespace Multikernel.Cli.Hosting;

/// <summary>
/// The sd_notify(3) protocol without libsystemd: one datagram of <c>KEY=VALUE</c> lines to the
/// unix socket named by <c>$NOTIFY_SOCKET</c>. Under a <c>Type=notify</c> unit systemd sets the
/// variable and counts the service as started only when <c>READY=1</c> arrives, so
/// <c>systemctl start</c> (and units ordered after this one) wait for the cores to have booted,
/// not merely for the process to exist. Without the variable every call does nothing.
/// </summary>
internal static class SystemdNotify
{
    /// <summary>The environment variable systemd sets for a <c>Type=notify</c> service.</summary>
    public const string SocketVariable = "NOTIFY_SOCKET";

    // The longest sun_path on Linux, less the terminating zero.
    private const int MaxPath = 107;

    /// <summary>Tells the service manager that start-up has finished (<c>READY=1</c>) and why.</summary>
    public static bool Ready(string status) =>
        Notify($"READY=1\nSTATUS={OneLine(status)}\nMAINPID={Environment.ProcessId}");

    /// <summary>Tells the service manager that the graceful shutdown has begun (<c>STOPPING=1</c>).</summary>
    public static bool Stopping(string status) => Notify($"STOPPING=1\nSTATUS={OneLine(status)}");

    /// <summary>
    /// Sends <paramref name="state"/> to <paramref name="socket"/> (default: <c>$NOTIFY_SOCKET</c>).
    /// Returns false when there is no socket to notify or it is not a unix socket path (sd_notify
    /// also ignores those). Delivery problems (no listener any more) are reported once on stderr and
    /// never stop the machine: readiness is advice to the service manager, not part of the run.
    /// </summary>
    public static bool Notify(string state, string? socket = null)
    {
        ArgumentNullException.ThrowIfNull(state);
        string? path = socket ?? Environment.GetEnvironmentVariable(SocketVariable);
        if (string.IsNullOrEmpty(path) || path.Length > MaxPath)
        {
            return false;
        }

        if (path[0] == '@')
        {
            path = "\0" + path[1..]; // the abstract namespace, as systemd writes it
        }
        else if (path[0] != '/')
        {
            return false; // vsock: and relative paths are not for us
        }

        try
        {
            using var sender = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
            sender.Connect(new UnixDomainSocketEndPoint(path));
            byte[] datagram = Encoding.UTF8.GetBytes(state);
            return sender.Send(datagram) == datagram.Length;
        }
        catch (SocketException ex)
        {
            Console.Error.WriteLine($"multikernel: could not notify the service manager at {SocketVariable}={socket ?? Environment.GetEnvironmentVariable(SocketVariable)}: {ex.Message}");
            return false;
        }
    }

    // A status is one line of the datagram: a newline in it would start another assignment.
    private static string OneLine(string status) => status.ReplaceLineEndings(" ");
}
