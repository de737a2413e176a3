using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Threading.Channels;
using Multikernel.CpuDriver.Kernel;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.Cli.Bench;

// The measured loops. Conventions shared by every variant:
// - Side A runs on CPU A: it initiates round trips (and times them) or produces the stream.
//   Side B runs on CPU B: it echoes, or consumes the stream and records when the last message arrived.
// - Hot loops live in small NoInlining "chunk" methods that the driver calls thousands of times,
//   so tiered compilation promotes them to fully optimised (PGO-guided) code during the warm-up
//   pass instead of leaving a long-running loop in on-stack-replacement code.
// - Every waiting loop spins without pause and calls RunControl.Spin, which only reads two
//   fields nobody writes during a run (abort, yield) and so costs an L1 hit.
// - Every variant checks that messages arrive in order, so a broken channel cannot produce a figure.
public static partial class UrpcBench
{
    private const int RoundTripChunk = 64;
    private const int StreamChunk = 1024;
    private const ushort DataType = 1;
    private const ushort StopType = 0xFFFF;

    private enum Mode
    {
        RoundTrip,
        Stream,
    }

    /// <summary>64-byte struct carried by the channel and queue variants (a ring slot is 64 bytes too).</summary>
    [StructLayout(LayoutKind.Sequential, Size = MessageBytes)]
    private readonly struct Msg64(long seq)
    {
        public readonly long Seq = seq;

        public static Msg64 Stop => new(-1);
    }

    /// <summary>A long alone on its cache line (64 bytes of padding each side).</summary>
    [StructLayout(LayoutKind.Explicit, Size = 3 * MessageBytes)]
    private struct PaddedLong
    {
        [FieldOffset(MessageBytes)] public long Value;
    }

    private sealed class SharedLine
    {
        public PaddedLong Line;
    }

    /// <summary>Start signal, abort flag and what the timing side recorded. Written outside the timed loops only.</summary>
    private sealed class RunControl(TimeSpan duration, bool yieldWhileSpinning)
    {
        public readonly long DurationTicks = (long)(duration.TotalSeconds * Stopwatch.Frequency);
        public readonly bool YieldWhileSpinning = yieldWhileSpinning;
        public int Ready;
        public int Go;
        public long StartTicks;
        public long EndTicks;
        public long Count;
        public long MessagesPerCount = 1;
        private volatile bool _aborted;

        public bool Aborted => _aborted;

        public void Abort() => _aborted = true;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Spin()
        {
            if (_aborted)
            {
                ThrowAborted();
            }

            if (YieldWhileSpinning)
            {
                Thread.Yield();
            }
        }

        public void RecordStart(long ticks) => StartTicks = ticks;

        public void RecordEnd(long ticks, long count, long messagesPerCount)
        {
            EndTicks = ticks;
            Count = count;
            MessagesPerCount = messagesPerCount;
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        private static void ThrowAborted() => throw new OperationCanceledException("the other side failed");
    }

    private abstract class Variant : IDisposable
    {
        public abstract void SideA(RunControl c);

        public abstract void SideB(RunControl c);

