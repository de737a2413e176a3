using System.Buffers.Binary;
using Multikernel.Netd.Filters;

namespace Multikernel.Tests.Netd.Filters;

/// <summary>The verifier and the binary decoder against a corpus of hostile programs: each refused with its reason and a precise message.</summary>
public sealed class FilterVerifierTests
{
    private static readonly FilterShift Ihl = FilterShift.Ipv4HeaderLength;

    public static TheoryData<string, FilterAtom[], FilterRejection, string> HostileAtoms() => new()
    {
        { "no atoms", [], FilterRejection.Empty, "claim every packet" },
        { "17 atoms", [.. Enumerable.Range(0, 17).Select(i => FilterAtom.At(i, 1, 0xFF, 0))], FilterRejection.TooManyAtoms, "17 atoms; the limit is 16" },
        { "width 3", [new FilterAtom(12, 3, 0xFFFFFF, 0)], FilterRejection.BadWidth, "atom 1: width 3 is not 1, 2 or 4" },
        { "width 0", [FilterAtom.At(12, 2, 0xFFFF, 0x800), new FilterAtom(12, 0, 1, 0)], FilterRejection.BadWidth, "atom 2: width 0" },
        { "width 8", [new FilterAtom(12, 8, 1, 0)], FilterRejection.BadWidth, "width 8" },
        { "zero mask", [FilterAtom.At(12, 2, 0, 0)], FilterRejection.BadMask, "mask 0 tests nothing" },
        { "mask wider than field", [FilterAtom.At(23, 1, 0x1FF, 6)], FilterRejection.BadMask, "mask 0x1FF is wider than the 1-byte field" },
        { "value outside mask", [FilterAtom.At(12, 2, 0xFF00, 0x0801)], FilterRejection.ValueOutsideMask, "value 0x801 has bits outside mask 0xFF00" },
        { "reads past the frame", [FilterAtom.At(1513, 2, 0xFFFF, 0)], FilterRejection.ReadPastFrame, "reads bytes 1513..1514, past the largest frame (1514 bytes)" },
        { "offset at the top of u16", [FilterAtom.At(65535, 4, 1, 0)], FilterRejection.ReadPastFrame, "reads bytes 65535..65538" },
        { "shift with mask 0", [new FilterAtom(16, 2, 0xFFFF, 80, new FilterShift(14, 0, 2))], FilterRejection.BadShift, "shift mask 0" },
        { "shift count 8", [new FilterAtom(16, 2, 0xFFFF, 80, new FilterShift(14, 0x0F, 8))], FilterRejection.BadShift, "shift count 8 is above 7" },
        { "shift count 255", [new FilterAtom(16, 2, 0xFFFF, 80, new FilterShift(14, 0x0F, 255))], FilterRejection.BadShift, "shift count 255" },
        { "length byte past the frame", [new FilterAtom(16, 2, 0xFFFF, 80, new FilterShift(2000, 0x0F, 2))], FilterRejection.ReadPastFrame, "length byte at 2000" },
        { "largest shift reads past the frame", [new FilterAtom(14, 2, 0xFFFF, 80, new FilterShift(14, 0xFF, 7))], FilterRejection.ReadPastFrame, "with the largest shift (32640)" },
        { "IHL shift near the end", [new FilterAtom(1460, 2, 0xFFFF, 80, Ihl)], FilterRejection.ReadPastFrame, "with the largest shift (60) reads bytes up to 1521" },
        { "contradictory eth.type", [FilterAtom.At(12, 2, 0xFFFF, 0x0800), FilterAtom.At(12, 2, 0xFFFF, 0x0806)], FilterRejection.Contradictory, "atoms 1 (" },
        { "contradictory across widths", [FilterAtom.At(12, 2, 0xFFFF, 0x0800), FilterAtom.At(23, 1, 0xFF, 6), FilterAtom.At(12, 1, 0xFF, 0x86)], FilterRejection.Contradictory, "atoms 1 (frame[12:2] & 0xFFFF == 0x0800) and 3 (frame[12:1] & 0xFF == 0x86) require different values of byte 12" },
        { "contradictory shifted fields", [FilterAtom.AfterIpv4(2, 2, 0xFFFF, 80), FilterAtom.AfterIpv4(3, 1, 0xFF, 81)], FilterRejection.Contradictory, "byte 17 + ((frame[14] & 0x0F) << 2)" },
    };

    [Theory]
    [MemberData(nameof(HostileAtoms))]
    public void Verifier_RefusesHostileProgram_WithItsReason(string name, FilterAtom[] atoms, FilterRejection reason, string message)
    {
        FilterProgram program = FilterProgram.FromAtoms(atoms);
        FilterProblem problem = FilterVerifier.Verify(program, new ClassifierOptions());
        Assert.True(problem.Reason == reason, $"{name}: expected {reason}, got {problem}");
        Assert.Contains(message, problem.Message, StringComparison.Ordinal);

        // The same program through the binary form and the classifier: refused for the same reason, nothing installed.
        var classifier = new PacketClassifier();
        FilterInstallResult result = classifier.Install(FilterBinary.Encode(program), owner: 1);
        Assert.Equal(reason, result.Problem.Reason);
        Assert.Equal(0, classifier.Count);
    }

    [Theory]
    [InlineData(2, 1513)]
    [InlineData(4, 1510)]
    [InlineData(1, 1513)]
    public void Verifier_AcceptsTheLastByteOfTheLargestFrame(int width, int offset)
    {
        FilterProblem problem = FilterVerifier.Verify(FilterProgram.FromAtoms([FilterAtom.At(offset, width, 1, 0)]), new ClassifierOptions());
        Assert.True(width == 2 ? !problem.IsNone : problem.IsNone, problem.ToString()); // 1513 + 2 = 1515 > 1514
    }

