using System.Net;
using System.Net.NetworkInformation;
using Multikernel.Netd.Capture;
using PacketDotNet;

namespace Multikernel.Tests.Netd.Drivers;

public sealed class PcapWriterTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mk-pcap-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static byte[] ArpRequest() =>
        new EthernetPacket(PhysicalAddress.Parse("02-00-00-00-00-01"), PhysicalAddress.Parse("FF-FF-FF-FF-FF-FF"), EthernetType.Arp)
        {
            PayloadPacket = new ArpPacket(ArpOperation.Request, PhysicalAddress.Parse("00-00-00-00-00-00"), IPAddress.Parse("10.0.0.2"), PhysicalAddress.Parse("02-00-00-00-00-01"), IPAddress.Parse("10.0.0.1")),
        }.Bytes;

    private static byte[] UdpDatagram(int payload)
    {
        var udp = new UdpPacket(1234, 5678) { PayloadData = new byte[payload] };
        var ip = new IPv4Packet(IPAddress.Parse("10.0.0.1"), IPAddress.Parse("10.0.0.2")) { PayloadPacket = udp };
        udp.UpdateCalculatedValues();
        ip.UpdateCalculatedValues();
        ip.UpdateIPChecksum();
        return new EthernetPacket(PhysicalAddress.Parse("02-00-00-00-00-01"), PhysicalAddress.Parse("02-00-00-00-00-02"), EthernetType.IPv4) { PayloadPacket = ip }.Bytes;
    }

    [Theory]
    [InlineData(PcapTimestampResolution.Microseconds, 0xA1B2C3D4u)]
    [InlineData(PcapTimestampResolution.Nanoseconds, 0xA1B23C4Du)]
    public void WrittenFile_ReadsBack_HeaderRecordsTimestampsAndPackets(PcapTimestampResolution resolution, uint magic)
    {
        var time = new ManualTimeProvider(new DateTimeOffset(2026, 12, 1, 10, 0, 0, TimeSpan.Zero));
        string path = Path.Combine(_dir, "a.pcap");
        byte[] arp = ArpRequest();
        byte[] udp = UdpDatagram(200);
        using (PcapWriter writer = PcapWriter.Create(path, new PcapOptions { Resolution = resolution }, time))
        {
            Assert.True(writer.Write(arp, CaptureDirection.Received));
            time.Advance(TimeSpan.FromTicks(1_234_567));   // 123.4567 ms
            Assert.True(writer.Write(udp, CaptureDirection.Transmitted));
            Assert.Equal(2, writer.Packets);
            Assert.Equal(1, writer.ReceivedPackets);
            Assert.Equal(1, writer.TransmittedPackets);
        }

        PcapFile file = PcapFile.Read(path);
        Assert.Equal(magic, file.Magic);
        Assert.Equal((2, 4), (file.VersionMajor, file.VersionMinor));
        Assert.Equal(1u, file.LinkType);
        Assert.Equal(65535u, file.SnapLength);
        Assert.Equal(2, file.Records.Count);
        uint epoch = (uint)new DateTimeOffset(2026, 12, 1, 10, 0, 0, TimeSpan.Zero).ToUnixTimeSeconds();
        Assert.Equal((epoch, 0u), (file.Records[0].Seconds, file.Records[0].Fraction));
        Assert.Equal(epoch, file.Records[1].Seconds);
        Assert.Equal(resolution == PcapTimestampResolution.Nanoseconds ? 123_456_700u : 123_456u, file.Records[1].Fraction);
        Assert.Equal(arp, file.Records[0].Data);
        Assert.Equal(udp, file.Records[1].Data);

        // An independent parser agrees on what the bytes are.
        var parsedArp = Packet.ParsePacket(LinkLayers.Ethernet, file.Records[0].Data).Extract<ArpPacket>();
        Assert.Equal(IPAddress.Parse("10.0.0.2"), parsedArp.TargetProtocolAddress);
        var parsedUdp = Packet.ParsePacket(LinkLayers.Ethernet, file.Records[1].Data).Extract<UdpPacket>();
        Assert.Equal(5678, parsedUdp.DestinationPort);
        Assert.Equal(200, parsedUdp.PayloadData.Length);
    }

    [Fact]
    public void SizeCap_StopsWriting_AndCountsWhatItSkipped()
    {
        string path = Path.Combine(_dir, "cap.pcap");
        byte[] frame = new byte[100];
        using (PcapWriter writer = PcapWriter.Create(path, new PcapOptions { MaxBytes = 4096 }))
        {
            int written = 0;
            for (int i = 0; i < 100; i++)
            {
                written += writer.Write(frame, CaptureDirection.Received) ? 1 : 0;
            }

            Assert.Equal((4096 - 24) / 116, written);   // 35 records of 16 + 100 bytes
            Assert.Equal(100 - written, writer.DroppedPackets);
            Assert.True(writer.IsStopped);
        }

        Assert.Equal(24 + (35 * 116), new FileInfo(path).Length);
        Assert.Equal(35, PcapFile.Read(path).Records.Count);
    }

    [Fact]
    public void SnapLength_TruncatesCapturedBytes_KeepsOriginalLength()
    {
        using var stream = new MemoryStream();
        using (var writer = new PcapWriter(stream, new PcapOptions { SnapLength = 64 }, leaveOpen: true))
        {
            writer.Write(UdpDatagram(500), CaptureDirection.Transmitted);
        }

        PcapFile file = PcapFile.Parse(stream.ToArray());
        Assert.Equal(64u, file.SnapLength);
        Assert.Equal(64, file.Records[0].Data.Length);
        Assert.Equal(14 + 20 + 8 + 500, file.Records[0].OriginalLength);
    }

    [Fact]
    public void BufferedFrames_ReachTheFile_OnFlush()
    {
        string path = Path.Combine(_dir, "flush.pcap");
        using PcapWriter writer = PcapWriter.Create(path);
        writer.Write(ArpRequest(), CaptureDirection.Received);
        Assert.Equal(24, new FileInfo(path).Length);  // header only: the frame is buffered
        writer.Flush();
        using var read = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        Assert.Equal(24 + 16 + 42, read.Length);
    }

    [Fact]
    public void WriteError_StopsCapture_WithoutThrowingIntoTheDataPath()
    {
        using var stream = new FailingStream();
        using var writer = new PcapWriter(stream, new PcapOptions(), leaveOpen: true);
        stream.Fail = true;
        for (int i = 0; i < 2000; i++)
        {
            writer.Write(new byte[100], CaptureDirection.Received); // fills the 64 KiB buffer, then the write fails
        }

        Assert.True(writer.IsStopped);
        Assert.IsType<IOException>(writer.Error);
        Assert.True(writer.DroppedPackets > 0);
    }

    [Fact]
    public void Options_RejectBadValues()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new PcapOptions { SnapLength = 10 });
        Assert.Throws<ArgumentOutOfRangeException>(() => new PcapOptions { MaxBytes = 100 });
    }

    private sealed class FailingStream : MemoryStream
    {
        public bool Fail { get; set; }

        public override void Write(byte[] buffer, int offset, int count)
        {
            if (Fail)
            {
                throw new IOException("No space left on device");
            }

            base.Write(buffer, offset, count);
        }
    }
}
