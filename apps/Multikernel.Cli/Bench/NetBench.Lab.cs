using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Multikernel.Cli.Bench;

/// <summary>
/// What <c>bench net</c> builds and must take down again: three network namespaces (ours: the TAP
/// of our machine and its clients; a server and a client namespace joined by a veth pair for the
/// Linux peers), the processes started inside them, and a temporary directory. Everything is
/// removed by <see cref="Dispose"/>, even when a measurement failed half-way. Every address used
/// lives inside these namespaces only, so no packet of the benchmark leaves them.
/// </summary>
internal sealed class NetLab : IDisposable
{
    /// <summary>The TAP's host side (in <see cref="Ours"/>); our applications are .2 (echo), .3 (http), .4 (kv).</summary>
    public const string OursSubnet = "10.231.0";

    /// <summary>The veth pair: the client side is .1 (in <see cref="Client"/>), the server side .2 (in <see cref="Server"/>).</summary>
    public const string VethSubnet = "10.230.0";

    private static readonly TimeSpan Command = TimeSpan.FromSeconds(20);
    private readonly List<LabProcess> _processes = [];
    private readonly List<string> _namespaces = [];
    private readonly Action<string> _log;

    private NetLab(string id, Action<string> log)
    {
        _log = log;
        Id = id;
        Ours = $"mkb-{id}-ours";
        Server = $"mkb-{id}-srv";
        Client = $"mkb-{id}-cli";
        Tap = $"mkb{id}";
        Directory = System.IO.Directory.CreateTempSubdirectory("mk-bench-net-").FullName;
    }

    public string Id { get; }

    public string Ours { get; }

    public string Server { get; }

    public string Client { get; }

    public string Tap { get; }

    /// <summary>The run's temporary directory (configs, the served file, logs).</summary>
    public string Directory { get; }

    public static string ServerIp => VethSubnet + ".2";

    /// <summary>Creates the namespaces and the veth pair; on failure whatever was made is removed again.</summary>
    public static NetLab Create(Action<string> log)
    {
        var lab = new NetLab(Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(3)), log);
        try
        {
            foreach (string ns in new[] { lab.Ours, lab.Server, lab.Client })
            {
                lab.Ip("netns", "add", ns);
                lab._namespaces.Add(ns);
                lab.In(ns, "ip", "link", "set", "lo", "up");
            }

            string vs = $"mkv{lab.Id}s";
            string vc = $"mkv{lab.Id}c";
            lab.In(lab.Server, "ip", "link", "add", vs, "type", "veth", "peer", "name", vc, "netns", lab.Client);
            lab.In(lab.Server, "ip", "addr", "add", ServerIp + "/24", "dev", vs);
            lab.In(lab.Client, "ip", "addr", "add", VethSubnet + ".1/24", "dev", vc);
            lab.In(lab.Server, "ip", "link", "set", vs, "up");
            lab.In(lab.Client, "ip", "link", "set", vc, "up");
            return lab;
        }
        catch
        {
            lab.Dispose();
            throw;
        }
    }

    /// <summary>Runs a command inside <paramref name="ns"/> to its end; throws with its output when it fails.</summary>
    public string In(string ns, params string[] command) => Run(Command, ["ip", "netns", "exec", ns, .. command]);

    /// <summary>Runs a client inside <paramref name="ns"/> with a deadline; throws with its output when it fails or overruns.</summary>
    public string RunIn(string ns, TimeSpan timeout, params string[] command) => Run(timeout, ["ip", "netns", "exec", ns, .. command]);

    /// <summary>Starts a long-running process inside <paramref name="ns"/>; it is killed by <see cref="Stop"/> or at the latest by <see cref="Dispose"/>.</summary>
    public LabProcess Start(string name, string ns, params string[] command)
    {
        var process = LabProcess.Start(name, ["ip", "netns", "exec", ns, .. command]);
        _processes.Add(process);
        return process;
    }

    /// <summary>Asks <paramref name="process"/> to stop (SIGTERM, as systemd or Ctrl-C would), waits up to <paramref name="grace"/>, then kills it.</summary>
    public void StopGracefully(LabProcess process, TimeSpan grace)
    {
        process.Terminate(grace);
        Stop(process);
    }

    public void Stop(LabProcess process)
    {
        process.Dispose();
        _processes.Remove(process);
    }

    /// <summary>Waits until something listens on <paramref name="port"/> in <paramref name="ns"/> (the peer is up), or fails with its output.</summary>
    public void WaitListening(string ns, LabProcess process, int port, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            if (process.HasExited)
            {
                throw new InvalidOperationException($"{process.Name} exited with {process.ExitCode} before it listened: {process.Output}");
            }

            string listening = In(ns, "ss", "-Hltn", $"sport = :{port.ToString(CultureInfo.InvariantCulture)}");
            if (listening.Trim().Length > 0)
            {
                return;
            }

            Thread.Sleep(100);
        }

        throw new TimeoutException($"{process.Name} did not listen on port {port} within {timeout.TotalSeconds:F0} s: {process.Output}");
    }

    public void Dispose()
    {
        foreach (LabProcess process in _processes)
        {
            process.Dispose();
        }

        _processes.Clear();
        foreach (string ns in _namespaces)
        {
            try
            {
                Ip("netns", "del", ns);
            }
            catch (InvalidOperationException e)
            {
                _log($"bench net: could not delete namespace {ns}: {e.Message}");
            }
        }

        _namespaces.Clear();
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException e)
        {
            _log($"bench net: could not delete {Directory}: {e.Message}");
        }
    }

    private void Ip(params string[] arguments) => Run(Command, ["ip", .. arguments]);

    /// <summary>Runs <paramref name="command"/> to its end, stdout and stderr together; throws when it fails or overruns.</summary>
    internal static string Run(TimeSpan timeout, string[] command)
    {
        using var process = new Process { StartInfo = Info(command) };
        var output = new StringBuilder();
        process.OutputDataReceived += (_, e) => Append(output, e.Data);
        process.ErrorDataReceived += (_, e) => Append(output, e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            throw new TimeoutException($"'{string.Join(' ', command)}' did not finish within {timeout.TotalSeconds:F0} s: {Text(output)}");
        }

        process.WaitForExit(); // drains the asynchronous readers
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"'{string.Join(' ', command)}' failed with exit code {process.ExitCode}: {Text(output)}");
        }

        return Text(output);
    }

    internal static ProcessStartInfo Info(string[] command)
    {
        var info = new ProcessStartInfo(command[0])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (string argument in command.AsSpan(1))
        {
            info.ArgumentList.Add(argument);
        }

        return info;
    }

    internal static void Append(StringBuilder output, string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (output)
        {
            // Bounded: a chatty peer keeps only its last 64 KiB.
            if (output.Length > 64 * 1024)
            {
                output.Remove(0, output.Length - (32 * 1024));
            }

            output.Append(line).Append('\n');
        }
    }

    internal static string Text(StringBuilder output)
    {
        lock (output)
        {
            return output.ToString();
        }
    }
}

