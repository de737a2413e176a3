using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using Multikernel.Netd.Wire;

namespace Multikernel.Cli.Apps;

/// <summary>
/// One application to run: <c>NAME@CORE:IP:PORT</c> (<c>--app echo@1:10.77.0.4:7</c>, or an entry
/// of <c>Multikernel:Apps</c>): the application <see cref="Name"/> in its own domain on
/// <see cref="Core"/>, with its own stack at <see cref="Address"/>, serving <see cref="Port"/>.
/// </summary>
internal sealed record NetworkAppSpec(string Name, int Core, Ipv4Address Address, ushort Port)
{
    /// <summary>The applications there are.</summary>
    public static readonly string[] Known = ["echo", "discard", "http", "kv"];

    /// <summary>The domain's program name (unique per address).</summary>
    public string ProgramName => $"app-{Name}-{Address}";

    /// <summary>Parses <c>NAME@CORE:IP:PORT</c>; on failure <paramref name="problem"/> says what is wrong, in one line.</summary>
    public static bool TryParse(string? text, [NotNullWhen(true)] out NetworkAppSpec? spec, [NotNullWhen(false)] out string? problem)
    {
        spec = null;
        const string Form = "NAME@CORE:IP:PORT, e.g. echo@1:10.77.0.4:7";
        if (string.IsNullOrWhiteSpace(text))
        {
            problem = $"--app needs a value of the form {Form}.";
            return false;
        }

        text = text.Trim();
        int at = text.IndexOf('@', StringComparison.Ordinal);
        string[] rest = at < 0 ? [] : text[(at + 1)..].Split(':');
        if (at <= 0 || rest.Length != 3)
        {
            problem = $"--app '{text}' is malformed: expected {Form}.";
            return false;
        }

        string name = text[..at];
        if (!Known.Contains(name, StringComparer.Ordinal))
        {
            problem = $"--app '{text}': unknown application '{name}' (known: {string.Join(", ", Known)}).";
            return false;
        }

        if (!int.TryParse(rest[0], NumberStyles.None, CultureInfo.InvariantCulture, out int core))
        {
            problem = $"--app '{text}': the core must be a number (got '{rest[0]}').";
            return false;
        }

        if (!Ipv4Address.TryParse(rest[1], out Ipv4Address address) || address.IsAny || address.IsBroadcast || address.IsMulticast)
        {
            problem = $"--app '{text}': '{rest[1]}' is not a unicast IPv4 address.";
            return false;
        }

        if (!ushort.TryParse(rest[2], NumberStyles.None, CultureInfo.InvariantCulture, out ushort port) || port == 0)
        {
            problem = $"--app '{text}': the port must be 1..65535 (got '{rest[2]}').";
            return false;
        }

        spec = new NetworkAppSpec(name, core, address, port);
        problem = null;
        return true;
    }

    /// <summary>
    /// Parses every entry and checks them against each other and the machine: every problem, one
    /// line each (core out of range, the same address twice, netd's own address).
    /// </summary>
    public static List<string> Check(IEnumerable<string> entries, int cores, Ipv4Address? netdAddress, out List<NetworkAppSpec> specs)
    {
        var problems = new List<string>();
        specs = [];
        var seen = new Dictionary<Ipv4Address, NetworkAppSpec>();
        foreach (string entry in entries)
        {
            if (!TryParse(entry, out NetworkAppSpec? spec, out string? problem))
            {
                problems.Add(problem);
                continue;
            }

            if (spec.Core >= cores)
            {
                problems.Add(string.Create(CultureInfo.InvariantCulture, $"--app '{entry.Trim()}': core {spec.Core} is out of range (the machine has {cores} core{(cores == 1 ? "" : "s")}: 0..{cores - 1})."));
                continue;
            }

            if (seen.TryGetValue(spec.Address, out NetworkAppSpec? first))
            {
                problems.Add($"--app '{entry.Trim()}': address {spec.Address} is already used by {first.Name}@{first.Core} (each application has its own address).");
                continue;
            }

            if (netdAddress is { } netd && spec.Address == netd)
            {
                problems.Add($"--app '{entry.Trim()}': {spec.Address} is netd's own address (Multikernel:Netd:NetdIp).");
                continue;
            }

            seen.Add(spec.Address, spec);
            specs.Add(spec);
        }

        return problems;
    }

    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Name}@{Core}:{Address}:{Port}");
}
