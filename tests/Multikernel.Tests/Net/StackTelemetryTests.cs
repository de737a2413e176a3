using System.Diagnostics;
using System.Diagnostics.Metrics;
using Multikernel.CpuDriver.Diagnostics;
using Multikernel.Net;
using Multikernel.Net.Tcp;
using TcpListener = Multikernel.Net.Tcp.TcpListener;

namespace Multikernel.Tests.Net;

/// <summary>
/// The stacks' counters as instruments (<see cref="NetworkStackMetrics"/>) and the connection
/// spans (<c>tcp handshake</c>, <c>tcp close</c> on <see cref="ActivitySources.Net"/>), read
/// through a real <see cref="MeterListener"/> and <see cref="ActivityListener"/> after a
/// deterministic exchange on the simulated switch.
/// </summary>
public sealed class StackTelemetryTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);
    private const ushort Port = 40_123;
    private const int Payload = 1000;

    /// <summary>
    /// One connect, <see cref="Payload"/> bytes from the client, a close from each side (the
    /// client first). Segments, client → server: SYN, ACK, data, FIN, ACK of the server's FIN
    /// (5); server → client: SYN-ACK, the delayed ACK of the data, ACK of the client's FIN, FIN (4).
    /// </summary>
    private static (TcpConnection Client, TcpConnection Server) Exchange(SimNetwork net, SimPort a, SimPort b, Action? whenEstablished = null)
    {
        TcpListener listener = b.S.Listen(Port);
        Task<TcpConnection> accept = net.Spawn(async () => await listener.AcceptAsync());
        Task<TcpConnection> connect = net.Spawn(async () => await a.S.ConnectAsync(new Ipv4Endpoint(b.Ip, Port)));
        TcpConnection client = net.Await(connect, Limit);
        TcpConnection server = net.Await(accept, Limit);
        net.RunUntil(() => server.State == TcpState.Established, Limit, "the server established");
        whenEstablished?.Invoke();

        byte[] data = new byte[Payload];
        Random.Shared.NextBytes(data);
        Task<int> read = net.Spawn(async () =>
        {
            byte[] buffer = new byte[4096];
            int total = 0, n;
            while ((n = await server.ReadAsync(buffer)) > 0)
            {
                total += n;
            }

            server.Close(); // the client's FIN arrived: close our side too
            return total;
        });
        net.Await(net.Spawn(async () => await client.WriteAsync(data)), Limit);
        net.RunUntil(() => client.SendUnacknowledged == client.SendNext, Limit, "the data acknowledged");
        client.Close();
        Assert.Equal(Payload, net.Await(read, Limit));
        net.RunUntil(() => client.State == TcpState.TimeWait && server.State == TcpState.Closed, Limit, "both sides closed");
        listener.Dispose();
        return (client, server);
    }

    [Fact]
    public void Counters_AreInstrumentsOfTheMeter_OneSeriesPerStack_WithExactValuesAfterAKnownExchange()
    {
        using var meter = new Meter("Multikernel.Tests.StackMetrics");
        var metrics = new NetworkStackMetrics(meter, maxCores: 4);
        using var collector = new Collector(meter);
        using var net = new SimNetwork(21);
        SimPort a = net.AddHost(1, o => { o.Metrics = metrics; o.Name = "client-domain"; });
        SimPort b = net.AddHost(2, o => { o.Metrics = metrics; o.Name = "server-domain"; });
        Assert.Equal(2, metrics.StackCount);

        Exchange(net, a, b, whenEstablished: () =>
        {
            collector.Collect();
            Assert.Equal(1, collector.Value(NetworkStackMetrics.Connections, "10.0.0.1", (NetworkStackMetrics.State, "established")));
            Assert.Equal(1, collector.Value(NetworkStackMetrics.Connections, "10.0.0.2", (NetworkStackMetrics.State, "established")));
            Assert.Equal(0, collector.Value(NetworkStackMetrics.Connections, "10.0.0.1", (NetworkStackMetrics.State, "syn_sent")));
        });

        collector.Collect();
        string send = "transmit", receive = "receive";
        Assert.Equal(5, collector.Value(NetworkStackMetrics.Segments, "10.0.0.1", (NetworkStackMetrics.Direction, send)));
        Assert.Equal(4, collector.Value(NetworkStackMetrics.Segments, "10.0.0.1", (NetworkStackMetrics.Direction, receive)));
        Assert.Equal(4, collector.Value(NetworkStackMetrics.Segments, "10.0.0.2", (NetworkStackMetrics.Direction, send)));
        Assert.Equal(5, collector.Value(NetworkStackMetrics.Segments, "10.0.0.2", (NetworkStackMetrics.Direction, receive)));
        Assert.Equal(Packets.TcpSent(a).Count(), collector.Value(NetworkStackMetrics.Segments, "10.0.0.1", (NetworkStackMetrics.Direction, send)));
        Assert.Equal(Payload, collector.Value(NetworkStackMetrics.Bytes, "10.0.0.1", (NetworkStackMetrics.Direction, send)));
        Assert.Equal(Payload, collector.Value(NetworkStackMetrics.Bytes, "10.0.0.2", (NetworkStackMetrics.Direction, receive)));
        Assert.Equal(0, collector.Value(NetworkStackMetrics.Bytes, "10.0.0.2", (NetworkStackMetrics.Direction, send)));
        Assert.Equal(0, collector.Value(NetworkStackMetrics.Retransmits, "10.0.0.1"));
        Assert.Equal(1, collector.Value(NetworkStackMetrics.ConnectionsOpened, "10.0.0.1", (NetworkStackMetrics.Role, "client")));
        Assert.Equal(0, collector.Value(NetworkStackMetrics.ConnectionsOpened, "10.0.0.1", (NetworkStackMetrics.Role, "server")));
        Assert.Equal(1, collector.Value(NetworkStackMetrics.ConnectionsOpened, "10.0.0.2", (NetworkStackMetrics.Role, "server")));
        Assert.Equal(1, collector.Value(NetworkStackMetrics.Connections, "10.0.0.1", (NetworkStackMetrics.State, "time_wait")));
        Assert.Equal(0, collector.Value(NetworkStackMetrics.Connections, "10.0.0.2", (NetworkStackMetrics.State, "established")));
        Assert.Equal(2 * 2, collector.Series(NetworkStackMetrics.Frames).Count); // two stacks × two directions
        Assert.Equal(Enum.GetValues<DropReason>().Length, collector.Series(NetworkStackMetrics.Drops).Count(s => s.Tags[NetworkStackMetrics.LocalAddress] == "10.0.0.1"));
        Assert.Equal(0, collector.Value(NetworkStackMetrics.Drops, "10.0.0.1", (NetworkStackMetrics.Reason, "tcp_no_connection")));

        // The stack's identity: its address and name, and no core (this one is on the test's thread).
        Collector.Point point = collector.Series(NetworkStackMetrics.Segments).First(s => s.Tags[NetworkStackMetrics.LocalAddress] == "10.0.0.2");
        Assert.Equal("server-domain", point.Tags[TelemetryTags.Domain]);
        Assert.False(point.Tags.ContainsKey(TelemetryTags.Core));

        // A dropped segment is counted under its reason; a disposed stack stops reporting.
        Task<TcpConnection> refused = net.Spawn(async () => await a.S.ConnectAsync(new Ipv4Endpoint(b.Ip, 9)));
        net.RunUntil(() => refused.IsCompleted, Limit);
        a.S.Dispose();
        collector.Collect();
        Assert.Equal(1, collector.Value(NetworkStackMetrics.Drops, "10.0.0.2", (NetworkStackMetrics.Reason, "tcp_no_connection")));
        Assert.Equal(1, collector.Value(NetworkStackMetrics.Resets, "10.0.0.2", (NetworkStackMetrics.Direction, send)));
        Assert.DoesNotContain(collector.Series(NetworkStackMetrics.Segments), s => s.Tags[NetworkStackMetrics.LocalAddress] == "10.0.0.1");
        Assert.Equal(1, metrics.StackCount);
    }

    [Fact]
    public void AConnection_HasAHandshakeSpan_AndACloseSpan_OnEachSide_WithItsAddressesRoleAndOutcome()
    {
        using var spans = new NetSpans();
        using var net = new SimNetwork(22);
        SimPort a = net.AddHost(1, o => o.Name = "client-domain");
        SimPort b = net.AddHost(2);
        (TcpConnection client, _) = Exchange(net, a, b);
        string clientPort = client.Key.LocalPort.ToString(System.Globalization.CultureInfo.InvariantCulture);

        List<Activity> mine = spans.Of(clientPort);
        Assert.Equal(4, mine.Count);
        Activity clientHandshake = Assert.Single(mine, s => s.DisplayName == TcpConnection.HandshakeSpanName && s.Kind == ActivityKind.Client);
        Activity serverHandshake = Assert.Single(mine, s => s.DisplayName == TcpConnection.HandshakeSpanName && s.Kind == ActivityKind.Server);
        Activity clientClose = Assert.Single(mine, s => s.DisplayName == TcpConnection.CloseSpanName && Tag(s, "network.local.address") == "10.0.0.1");
        Activity serverClose = Assert.Single(mine, s => s.DisplayName == TcpConnection.CloseSpanName && Tag(s, "network.local.address") == "10.0.0.2");

        Assert.Equal(ActivitySources.NetName, clientHandshake.Source.Name);
        Assert.Equal("tcp", Tag(clientHandshake, "network.transport"));
        Assert.Equal("10.0.0.1", Tag(clientHandshake, "network.local.address"));
        Assert.Equal("10.0.0.2", Tag(clientHandshake, "network.peer.address"));
        Assert.Equal(Port.ToString(System.Globalization.CultureInfo.InvariantCulture), Tag(clientHandshake, "network.peer.port"));
        Assert.Equal(clientPort, Tag(clientHandshake, "network.local.port"));
        Assert.Equal("client", Tag(clientHandshake, NetworkStackMetrics.Role));
        Assert.Equal("client-domain", Tag(clientHandshake, TelemetryTags.Domain));
        Assert.Equal("established", Tag(clientHandshake, TelemetryTags.Outcome));
        Assert.Equal("server", Tag(serverHandshake, NetworkStackMetrics.Role));
        Assert.Equal("established", Tag(serverHandshake, TelemetryTags.Outcome));
        Assert.Null(Tag(serverHandshake, TelemetryTags.Domain)); // the server's stack has no name

        Assert.Equal("active", Tag(clientClose, TcpConnection.CloseTag));
        Assert.Equal("passive", Tag(serverClose, TcpConnection.CloseTag));
        Assert.Equal("closed", Tag(clientClose, TelemetryTags.Outcome));
        Assert.Equal("closed", Tag(serverClose, TelemetryTags.Outcome));
        Assert.All(mine, s => Assert.Equal(ActivityStatusCode.Unset, s.Status));

        // The spans never became the ambient span of the code that ran while they were open.
        Assert.Null(Activity.Current);
        Assert.All(mine, s => Assert.Null(s.Parent));
    }

    [Fact]
    public void ARefusedConnect_EndsItsHandshakeSpan_WithTheOutcomeAndAnErrorStatus()
    {
        using var spans = new NetSpans();
        using var net = new SimNetwork(23);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        Task<TcpConnection> connect = net.Spawn(async () => await a.S.ConnectAsync(new Ipv4Endpoint(b.Ip, 9)));
        net.RunUntil(() => connect.IsCompleted, Limit);

        Activity handshake = Assert.Single(spans.All, s => Tag(s, "network.peer.port") == "9");
        Assert.Equal(TcpConnection.HandshakeSpanName, handshake.DisplayName);
        Assert.Equal("refused", Tag(handshake, TelemetryTags.Outcome));
        Assert.Equal(ActivityStatusCode.Error, handshake.Status);
    }

    [Fact]
    public void AnEstablishedConnectionThatIsReset_HasACloseSpanOfTheMomentItDied()
    {
        using var spans = new NetSpans();
        using var net = new SimNetwork(24);
        SimPort a = net.AddHost(1);
        SimPort b = net.AddHost(2);
        (TcpConnection client, TcpConnection server) = TcpHandshakeTests.Connect(net, a, b, Port);
        server.Abort();
        net.RunUntil(() => client.State == TcpState.Closed, Limit, "the client saw the reset");
        string clientPort = client.Key.LocalPort.ToString(System.Globalization.CultureInfo.InvariantCulture);

        Activity died = Assert.Single(spans.Of(clientPort), s => s.DisplayName == TcpConnection.CloseSpanName && Tag(s, "network.local.address") == "10.0.0.1");
        Assert.Equal("reset", Tag(died, TcpConnection.CloseTag));
        Assert.Equal("reset", Tag(died, TelemetryTags.Outcome));
        Assert.Equal(ActivityStatusCode.Error, died.Status);
    }

    private static string? Tag(Activity span, string key) => span.GetTagItem(key) switch
    {
        null => null,
        IFormattable f => f.ToString(null, System.Globalization.CultureInfo.InvariantCulture),
        object o => o.ToString(),
    };

    /// <summary>Spans of the stack's source only.</summary>
    private sealed class NetSpans : IDisposable
    {
        private readonly ActivityListener _listener;
        private readonly System.Collections.Concurrent.ConcurrentQueue<Activity> _stopped = new();

        public NetSpans()
        {
            _listener = new ActivityListener
            {
                ShouldListenTo = s => s.Name == ActivitySources.NetName,
                Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
                ActivityStopped = _stopped.Enqueue,
            };
            ActivitySource.AddActivityListener(_listener);
        }

        public IReadOnlyList<Activity> All => [.. _stopped];

        /// <summary>The spans of the connection whose client port is <paramref name="clientPort"/> (both ends).</summary>
        public List<Activity> Of(string clientPort) =>
            [.. _stopped.Where(s => Tag(s, "network.local.port") == clientPort || Tag(s, "network.peer.port") == clientPort)];

        public void Dispose() => _listener.Dispose();
    }

    /// <summary>Collects a meter's observable instruments on demand.</summary>
    private sealed class Collector : IDisposable
    {
        private readonly MeterListener _listener = new();
        private readonly List<(string Instrument, Point Point)> _points = [];

        public Collector(Meter meter)
        {
            _listener.InstrumentPublished = (instrument, l) =>
            {
                if (ReferenceEquals(instrument.Meter, meter))
                {
                    l.EnableMeasurementEvents(instrument);
                }
            };
            _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
            {
                var dictionary = new Dictionary<string, string>();
                foreach (KeyValuePair<string, object?> t in tags)
                {
                    dictionary[t.Key] = Convert.ToString(t.Value, System.Globalization.CultureInfo.InvariantCulture)!;
                }

                _points.Add((instrument.Name, new Point(value, dictionary)));
            });
            _listener.Start();
        }

        public void Collect()
        {
            _points.Clear();
            _listener.RecordObservableInstruments();
        }

        public List<Point> Series(string instrument) => [.. _points.Where(p => p.Instrument == instrument).Select(p => p.Point)];

        /// <summary>The one value of <paramref name="instrument"/> for the stack at <paramref name="address"/> with <paramref name="tag"/>.</summary>
        public long Value(string instrument, string address, (string Key, string Value)? tag = null) =>
            Assert.Single(Series(instrument), p => p.Tags[NetworkStackMetrics.LocalAddress] == address
                && (tag is not { } t || (p.Tags.TryGetValue(t.Key, out string? v) && v == t.Value))).Value;

        public void Dispose() => _listener.Dispose();

        public sealed record Point(long Value, Dictionary<string, string> Tags);
    }
}