/// <summary>A long-running process of the lab (a peer server, our machine), its output collected.</summary>
internal sealed class LabProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();

    private LabProcess(string name, Process process)
    {
        Name = name;
        _process = process;
    }

    public string Name { get; }

    public bool HasExited => _process.HasExited;

    public int ExitCode => _process.ExitCode;

    public string Output => NetLab.Text(_output);

    /// <summary>SIGTERM, then waits for the exit up to <paramref name="grace"/> (the caller kills what is left).</summary>
    public void Terminate(TimeSpan grace)
    {
        if (_process.HasExited)
        {
            return;
        }

        // `ip netns exec` execs the command, so the process id is the command's own.
        using var kill = Process.Start(NetLab.Info(["kill", "-TERM", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]));
        kill?.WaitForExit(5_000);
        _process.WaitForExit(grace);
    }

    public static LabProcess Start(string name, string[] command)
    {
        var process = new Process { StartInfo = NetLab.Info(command) };
        var lab = new LabProcess(name, process);
        process.OutputDataReceived += (_, e) => NetLab.Append(lab._output, e.Data);
        process.ErrorDataReceived += (_, e) => NetLab.Append(lab._output, e.Data);
        try
        {
            process.Start();
        }
        catch
        {
            process.Dispose();
            throw;
        }

        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return lab;
    }

    /// <summary>Waits until the output holds <paramref name="count"/> lines containing <paramref name="text"/>; fails with the output otherwise.</summary>
    public void WaitFor(string text, int count, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (CountLines(text) < count)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"{Name} exited with {_process.ExitCode}: {Output}");
            }

            if (clock.Elapsed > timeout)
            {
                throw new TimeoutException($"{Name} did not print '{text}' {count} times within {timeout.TotalSeconds:F0} s: {Output}");
            }

            Thread.Sleep(50);
        }
    }

    private int CountLines(string text) => Output.Split('\n').Count(l => l.Contains(text, StringComparison.Ordinal));

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit(10_000);
            }
        }
        catch (InvalidOperationException)
        {
            // never started or already reaped
        }

        _process.Dispose();
    }
}
