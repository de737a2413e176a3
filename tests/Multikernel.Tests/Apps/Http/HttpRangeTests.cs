using Multikernel.Apps.Http;

namespace Multikernel.Tests.Apps.Http;

public sealed class HttpRangeTests
{
    [Theory]
    [InlineData("bytes=0-0", 10, RangeResult.Satisfiable, 0, 1)]
    [InlineData("bytes=0-9", 10, RangeResult.Satisfiable, 0, 10)]
    [InlineData("bytes=0-999", 10, RangeResult.Satisfiable, 0, 10)]
    [InlineData("bytes=9-", 10, RangeResult.Satisfiable, 9, 1)]
    [InlineData("bytes=5-", 10, RangeResult.Satisfiable, 5, 5)]
    [InlineData("bytes=-1", 10, RangeResult.Satisfiable, 9, 1)]
    [InlineData("bytes=-100", 10, RangeResult.Satisfiable, 0, 10)]
    [InlineData("BYTES = 2-3", 10, RangeResult.Ignore, 0, 10)]
    [InlineData("bytes= 2-3", 10, RangeResult.Satisfiable, 2, 2)]
    [InlineData("bytes=10-", 10, RangeResult.Unsatisfiable, 0, 10)]
    [InlineData("bytes=10-20", 10, RangeResult.Unsatisfiable, 0, 10)]
    [InlineData("bytes=-0", 10, RangeResult.Unsatisfiable, 0, 10)]
    [InlineData("bytes=0-0", 0, RangeResult.Unsatisfiable, 0, 0)]
    [InlineData("bytes=-5", 0, RangeResult.Unsatisfiable, 0, 0)]
    [InlineData("bytes=3-1", 10, RangeResult.Ignore, 0, 10)]
    [InlineData("bytes=0-1,3-4", 10, RangeResult.Ignore, 0, 10)]
    [InlineData("items=0-1", 10, RangeResult.Ignore, 0, 10)]
    [InlineData("bytes=a-b", 10, RangeResult.Ignore, 0, 10)]
    [InlineData("bytes=-", 10, RangeResult.Ignore, 0, 10)]
    [InlineData("bytes=1", 10, RangeResult.Ignore, 0, 10)]
    [InlineData("bytes=99999999999999999999-", 10, RangeResult.Ignore, 0, 10)]
    [InlineData("", 10, RangeResult.Ignore, 0, 10)]
    public void SingleRanges_PerRfc9110(string header, long length, RangeResult expected, long start, long count)
    {
        Assert.Equal(expected, HttpRange.Parse(header, length, out long s, out long c));
        if (expected == RangeResult.Satisfiable)
        {
            Assert.Equal((start, count), (s, c));
        }
    }
}
