using System.CommandLine;
using System.Globalization;

namespace Multikernel.Cli.Commands;

/// <summary>
/// <c>multikernel health --url URL</c>: one HTTP GET, exit 0 on a 2xx answer and 1 otherwise. The
/// container image's <c>HEALTHCHECK</c> runs it against the HTTP application (the runtime image has
/// no curl), from the Linux side of the TAP device, so a healthy answer means the whole path works:
/// the kernel's TAP device, netd, the library-OS stack and the application.
/// </summary>
internal static class HealthCommand
{
    /// <summary>Exit code of an unhealthy answer or no answer (Docker's HEALTHCHECK reads 1 as unhealthy).</summary>
    public const int Unhealthy = 1;

    public static Command Create()
    {
        var url = new Option<string>("--url") { Description = "The URL to GET, e.g. http://10.77.0.2:8080/ (the HTTP application).", Required = true };
        var timeout = new Option<double>("--timeout") { Description = "Seconds to wait for the whole answer.", DefaultValueFactory = _ => 3 };
        var command = new Command("health", "GET a URL once: exit 0 when it answers 2xx within --timeout, 1 otherwise (the container's HEALTHCHECK).") { url, timeout };
        command.SetAction((parse, cancellationToken) => CheckAsync(parse.GetValue(url)!, parse.GetValue(timeout), cancellationToken));
        return command;
    }

    private static async Task<int> CheckAsync(string url, double seconds, CancellationToken cancellationToken)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out Uri? target) || (target.Scheme != Uri.UriSchemeHttp && target.Scheme != Uri.UriSchemeHttps))
        {
            await Console.Error.WriteLineAsync($"multikernel: --url must be an absolute http:// or https:// URL (got '{url}').");
            return CliHost.UsageError;
        }

        if (seconds is <= 0 or > 300 || double.IsNaN(seconds))
        {
            await Console.Error.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"multikernel: --timeout must be between 0 and 300 seconds (got {seconds})."));
            return CliHost.UsageError;
        }

        // No proxy: the application is on the TAP device's subnet, never behind the environment's proxy.
        using var handler = new SocketsHttpHandler { UseProxy = false, AllowAutoRedirect = false };
        using var client = new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(seconds) };
        try
        {
            using HttpResponseMessage response = await client.GetAsync(target, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
            int status = (int)response.StatusCode;
            if (status is >= 200 and < 300)
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"healthy: {target} answered {status}"));
                return 0;
            }

            await Console.Error.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"multikernel: unhealthy: {target} answered {status} {response.ReasonPhrase}"));
            return Unhealthy;
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
        {
            string why = ex is TaskCanceledException ? string.Create(CultureInfo.InvariantCulture, $"no answer within {seconds} s") : ex.Message;
            await Console.Error.WriteLineAsync($"multikernel: unhealthy: {target}: {why}");
            return Unhealthy;
        }
    }
}