    [Fact]
    public void Verifier_AcceptsTheIhlShift_AndSameFieldAtomsThatAgree()
    {
        FilterProgram program = FilterProgram.FromAtoms([FilterAtom.At(14, 1, 0xF0, 0x40), FilterAtom.At(14, 1, 0x0F, 0x05), FilterAtom.AfterIpv4(2, 2, 0xFFFF, 80)]);
        Assert.True(FilterVerifier.Verify(program, new ClassifierOptions()).IsNone);
    }

    public static TheoryData<string, byte[], string> MalformedBinaries()
    {
        byte[] valid = FilterBinary.Encode(FilterSyntax.Parse("tcp.dport == 80"));
        return new()
        {
            { "empty", [], "0 bytes is shorter than the 8-byte header" },
            { "7 bytes", valid[..7], "7 bytes is shorter" },
            { "bad magic", With(valid, 0, 0x00), "bad magic" },
            { "version 2", With(valid, 4, 2), "unknown version 2 at byte 4" },
            { "reserved byte", With(valid, 5, 1), "reserved byte 5 is 0x01" },
            { "count 65535", WithU16(valid, 6, 65535), "atom count 65535 at byte 6 is above 1024" },
            { "count says 5, 4 present", WithU16(valid, 6, 5), "5 atoms need exactly 88 bytes, got 72" },
            { "one byte short", valid[..^1], "4 atoms need exactly 72 bytes, got 71" },
            { "one byte extra", [.. valid, 0], "got 73" },
            { "unknown flag", With(valid, 8 + 3, 0x81), "atom 1: unknown flag bits 0x80 at byte 11" },
            { "shift bytes without flag", With(valid, 8 + 6, 0x0F), "atom 1: shift bytes 12..15 are set but the atom is not shifted" },
        };
    }

    [Theory]
    [MemberData(nameof(MalformedBinaries))]
    public void Decoder_RefusesMalformedBinary_WithWhereItIsWrong(string name, byte[] bytes, string message)
    {
        Assert.False(FilterBinary.TryDecode(bytes, out FilterProgram? program, out FilterProblem problem), name);
        Assert.Null(program);
        Assert.Equal(FilterRejection.Malformed, problem.Reason);
        Assert.Contains(message, problem.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Binary_RoundTrips_EveryKindOfAtom()
    {
        FilterProgram program = FilterSyntax.Parse("eth.src == 02:00:00:00:00:01 && ip.dst == 10.0.0.0/8 && udp.dport == 53 && frame[14:1] & 0xF0 == 0x40");
        Assert.True(FilterBinary.TryDecode(FilterBinary.Encode(program), out FilterProgram? decoded, out FilterProblem problem), problem.ToString());
        Assert.Equal(program.Atoms.ToArray(), decoded!.Atoms.ToArray());
    }

    [Fact]
    public void Decoder_AndVerifier_NeverThrow_OnMutatedPrograms()
    {
        // Random bit flips, truncations and extensions of valid programs: each is decoded and
        // verified, or refused with a reason; none throws, and whatever passes evaluates safely.
        var random = new Random(4242);
        byte[][] valid = [.. new[] { "tcp.dport == 80", "ip.src == 10.0.0.0/8 && udp.sport == 53", "l4[0:4] & 0xFFFF == 0x50", "arp.op == 1" }
            .Select(t => FilterBinary.Encode(FilterSyntax.Parse(t)))];
        byte[] frame = new byte[1514];
        random.NextBytes(frame);
        int accepted = 0;
        for (int i = 0; i < 20_000; i++)
        {
            byte[] bytes = [.. valid[random.Next(valid.Length)]];
            switch (random.Next(3))
            {
                case 0: bytes[random.Next(bytes.Length)] ^= (byte)(1 << random.Next(8)); break;
                case 1: Array.Resize(ref bytes, random.Next(bytes.Length + 20)); break;
                default: bytes[random.Next(bytes.Length)] = (byte)random.Next(256); break;
            }

            var classifier = new PacketClassifier();
            FilterInstallResult result = classifier.Install(bytes, owner: 1);
            Assert.True(result.Succeeded || result.Problem.Message.Length > 0);
            if (result.Succeeded)
            {
                accepted++;
                for (int len = 0; len <= 100; len += 7)
                {
                    _ = classifier.Classify(frame.AsSpan(0, len));
                }

                _ = classifier.Classify(frame);
            }
        }

        Assert.InRange(accepted, 1, 19_999);
    }

    [Fact]
    public void VerifiedFilters_OnShortFrames_DoNotMatch_AndDoNotThrow()
    {
        var classifier = new PacketClassifier();
        Assert.True(classifier.Install("tcp.dport == 80", owner: 1).Succeeded);
        byte[] frame = new byte[100];
        frame[12] = 0x08;
        frame[14] = 0x4F; // IHL 15: ports at 74..77
        frame[23] = 6;
        frame[76] = 0;
        frame[77] = 80;
        for (int len = 0; len < 78; len++)
        {
            Assert.False(classifier.Classify(frame.AsSpan(0, len)).Matched, $"length {len}");
        }

        Assert.True(classifier.Classify(frame.AsSpan(0, 78)).Matched);
        Assert.Equal(78, classifier.Unmatched);
    }

    private static byte[] With(byte[] bytes, int at, byte value)
    {
        byte[] copy = [.. bytes];
        copy[at] = value;
        return copy;
    }

    private static byte[] WithU16(byte[] bytes, int at, ushort value)
    {
        byte[] copy = [.. bytes];
        BinaryPrimitives.WriteUInt16LittleEndian(copy.AsSpan(at), value);
        return copy;
    }
}
