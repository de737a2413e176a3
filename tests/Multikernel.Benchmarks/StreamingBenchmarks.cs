using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using BenchmarkDotNet.Attributes;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.Benchmarks;

/// <summary>
/// One-way streaming throughput, two threads on two CPUs, 64-byte messages: the benchmark
/// thread (CPU 0) produces <see cref="Messages"/> messages per invocation and waits until the
/// consumer (CPU 1) has taken the last one, so one operation is one message delivered. The
/// consumer publishes its count on a cache line of its own every 64 messages and whenever it
/// runs dry. Unbounded queues are held to the same window as the ring (<see cref="Slots"/>),
/// as credits would hold them; otherwise the figure would measure memory growth. Baseline:
/// bounded-channel with awaited WriteAsync/ReadAsync.
/// </summary>
[MemoryDiagnoser]
public class StreamingBenchmarks
{
    public const int Messages = 16_384;
    public const int Slots = 256;
    public const int Batch = 32;
    private const int PublishEvery = 64;
    private const ushort StopType = 0xFFFF;

    private readonly SharedLine _consumed = new();
    private Partner? _partner;
    private Action? _stop;
    private UrpcRing? _ring;
    private Channel<Msg64> _channel = null!;
    private ConcurrentQueue<Msg64> _queue = null!;
    private readonly Message[] _batch = new Message[Batch];
    private readonly Message[] _consumerBatch = new Message[Batch];
    private long _produced;
    private bool _bounded;
    private Func<Task> _produceAsync = null!;

    [GlobalSetup(Target = nameof(Urpc))]
    public void SetupUrpc()
    {
        UrpcRing ring = CreateRing();
        SharedLine consumed = _consumed;
        _partner = Partner.Start(() =>
        {
            long count = 0;
            long published = 0;
            while (true)
            {
                ref readonly Message m = ref ring.Peek();
                if (Unsafe.IsNullRef(in m))
                {
                    ring.PublishConsumed();
                    if (count != published)
                    {
                        Volatile.Write(ref consumed.Line.Value, published = count);
                    }

                    Partner.Spin();
                    continue;
                }

                if ((long)m.Word0 != count)
                {
                    if (m.Type == StopType)
                    {
                        return;
                    }

                    Partner.ThrowOrder(count, (long)m.Word0);
                }

                ring.Advance();
                if ((++count & (PublishEvery - 1)) == 0)
                {
                    Volatile.Write(ref consumed.Line.Value, published = count);
                }
            }
        }, "urpc consumer");
    }

    [Benchmark(OperationsPerInvoke = Messages, Description = "urpc")]
    public long Urpc()
    {
        UrpcRing ring = _ring!;
        long seq = _produced;
        long end = seq + Messages;
        Message m = Message.Create(1);
        for (; seq < end; seq++)
        {
            m.Word0 = (ulong)seq;
            while (!ring.TryWrite(in m))
            {
                Partner.Spin();
            }
        }

        return Drain(end);
    }

    [GlobalSetup(Target = nameof(UrpcBatched))]
    public void SetupUrpcBatched()
    {
        UrpcRing ring = CreateRing();
        for (int i = 0; i < Batch; i++)
        {
            _batch[i] = Message.Create(1);
        }

        SharedLine consumed = _consumed;
        Message[] buffer = _consumerBatch;
        _partner = Partner.Start(() =>
        {
            long count = 0;
            long published = 0;
            while (true)
            {
                int n = ring.TryReadBatch(buffer);
                if (n == 0)
                {
                    if (count != published)
                    {
                        Volatile.Write(ref consumed.Line.Value, published = count);
                    }

                    Partner.Spin();
                    continue;
                }

                for (int k = 0; k < n; k++)
                {
                    if ((long)buffer[k].Word0 != count)
                    {
                        if (buffer[k].Type == StopType)
                        {
                            return;
                        }

                        Partner.ThrowOrder(count, (long)buffer[k].Word0);
                    }

                    count++;
                }

                if (count - published >= PublishEvery)
                {
                    Volatile.Write(ref consumed.Line.Value, published = count);
                }
            }
        }, "urpc-batched consumer");
    }

    [Benchmark(OperationsPerInvoke = Messages, Description = "urpc-batched (32)")]
    public long UrpcBatched()
    {
        UrpcRing ring = _ring!;
        Message[] buffer = _batch;
        long seq = _produced;
        long end = seq + Messages;
        while (seq < end)
        {
            for (int k = 0; k < buffer.Length; k++)
            {
                buffer[k].Word0 = (ulong)(seq + k);
            }

            int sent = 0;
            while (sent < buffer.Length)
            {
                int w = ring.TryWriteBatch(buffer.AsSpan(sent));
                if (w == 0)
                {
                    Partner.Spin();
                }

                sent += w;
            }

            seq += buffer.Length;
        }

        return Drain(end);
    }

    [GlobalSetup(Target = nameof(BoundedChannelAsync))]
    public void SetupBoundedAsync() => SetupChannel(bounded: true, asyncConsumer: true);

    [Benchmark(Baseline = true, OperationsPerInvoke = Messages, Description = "bounded-channel (async)")]
    public long BoundedChannelAsync()
    {
        PinnedPump.Run(_produceAsync);
        return Drain(_produced + Messages);
    }

