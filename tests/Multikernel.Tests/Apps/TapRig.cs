using System.Globalization;
using System.Security.Cryptography;
using Multikernel.Cli.Apps;
using Multikernel.Monitor.Hosting;
using Multikernel.Netd.Wire;
using Multikernel.Tests.Netd.Drivers;

namespace Multikernel.Tests.Apps;

/// <summary>
/// The applications (echo, http, kv) on a real machine whose netd owns a TAP device inside a
/// network namespace the rig creates and deletes: the whole machine is started from a thread that
/// joined the namespace, and every core's thread is created from there (a new thread inherits its
/// creator's network namespace), so netd's core opens the TAP inside it. The Linux clients run in
/// the same namespace through <see cref="Exec"/>, so every packet of a test — a flood included —
/// stays inside a namespace the test made and is gone with it.
/// </summary>
internal sealed class TapRig : IAsyncDisposable
{
    /// <summary>The tools a rig's tests use besides those of <see cref="PrivilegedTests.RequiredTools"/>.</summary>
    public const string Packages = "Debian: iproute2 curl netcat-openbsd redis-tools wrk hping3";

    private bool _stopped;

    private TapRig(NetNamespace ns, MultikernelRuntime runtime, NetworkApps apps, string subnet, string root)
    {
        Namespace = ns;
        Runtime = runtime;
        Apps = apps;
        Subnet = subnet;
        Root = root;
    }

    public NetNamespace Namespace { get; }

    public MultikernelRuntime Runtime { get; }

    public NetworkApps Apps { get; }

    /// <summary>The first three octets of the TAP's /24 (host .1, netd .254, apps .2–.5).</summary>
    public string Subnet { get; }

    /// <summary>The http application's root directory (deleted with the rig).</summary>
    public string Root { get; }

    public string Echo => Subnet + ".2";

    public string Http => Subnet + ".3";

    public string Kv => Subnet + ".4";

    public string Discard => Subnet + ".5";

    public NetworkAppSpec Spec(string app) => Apps.Specs.Single(s => s.Name == app);

    /// <summary>The counters the application's domain last published (refreshed every 100 ms).</summary>
    public AppSnapshot Snapshot(string app) => Apps.Snapshot(Spec(app));

    /// <summary>Starts the machine in a fresh namespace; <paramref name="tools"/> must be installed (a failure says which are not, and from which package).</summary>
    public static async Task<TapRig> StartAsync(params string[] tools)
    {
        PrivilegedTests.RequirePrerequisites();
        foreach (string tool in tools)
        {
            Assert.True(PrivilegedTests.FindTool(tool) is not null, $"{tool} is not installed ({Packages})");
        }

        string tap = "mka" + PrivilegedTests.RandomHex(3);
        // A namespace of its own: the subnet cannot collide with anything outside it.
        string subnet = string.Create(CultureInfo.InvariantCulture, $"10.214.{1 + RandomNumberGenerator.GetInt32(250)}");
        string root = Directory.CreateTempSubdirectory("mk-tap-apps-").FullName;
        NetNamespace ns = NetNamespace.Create();
        MultikernelRuntime? runtime = null;
        try
        {
            // The loopback of the namespace, for tools that resolve or bind locally.
            ns.Exec(TimeSpan.FromSeconds(10), "ip", "link", "set", "lo", "up");
            var apps = new NetworkApps(
                [new NetworkAppSpec("echo", 0, Ipv4Address.Parse(subnet + ".2"), 7), new NetworkAppSpec("http", 0, Ipv4Address.Parse(subnet + ".3"), 80), new NetworkAppSpec("kv", 1, Ipv4Address.Parse(subnet + ".4"), 6379), new NetworkAppSpec("discard", 0, Ipv4Address.Parse(subnet + ".5"), 9)],
                new NetworkAppsSettings { HttpRoot = root });
            var options = new MultikernelOptions
            {
                Cores = "2",
                ShutdownTimeout = TimeSpan.FromSeconds(10),
                SpinBudget = 500,
                MaxPark = TimeSpan.FromSeconds(5),
                DomainMemory = "2MiB",
            };
            options.AddNetd(n =>
            {
                n.Core = 1;
                n.Nic = "tap:" + tap;
                n.HostIp = subnet + ".1/24";
                n.NetdIp = subnet + ".254";
            });
            apps.Register(options);
            var machine = new MultikernelRuntime(options);
            runtime = machine;

            // Core 0's thread is created synchronously inside StartAsync (before its first await),
            // on the namespace thread; core 0's monitor creates the others: all inherit the namespace.
            Task started = ns.OnThread(() => machine.StartAsync());
            await started.WaitAsync(TestMachine.Patience);
            await apps.WhenReadyAsync().WaitAsync(TimeSpan.FromSeconds(30));
            (int exit, string addr) = ns.Exec(TimeSpan.FromSeconds(10), "ip", "-o", "addr", "show", "dev", tap);
            Assert.True(exit == 0 && addr.Contains($"inet {subnet}.1/24", StringComparison.Ordinal), $"the TAP {tap} is not up in {ns.Name} with {subnet}.1/24: {addr}");
            return new TapRig(ns, machine, apps, subnet, root);
        }
        catch
        {
            if (runtime is not null)
            {
                await runtime.StopAsync().WaitAsync(TestMachine.Patience);
            }

            ns.Dispose();
            Directory.Delete(root, recursive: true);
            throw;
        }
    }

    /// <summary>Runs a command inside the rig's namespace; output is stdout and stderr together.</summary>
    public (int ExitCode, string Output) Exec(TimeSpan timeout, params string[] command) => Namespace.Exec(timeout, command);

    /// <summary>Runs a bash script inside the rig's namespace.</summary>
    public (int ExitCode, string Output) Shell(string script, TimeSpan timeout) => Namespace.Exec(timeout, "bash", "-c", script);

    /// <summary>Drains the applications (FIN to every peer) and stops the machine, failing on any domain fault.</summary>
    public async Task StopAsync()
    {
        if (!_stopped)
        {
            _stopped = true;
            await Apps.DrainAsync(TimeSpan.FromSeconds(10));
            await Runtime.StopCleanlyAsync();
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await StopAsync();
        }
        finally
        {
            Namespace.Dispose();
            Directory.Delete(Root, recursive: true);
        }
    }
}
