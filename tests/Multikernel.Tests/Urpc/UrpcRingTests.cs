using System.Runtime.CompilerServices;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.Tests.Urpc;

public sealed class UrpcRingTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(100)]
    [InlineData(-8)]
    public void Constructor_RejectsNonPowerOfTwo(int slots)
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => new UrpcRing(slots));
        Assert.Contains("power-of-two", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Message_FillsOneCacheLineWithTheSequenceStamp()
    {
        Assert.Equal(56, Unsafe.SizeOf<Message>());
        using var ring = new UrpcRing(16);
        Assert.Equal((UrpcRing.IndexLines * 128) + (16 * 64), ring.SizeInBytes);
    }

    [Fact]
    public void TryWrite_FailsWhenFull_AndResumesAfterDrain()
    {
        using var ring = new UrpcRing(8);
        for (int i = 0; i < 8; i++)
        {
            Assert.True(ring.TryWrite(Message.Create(1, (ulong)i)));
        }

        Assert.False(ring.TryWrite(Message.Create(1, 99)));
        Assert.True(ring.IsFullForProducer);
        Assert.Equal(8, ring.Depth);

        Assert.True(ring.TryRead(out Message first));
        Assert.Equal(0ul, first.Word0);
        // The consumer publishes in batches; an empty poll or an explicit publish makes room visible.
        ring.PublishConsumed();
        Assert.True(ring.TryWrite(Message.Create(1, 8)));
        Assert.False(ring.TryWrite(Message.Create(1, 9)));

        for (ulong expected = 1; expected <= 8; expected++)
        {
            Assert.True(ring.TryRead(out Message m));
            Assert.Equal(expected, m.Word0);
        }

        Assert.False(ring.TryRead(out _));
    }

    [Fact]
    public void WrapAround_ManyTimes_KeepsOrderAndContent()
    {
        using var ring = new UrpcRing(4);
        ulong next = 0;
        ulong expected = 0;
        for (int round = 0; round < 10_000; round++)
        {
            int burst = (round % 4) + 1;
            for (int i = 0; i < burst; i++)
            {
                var m = Message.Create((ushort)(next % 65536), next, ~next, next * 3);
                Assert.True(ring.TryWrite(m));
                next++;
            }

            for (int i = 0; i < burst; i++)
            {
                Assert.True(ring.TryRead(out Message m));
                Assert.Equal(expected, m.Word0);
                Assert.Equal(~expected, m.Word1);
                Assert.Equal(expected * 3, m.Word2);
                Assert.Equal((ushort)(expected % 65536), m.Type);
                expected++;
            }
        }

        Assert.Equal(next, expected);
    }

    [Fact]
    public void Batches_WriteOnlyWhatFits_AndReadInOrder()
    {
        using var ring = new UrpcRing(8);
        var batch = new Message[12];
        for (int i = 0; i < batch.Length; i++)
        {
            batch[i] = Message.Create(2, (ulong)i);
        }

        Assert.Equal(8, ring.TryWriteBatch(batch));
        Assert.Equal(0, ring.TryWriteBatch(batch.AsSpan(8)));
        var read = new Message[5];
        Assert.Equal(5, ring.TryReadBatch(read));
        Assert.Equal([0ul, 1, 2, 3, 4], read.Select(m => m.Word0));
        Assert.Equal(4, ring.TryWriteBatch(batch.AsSpan(8)));
        var rest = new Message[16];
        Assert.Equal(7, ring.TryReadBatch(rest));
        Assert.Equal([5ul, 6, 7, 8, 9, 10, 11], rest.Take(7).Select(m => m.Word0));
    }

    [Theory]
    [InlineData(2, false)]
    [InlineData(64, false)]
    [InlineData(256, true)]
    public void ConcurrentStress_NoLossNoDuplicationFifo(int slots, bool batched)
    {
        // Millions of messages between two threads; the consumer checks every sequence number,
        // so a lost, duplicated, reordered or torn message fails the test.
        const long Count = 1_000_000;
        var ring = new UrpcRing(slots);
        long fullHits = 0;
        bool stop = false;
        var producer = new Thread(() =>
        {
            var batch = new Message[16];
            long i = 0;
            while (i < Count && !Volatile.Read(ref stop))
            {
                if (batched)
                {
                    int n = (int)Math.Min(batch.Length, Count - i);
                    for (int k = 0; k < n; k++)
                    {
                        batch[k] = Message.Create(7, (ulong)(i + k), (ulong)(i + k) ^ 0x5555_5555_5555_5555, (ulong)(i + k) * 7);
                    }

                    int written = ring.TryWriteBatch(batch.AsSpan(0, n));
                    if (written == 0)
                    {
                        fullHits++;
                        Thread.SpinWait(8);
                    }

                    i += written;
                    // Unwritten tail of the batch is rebuilt next round from i.
                }
                else if (ring.TryWrite(Message.Create(7, (ulong)i, (ulong)i ^ 0x5555_5555_5555_5555, (ulong)i * 7)))
                {
                    i++;
                }
                else
                {
                    fullHits++;
                    Thread.SpinWait(8);
                }
            }
        });

        long received = 0;
        string? failure = null;
        var consumer = new Thread(() =>
        {
            var buffer = new Message[32];
            while (received < Count && failure is null && !Volatile.Read(ref stop))
            {
                int n = batched ? ring.TryReadBatch(buffer) : (ring.TryRead(out buffer[0]) ? 1 : 0);
                if (n == 0)
                {
                    Thread.SpinWait(8);
                    continue;
                }

                for (int k = 0; k < n; k++)
                {
                    Message m = buffer[k];
                    ulong expected = (ulong)received;
                    if (m.Word0 != expected || m.Word1 != (expected ^ 0x5555_5555_5555_5555) || m.Word2 != expected * 7 || m.Type != 7)
                    {
                        failure = $"message {received}: got {m.Word0}/{m.Word1}/{m.Word2}";
                        break;
                    }

                    received++;
                }
            }
        });

        try
        {
            producer.Start();
            consumer.Start();
            Assert.True(producer.Join(TimeSpan.FromMinutes(2)), "producer did not finish");
            Assert.True(consumer.Join(TimeSpan.FromMinutes(2)), "consumer did not finish");
            Assert.Null(failure);
            Assert.Equal(Count, received);
            Assert.False(ring.TryRead(out _));
            if (slots == 2)
            {
                Assert.True(fullHits > 0, "a two-slot ring must have pushed back on the producer");
            }
        }
        finally
        {
            // Never free the ring under a running thread: stop both and join them first.
            Volatile.Write(ref stop, true);
            bool joined = (!producer.IsAlive || producer.Join(TimeSpan.FromSeconds(30))) & (!consumer.IsAlive || consumer.Join(TimeSpan.FromSeconds(30)));
            if (joined)
            {
                ring.Dispose();
            }
        }
    }



    [Fact]
    public void FullRing_ProducerStallsWithoutGrowingMemory_AndResumesWhenConsumerDrains()
    {
        using var ring = new UrpcRing(64);
        long allocatedBefore = GC.GetAllocatedBytesForCurrentThread();
        int accepted = 0;
        int refused = 0;
        for (int i = 0; i < 100_000; i++)
        {
            if (ring.TryWrite(Message.Create(1, (ulong)i)))
            {
                accepted++;
            }
            else
            {
                refused++;
            }
        }

        long allocated = GC.GetAllocatedBytesForCurrentThread() - allocatedBefore;
        Assert.Equal(64, accepted);
        Assert.Equal(100_000 - 64, refused);
        Assert.Equal(0, allocated);
        Assert.Equal(64, ring.Depth);

        var drained = new Thread(() =>
        {
            for (int i = 0; i < 64; i++)
            {
                while (!ring.TryRead(out _))
                {
                }
            }

            ring.PublishConsumed();
        })
        { IsBackground = true }; // a lost message fails the join below, not the whole run
        drained.Start();
        Assert.True(drained.Join(TimeSpan.FromSeconds(15)), "the consumer did not find the 64 accepted messages");
        Assert.True(ring.TryWrite(Message.Create(1, 1)));
    }
}
