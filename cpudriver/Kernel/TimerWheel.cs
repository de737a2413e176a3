using System.Diagnostics;
using System.Numerics;

namespace Multikernel.CpuDriver.Kernel;

/// <summary>
/// An entry of a core's <see cref="TimerWheel"/>: an intrusive doubly-linked node, so arming,
/// re-arming and cancelling unlink and link in O(1) without allocating. Subclasses say what
/// expiry does (complete a delay, call a <see cref="System.Threading.ITimer"/> callback).
/// </summary>
internal abstract class WheelTimer
{
    internal WheelTimer? Next;
    internal WheelTimer? Previous;

    /// <summary>Tick (µs) at which the timer fires.</summary>
    internal long Expires;

    /// <summary>level * 64 + slot while armed, -1 otherwise.</summary>
    internal int Bucket = -1;

    /// <summary>True while the timer is in the wheel.</summary>
    internal bool IsArmed => Bucket >= 0;

    /// <summary>Called on the core's thread once the timer is out of the wheel and due.</summary>
    internal abstract void Expire();
}

/// <summary>
/// A hierarchical timing wheel (Varghese and Lauck; the classic Linux <c>kernel/time/timer.c</c>
/// layout): 7 levels of 64 slots over a 1 µs tick, so level <c>l</c> slots are 64^l µs wide and
/// the wheel spans 64^7 µs (about 51 days; later timers wait in the top level and are placed
/// again when it cascades). Arm, re-arm and cancel are O(1) list operations; a timer moves down
/// at most six times before it fires, and fires in exactly its tick.
/// </summary>
/// <remarks>
/// <para>Each level keeps a 64-bit map of its non-empty slots, so <see cref="NextEventTick"/> (the
/// next tick at which a slot fires or cascades) is a rotate and a trailing-zero count per level:
/// the core jumps straight to it instead of stepping tick by tick, and parks until it.</para>
/// <para>Why a wheel and not a heap: a TCP stack re-arms its retransmission timer on every ACK;
/// a heap makes each re-arm O(log n) with sift moves, the wheel one unlink and one link.</para>
/// <para>Invariant: every tick before <see cref="Now"/> has been processed; a timer in level
/// <c>l</c> ≥ 1 sits in the slot of its 64^l block, which cascades when the wheel reaches that
/// block's first tick.</para>
/// </remarks>
internal sealed class TimerWheel
{
    private const int SlotBits = 6;
    private const int Slots = 1 << SlotBits;
    private const int Levels = 7;
    private const long Span = 1L << (SlotBits * Levels);

    private readonly WheelTimer?[] _heads = new WheelTimer?[Levels * Slots];
    private readonly ulong[] _occupied = new ulong[Levels];
    private readonly int _capacity;
    private long _now;
    private int _count;

    /// <summary>A wheel whose first unprocessed tick is <paramref name="now"/>, holding at most <paramref name="capacity"/> timers.</summary>
    public TimerWheel(long now, int capacity)
    {
        _now = now;
        _capacity = capacity;
    }

    /// <summary>The next tick to process (every earlier tick has fired).</summary>
    public long Now => _now;

    /// <summary>Armed timers.</summary>
    public int Count => _count;

    /// <summary>The limit on armed timers.</summary>
    public int Capacity => _capacity;

    /// <summary>Arms or re-arms <paramref name="timer"/> for tick <paramref name="expires"/> (a past tick fires at the next advance).</summary>
    public void Schedule(WheelTimer timer, long expires)
    {
        if (timer.IsArmed)
        {
            Unlink(timer);
        }
        else if (_count >= _capacity)
        {
            ThrowFull();
        }
        else
        {
            _count++;
        }

        timer.Expires = expires;
        Link(timer);
    }

    /// <summary>Disarms <paramref name="timer"/>; false when it was not armed.</summary>
    public bool Cancel(WheelTimer timer)
    {
        if (!timer.IsArmed)
        {
            return false;
        }

        Unlink(timer);
        timer.Bucket = -1;
        _count--;
        return true;
    }

