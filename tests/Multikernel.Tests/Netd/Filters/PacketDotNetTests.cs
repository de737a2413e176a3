using System.Globalization;
using Multikernel.Netd.Filters;
using PacketDotNet;
using Xunit.Abstractions;

namespace Multikernel.Tests.Netd.Filters;

/// <summary>
/// Real packets built by PacketDotNet (an independent implementation of Ethernet, IPv4, TCP, UDP
/// and ARP): filters written from the fields PacketDotNet parses back must match, and the
/// classifier must agree with the reference on every such packet.
/// </summary>
public sealed class PacketDotNetTests(ITestOutputHelper output)
{
    [Fact]
    public void FiltersFromPacketDotNetFields_MatchTheirPackets_AndTheClassifierAgrees()
    {
        foreach (int seed in FilterFuzz.Seeds(3))
        {
            output.WriteLine($"seed {seed}");
            var random = new Random(seed);
            var classifier = new PacketClassifier();
            var installed = new List<(int Id, FilterAtom[] Atoms)>();
            var frames = new List<byte[]>();
            for (int i = 0; i < 300; i++)
            {
                string src = $"10.{random.Next(4)}.{random.Next(4)}.{random.Next(1, 255)}";
                string dst = $"10.{random.Next(4)}.{random.Next(4)}.{random.Next(1, 255)}";
                bool tcp = random.Next(2) == 0;
                int sport = random.Next(1, 65536);
                int dport = random.Next(1, 65536);
                byte[] frame = tcp ? Frames.Tcp(src, dst, sport, dport, random.Next(100)) : Frames.Udp(src, dst, sport, dport, random.Next(100));
                frames.Add(frame);

                // Parse it back with PacketDotNet and write the filter from what it reports.
                var eth = (EthernetPacket)Packet.ParsePacket(LinkLayers.Ethernet, frame);
                IPv4Packet ip = eth.Extract<IPv4Packet>();
                ushort parsedDport = tcp ? eth.Extract<TcpPacket>().DestinationPort : eth.Extract<UdpPacket>().DestinationPort;
                string text = random.Next(3) switch
                {
                    0 => $"{(tcp ? "tcp" : "udp")}.dport == {parsedDport}",
                    1 => $"ip.dst == {ip.DestinationAddress} && {(tcp ? "tcp" : "udp")}.dport == {parsedDport}",
                    _ => $"ip.src == {Prefix(ip.SourceAddress.ToString(), random)} && ip.proto == {(int)ip.Protocol}",
                };
                Assert.True(FilterReference.TextMatches(text, frame), $"seed {seed}: reference does not match '{text}' on its own packet");
                Assert.True(FilterSyntax.Parse(text).Matches(frame), $"seed {seed}: '{text}' does not match its own packet");
                FilterInstallResult result = classifier.Install(text, owner: 1 + random.Next(3));
                if (result.Succeeded)
                {
                    installed.Add((result.FilterId, classifier.GetProgram(result.FilterId)!.Atoms.ToArray()));
                }
            }

            frames.Add(Frames.Arp(ArpOperation.Request, "10.0.0.1", "10.0.0.2"));
            // A broad filter drawn early (ip.src in a /8 with ip.proto) claims most later ones, which
            // are then refused as overlapping: some seeds install only 30 of 300 (113212049 did).
            // Twenty is still a classifier with real choices to make.
            Assert.True(installed.Count >= 20, $"seed {seed}: only {installed.Count} installed");
            foreach (byte[] frame in frames)
            {
                Assert.Equal(FilterReference.FirstMatch(installed, frame), classifier.Classify(frame).FilterId);
            }
        }
    }

    [Fact]
    public void Arp_AndEthernetFields_MatchPacketDotNetPackets()
    {
        byte[] request = Frames.Arp(ArpOperation.Request, "10.0.0.1", "10.0.0.2");
        byte[] reply = Frames.Arp(ArpOperation.Response, "10.0.0.2", "10.0.0.1");
        Assert.True(FilterSyntax.Parse("arp.op == 1 && eth.src == 02:00:00:00:00:01 && eth.dst == ff:ff:ff:ff:ff:ff").Matches(request));
        Assert.False(FilterSyntax.Parse("arp.op == 1").Matches(reply));
        Assert.True(FilterSyntax.Parse("arp.op == 2").Matches(reply));
        Assert.False(FilterSyntax.Parse("ip.proto == 6").Matches(request));
    }

    private static string Prefix(string address, Random random)
    {
        // A network prefix of the source address: keep the first k octets, zero the rest.
        string[] parts = address.Split('.');
        int keep = 1 + random.Next(4);
        string network = string.Join('.', parts.Select((p, i) => i < keep ? p : "0"));
        return network + "/" + (8 * keep).ToString(CultureInfo.InvariantCulture);
    }
}
