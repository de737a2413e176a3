using System.Net;
using System.Net.NetworkInformation;
using PacketDotNet;

namespace Multikernel.Tests.Netd.Filters;

/// <summary>Real frames built by PacketDotNet (an independent implementation of the headers the filters read).</summary>
internal static class Frames
{
    public static readonly PhysicalAddress MacA = PhysicalAddress.Parse("02-00-00-00-00-01");
    public static readonly PhysicalAddress MacB = PhysicalAddress.Parse("02-00-00-00-00-02");

    public static byte[] Tcp(string src, string dst, int sport, int dport, int payload = 0) =>
        Ip(src, dst, new TcpPacket((ushort)sport, (ushort)dport) { PayloadData = new byte[payload] });

    public static byte[] Udp(string src, string dst, int sport, int dport, int payload = 0) =>
        Ip(src, dst, new UdpPacket((ushort)sport, (ushort)dport) { PayloadData = new byte[payload] });

    public static byte[] Arp(ArpOperation op, string sender, string target)
    {
        var arp = new ArpPacket(op, MacB, IPAddress.Parse(target), MacA, IPAddress.Parse(sender));
        var eth = new EthernetPacket(MacA, PhysicalAddress.Parse("FF-FF-FF-FF-FF-FF"), EthernetType.Arp) { PayloadPacket = arp };
        return eth.Bytes;
    }

    public static byte[] Ip(string src, string dst, Packet transport)
    {
        var ip = new IPv4Packet(IPAddress.Parse(src), IPAddress.Parse(dst)) { PayloadPacket = transport };
        var eth = new EthernetPacket(MacA, MacB, EthernetType.IPv4) { PayloadPacket = ip };
        transport.UpdateCalculatedValues();
        ip.UpdateCalculatedValues();
        eth.UpdateCalculatedValues();
        return eth.Bytes;
    }
}
