using System.Buffers.Binary;

namespace Multikernel.Tests.Netd.Drivers;

/// <summary>
/// An independent reader of classic pcap files (written from the format description, sharing no
/// code with the writer): checks the header and every record, so a truncated or inconsistent
/// file fails the test.
/// </summary>
internal sealed record PcapFile(uint Magic, ushort VersionMajor, ushort VersionMinor, uint SnapLength, uint LinkType, IReadOnlyList<PcapRecord> Records)
{
    public bool Nanoseconds => Magic == 0xA1B23C4D;

    public static PcapFile Read(string path) => Parse(File.ReadAllBytes(path));

    public static PcapFile Parse(byte[] bytes)
    {
        if (bytes.Length < 24)
        {
            throw new InvalidDataException($"pcap file of {bytes.Length} bytes has no global header");
        }

        ReadOnlySpan<byte> b = bytes;
        uint magic = BinaryPrimitives.ReadUInt32LittleEndian(b);
        if (magic is not (0xA1B2C3D4 or 0xA1B23C4D))
        {
            throw new InvalidDataException($"bad pcap magic {magic:x8}");
        }

        uint snap = BinaryPrimitives.ReadUInt32LittleEndian(b[16..]);
        var records = new List<PcapRecord>();
        int pos = 24;
        while (pos < bytes.Length)
        {
            if (bytes.Length - pos < 16)
            {
                throw new InvalidDataException($"truncated record header at {pos}");
            }

            uint sec = BinaryPrimitives.ReadUInt32LittleEndian(b[pos..]);
            uint frac = BinaryPrimitives.ReadUInt32LittleEndian(b[(pos + 4)..]);
            int incl = (int)BinaryPrimitives.ReadUInt32LittleEndian(b[(pos + 8)..]);
            int orig = (int)BinaryPrimitives.ReadUInt32LittleEndian(b[(pos + 12)..]);
            if (incl > snap || incl > orig || bytes.Length - pos - 16 < incl)
            {
                throw new InvalidDataException($"inconsistent record at {pos}: incl {incl}, orig {orig}, snap {snap}");
            }

            if (frac >= (magic == 0xA1B23C4D ? 1_000_000_000u : 1_000_000u))
            {
                throw new InvalidDataException($"fraction {frac} out of range at {pos}");
            }

            records.Add(new PcapRecord(sec, frac, orig, bytes.AsSpan(pos + 16, incl).ToArray()));
            pos += 16 + incl;
        }

        return new PcapFile(magic, BinaryPrimitives.ReadUInt16LittleEndian(b[4..]), BinaryPrimitives.ReadUInt16LittleEndian(b[6..]), snap, BinaryPrimitives.ReadUInt32LittleEndian(b[20..]), records);
    }
}

internal sealed record PcapRecord(uint Seconds, uint Fraction, int OriginalLength, byte[] Data);
