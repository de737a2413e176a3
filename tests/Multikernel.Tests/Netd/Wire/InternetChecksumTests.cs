using System.Buffers.Binary;
using Multikernel.Netd.Wire;

namespace Multikernel.Tests.Netd.Wire;

/// <summary>The wide checksum (native-order vectors, byte-swapped once) against the RFC 1071 definition.</summary>
public sealed class InternetChecksumTests
{
    // RFC 1071 literally: big-endian 16-bit words, an odd last byte padded with zero, end-around carry.
    private static ushort Reference(ulong sum, ReadOnlySpan<byte> data)
    {
        for (int i = 0; i < data.Length; i += 2)
        {
            sum += i + 1 < data.Length ? BinaryPrimitives.ReadUInt16BigEndian(data[i..]) : (uint)data[i] << 8;
            sum = (sum & 0xFFFF) + (sum >> 16);
        }

        while ((sum >> 16) != 0)
        {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }

        return (ushort)~sum;
    }

    [Fact]
    public void AgreesWithTheDefinition_ForEveryLengthAndAlignment_AndCarryHeavyData()
    {
        var random = new Random(1071);
        byte[] buffer = new byte[3000 + 8];
        for (int round = 0; round < 4000; round++)
        {
            int length = round < 2000 ? round % 1600 : random.Next(0, 3000);
            int offset = random.Next(0, 8);
            switch (round % 4)
            {
                case 0: random.NextBytes(buffer); break;
                case 1: buffer.AsSpan().Fill(0xFF); break; // every add carries
                case 2: buffer.AsSpan().Clear(); break;
                default: random.NextBytes(buffer); buffer.AsSpan(0, buffer.Length / 2).Fill(0xFF); break;
            }

            ReadOnlySpan<byte> data = buffer.AsSpan(offset, length);
            ulong seed = (ulong)random.Next(0, 0x40000);
            Assert.True(
                Reference(seed, data) == InternetChecksum.Finish(InternetChecksum.Add(seed, data)),
                $"length {length}, offset {offset}, pattern {round % 4}, seed {seed}");
        }
    }

    [Fact]
    public void ChainedEvenSpans_SumAsOne()
    {
        byte[] data = new byte[1500];
        new Random(5).NextBytes(data);
        ulong chained = InternetChecksum.Add(InternetChecksum.Add(InternetChecksum.Add(7, data.AsSpan(0, 20)), data.AsSpan(20, 600)), data.AsSpan(620));
        Assert.Equal(Reference(7, data), InternetChecksum.Finish(chained));
    }
}