        public virtual void Dispose()
        {
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowOrder(long expected, long got) =>
        throw new InvalidOperationException($"message out of order: expected sequence {expected}, got {got}");

    // ---------------------------------------------------------------- floor

    /// <summary>One shared line: A writes an odd value and waits for the next even one; B answers.</summary>
    private sealed class FloorVariant : Variant
    {
        private readonly SharedLine _shared = new();

        public override void SideA(RunControl c)
        {
            long v = 0;
            long n = 0;
            long start = Stopwatch.GetTimestamp();
            long deadline = start + c.DurationTicks;
            c.RecordStart(start);
            do
            {
                v = Ping(_shared, v, c);
                n += RoundTripChunk;
            }
            while (Stopwatch.GetTimestamp() < deadline);

            c.RecordEnd(Stopwatch.GetTimestamp(), n, 2);
            Volatile.Write(ref _shared.Line.Value, -1);
        }

        public override void SideB(RunControl c)
        {
            long expect = 1;
            while (expect > 0)
            {
                expect = Echo(_shared, expect, c);
            }
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        private static long Ping(SharedLine shared, long v, RunControl c)
        {
            ref long line = ref shared.Line.Value;
            for (int i = 0; i < RoundTripChunk; i++)
            {
                Volatile.Write(ref line, v + 1);
                long expect = v + 2;
                while (Volatile.Read(ref line) != expect)
                {
                    c.Spin();
                }

                v = expect;
            }

            return v;
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        private static long Echo(SharedLine shared, long expect, RunControl c)
        {
            ref long line = ref shared.Line.Value;
            for (int i = 0; i < RoundTripChunk; i++)
            {
                long x;
                while ((x = Volatile.Read(ref line)) != expect)
                {
                    if (x < 0)
                    {
                        return -1;
                    }

                    c.Spin();
                }

                Volatile.Write(ref line, expect + 1);
                expect += 2;
            }

            return expect;
        }
    }

    // ---------------------------------------------------------------- URPC ring

    private sealed class RingVariant : Variant
    {
        private readonly Mode _mode;
        private readonly int _batch;
        private readonly UrpcRing _ab;
        private readonly UrpcRing? _ba;
        private readonly Message[] _bufferA;
        private readonly Message[] _bufferB;

        public RingVariant(Mode mode, int slots, int batch)
        {
            _mode = mode;
            _batch = batch;
            _ab = new UrpcRing(slots);
            _ba = mode == Mode.RoundTrip ? new UrpcRing(slots) : null;
            _bufferA = new Message[Math.Max(1, batch)];
            _bufferB = new Message[Math.Max(1, batch)];
            for (int i = 0; i < _bufferA.Length; i++)
            {
                _bufferA[i] = Message.Create(DataType);
            }
        }

        public override void SideA(RunControl c)
        {
            long n = 0;
            ulong seq = 0;
            long start = Stopwatch.GetTimestamp();
            long deadline = start + c.DurationTicks;
            c.RecordStart(start);
            if (_mode == Mode.RoundTrip)
            {
                do
                {
                    seq = _batch == 0 ? Ping(_ab, _ba!, seq, c) : PingBatch(_ab, _ba!, _bufferA, seq, c);
                    n += RoundTripChunk;
                }
                while (Stopwatch.GetTimestamp() < deadline);

                c.RecordEnd(Stopwatch.GetTimestamp(), n, 2L * Math.Max(1, _batch));
            }
            else
            {
                do
                {
                    seq = _batch == 0 ? Produce(_ab, seq, c) : ProduceBatch(_ab, _bufferA, seq, c);
                }
                while (Stopwatch.GetTimestamp() < deadline);
            }

            Message stop = Message.Create(StopType);
            while (!_ab.TryWrite(in stop))
            {
                c.Spin();
            }
        }

        public override void SideB(RunControl c)
        {
            if (_mode == Mode.RoundTrip)
            {
                if (_batch == 0)
                {
                    while (Echo(_ab, _ba!, c))
                    {
                    }
                }
                else
                {
                    while (EchoBatch(_ab, _ba!, _bufferB, c))
                    {
                    }
                }

                return;
            }

            ulong expected = 0;
            bool more = true;
            while (more)
            {
                more = _batch == 0 ? Consume(_ab, ref expected, c) : ConsumeBatch(_ab, _bufferB, ref expected, c);
            }

            c.RecordEnd(Stopwatch.GetTimestamp(), (long)expected, 1);
        }

        public override void Dispose()
        {
            _ab.Dispose();
            _ba?.Dispose();
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        private static ulong Ping(UrpcRing ab, UrpcRing ba, ulong seq, RunControl c)
        {
            Message m = Message.Create(DataType);
            for (int i = 0; i < RoundTripChunk; i++)
            {
                m.Word0 = seq;
                while (!ab.TryWrite(in m))
                {
                    c.Spin();
                }

                ref readonly Message r = ref ba.Peek();
                while (Unsafe.IsNullRef(in r))
                {
                    c.Spin();
                    r = ref ba.Peek();
                }

                if (r.Word0 != seq)
                {
                    ThrowOrder((long)seq, (long)r.Word0);
                }

                ba.Advance();
                seq++;
            }

            return seq;
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        private static bool Echo(UrpcRing ab, UrpcRing ba, RunControl c)
        {
            for (int i = 0; i < RoundTripChunk; i++)
            {
                ref readonly Message m = ref ab.Peek();
                while (Unsafe.IsNullRef(in m))
                {
                    c.Spin();
                    m = ref ab.Peek();
                }

                if (m.Type == StopType)
                {
                    ab.Advance();
                    return false;
                }

                // The reply is copied straight from the slot; the slot is released only after.
                while (!ba.TryWrite(in m))
                {
                    c.Spin();
                }

                ab.Advance();
            }

            return true;
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        private static ulong PingBatch(UrpcRing ab, UrpcRing ba, Message[] buffer, ulong seq, RunControl c)
        {
            int batch = buffer.Length;
            for (int i = 0; i < RoundTripChunk; i++)
            {
                for (int k = 0; k < buffer.Length; k++)
                {
                    buffer[k].Word0 = seq + (ulong)k;
                }

                int sent = 0;
                while (sent < batch)
                {
                    int w = ab.TryWriteBatch(buffer.AsSpan(sent));
                    if (w == 0)
                    {
                        c.Spin();
                    }

                    sent += w;
                }

                int got = 0;
                while (got < batch)
                {
                    int r = ba.TryReadBatch(buffer.AsSpan(got));
                    if (r == 0)
                    {
                        c.Spin();
                    }

                    got += r;
                }

                ulong last = seq + (ulong)batch - 1;
                if (buffer[0].Word0 != seq || buffer[batch - 1].Word0 != last)
                {
                    ThrowOrder((long)last, (long)buffer[batch - 1].Word0);
                }

                seq += (ulong)batch;
            }

            return seq;
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        private static bool EchoBatch(UrpcRing ab, UrpcRing ba, Message[] buffer, RunControl c)
        {
            for (int i = 0; i < RoundTripChunk; i++)
            {
                int n = ab.TryReadBatch(buffer);
                while (n == 0)
                {
                    c.Spin();
                    n = ab.TryReadBatch(buffer);
                }

                // A sends the stop message alone, after its last batch came back.
                if (buffer[0].Type == StopType)
                {
                    return false;
                }

                int sent = 0;
                while (sent < n)
                {
                    int w = ba.TryWriteBatch(buffer.AsSpan(sent, n - sent));
                    if (w == 0)
                    {
                        c.Spin();
                    }

                    sent += w;
                }
            }

            return true;
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        private static ulong Produce(UrpcRing ring, ulong seq, RunControl c)
        {
            Message m = Message.Create(DataType);
            for (int i = 0; i < StreamChunk; i++)
            {
                m.Word0 = seq++;
                while (!ring.TryWrite(in m))
                {
                    c.Spin();
                }
            }

            return seq;
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        private static bool Consume(UrpcRing ring, ref ulong expected, RunControl c)
        {
            ulong e = expected;
            try
            {
                for (int i = 0; i < StreamChunk; i++)
                {
                    ref readonly Message m = ref ring.Peek();
                    while (Unsafe.IsNullRef(in m))
                    {
                        // As the kernel does when it finds a ring empty: hand back every consumed slot.
                        ring.PublishConsumed();
                        c.Spin();
                        m = ref ring.Peek();
                    }

                    if (m.Word0 != e)
                    {
                        if (m.Type == StopType)
                        {
                            ring.Advance();
                            return false;
                        }

                        ThrowOrder((long)e, (long)m.Word0);
                    }

                    e++;
                    ring.Advance();
                }

                return true;
            }
            finally
            {
                expected = e;
            }
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        private static ulong ProduceBatch(UrpcRing ring, Message[] buffer, ulong seq, RunControl c)
        {
            int batch = buffer.Length;
            for (int i = 0; i < StreamChunk / batch + 1; i++)
            {
                for (int k = 0; k < buffer.Length; k++)
                {
                    buffer[k].Word0 = seq + (ulong)k;
                }

                int sent = 0;
                while (sent < batch)
                {
                    int w = ring.TryWriteBatch(buffer.AsSpan(sent));
                    if (w == 0)
                    {
                        c.Spin();
                    }

                    sent += w;
                }

                seq += (ulong)batch;
            }

            return seq;
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        private static bool ConsumeBatch(UrpcRing ring, Message[] buffer, ref ulong expected, RunControl c)
        {
            ulong e = expected;
            try
            {
                for (int i = 0; i < StreamChunk / buffer.Length + 1; i++)
                {
                    int n = ring.TryReadBatch(buffer);
                    while (n == 0)
                    {
                        c.Spin();
                        n = ring.TryReadBatch(buffer);
                    }

                    for (int k = 0; k < n; k++)
                    {
                        if (buffer[k].Word0 != e)
                        {
                            if (buffer[k].Type == StopType)
                            {
                                return false;
                            }

                            ThrowOrder((long)e, (long)buffer[k].Word0);
                        }

                        e++;
                    }
                }

                return true;
            }
            finally
            {
                expected = e;
            }
        }
    }

    // ---------------------------------------------------------------- channels, awaited

    /// <summary>
    /// WriteAsync/ReadAsync awaited on each pinned thread. The thread runs a spinning
    /// synchronization context, so a continuation the other thread completes is posted back
    /// here (as on a multikernel core) rather than to the thread pool, and nothing parks.
    /// </summary>
    private sealed class AsyncChannelVariant : Variant
    {
        private readonly Mode _mode;
        private readonly Channel<Msg64> _ab;
        private readonly Channel<Msg64>? _ba;
        private readonly long _window;
        private readonly SharedLine _consumed = new();

        public AsyncChannelVariant(Mode mode, int slots, bool bounded)
        {
            _mode = mode;
            _ab = Create(slots, bounded);
            _ba = mode == Mode.RoundTrip ? Create(slots, bounded) : null;
            // An unbounded queue is held to the ring's window, as credits would hold it, or the
            // producer would run ahead and the figure would measure memory growth.
            _window = bounded ? 0 : slots;
        }

        public override void SideA(RunControl c) => SpinPump.Run(_mode == Mode.RoundTrip ? () => PingAsync(c) : () => ProduceAsync(c), c.Spin);

        public override void SideB(RunControl c) => SpinPump.Run(_mode == Mode.RoundTrip ? () => EchoAsync(c) : () => ConsumeAsync(c), c.Spin);

        private static Channel<Msg64> Create(int slots, bool bounded) => bounded
            ? Channel.CreateBounded<Msg64>(new BoundedChannelOptions(slots) { SingleReader = true, SingleWriter = true, FullMode = BoundedChannelFullMode.Wait })
            : Channel.CreateUnbounded<Msg64>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });

        private async Task PingAsync(RunControl c)
        {
            ChannelWriter<Msg64> writer = _ab.Writer;
            ChannelReader<Msg64> reader = _ba!.Reader;
            long seq = 0;
            long start = Stopwatch.GetTimestamp();
            long deadline = start + c.DurationTicks;
            c.RecordStart(start);
            do
            {
                for (int i = 0; i < RoundTripChunk; i++)
                {
                    await writer.WriteAsync(new Msg64(seq));
                    Msg64 back = await reader.ReadAsync();
                    if (back.Seq != seq)
                    {
                        ThrowOrder(seq, back.Seq);
                    }

                    seq++;
                }
            }
            while (Stopwatch.GetTimestamp() < deadline);

            c.RecordEnd(Stopwatch.GetTimestamp(), seq, 2);
            await writer.WriteAsync(Msg64.Stop);
        }

        private async Task EchoAsync(RunControl c)
        {
            ChannelReader<Msg64> reader = _ab.Reader;
            ChannelWriter<Msg64> writer = _ba!.Writer;
            while (true)
            {
                Msg64 m = await reader.ReadAsync();
                if (m.Seq < 0)
                {
                    return;
                }

                await writer.WriteAsync(m);
            }
        }

        private async Task ProduceAsync(RunControl c)
        {
            ChannelWriter<Msg64> writer = _ab.Writer;
            long seq = 0;
            long consumed = 0;
            long start = Stopwatch.GetTimestamp();
            long deadline = start + c.DurationTicks;
            c.RecordStart(start);
            do
            {
                for (int i = 0; i < StreamChunk; i++)
                {
                    if (_window > 0 && seq - consumed >= _window)
                    {
                        consumed = WaitForWindow(_consumed, seq, _window, c);
                    }

                    await writer.WriteAsync(new Msg64(seq));
                    seq++;
                }
            }
            while (Stopwatch.GetTimestamp() < deadline);

            await writer.WriteAsync(Msg64.Stop);
        }

        private async Task ConsumeAsync(RunControl c)
        {
            ChannelReader<Msg64> reader = _ab.Reader;
            long expected = 0;
            while (true)
            {
                Msg64 m = await reader.ReadAsync();
                if (m.Seq != expected)
                {
                    if (m.Seq < 0)
                    {
                        break;
                    }

                    ThrowOrder(expected, m.Seq);
                }

                expected++;
                if (_window > 0 && (expected & PublishMask(_window)) == 0)
                {
                    Volatile.Write(ref _consumed.Line.Value, expected);
                }
            }

            c.RecordEnd(Stopwatch.GetTimestamp(), expected, 1);
        }
    }

    /// <summary>
    /// How often a consumer publishes its count: every 64 messages, or every message when the
    /// window is so small that batching the count would close it for good.
    /// </summary>
    private static long PublishMask(long window) => window >= 128 ? 63 : 0;

    /// <summary>Spins (the producer has nothing else to do) until the consumer's published count opens the window.</summary>
    private static long WaitForWindow(SharedLine consumedLine, long produced, long window, RunControl c)
    {
        long consumed;
        while (produced - (consumed = Volatile.Read(ref consumedLine.Line.Value)) >= window)
        {
            c.Spin();
        }

        return consumed;
    }

    // ---------------------------------------------------------------- spinning queues (TryWrite/TryRead, ConcurrentQueue)

    private interface ISpinQueue
    {
        bool TryWrite(in Msg64 message);

        bool TryRead(out Msg64 message);
    }

    private readonly struct ChannelQueue(Channel<Msg64> channel) : ISpinQueue
    {
        public bool TryWrite(in Msg64 message) => channel.Writer.TryWrite(message);

        public bool TryRead(out Msg64 message) => channel.Reader.TryRead(out message);
    }

    private readonly struct ConcurrentQueueAdapter(ConcurrentQueue<Msg64> queue) : ISpinQueue
    {
        public bool TryWrite(in Msg64 message)
        {
            queue.Enqueue(message);
            return true;
        }

        public bool TryRead(out Msg64 message) => queue.TryDequeue(out message);
    }

    /// <summary>Spin loops over a queue; generic over a struct adapter so the calls are direct, not interface dispatch.</summary>
    private sealed class SpinQueueVariant<TQueue> : Variant
        where TQueue : struct, ISpinQueue
    {
        private readonly Mode _mode;
        private readonly TQueue _ab;
        private readonly TQueue _ba;
        private readonly long _window;
        private readonly SharedLine _consumed = new();

        private SpinQueueVariant(Mode mode, TQueue ab, TQueue ba, long window)
        {
            _mode = mode;
            _ab = ab;
            _ba = ba;
            _window = window;
        }

        public static SpinQueueVariant<TQueue> Create(Mode mode, int slots, int window, bool bounded)
        {
            TQueue Make()
            {
                object q = typeof(TQueue) == typeof(ChannelQueue)
                    ? new ChannelQueue(bounded
                        ? Channel.CreateBounded<Msg64>(new BoundedChannelOptions(slots) { SingleReader = true, SingleWriter = true, FullMode = BoundedChannelFullMode.Wait })
                        : Channel.CreateUnbounded<Msg64>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true }))
                    : new ConcurrentQueueAdapter(new ConcurrentQueue<Msg64>());
                return (TQueue)q;
            }

            return new SpinQueueVariant<TQueue>(mode, Make(), Make(), window);
        }

        public override void SideA(RunControl c)
        {
            long seq = 0;
            long start = Stopwatch.GetTimestamp();
            long deadline = start + c.DurationTicks;
            c.RecordStart(start);
            if (_mode == Mode.RoundTrip)
            {
                do
                {
                    seq = Ping(_ab, _ba, seq, c);
                }
                while (Stopwatch.GetTimestamp() < deadline);

                c.RecordEnd(Stopwatch.GetTimestamp(), seq, 2);
            }
            else
            {
                long consumed = 0;
                do
                {
                    seq = Produce(_ab, seq, ref consumed, _window, _consumed, c);
                }
                while (Stopwatch.GetTimestamp() < deadline);
            }

            Msg64 stop = Msg64.Stop;
            while (!_ab.TryWrite(in stop))
            {
                c.Spin();
            }
        }

        public override void SideB(RunControl c)
        {
            if (_mode == Mode.RoundTrip)
            {
                while (Echo(_ab, _ba, c))
                {
                }

                return;
            }

            long expected = 0;
            while (Consume(_ab, ref expected, _window > 0 ? _consumed : null, _window, c))
            {
            }

            c.RecordEnd(Stopwatch.GetTimestamp(), expected, 1);
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        private static long Ping(TQueue ab, TQueue ba, long seq, RunControl c)
        {
            for (int i = 0; i < RoundTripChunk; i++)
            {
                var m = new Msg64(seq);
                while (!ab.TryWrite(in m))
                {
                    c.Spin();
                }

                Msg64 back;
                while (!ba.TryRead(out back))
                {
                    c.Spin();
                }

                if (back.Seq != seq)
                {
                    ThrowOrder(seq, back.Seq);
                }

                seq++;
            }

            return seq;
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        private static bool Echo(TQueue ab, TQueue ba, RunControl c)
        {
            for (int i = 0; i < RoundTripChunk; i++)
            {
                Msg64 m;
                while (!ab.TryRead(out m))
                {
                    c.Spin();
                }

                if (m.Seq < 0)
                {
                    return false;
                }

                while (!ba.TryWrite(in m))
                {
                    c.Spin();
                }
            }

            return true;
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        private static long Produce(TQueue q, long seq, ref long consumed, long window, SharedLine consumedLine, RunControl c)
        {
            for (int i = 0; i < StreamChunk; i++)
            {
                if (window > 0 && seq - consumed >= window)
                {
                    consumed = WaitForWindow(consumedLine, seq, window, c);
                }

                var m = new Msg64(seq);
                while (!q.TryWrite(in m))
                {
                    c.Spin();
                }

                seq++;
            }

            return seq;
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        private static bool Consume(TQueue q, ref long expected, SharedLine? consumedLine, long window, RunControl c)
        {
            long e = expected;
            try
            {
                for (int i = 0; i < StreamChunk; i++)
                {
                    Msg64 m;
                    while (!q.TryRead(out m))
                    {
                        c.Spin();
                    }

                    if (m.Seq != e)
                    {
                        if (m.Seq < 0)
                        {
                            return false;
                        }

                        ThrowOrder(e, m.Seq);
                    }

                    e++;
                    if (consumedLine is not null && (e & PublishMask(window)) == 0)
                    {
                        Volatile.Write(ref consumedLine.Line.Value, e);
                    }
                }

                return true;
            }
            finally
            {
                expected = e;
            }
        }
    }

    // ---------------------------------------------------------------- wake-up of a parked receiver

    /// <summary>
    /// B parks on a <see cref="Doorbell"/> exactly as a core does (announce, re-check, park); A
    /// waits until B has been asleep long enough to be inside the kernel wait, then writes a
    /// message stamped with the time and rings. B records how long after the stamp it ran.
    /// </summary>
    private sealed class WakeVariant(int slots, int samples) : Variant
    {
        private static readonly TimeSpan s_asleepFor = TimeSpan.FromMicroseconds(500);
        private readonly UrpcRing _ring = new(slots);
        private readonly Doorbell _doorbell = new();
        private readonly SharedLine _processed = new();
        private readonly long[] _latencyTicks = new long[samples];
        private int _recorded;

        public double[] LatenciesNs()
        {
            var ns = new double[_recorded];
            for (int i = 0; i < ns.Length; i++)
            {
                ns[i] = _latencyTicks[i] * 1e9 / Stopwatch.Frequency;
            }

            return ns;
        }

        public override void SideA(RunControl c)
        {
            long asleepTicks = (long)(s_asleepFor.TotalSeconds * Stopwatch.Frequency);
            c.RecordStart(Stopwatch.GetTimestamp());
            for (int i = 0; i < _latencyTicks.Length; i++)
            {
                long since;
                do
                {
                    while (!_doorbell.IsParked)
                    {
                        c.Spin();
                    }

                    since = Stopwatch.GetTimestamp();
                    while (Stopwatch.GetTimestamp() - since < asleepTicks)
                    {
                        c.Spin();
                    }
                }
                while (!_doorbell.IsParked);

                Message m = Message.Create(DataType, (ulong)i, (ulong)Stopwatch.GetTimestamp());
                while (!_ring.TryWrite(in m))
                {
                    c.Spin();
                }

                _doorbell.Ring();
                while (Volatile.Read(ref _processed.Line.Value) != i + 1)
                {
                    c.Spin();
                }
            }

            c.RecordEnd(Stopwatch.GetTimestamp(), _latencyTicks.Length, 1);
            Message stop = Message.Create(StopType);
            while (!_ring.TryWrite(in stop))
            {
                c.Spin();
            }

            _doorbell.Ring();
        }

        public override void SideB(RunControl c)
        {
            int i = 0;
            while (true)
            {
                ref readonly Message m = ref _ring.Peek();
                if (Unsafe.IsNullRef(in m))
                {
                    c.Spin();
                    _doorbell.PrepareToPark();
                    if (_ring.HasPending)
                    {
                        _doorbell.CancelPark();
                        continue;
                    }

                    _doorbell.Park(TimeSpan.FromSeconds(1));
                    continue;
                }

                long now = Stopwatch.GetTimestamp();
                if (m.Type == StopType)
                {
                    _ring.Advance();
                    break;
                }

                if (m.Word0 != (ulong)i)
                {
                    ThrowOrder(i, (long)m.Word0);
                }

                _latencyTicks[i] = now - (long)m.Word1;
                _ring.Advance();
                _ring.PublishConsumed();
                i++;
                _recorded = i;
                Volatile.Write(ref _processed.Line.Value, i);
            }
        }

        public override void Dispose()
        {
            _ring.Dispose();
            _doorbell.Dispose();
        }
    }
}
