using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Multikernel.Cli.Bench;

/// <summary>
/// The echo client of <c>bench net</c>, the same code against our echo over TAP and against a
/// Linux echo server over veth: it runs as <c>multikernel bench net probe …</c> inside the
/// client's namespace (<c>ip netns exec</c>), so it sits where the other Linux clients sit, and
/// prints one <c>key=value</c> line the benchmark reads.
/// </summary>
internal static class NetProbe
{
    /// <summary>Bytes per round trip of the echo latency test.</summary>
    public const int RttSize = 64;

    /// <summary>
    /// <paramref name="count"/> round trips of <see cref="RttSize"/> bytes on one connection with
    /// Nagle off (after 10% warm-up), each timed alone; prints <c>rtt_p50_us=… rtt_p99_us=…</c>.
    /// </summary>
    public static async Task<string> RttAsync(IPAddress host, int port, int count, CancellationToken cancellationToken)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await socket.ConnectAsync(new IPEndPoint(host, port), cancellationToken);
        byte[] send = new byte[RttSize];
        byte[] receive = new byte[RttSize];
        Random.Shared.NextBytes(send);
        int warmup = Math.Max(10, count / 10);
        double[] samples = new double[count];
        for (int i = -warmup; i < count; i++)
        {
            long began = Stopwatch.GetTimestamp();
            await socket.SendAsync(send, SocketFlags.None, cancellationToken);
            int got = 0;
            while (got < RttSize)
            {
                int n = await socket.ReceiveAsync(receive.AsMemory(got), SocketFlags.None, cancellationToken);
                if (n == 0)
                {
                    throw new IOException($"the echo server closed the connection after {i + warmup} round trips");
                }

                got += n;
            }

            if (i >= 0)
            {
                samples[i] = Stopwatch.GetElapsedTime(began).TotalMicroseconds;
            }

            if (!send.AsSpan().SequenceEqual(receive))
            {
                throw new IOException("the echo came back different from what was sent");
            }
        }

        socket.Shutdown(SocketShutdown.Send);
        Array.Sort(samples);
        return string.Create(CultureInfo.InvariantCulture, $"rtt_p50_us={Percentile(samples, 0.50):F2} rtt_p99_us={Percentile(samples, 0.99):F2}");
    }

    /// <summary>
    /// Streams <paramref name="megabytes"/> MiB into an echo server on one connection while reading
    /// the echo back; prints <c>bulk_gbit_s=…</c>, the payload of one direction over the time from
    /// the first byte sent to the last byte back.
    /// </summary>
    public static async Task<string> BulkAsync(IPAddress host, int port, int megabytes, CancellationToken cancellationToken)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(new IPEndPoint(host, port), cancellationToken);
        long total = (long)megabytes << 20;
        byte[] chunk = new byte[64 * 1024];
        Random.Shared.NextBytes(chunk);
        long began = Stopwatch.GetTimestamp();
        Task writer = Task.Run(
            async () =>
            {
                for (long sent = 0; sent < total; sent += chunk.Length)
                {
                    int n = (int)Math.Min(chunk.Length, total - sent);
                    await socket.SendAsync(chunk.AsMemory(0, n), SocketFlags.None, cancellationToken);
                }

                socket.Shutdown(SocketShutdown.Send);
            },
            cancellationToken);
        byte[] receive = new byte[256 * 1024];
        long back = 0;
        while (back < total)
        {
            int n = await socket.ReceiveAsync(receive, SocketFlags.None, cancellationToken);
            if (n == 0)
            {
                throw new IOException($"the echo server closed after {back} of {total} bytes");
            }

            back += n;
        }

        double seconds = Stopwatch.GetElapsedTime(began).TotalSeconds;
        await writer;
        return string.Create(CultureInfo.InvariantCulture, $"bulk_gbit_s={total * 8 / seconds / 1e9:F4}");
    }

    /// <summary>
    /// Streams <paramref name="megabytes"/> MiB into a discard server (RFC 863) on one connection,
    /// half-closes and waits for the server's close; prints <c>sink_gbit_s=…</c>, the payload over
    /// the time from the first byte sent to the server's FIN. The server closes only after reading
    /// the end of the stream, so that FIN says every byte arrived and was taken by the application:
    /// one direction through the stack, as <c>iperf3 -c</c> measures it.
    /// </summary>
    public static async Task<string> SinkAsync(IPAddress host, int port, int megabytes, CancellationToken cancellationToken)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(new IPEndPoint(host, port), cancellationToken);
        long total = (long)megabytes << 20;
        byte[] chunk = new byte[128 * 1024];
        Random.Shared.NextBytes(chunk);
        long began = Stopwatch.GetTimestamp();
        for (long sent = 0; sent < total; sent += chunk.Length)
        {
            int n = (int)Math.Min(chunk.Length, total - sent);
            await socket.SendAsync(chunk.AsMemory(0, n), SocketFlags.None, cancellationToken);
        }

        socket.Shutdown(SocketShutdown.Send);
        byte[] rest = new byte[1024];
        int extra;
        while ((extra = await socket.ReceiveAsync(rest, SocketFlags.None, cancellationToken)) > 0)
        {
            throw new IOException($"the discard server sent {extra} bytes back");
        }

        double seconds = Stopwatch.GetElapsedTime(began).TotalSeconds;
        return string.Create(CultureInfo.InvariantCulture, $"sink_gbit_s={total * 8 / seconds / 1e9:F4}");
    }

    /// <summary>The value of <paramref name="key"/> in a probe's <c>key=value</c> line (NaN when missing).</summary>
    public static double Read(string output, string key)
    {
        foreach (string token in output.Split([' ', '\n', '\r'], StringSplitOptions.RemoveEmptyEntries))
        {
            if (token.StartsWith(key + "=", StringComparison.Ordinal) && double.TryParse(token.AsSpan(key.Length + 1), NumberStyles.Float, CultureInfo.InvariantCulture, out double v))
            {
                return v;
            }
        }

        return double.NaN;
    }

    private static double Percentile(double[] sorted, double p) => sorted.Length == 0 ? double.NaN : sorted[Math.Min(sorted.Length - 1, (int)(p * sorted.Length))];
}
