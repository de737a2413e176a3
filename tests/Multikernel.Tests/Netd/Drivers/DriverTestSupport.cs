using System.Buffers.Binary;
using Multikernel.Netd.Drivers;
using Multikernel.Netd.Wire;

namespace Multikernel.Tests.Netd.Drivers;

/// <summary>A clock the test moves by hand: timestamps in 100 ns ticks, wall clock from a fixed instant.</summary>
internal sealed class ManualTimeProvider : TimeProvider
{
    private long _ticks;

    public ManualTimeProvider(DateTimeOffset start) => Start = start;

    public ManualTimeProvider()
        : this(new DateTimeOffset(2026, 12, 1, 12, 0, 0, TimeSpan.Zero))
    {
    }

    public DateTimeOffset Start { get; }

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    public override long GetTimestamp() => Volatile.Read(ref _ticks);

    public override DateTimeOffset GetUtcNow() => Start + TimeSpan.FromTicks(Volatile.Read(ref _ticks));

    public void Advance(TimeSpan by) => Interlocked.Add(ref _ticks, by.Ticks);
}

/// <summary>Frames for the switch tests: Ethernet header, a 4-byte sequence number, filler.</summary>
internal static class Frames
{
    public const ushort TestEtherType = 0x88B5; // IEEE local experimental

    public static MacAddress Mac(int n) => MacAddress.FromUInt64(0x0200_0000_0000UL | (uint)n);

    public static byte[] Build(MacAddress destination, MacAddress source, int sequence, int length = 64)
    {
        var frame = new byte[length];
        destination.Write(frame);
        source.Write(frame.AsSpan(6));
        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(12), TestEtherType);
        BinaryPrimitives.WriteInt32BigEndian(frame.AsSpan(14), sequence);
        for (int i = 18; i < length; i++)
        {
            frame[i] = (byte)(sequence + i);
        }

        return frame;
    }

    public static int Sequence(ReadOnlySpan<byte> frame) => BinaryPrimitives.ReadInt32BigEndian(frame[14..]);

    public static void Send(INetworkDevice port, MacAddress destination, MacAddress source, int sequence, int length = 64) =>
        Assert.True(port.TransmitOne(Build(destination, source, sequence, length)));

    /// <summary>Everything the port can deliver now, in bursts of 16.</summary>
    public static List<byte[]> ReceiveAll(INetworkDevice port)
    {
        var frames = new List<byte[]>();
        var memory = new byte[16 * 2048];
        var lengths = new int[16];
        while (true)
        {
            var buffers = new StridedFrameBuffers(memory, 2048, 16);
            int n = port.ReceiveBurst(ref buffers, lengths);
            for (int i = 0; i < n; i++)
            {
                frames.Add(memory.AsSpan(i * 2048, lengths[i]).ToArray());
            }

            if (n == 0)
            {
                return frames;
            }
        }
    }

    public static List<int> Sequences(INetworkDevice port) => [.. ReceiveAll(port).Select(f => Sequence(f))];
}
