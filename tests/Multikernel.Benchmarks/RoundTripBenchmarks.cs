using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using BenchmarkDotNet.Attributes;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.Benchmarks;

/// <summary>
/// Round-trip latency, two threads on two CPUs, 64-byte messages: one message from the benchmark
/// thread (CPU 0) to an echo thread (CPU 1) and back, per operation. The baseline is a plain
/// shared cache line ping-ponged between the two threads: the hardware floor. urpc-batched is
/// the round trip of a whole batch of <see cref="Batch"/> messages (one operation = one batch).
/// </summary>
[MemoryDiagnoser]
public class RoundTripBenchmarks
{
    public const int RoundTrips = 1000;
    public const int Batch = 32;
    public const int BatchRoundTrips = 100;
    public const int Slots = 256;
    private const ushort StopType = 0xFFFF;

    private Partner? _partner;
    private Action? _stop;
    private IDisposable? _resources;

    // floor
    private readonly SharedLine _line = new();
    private long _v;

    // urpc
    private UrpcRing _ab = null!;
    private UrpcRing _ba = null!;
    private ulong _seq;
    private readonly Message[] _batch = new Message[Batch];
    private readonly Message[] _echoBatch = new Message[Batch];

    // channels / queue
    private Channel<Msg64> _cab = null!;
    private Channel<Msg64> _cba = null!;
    private ConcurrentQueue<Msg64> _qab = null!;
    private ConcurrentQueue<Msg64> _qba = null!;
    private long _cseq;
    private Func<Task> _pingAsync = null!;

