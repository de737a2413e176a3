using System.Buffers.Text;
using Multikernel.Cli.Apps;
using Multikernel.Monitor;
using Multikernel.Monitor.Hosting;
using Multikernel.Net;
using Multikernel.Net.Netd;
using Multikernel.Net.Tcp;
using Multikernel.Netd.Daemon;
using Multikernel.Netd.Wire;

namespace Multikernel.Cli.Demo;

/// <summary>
/// The network half of <c>multikernel demo</c>: netd on the in-memory NIC (last core), the http
/// and kv applications on their own stacks, and a load generator — one more domain with its own
/// stack on the same switch — that keeps a few keep-alive connections busy against each for the
/// demo's duration and records every request's latency on its core's clock. Everything crosses
/// netd as descriptors; nothing touches the Linux network stack.
/// </summary>
internal sealed class NetworkDemo
{
    public const string LoadProgram = "demo-load";
    public static readonly Ipv4Address HttpAddress = Ipv4Address.Parse("10.77.0.2");
    public static readonly Ipv4Address KvAddress = Ipv4Address.Parse("10.77.0.3");
    public static readonly Ipv4Address LoadAddress = Ipv4Address.Parse("10.77.0.100");
    private const ushort HttpPort = 80;
    private const ushort KvPort = 6379;

    private readonly TaskCompletionSource _finished = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private TimeSpan _duration;
    private int _connections;

    public NetdHost Netd { get; } = new();

    public NetworkApps? Apps { get; private set; }

    public LoadResult Http { get; } = new("http", "GET / (keep-alive)");

    public LoadResult Kv { get; } = new("kv", "SET then GET (RESP)");

    /// <summary>Completes when the load generator has finished (faults with its error).</summary>
    public Task Finished => _finished.Task;

    /// <summary>Adds netd, the two applications and the load generator to the machine.</summary>
    public void Configure(MultikernelOptions options, int cores)
    {
        options.AddNetd((Action<NetdOptions>?)null, Netd);
        int netdCore = cores - 1;
        // The options are configured more than once (validation makes its own instance): one set
        // of applications and one netd host, registered into each.
        Apps ??= new NetworkApps(
            [new NetworkAppSpec("http", 0, HttpAddress, HttpPort), new NetworkAppSpec("kv", netdCore, KvAddress, KvPort)],
            new NetworkAppsSettings());
        Apps.Register(options);
        options.AddProgram(LoadProgram, RunLoadAsync);
    }

    /// <summary>Starts the load generator on core 0 once the applications listen.</summary>
    public async Task StartLoadAsync(MultikernelRuntime runtime, TimeSpan duration, int connections, CancellationToken cancellationToken)
    {
        _duration = duration;
        _connections = connections;
        await Apps!.WhenReadyAsync().WaitAsync(TimeSpan.FromSeconds(30), cancellationToken);
        await runtime.SpawnAsync(0, LoadProgram, 0, cancellationToken);
    }

    private async Task RunLoadAsync(DomainContext ctx)
    {
        try
        {
            await using DomainNetwork network = await DomainNetwork.StartAsync(ctx, new DomainNetworkOptions { Stack = new NetworkStackOptions { Address = LoadAddress } });
            TimeProvider time = ctx.Time;
            long end = time.GetTimestamp() + (long)(_duration.TotalSeconds * time.TimestampFrequency);
            var clients = new List<Task>();
            for (int i = 0; i < _connections; i++)
            {
                clients.Add(HttpClientAsync(network.Stack, time, end, ctx.Stopping));
                clients.Add(KvClientAsync(network.Stack, time, end, i, ctx.Stopping));
            }

            await Task.WhenAll(clients);
            await network.ShutdownAsync(TimeSpan.FromSeconds(1));
            _finished.TrySetResult();
        }
        catch (Exception ex)
        {
            _finished.TrySetException(ex);
        }
    }

    private async Task HttpClientAsync(NetworkStack stack, TimeProvider time, long end, CancellationToken stop)
    {
        TcpConnection connection = await stack.ConnectAsync(new Ipv4Endpoint(HttpAddress, HttpPort), stop);
        connection.NoDelay = true;
        byte[] request = "GET / HTTP/1.1\r\nHost: demo\r\n\r\n"u8.ToArray();
        byte[] buffer = new byte[16 * 1024];
        try
        {
            while (time.GetTimestamp() < end && !stop.IsCancellationRequested)
            {
                long start = time.GetTimestamp();
                await connection.WriteAsync(request, stop);
                if (await ReadHttpResponseAsync(connection, buffer, stop))
                {
                    Http.Record(time.GetElapsedTime(start));
                }
                else
                {
                    Http.Errors++;
                    break;
                }
            }
        }
        finally
        {
            connection.Close();
        }
    }