    /// <summary>
    /// The first tick at or after <see cref="Now"/> at which a slot fires or cascades, or
    /// <see cref="long.MaxValue"/> when the wheel is empty. No timer fires before it.
    /// </summary>
    public long NextEventTick()
    {
        if (_count == 0)
        {
            return long.MaxValue;
        }

        long best = long.MaxValue;
        ulong level0 = _occupied[0];
        if (level0 != 0)
        {
            best = _now + BitOperations.TrailingZeroCount(BitOperations.RotateRight(level0, (int)(_now & (Slots - 1))));
        }

        for (int level = 1; level < Levels; level++)
        {
            ulong map = _occupied[level];
            if (map == 0)
            {
                continue;
            }

            int shift = SlotBits * level;
            long firstBlock = (_now + (1L << shift) - 1) >> shift; // first block boundary at or after now
            long block = firstBlock + BitOperations.TrailingZeroCount(BitOperations.RotateRight(map, (int)(firstBlock & (Slots - 1))));
            long tick = block << shift;
            if (tick < best)
            {
                best = tick;
            }
        }

        return best;
    }

    /// <summary>Processes every tick up to and including <paramref name="tick"/>; returns how many timers fired.</summary>
    public int Advance(long tick)
    {
        int fired = 0;
        while (_count > 0)
        {
            long next = NextEventTick();
            if (next > tick)
            {
                break;
            }

            fired += Process(next);
        }

        if (_now <= tick)
        {
            _now = tick + 1; // nothing fires or cascades in between: jump
        }

        return fired;
    }

    private int Process(long tick)
    {
        _now = tick;
        // Cascade the levels whose block starts at this tick, highest first: each moves its
        // timers to lower levels (never into a slot cascading now: their delta is a block or more).
        for (int level = Levels - 1; level >= 1; level--)
        {
            int shift = SlotBits * level;
            if ((tick & ((1L << shift) - 1)) == 0)
            {
                int bucket = (level * Slots) + (int)((tick >> shift) & (Slots - 1));
                WheelTimer? list = Detach(bucket, level);
                while (list is not null)
                {
                    WheelTimer timer = list;
                    list = timer.Next;
                    Link(timer); // Expires is unchanged: only the place moves
                }
            }
        }

        int fired = 0;
        int slot = (int)(tick & (Slots - 1));
        WheelTimer? due = Detach(slot, 0);
        // Timers armed by the callbacks below belong to later ticks.
        _now = tick + 1;
        while (due is not null)
        {
            WheelTimer timer = due;
            due = timer.Next;
            timer.Next = null;
            timer.Previous = null;
            timer.Bucket = -1;
            _count--;
            fired++;
            timer.Expire();
        }

        return fired;
    }

    // Takes a whole slot's list (singly linked through Next from here on).
    private WheelTimer? Detach(int bucket, int level)
    {
        WheelTimer? head = _heads[bucket];
        if (head is not null)
        {
            _heads[bucket] = null;
            _occupied[level] &= ~(1UL << (bucket & (Slots - 1)));
        }

        return head;
    }

    private void Link(WheelTimer timer)
    {
        long expires = timer.Expires < _now ? _now : timer.Expires;
        long delta = expires - _now;
        int level;
        if (delta < Slots)
        {
            level = 0;
        }
        else if (delta >= Span)
        {
            level = Levels - 1;
            expires = _now + Span - 1; // beyond the wheel: wait in the top level, placed again on cascade
        }
        else
        {
            level = (63 - BitOperations.LeadingZeroCount((ulong)delta)) / SlotBits;
        }

        int bucket = (level * Slots) + (int)((expires >> (SlotBits * level)) & (Slots - 1));
        WheelTimer? head = _heads[bucket];
        timer.Previous = null;
        timer.Next = head;
        if (head is not null)
        {
            head.Previous = timer;
        }

        _heads[bucket] = timer;
        timer.Bucket = bucket;
        _occupied[level] |= 1UL << (bucket & (Slots - 1));
    }

    private void Unlink(WheelTimer timer)
    {
        int bucket = timer.Bucket;
        Debug.Assert(bucket >= 0, "unlinking a timer that is not armed");
        if (timer.Previous is { } previous)
        {
            previous.Next = timer.Next;
        }
        else
        {
            _heads[bucket] = timer.Next;
            if (timer.Next is null)
            {
                _occupied[bucket >> SlotBits] &= ~(1UL << (bucket & (Slots - 1)));
            }
        }

        if (timer.Next is { } next)
        {
            next.Previous = timer.Previous;
        }

        timer.Next = null;
        timer.Previous = null;
    }

    private void ThrowFull() =>
        throw new InvalidOperationException($"This core has {_count} armed timers (MaxTimersPerCore = {_capacity}).");
}
