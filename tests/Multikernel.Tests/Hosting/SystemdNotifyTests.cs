using System.Net;
using System.Net.Sockets;
using System.Text;
using Multikernel.Cli.Hosting;
using Multikernel.Tests.Cli;

namespace Multikernel.Tests.Hosting;

/// <summary>
/// Readiness for systemd (<c>Type=notify</c>) and the container's health check, through the real
/// `multikernel` process: the test is the service manager (it owns the notify socket) and the
/// HTTP server (it owns the listener).
/// </summary>
public sealed class SystemdNotifyTests : IDisposable
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "mk-notify-" + Guid.NewGuid().ToString("N")[..8]);

    public SystemdNotifyTests() => Directory.CreateDirectory(_directory);

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Run_SendsReadyAfterBoot_ThenStopping(bool abstractNamespace)
    {
        string name = abstractNamespace ? "@mk-notify-" + Guid.NewGuid().ToString("N") : Path.Combine(_directory, "notify.sock");
        using var manager = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        manager.Bind(new UnixDomainSocketEndPoint(abstractNamespace ? "\0" + name[1..] : name));

        Task<(int ExitCode, string Out, string Err)> run = CliProcess.RunAsync(
            "run --cores 2 --duration 3",
            new Dictionary<string, string> { [SystemdNotify.SocketVariable] = name },
            timeout: TimeSpan.FromMinutes(1));
        try
        {
            string ready = await ReceiveAsync(manager, run);
            Assert.Contains("READY=1", ready.Split('\n'));
            Assert.Contains("STATUS=2 cores booted", ready.Split('\n'));
            Assert.Matches(@"(?m)^MAINPID=\d+$", ready);

            string stopping = await ReceiveAsync(manager, run);
            Assert.Contains("STOPPING=1", stopping.Split('\n'));
        }
        finally
        {
            (int code, _, string err) = await run;
            Assert.True(code == 0, $"exit {code}: {err}");
        }
    }

    [Fact]
    public void Notify_WithoutASocket_DoesNothing_AndANoListenerSocketIsNoFailure()
    {
        Assert.False(SystemdNotify.Notify("READY=1", socket: string.Empty));
        Assert.False(SystemdNotify.Notify("READY=1", socket: "relative/path.sock"));
        Assert.False(SystemdNotify.Notify("READY=1", socket: "/" + new string('x', 200)));
        // A path no one listens on: reported, not thrown (readiness never stops the machine).
        Assert.False(SystemdNotify.Notify("READY=1", socket: Path.Combine(_directory, "nobody.sock")));
    }

    [Theory]
    [InlineData(200, 0)]
    [InlineData(204, 0)]
    [InlineData(503, 1)]
    [InlineData(404, 1)]
    public async Task Health_ExitCodeFollowsTheAnswer(int status, int expected)
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        Task serve = ServeOnceAsync(listener, status);
        var (code, stdout, stderr) = await CliProcess.RunAsync($"health --url http://127.0.0.1:{port}/ --timeout 20", timeout: TimeSpan.FromMinutes(1));
        await serve.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(code == expected, $"exit {code}: {stdout} {stderr}");
        Assert.Contains(status.ToString(System.Globalization.CultureInfo.InvariantCulture), expected == 0 ? stdout : stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("health --url ftp://x/", 2, "--url must be an absolute http:// or https:// URL")]
    [InlineData("health --url http://127.0.0.1:1/ --timeout 0", 2, "--timeout must be between 0 and 300 seconds")]
    [InlineData("health --url http://127.0.0.1:1/ --timeout 5", 1, "unhealthy: http://127.0.0.1:1/")]
    public async Task Health_BadUrlOrNoServer_OneClearLine(string arguments, int expected, string message)
    {
        var (code, _, stderr) = await CliProcess.RunAsync(arguments, timeout: TimeSpan.FromMinutes(1));
        Assert.Equal(expected, code);
        Assert.Contains(message, stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);
    }

    private static async Task<string> ReceiveAsync(Socket manager, Task run)
    {
        var buffer = new byte[4096];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(45));
        Task<int> receive = manager.ReceiveAsync(buffer, SocketFlags.None, timeout.Token).AsTask();
        Task first = await Task.WhenAny(receive, run);
        Assert.True(first == receive, "the process exited without notifying");
        return Encoding.UTF8.GetString(buffer, 0, await receive);
    }

    private static async Task ServeOnceAsync(TcpListener listener, int status)
    {
        using TcpClient client = await listener.AcceptTcpClientAsync();
        NetworkStream stream = client.GetStream();
        var request = new StringBuilder();
        var buffer = new byte[1024];
        while (!request.ToString().Contains("\r\n\r\n", StringComparison.Ordinal))
        {
            int n = await stream.ReadAsync(buffer);
            if (n == 0)
            {
                return;
            }

            request.Append(Encoding.ASCII.GetString(buffer, 0, n));
        }

        Assert.StartsWith("GET / HTTP/1.1", request.ToString(), StringComparison.Ordinal);
        byte[] answer = Encoding.ASCII.GetBytes($"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        await stream.WriteAsync(answer);
    }
}