    [GlobalSetup(Target = nameof(Floor))]
    public void SetupFloor()
    {
        _v = 0;
        Volatile.Write(ref _line.Line.Value, 0);
        _partner = Partner.Start(() =>
        {
            ref long line = ref _line.Line.Value;
            long expect = 1;
            while (true)
            {
                long x;
                while ((x = Volatile.Read(ref line)) != expect)
                {
                    if (x < 0)
                    {
                        return;
                    }

                    Partner.Spin();
                }

                Volatile.Write(ref line, expect + 1);
                expect += 2;
            }
        }, "floor echo");
        _stop = () => Volatile.Write(ref _line.Line.Value, -1);
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = RoundTrips, Description = "floor")]
    public long Floor()
    {
        ref long line = ref _line.Line.Value;
        long v = _v;
        for (int i = 0; i < RoundTrips; i++)
        {
            Volatile.Write(ref line, v + 1);
            long expect = v + 2;
            while (Volatile.Read(ref line) != expect)
            {
                Partner.Spin();
            }

            v = expect;
        }

        _v = v;
        return v;
    }

    [GlobalSetup(Target = nameof(Urpc))]
    public void SetupUrpc()
    {
        CreateRings();
        UrpcRing ab = _ab, ba = _ba;
        _partner = Partner.Start(() =>
        {
            while (true)
            {
                ref readonly Message m = ref ab.Peek();
                if (Unsafe.IsNullRef(in m))
                {
                    Partner.Spin();
                    continue;
                }

                if (m.Type == StopType)
                {
                    return;
                }

                while (!ba.TryWrite(in m))
                {
                    Partner.Spin();
                }

                ab.Advance();
            }
        }, "urpc echo");
    }

    [GlobalSetup(Target = nameof(UrpcBatched))]
    public void SetupUrpcBatched()
    {
        CreateRings();
        UrpcRing ab = _ab, ba = _ba;
        Message[] buffer = _echoBatch;
        _partner = Partner.Start(() =>
        {
            while (true)
            {
                int n = ab.TryReadBatch(buffer);
                if (n == 0)
                {
                    Partner.Spin();
                    continue;
                }

                if (buffer[n - 1].Type == StopType)
                {
                    return;
                }

                int sent = 0;
                while (sent < n)
                {
                    sent += ba.TryWriteBatch(buffer.AsSpan(sent, n - sent));
                }
            }
        }, "urpc-batched echo");
    }

    [Benchmark(OperationsPerInvoke = RoundTrips, Description = "urpc")]
    public ulong Urpc()
    {
        UrpcRing ab = _ab, ba = _ba;
        ulong seq = _seq;
        Message m = Message.Create(1);
        for (int i = 0; i < RoundTrips; i++)
        {
            m.Word0 = seq;
            while (!ab.TryWrite(in m))
            {
                Partner.Spin();
            }

            ref readonly Message r = ref ba.Peek();
            while (Unsafe.IsNullRef(in r))
            {
                Partner.Spin();
                r = ref ba.Peek();
            }

            if (r.Word0 != seq)
            {
                Partner.ThrowOrder((long)seq, (long)r.Word0);
            }

            ba.Advance();
            seq++;
        }

        _seq = seq;
        return seq;
    }

    [Benchmark(OperationsPerInvoke = BatchRoundTrips, Description = "urpc-batched (round trip of 32)")]
    public ulong UrpcBatched()
    {
        UrpcRing ab = _ab, ba = _ba;
        Message[] buffer = _batch;
        ulong seq = _seq;
        for (int i = 0; i < BatchRoundTrips; i++)
        {
            for (int k = 0; k < buffer.Length; k++)
            {
                buffer[k].Word0 = seq + (ulong)k;
            }

            int sent = 0;
            while (sent < Batch)
            {
                sent += ab.TryWriteBatch(buffer.AsSpan(sent));
            }

            int got = 0;
            while (got < Batch)
            {
                int r = ba.TryReadBatch(buffer.AsSpan(got));
                if (r == 0)
                {
                    Partner.Spin();
                }

                got += r;
            }

            if (buffer[Batch - 1].Word0 != seq + Batch - 1)
            {
                Partner.ThrowOrder((long)(seq + Batch - 1), (long)buffer[Batch - 1].Word0);
            }

            seq += Batch;
        }

        _seq = seq;
        return seq;
    }

    [GlobalSetup(Target = nameof(BoundedChannelAsync))]
    public void SetupBounded() => SetupChannels(bounded: true, asyncEcho: true);

    [GlobalSetup(Target = nameof(BoundedChannelTry))]
    public void SetupBoundedTry() => SetupChannels(bounded: true, asyncEcho: false);

    [GlobalSetup(Target = nameof(UnboundedChannelAsync))]
    public void SetupUnbounded() => SetupChannels(bounded: false, asyncEcho: true);

    [Benchmark(OperationsPerInvoke = RoundTrips, Description = "bounded-channel (async)")]
    public void BoundedChannelAsync() => PinnedPump.Run(_pingAsync);

    [Benchmark(OperationsPerInvoke = RoundTrips, Description = "bounded-channel-try")]
    public long BoundedChannelTry()
    {
        ChannelWriter<Msg64> writer = _cab.Writer;
        ChannelReader<Msg64> reader = _cba.Reader;
        long seq = _cseq;
        for (int i = 0; i < RoundTrips; i++)
        {
            while (!writer.TryWrite(new Msg64(seq)))
            {
                Partner.Spin();
            }

            Msg64 back;
            while (!reader.TryRead(out back))
            {
                Partner.Spin();
            }

            if (back.Seq != seq)
            {
                Partner.ThrowOrder(seq, back.Seq);
            }

            seq++;
        }

        _cseq = seq;
        return seq;
    }

    [Benchmark(OperationsPerInvoke = RoundTrips, Description = "unbounded-channel (async)")]
    public void UnboundedChannelAsync() => PinnedPump.Run(_pingAsync);

    [GlobalSetup(Target = nameof(ConcurrentQueue))]
    public void SetupQueue()
    {
        _qab = new ConcurrentQueue<Msg64>();
        _qba = new ConcurrentQueue<Msg64>();
        ConcurrentQueue<Msg64> ab = _qab, ba = _qba;
        _partner = Partner.Start(() =>
        {
            while (true)
            {
                if (!ab.TryDequeue(out Msg64 m))
                {
                    Partner.Spin();
                    continue;
                }

                if (m.Seq < 0)
                {
                    return;
                }

                ba.Enqueue(m);
            }
        }, "concurrent-queue echo");
        _stop = () => _qab.Enqueue(Msg64.Stop);
    }

    [Benchmark(OperationsPerInvoke = RoundTrips, Description = "concurrent-queue")]
    public long ConcurrentQueue()
    {
        ConcurrentQueue<Msg64> ab = _qab, ba = _qba;
        long seq = _cseq;
        for (int i = 0; i < RoundTrips; i++)
        {
            ab.Enqueue(new Msg64(seq));
            Msg64 back;
            while (!ba.TryDequeue(out back))
            {
                Partner.Spin();
            }

            if (back.Seq != seq)
            {
                Partner.ThrowOrder(seq, back.Seq);
            }

            seq++;
        }

        _cseq = seq;
        return seq;
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _stop?.Invoke();
        _partner?.Join();
        _resources?.Dispose();
        _partner = null;
        _stop = null;
        _resources = null;
    }

    private void CreateRings()
    {
        _ab = new UrpcRing(Slots);
        _ba = new UrpcRing(Slots);
        _resources = new RingPair(_ab, _ba);
        for (int i = 0; i < Batch; i++)
        {
            _batch[i] = Message.Create(1);
        }

        _stop = () =>
        {
            Message stop = Message.Create(StopType);
            while (!_ab.TryWrite(in stop))
            {
                Partner.Spin();
            }
        };
    }

    private void SetupChannels(bool bounded, bool asyncEcho)
    {
        _cab = Create(bounded);
        _cba = Create(bounded);
        Channel<Msg64> ab = _cab, ba = _cba;
        // The async echo awaits on its own pinned thread; continuations come back to it through the pump.
        Action echo = asyncEcho
            ? () => PinnedPump.Run(async () =>
            {
                while (true)
                {
                    Msg64 m = await ab.Reader.ReadAsync();
                    if (m.Seq < 0)
                    {
                        return;
                    }

                    await ba.Writer.WriteAsync(m);
                }
            })
            : () =>
            {
                while (true)
                {
                    if (!ab.Reader.TryRead(out Msg64 m))
                    {
                        Partner.Spin();
                        continue;
                    }

                    if (m.Seq < 0)
                    {
                        return;
                    }

                    while (!ba.Writer.TryWrite(m))
                    {
                        Partner.Spin();
                    }
                }
            };
        _partner = Partner.Start(echo, "channel echo");
        _pingAsync = PingAsync;
        _stop = () => _cab.Writer.TryWrite(Msg64.Stop);
    }

    private async Task PingAsync()
    {
        ChannelWriter<Msg64> writer = _cab.Writer;
        ChannelReader<Msg64> reader = _cba.Reader;
        long seq = _cseq;
        for (int i = 0; i < RoundTrips; i++)
        {
            await writer.WriteAsync(new Msg64(seq));
            Msg64 back = await reader.ReadAsync();
            if (back.Seq != seq)
            {
                Partner.ThrowOrder(seq, back.Seq);
            }

            seq++;
        }

        _cseq = seq;
    }

    internal static Channel<Msg64> Create(bool bounded) => bounded
        ? Channel.CreateBounded<Msg64>(new BoundedChannelOptions(Slots) { SingleReader = true, SingleWriter = true, FullMode = BoundedChannelFullMode.Wait })
        : Channel.CreateUnbounded<Msg64>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });

    private sealed class RingPair(UrpcRing a, UrpcRing b) : IDisposable
    {
        public void Dispose()
        {
            a.Dispose();
            b.Dispose();
        }
    }
}