    // One whole response: the head up to the blank line, then Content-Length bytes of body. True for a 200.
    private static async Task<bool> ReadHttpResponseAsync(TcpConnection connection, byte[] buffer, CancellationToken stop)
    {
        int have = 0;
        while (true)
        {
            int n = await connection.ReadAsync(buffer.AsMemory(have), stop);
            if (n == 0)
            {
                return false;
            }

            have += n;
            int head = buffer.AsSpan(0, have).IndexOf("\r\n\r\n"u8);
            if (head >= 0)
            {
                long body = ContentLength(buffer.AsSpan(0, head));
                if (body < 0)
                {
                    return false;
                }

                bool ok = buffer.AsSpan(0, have).StartsWith("HTTP/1.1 200"u8);
                long remaining = head + 4 + body - have;
                while (remaining > 0)
                {
                    n = await connection.ReadAsync(buffer, stop);
                    if (n == 0)
                    {
                        return false;
                    }

                    remaining -= n;
                }

                return ok && remaining == 0; // one request in flight: nothing may follow the body
            }

            if (have == buffer.Length)
            {
                return false; // a head larger than the buffer: not what the built-in site sends
            }
        }
    }

    private static long ContentLength(ReadOnlySpan<byte> head)
    {
        ReadOnlySpan<byte> name = "\r\ncontent-length:"u8;
        for (int i = 0; i + name.Length <= head.Length; i++)
        {
            if (System.Text.Ascii.EqualsIgnoreCase(head.Slice(i, name.Length), name))
            {
                ReadOnlySpan<byte> value = head[(i + name.Length)..];
                int eol = value.IndexOf("\r\n"u8);
                value = (eol >= 0 ? value[..eol] : value).Trim((byte)' ');
                return Utf8Parser.TryParse(value, out long length, out int used) && used == value.Length ? length : -1;
            }
        }

        return -1;
    }

    private async Task KvClientAsync(NetworkStack stack, TimeProvider time, long end, int client, CancellationToken stop)
    {
        TcpConnection connection = await stack.ConnectAsync(new Ipv4Endpoint(KvAddress, KvPort), stop);
        connection.NoDelay = true;
        string key = $"demo:{client}";
        byte[] set = System.Text.Encoding.ASCII.GetBytes($"*3\r\n$3\r\nSET\r\n${key.Length}\r\n{key}\r\n$5\r\nvalue\r\n");
        byte[] get = System.Text.Encoding.ASCII.GetBytes($"*2\r\n$3\r\nGET\r\n${key.Length}\r\n{key}\r\n");
        byte[] buffer = new byte[256];
        try
        {
            for (long i = 0; time.GetTimestamp() < end && !stop.IsCancellationRequested; i++)
            {
                bool isSet = (i & 1) == 0;
                long start = time.GetTimestamp();
                await connection.WriteAsync(isSet ? set : get, stop);
                ReadOnlyMemory<byte> expected = isSet ? "+OK\r\n"u8.ToArray() : "$5\r\nvalue\r\n"u8.ToArray();
                if (await ReadExactlyAsync(connection, buffer, expected.Length, stop) && buffer.AsSpan(0, expected.Length).SequenceEqual(expected.Span))
                {
                    Kv.Record(time.GetElapsedTime(start));
                }
                else
                {
                    Kv.Errors++;
                    break;
                }
            }
        }
        finally
        {
            connection.Close();
        }
    }

    private static async Task<bool> ReadExactlyAsync(TcpConnection connection, byte[] buffer, int length, CancellationToken stop)
    {
        int have = 0;
        while (have < length)
        {
            int n = await connection.ReadAsync(buffer.AsMemory(have, length - have), stop);
            if (n == 0)
            {
                return false;
            }

            have += n;
        }

        return true;
    }
}

/// <summary>
/// One application's requests as the load generator saw them: a count, errors and a bounded
/// sample of latencies (every request until the sample is full, then a stride), written on the
/// load generator's core and read by the host once it finished.
/// </summary>
internal sealed class LoadResult(string application, string workload)
{
    private const int MaxSamples = 1 << 18;
    private readonly double[] _microseconds = new double[MaxSamples];
    private int _samples;

    public string Application { get; } = application;

    public string Workload { get; } = workload;

    public long Requests { get; private set; }

    public long Errors { get; set; }

    public void Record(TimeSpan latency)
    {
        Requests++;
        if (_samples < MaxSamples)
        {
            _microseconds[_samples++] = latency.TotalMicroseconds;
        }
        else
        {
            _microseconds[Requests % MaxSamples] = latency.TotalMicroseconds;
        }
    }

    /// <summary>The latency at quantile <paramref name="q"/> (0..1) in microseconds, or NaN without samples.</summary>
    public double Percentile(double q)
    {
        if (_samples == 0)
        {
            return double.NaN;
        }

        double[] sorted = _microseconds[.._samples];
        Array.Sort(sorted);
        return sorted[Math.Clamp((int)Math.Ceiling(q * sorted.Length) - 1, 0, sorted.Length - 1)];
    }
}
