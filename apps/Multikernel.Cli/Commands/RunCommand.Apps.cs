using System.CommandLine;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Multikernel.Cli.Apps;
using Multikernel.Monitor.Hosting;
using Multikernel.Net;
using Multikernel.Net.Netd;
using Multikernel.Netd.Client;
using Multikernel.Netd.Daemon;
using Multikernel.Netd.Wire;

namespace Multikernel.Cli.Commands;

/// <summary>
/// <c>run --app NAME@CORE:IP:PORT</c> (repeatable) and <c>--http-root DIR</c>: network applications,
/// each in its own domain on its core with its own stack over netd. Also read from
/// <c>Multikernel:Apps</c> (an array of the same strings) and <c>Multikernel:HttpRoot</c> in
/// appsettings.json; <c>--app</c> on the command line replaces the configured list.
/// </summary>
internal static partial class RunCommand
{
    /// <summary>The configuration key of the application list.</summary>
    public const string AppsKey = MultikernelOptions.SectionName + ":Apps";

    /// <summary>The configuration key of the http application's root.</summary>
    public const string HttpRootKey = MultikernelOptions.SectionName + ":HttpRoot";

    /// <summary>What the command line asked for; <see cref="Apps"/> is empty when it gave no <c>--app</c>.</summary>
    internal sealed record AppRequest(string[] Apps, string? HttpRoot);

    /// <summary>The two options, added to <paramref name="command"/>; the returned function reads them from a parse.</summary>
    internal static Func<ParseResult, AppRequest> AddAppOptions(Command command)
    {
        var apps = new Option<string[]>("--app")
        {
            Description = "Run an application (echo, discard, http, kv) in its own domain on CORE with its own stack at IP serving PORT: NAME@CORE:IP:PORT, e.g. echo@1:10.77.0.4:7. Repeatable. Overrides Multikernel:Apps.",
            AllowMultipleArgumentsPerToken = false,
            Arity = ArgumentArity.ZeroOrMore,
        };
        var root = new Option<string?>("--http-root")
        {
            Description = "Directory the http application serves (default: a small built-in site). Overrides Multikernel:HttpRoot.",
        };
        command.Options.Add(apps);
        command.Options.Add(root);
        return parse => new AppRequest(parse.GetValue(apps) ?? [], parse.GetValue(root));
    }

    /// <summary>
    /// Plugs the applications into the host: their programs into the machine's options (checked
    /// there, against the core count and each other: one clear line per problem, exit code 2), netd
    /// on the in-memory switch when nothing else added it, and a hosted service that waits for them
    /// to listen and drains them before the machine stops.
    /// </summary>
    // Frames an application's domain retypes: its netd region at the default sizes, and 32 more
    // (the packet filter and what its stack and application take besides).
    private static int AppDomainFrames()
    {
        var network = new DomainNetworkOptions { Stack = new NetworkStackOptions() };
        return new NetdClientOptions { Address = default, ReceivePages = network.ReceivePages, SmallBuffers = network.SmallBuffers, TransmitPages = network.TransmitPages }.TotalPages + 32;
    }

    private static int? TryDomainFrames(MultikernelOptions options)
    {
        try
        {
            return options.DomainFrames;
        }
        catch (FormatException)
        {
            return null; // its own validation reports a malformed size
        }
    }

    internal static void ConfigureApps(IServiceCollection services, AppRequest request)
    {
        var setup = new AppSetup(request);
        services.AddOptions<MultikernelOptions>().Configure<IConfiguration>(setup.Configure);
        services.AddSingleton<IHostedService>(sp => new AppsService(setup));
    }

    private sealed class AppSetup(AppRequest request)
    {
        public NetworkApps? Apps { get; private set; }

        public void Configure(MultikernelOptions options, IConfiguration configuration)
        {
            string[] entries = request.Apps.Length > 0 ? request.Apps : configuration.GetSection(AppsKey).Get<string[]>() ?? [];
            if (entries.Length == 0)
            {
                return;
            }

            int cores;
            try
            {
                cores = options.ResolveCores(Environment.ProcessorCount);
            }
            catch (FormatException)
            {
                return; // Multikernel:Cores is invalid: its own validation reports that
            }

            string? netdIp = configuration[$"{MultikernelOptions.SectionName}:{NetdOptions.SectionName}:NetdIp"] ?? new NetdOptions().NetdIp;
            List<string> problems = NetworkAppSpec.Check(entries, cores, Ipv4Address.TryParse(netdIp, out Ipv4Address netd) ? netd : null, out List<NetworkAppSpec> specs);
            string? root = request.HttpRoot ?? configuration[HttpRootKey];
            if (root is not null && specs.Any(s => s.Name == "http") && !Directory.Exists(root))
            {
                problems.Add($"--http-root '{root}' is not a directory.");
            }

            if (specs.Count > 0 && AppDomainFrames() is int needed && TryDomainFrames(options) is int budget && budget < needed)
            {
                problems.Add($"--app: each application's domain needs DomainMemory of at least {needed * 4} KiB (its netd region of receive, small and transmit buffers and the rest of its stack); Multikernel:DomainMemory is {options.DomainMemory}.");
            }

            if (problems.Count > 0)
            {
                throw new OptionsValidationException(MultikernelOptions.SectionName, typeof(MultikernelOptions), problems);
            }

            int prefix = 24;
            if (configuration[$"{MultikernelOptions.SectionName}:{NetdOptions.SectionName}:HostIp"] is { } hostIp && NetdOptions.TryParseCidr(hostIp, out _, out int p))
            {
                prefix = p;
            }

            // The options are configured more than once (validation at start makes its own
            // instance): one set of applications, registered into each.
            Apps ??= new NetworkApps(specs, new NetworkAppsSettings { PrefixLength = prefix, HttpRoot = root is null ? null : Path.GetFullPath(root) });
            if (!string.Equals(options.NicProgram, NetdProgram.ProgramName, StringComparison.Ordinal))
            {
                options.AddNetd(); // the applications need netd: the in-memory switch unless --nic chose a device
            }

            Apps.Register(options);
        }
    }

    // Registered after the machine's hosted service: starts once the machine booted, stops before it.
    private sealed class AppsService(AppSetup setup) : IHostedService
    {
        public async Task StartAsync(CancellationToken cancellationToken)
        {
            if (setup.Apps is { } apps)
            {
                await new NetworkAppsHostedService(apps, TimeSpan.FromSeconds(30)).StartAsync(cancellationToken);
                foreach (NetworkAppSpec spec in apps.Specs)
                {
                    Console.WriteLine($"{spec.Name} listening at {spec.Address}:{spec.Port} (its own stack, a domain on core {spec.Core})");
                }
            }
        }

        public async Task StopAsync(CancellationToken cancellationToken)
        {
            if (setup.Apps is not { } apps)
            {
                return;
            }

            await apps.DrainAsync(TimeSpan.FromSeconds(30));
            foreach (NetworkAppSpec spec in apps.Specs)
            {
                // What each stack did, once, as it ends: the first place to look when a client saw stalls.
                AppSnapshot s = apps.Snapshot(spec);
                Console.WriteLine(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                    $"{spec.Name}: {s.Served} served; {s.SegmentsReceived} segments in, {s.SegmentsSent} out, {s.Retransmits} retransmitted ({s.Timeouts} timeouts, {s.FastRetransmits} fast); frames {s.FramesReceived} in, {s.FramesSent} out, {s.TransmitBusy} waited for a transmit page; drops: {(s.Drops.Length == 0 ? "none" : s.Drops)}"));
            }
        }
    }
}