    [GlobalSetup(Target = nameof(BoundedChannelTry))]
    public void SetupBoundedTry() => SetupChannel(bounded: true, asyncConsumer: false);

    [Benchmark(OperationsPerInvoke = Messages, Description = "bounded-channel-try")]
    public long BoundedChannelTry()
    {
        ChannelWriter<Msg64> writer = _channel.Writer;
        long seq = _produced;
        long end = seq + Messages;
        for (; seq < end; seq++)
        {
            while (!writer.TryWrite(new Msg64(seq)))
            {
                Partner.Spin();
            }
        }

        return Drain(end);
    }

    [GlobalSetup(Target = nameof(UnboundedChannelAsync))]
    public void SetupUnboundedAsync() => SetupChannel(bounded: false, asyncConsumer: true);

    [Benchmark(OperationsPerInvoke = Messages, Description = "unbounded-channel (async)")]
    public long UnboundedChannelAsync()
    {
        PinnedPump.Run(_produceAsync);
        return Drain(_produced + Messages);
    }

    [GlobalSetup(Target = nameof(ConcurrentQueue))]
    public void SetupQueue()
    {
        _queue = new ConcurrentQueue<Msg64>();
        ConcurrentQueue<Msg64> queue = _queue;
        _partner = Partner.Start(() => ConsumeSpinning(queue.TryDequeue), "concurrent-queue consumer");
        _stop = () => _queue.Enqueue(Msg64.Stop);
    }

    [Benchmark(OperationsPerInvoke = Messages, Description = "concurrent-queue")]
    public long ConcurrentQueue()
    {
        ConcurrentQueue<Msg64> queue = _queue;
        long seq = _produced;
        long end = seq + Messages;
        long consumed = Volatile.Read(ref _consumed.Line.Value);
        for (; seq < end; seq++)
        {
            if (seq - consumed >= Slots)
            {
                consumed = WaitForWindow(seq);
            }

            queue.Enqueue(new Msg64(seq));
        }

        return Drain(end);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _stop?.Invoke();
        _partner?.Join();
        _ring?.Dispose();
        _ring = null;
        _partner = null;
        _stop = null;
        _produced = 0;
        Volatile.Write(ref _consumed.Line.Value, 0);
    }

    private UrpcRing CreateRing()
    {
        UrpcRing ring = _ring = new UrpcRing(Slots);
        _stop = () =>
        {
            Message stop = Message.Create(StopType);
            while (!ring.TryWrite(in stop))
            {
                Partner.Spin();
            }
        };
        return ring;
    }

    private void SetupChannel(bool bounded, bool asyncConsumer)
    {
        _channel = RoundTripBenchmarks.Create(bounded);
        ChannelReader<Msg64> reader = _channel.Reader;
        SharedLine consumed = _consumed;
        Action body = asyncConsumer
            ? () => PinnedPump.Run(async () =>
            {
                long count = 0;
                while (true)
                {
                    Msg64 m = await reader.ReadAsync();
                    if (m.Seq != count)
                    {
                        if (m.Seq < 0)
                        {
                            return;
                        }

                        Partner.ThrowOrder(count, m.Seq);
                    }

                    // An awaiting consumer cannot tell "ran dry" without awaiting, so it publishes every
                    // message: a store to a line only the producer's window check and drain read.
                    Volatile.Write(ref consumed.Line.Value, ++count);
                }
            })
            : () => ConsumeSpinning(reader.TryRead);
        _partner = Partner.Start(body, bounded ? "bounded-channel consumer" : "unbounded-channel consumer");
        _produceAsync = ProduceAsync;
        _stop = () => _channel.Writer.TryWrite(Msg64.Stop);
        _bounded = bounded;
    }

    private delegate bool TryTake(out Msg64 message);

    private void ConsumeSpinning(TryTake take)
    {
        long count = 0;
        long published = 0;
        while (true)
        {
            if (!take(out Msg64 m))
            {
                if (count != published)
                {
                    Volatile.Write(ref _consumed.Line.Value, published = count);
                }

                Partner.Spin();
                continue;
            }

            if (m.Seq != count)
            {
                if (m.Seq < 0)
                {
                    return;
                }

                Partner.ThrowOrder(count, m.Seq);
            }

            if ((++count & (PublishEvery - 1)) == 0)
            {
                Volatile.Write(ref _consumed.Line.Value, published = count);
            }
        }
    }

    private async Task ProduceAsync()
    {
        ChannelWriter<Msg64> writer = _channel.Writer;
        long seq = _produced;
        long end = seq + Messages;
        long consumed = Volatile.Read(ref _consumed.Line.Value);
        for (; seq < end; seq++)
        {
            if (!_bounded && seq - consumed >= Slots)
            {
                consumed = WaitForWindow(seq);
            }

            await writer.WriteAsync(new Msg64(seq));
        }
    }

    private long WaitForWindow(long produced)
    {
        long consumed;
        while (produced - (consumed = Volatile.Read(ref _consumed.Line.Value)) >= Slots)
        {
            Partner.Spin();
        }

        return consumed;
    }

    /// <summary>Waits until the consumer has taken every message up to <paramref name="end"/>, so an operation is a delivered message.</summary>
    private long Drain(long end)
    {
        while (Volatile.Read(ref _consumed.Line.Value) < end)
        {
            Partner.Spin();
        }

        _produced = end;
        return end;
    }
}
