using Multikernel.Netd.Filters;

namespace Multikernel.Tests.Netd.Filters;

/// <summary>The text syntax: what each field compiles to, and clear errors with columns.</summary>
public sealed class FilterSyntaxTests
{
    [Fact]
    public void TheIssueExample_CompilesToFourAtoms_WithTheIhlShift()
    {
        FilterProgram program = FilterSyntax.Parse("eth.type == 0x0800 && ip.proto == 6 && tcp.dport == 8080");
        Assert.Equal(
            [
                FilterAtom.At(12, 2, 0xFFFF, 0x0800),
                FilterAtom.At(23, 1, 0xFF, 6),
                FilterAtom.At(20, 2, 0x1FFF, 0),
                new FilterAtom(16, 2, 0xFFFF, 8080, new FilterShift(14, 0x0F, 2)),
            ],
            program.Atoms.ToArray());
        Assert.Equal("eth.type == 0x0800 && ip.proto == 6 && tcp.dport == 8080", program.ToString());
    }

    [Theory]
    [InlineData("ip.dst == 10.0.0.0/8", 30, 4, 0xFF000000u, 0x0A000000u)]
    [InlineData("ip.src == 192.168.1.7", 26, 4, 0xFFFFFFFFu, 0xC0A80107u)]
    [InlineData("ip.src == 10.1.0.0/16", 26, 4, 0xFFFF0000u, 0x0A010000u)]
    [InlineData("arp.op == 2", 20, 2, 0xFFFFu, 2u)]
    [InlineData("ip.proto == udp", 23, 1, 0xFFu, 17u)]
    [InlineData("frame[14:1] & 0xF0 == 0x40", 14, 1, 0xF0u, 0x40u)]
    [InlineData("frame[6:4] == 4294967295", 6, 4, 0xFFFFFFFFu, 0xFFFFFFFFu)]
    public void Field_CompilesToItsAtom(string text, int offset, int width, uint mask, uint value)
    {
        FilterProgram program = FilterSyntax.Parse(text);
        Assert.Equal(FilterAtom.At(offset, width, mask, value), program.Atoms[^1]);
    }

    [Fact]
    public void Mac_IsTwoAtoms_AndSlashZero_IsJustIpv4()
    {
        Assert.Equal(
            [FilterAtom.At(6, 4, 0xFFFFFFFF, 0x02AABBCC), FilterAtom.At(10, 2, 0xFFFF, 0xDDEE)],
            FilterSyntax.Parse("eth.src == 02:aa:bb:cc:dd:ee").Atoms.ToArray());
        Assert.Equal([FilterAtom.At(12, 2, 0xFFFF, 0x0800)], FilterSyntax.Parse("ip.dst == 0.0.0.0/0").Atoms.ToArray());
    }

    [Fact]
    public void ImpliedAtoms_AreNotRepeated()
    {
        // Both ports imply eth.type, first fragment and ip.proto once.
        Assert.Equal(5, FilterSyntax.Parse("udp.sport == 53 && udp.dport == 5353").Atoms.Length);
        Assert.Equal(new FilterAtom(14, 2, 0xFFFF, 53, FilterShift.Ipv4HeaderLength), FilterSyntax.Parse("udp.sport == 53").Atoms[^1]);
    }

    [Theory]
    [InlineData("", 1, "the filter is empty")]
    [InlineData("   ", 1, "the filter is empty")]
    [InlineData("tcp.port == 80", 1, "unknown field 'tcp.port'; known: eth.dst")]
    [InlineData("tcp.dport = 80", 11, "expected '==', found '= 80'")]
    [InlineData("tcp.dport != 80", 11, "only '==' is supported")]
    [InlineData("tcp.dport < 80", 11, "only '==' is supported")]
    [InlineData("tcp.dport ==", 13, "expected a value for tcp.dport")]
    [InlineData("tcp.dport == 70000", 14, "70000 does not fit in tcp.dport (16 bits)")]
    [InlineData("tcp.dport == http", 14, "'http' is not a number")]
    [InlineData("eth.type == 0x", 13, "'0x' is not a number")]
    [InlineData("ip.proto == 256", 13, "256 does not fit in ip.proto (8 bits)")]
    [InlineData("ip.dst == 10.0.0.1/8", 11, "'10.0.0.1/8' has host bits set outside the /8 prefix (did you mean 10.0.0.0/8?)")]
    [InlineData("ip.dst == 10.0.0/8", 11, "is not an IPv4 address")]
    [InlineData("ip.dst == 10.0.0.256", 11, "each part 0..255")]
    [InlineData("ip.dst == 10.0.0.0/33", 20, "'33' is not a prefix length between 0 and 32")]
    [InlineData("eth.dst == 02:00:00:00:00", 12, "is not a MAC address")]
    [InlineData("tcp.dport == 80 || udp.dport == 53", 17, "'||' is not supported")]
    [InlineData("tcp.dport == 80 &&", 19, "expected a clause after '&&' but the filter ended")]
    [InlineData("tcp.dport == 80 udp", 17, "expected '&&' or the end of the filter, found 'udp'")]
    [InlineData("tcp.dport == 80 && udp.dport == 53", 20, "'udp.dport == 53' contradicts 'tcp.dport == 80' at column 1 (which implies frame[23:1] & 0xFF == 0x06)")]
    [InlineData("eth.type == 0x86DD && ip.proto == 6", 23, "contradicts 'eth.type == 0x86DD' at column 1")]
    [InlineData("tcp.dport == 80 && tcp.dport == 81", 20, "'tcp.dport == 81' contradicts 'tcp.dport == 80' at column 1: the filter can never match")]
    [InlineData("frame[12:3] == 1", 10, "width 3 is not 1, 2 or 4")]
    [InlineData("frame[12:2] & 0xFF == 0x100", 23, "value 0x100 has bits outside mask 0xFF")]
    [InlineData("frame[12:2] & 0 == 0", 15, "mask 0 tests nothing")]
    [InlineData("frame[12:2] & 0x10000 == 0", 15, "0x10000 does not fit in a mask (16 bits)")]
    [InlineData("frame[70000:1] == 0", 7, "70000 does not fit in an offset (16 bits)")]
    [InlineData("frame[12:2 == 0", 12, "expected ']', found '== 0'")]
    [InlineData("frame 12", 7, "expected '[', found '12'")]
    [InlineData("&& tcp.dport == 80", 1, "expected a field")]
    public void BadText_IsRefused_WithItsColumn(string text, int column, string message)
    {
        Assert.False(FilterSyntax.TryParse(text, out FilterProgram? program, out FilterSyntaxError error));
        Assert.Null(program);
        Assert.True(column == error.Column, $"'{text}': expected column {column}, got {error}");
        Assert.Contains(message, error.Message, StringComparison.Ordinal);
        FormatException thrown = Assert.Throws<FormatException>(() => FilterSyntax.Parse(text));
        Assert.StartsWith($"column {column}: ", thrown.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void HugeText_IsRefused_BeforeParsing()
    {
        string text = string.Join(" && ", Enumerable.Repeat("tcp.dport == 80", 400));
        Assert.False(FilterSyntax.TryParse(text, out _, out FilterSyntaxError error));
        Assert.Contains("the limit is 4096", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void SyntaxErrors_ReachTheInstaller_AsSyntaxRefusals()
    {
        var classifier = new PacketClassifier();
        FilterInstallResult result = classifier.Install("tcp.dport == 99999", owner: 1);
        Assert.Equal(FilterRejection.Syntax, result.Problem.Reason);
        Assert.StartsWith("column 14: ", result.Problem.Message, StringComparison.Ordinal);
        Assert.Equal(0, classifier.Count);
    }
}
