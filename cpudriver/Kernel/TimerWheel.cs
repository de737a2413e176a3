using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace Multikernel.CpuDriver.Kernel;

/// <summary>
/// A timer of a core's <see cref="TimerWheel"/>. While armed it owns a node of the wheel's node
/// array (<see cref="Node"/>); the wheel's lists link nodes by index, so arming, re-arming and
/// cancelling store integers into one array and never a reference into another object (no GC
/// write barrier, no pointer chase through scattered timer objects). Subclasses say what expiry
/// does (complete a delay, call a <see cref="System.Threading.ITimer"/> callback).
/// </summary>
internal abstract class WheelTimer
{
    /// <summary>
    /// The wheel node this timer holds while it is in one of the wheel's lists, -1 otherwise. A
    /// timer disarmed with <see cref="TimerWheel.Disarm"/> keeps its node (and its place) until
    /// its bucket comes up or it is armed again.
    /// </summary>
    internal int Node = -1;

    /// <summary>True while the timer will fire (armed and not disarmed). Maintained by the wheel.</summary>
    internal bool Armed;

    /// <summary>
    /// While the node sits in a slot of the wheel's levels: the expiry that slot was chosen for (at
    /// most <see cref="Expires"/>). Otherwise — no node, or on the firing list —
    /// <see cref="TimerWheel.Unplaced"/>. So the one compare <c>expires &gt;= Placed</c> says a
    /// re-arm may stay where it is (see <see cref="TimerWheel.Schedule"/>), and it reads only the
    /// timer, not the wheel's node array.
    /// </summary>
    internal long Placed = TimerWheel.Unplaced;

    /// <summary>True while the timer is on the firing list of the tick being processed.</summary>
    internal bool Firing;

    /// <summary>Tick (µs) at which the timer fires (as last scheduled).</summary>
    internal long Expires;

    /// <summary>True while the timer will fire.</summary>
    internal bool IsArmed => Armed;

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
/// <para>Storage: one array of nodes (next, previous, bucket), an array of bucket heads, an
/// array of owners and a stack of free node numbers, all indexed by node number; the expiry
/// lives on the timer. A re-arm is an unlink and a link of integers in the node array, or only
/// stores on the timer when the new expiry is later than where it was placed (the
/// retransmission timer an ACK pushes out): the timer stays in its bucket, which comes up no
/// later than that, and is filed again by its expiry then. The cost is at most one early visit
/// of the core per push-out, never an early firing. Popping a free node depends on no node's
/// contents, so back-to-back arms do not wait on each other's loads. The arrays grow by doubling
/// up to the capacity, so a core that arms few timers holds little memory; growth is the only allocation
/// and happens at most log2(capacity) times in a wheel's life.</para>
/// <para>Each level keeps a 64-bit map of its non-empty slots, so <see cref="NextEventTick"/> (the
/// next tick at which a slot fires or cascades) is a rotate and a trailing-zero count per level:
/// the core jumps straight to it instead of stepping tick by tick, and parks until it.</para>
/// <para>Why a wheel and not a heap: a TCP stack re-arms its retransmission timer on every ACK;
/// a heap makes each re-arm O(log n) with sift moves, the wheel one unlink and one link.</para>
/// <para>Invariant: every tick before <see cref="Now"/> has been processed; a timer in level
/// <c>l</c> ≥ 1 sits in the slot of its 64^l block, which cascades when the wheel reaches that
/// block's first tick. Timers due in the tick being processed sit on a firing list (one more
/// bucket, outside the levels), so a callback that cancels or re-arms another timer due in the
/// same tick unlinks it from that list like from any other.</para>
/// </remarks>
internal class TimerWheel // not sealed: CoreTimers is a core's wheel and its clock in one object (see there)
{
    private const int SlotBits = 6;
    private const int Slots = 1 << SlotBits;
    private const int Levels = 7;
    private const long Span = 1L << (SlotBits * Levels);
    private const int FiringBucket = Levels * Slots;
    private const int None = -1;

    /// <summary>
    /// <see cref="WheelTimer.Placed"/> of a timer that is in no slot of the levels. No expiry
    /// reaches it (ticks are µs: <see cref="long.MaxValue"/> is 292,000 years away), so no re-arm
    /// takes the stores-only path for such a timer.
    /// </summary>
    internal const long Unplaced = long.MaxValue;

    private struct Entry
    {
        public int Next;
        public int Previous;
        public int Bucket;
    }

    private readonly int[] _heads = new int[FiringBucket + 1];
    private readonly ulong[] _occupied = new ulong[Levels];
    private readonly int _capacity;
    // A struct around the owner reference: storing into an array of a class type pays a
    // covariance check per store; into an array of structs it is a plain store.
    private struct Owner
    {
        public WheelTimer? Timer;
    }

    private Entry[] _nodes;
    private Owner[] _owners;
    private int[] _free; // a stack of free node numbers: popping it depends on no node's contents
    private int _freeCount;
    private long _now;
    private int _count;  // armed timers
    private int _linked; // nodes in use: armed timers plus disarmed ones still in their bucket

    /// <summary>A wheel whose first unprocessed tick is <paramref name="now"/>, holding at most <paramref name="capacity"/> timers.</summary>
    public TimerWheel(long now, int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _now = now;
        _capacity = capacity;
        int initial = Math.Min(capacity, 64);
        _nodes = new Entry[initial];
        _owners = new Owner[initial];
        _free = new int[initial];
        PushFresh(0, initial);
        _heads.AsSpan().Fill(None);
    }

    /// <summary>The next tick to process (every earlier tick has fired).</summary>
    public long Now => _now;

    /// <summary>Armed timers.</summary>
    public int Count => _count;

    /// <summary>Nodes in the wheel's lists (armed timers and disarmed ones not yet swept): while
    /// non-zero, the wheel has buckets to process.</summary>
    public int Linked => _linked;

    /// <summary>The limit on armed timers.</summary>
    public int Capacity => _capacity;

    /// <summary>Arms or re-arms <paramref name="timer"/> for tick <paramref name="expires"/> (a past tick fires at the next advance).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Schedule(WheelTimer timer, long expires)
    {
        if (!TryScheduleInPlace(timer, expires))
        {
            ScheduleMoving(timer, expires);
        }
    }

    /// <summary>
    /// <see cref="Schedule"/> when it is only stores — the timer's node sits in a slot that comes
    /// up no later than <paramref name="expires"/>; false (nothing changed) when the timer must
    /// move, and the caller then calls <see cref="Schedule"/>. For a caller that has a slow path
    /// of its own and wants a single one (<see cref="CoreTimer.Change"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryScheduleInPlace(WheelTimer timer, long expires)
    {
        Debug.Assert(expires < Unplaced, "an expiry at the sentinel would take the stores-only path for a timer in no slot");
        if (expires < timer.Placed)
        {
            return false;
        }

        // Later than where its node sits in a slot (Placed is Unplaced for a timer without a node
        // or on the firing list, so one compare covers all three conditions) — pushed out while
        // armed (a retransmission timer on every ACK), or armed again after a lazy disarm: the
        // bucket it sits in is processed no later than that, and processing places it by its
        // expiry, so moving it now would be wasted work. Stores on the timer (and the count)
        // only; small enough to inline into every caller.
        if (!timer.Armed)
        {
            timer.Armed = true;
            _count++;
        }

        timer.Expires = expires;
        return true;
    }

    // A new node, or a move to an earlier bucket (or one being fired).
    private void ScheduleMoving(WheelTimer timer, long expires)
    {
        timer.Expires = expires;
        if (!timer.Armed)
        {
            timer.Armed = true;
            _count++;
        }

        int node = timer.Node;
        if (node < 0)
        {
            node = Allocate(timer);
        }
        else
        {
            int bucket = BucketOf(expires, out int level);
            ref Entry entry = ref _nodes[node];
            if (entry.Bucket == bucket)
            {
                timer.Placed = expires; // same bucket: where it sits in the list does not matter
                return;
            }

            Unlink(node);
            LinkAt(node, bucket, level, timer);
            return;
        }

        Link(node, timer);
    }

    /// <summary>Disarms <paramref name="timer"/> and takes it out of its list now; false when it was not armed.</summary>
    public bool Cancel(WheelTimer timer)
    {
        bool wasArmed = timer.Armed;
        if (wasArmed)
        {
            timer.Armed = false;
            _count--;
        }

        int node = timer.Node;
        if (node >= 0)
        {
            Unlink(node);
            Release(node, timer);
        }

        return wasArmed;
    }

    /// <summary>
    /// Disarms <paramref name="timer"/> lazily; false when it was not armed. It stops counting as
    /// armed and will not fire, but keeps its node in its bucket: a TCP stack disarms its
    /// retransmission timer when everything is acknowledged and arms it again, later, with the
    /// next send, and that arm then costs two stores like a push-out (see <see cref="Schedule"/>).
    /// The node is swept when its bucket comes up (at most one early visit of the core), when the
    /// node storage runs out, or by <see cref="Cancel"/>.
    /// </summary>
    public bool Disarm(WheelTimer timer)
    {
        if (!timer.Armed)
        {
            return false;
        }

        if (timer.Firing)
        {
            return Cancel(timer); // the firing list fires whatever is on it: take it off
        }

        timer.Armed = false;
        _count--;
        return true;
    }

    /// <summary>
    /// <see cref="Disarm"/> when it is only a flag and the count (the timer is not on the firing
    /// list); false (nothing changed) otherwise, and the caller then calls <see cref="Disarm"/>.
    /// Inlined into <see cref="CoreTimer.Change"/>(Infinite), the TCP stack's "all acknowledged".
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryDisarmInPlace(WheelTimer timer)
    {
        if (timer.Firing)
        {
            return false;
        }

        if (timer.Armed)
        {
            timer.Armed = false;
            _count--;
        }

        return true;
    }

    /// <summary>
    /// The first tick at or after <see cref="Now"/> at which a slot fires or cascades, or
    /// <see cref="long.MaxValue"/> when the wheel is empty. No timer fires before it.
    /// </summary>
    public long NextEventTick()
    {
        if (_linked == 0)
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
        while (_linked > 0)
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
                int node = Detach((level * Slots) + (int)((tick >> shift) & (Slots - 1)), level);
                while (node != None)
                {
                    int next = _nodes[node].Next;
                    WheelTimer owner = _owners[node].Timer!;
                    if (owner.Armed)
                    {
                        Link(node, owner); // only the place moves
                    }
                    else
                    {
                        Release(node, owner); // disarmed lazily: swept now
                    }

                    node = next;
                }
            }
        }

        // The slot due now becomes the firing list; timers armed by the callbacks below belong
        // to later ticks (now is past this one), and a callback that cancels or re-arms a timer
        // still on the firing list unlinks it from there.
        int due = Detach((int)(tick & (Slots - 1)), 0);
        _now = tick + 1;
        if (due == None)
        {
            return 0;
        }

        // Timers pushed later after they were placed (see Schedule) are placed again instead.
        int firing = None;
        for (int n = due; n != None;)
        {
            ref Entry entry = ref _nodes[n];
            int next = entry.Next;
            WheelTimer owner = _owners[n].Timer!;
            if (!owner.Armed)
            {
                Release(n, owner); // disarmed lazily: swept now
            }
            else if (owner.Expires > tick)
            {
                Link(n, owner);
            }
            else
            {
                entry.Previous = None;
                entry.Next = firing;
                entry.Bucket = FiringBucket;
                owner.Firing = true;
                owner.Placed = Unplaced; // no longer in a slot: a re-arm must take it off the firing list
                if (firing != None)
                {
                    _nodes[firing].Previous = n;
                }

                firing = n;
            }

            n = next;
        }

        if (firing == None)
        {
            return 0;
        }

        _heads[FiringBucket] = firing;

        int fired = 0;
        for (int node = _heads[FiringBucket]; node != None; node = _heads[FiringBucket])
        {
            Unlink(node);
            WheelTimer timer = _owners[node].Timer!;
            Release(node, timer);
            timer.Armed = false;
            _count--;
            fired++;
            timer.Expire();
        }

        return fired;
    }

    // Takes a whole slot's list; its nodes keep their links (Bucket is stale until relinked).
    private int Detach(int bucket, int level)
    {
        int head = _heads[bucket];
        if (head != None)
        {
            _heads[bucket] = None;
            _occupied[level] &= ~(1UL << (bucket & (Slots - 1)));
        }

        return head;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int BucketOf(long expires, out int level)
    {
        long delta = expires - _now;
        if ((ulong)delta >= Span)
        {
            return OutsideBucketOf(expires, delta, out level);
        }

        // Level = floor(log64(delta)), 0 below 64; the slot is the expiry's digit at that level.
        level = (63 - BitOperations.LeadingZeroCount((ulong)delta | 1)) / SlotBits;
        return (level * Slots) + (int)((expires >> (SlotBits * level)) & (Slots - 1));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private int OutsideBucketOf(long expires, long delta, out int level)
    {
        if (delta < 0)
        {
            level = 0; // already past: fires at the next tick processed
            return (int)(_now & (Slots - 1));
        }

        // Beyond the wheel: wait in the top level's last slot of the span, placed again on cascade.
        level = Levels - 1;
        long placed = _now + Span - 1;
        return (level * Slots) + (int)((placed >> (SlotBits * level)) & (Slots - 1));
    }

    // Files the node by its timer's expiry.
    private void Link(int node, WheelTimer timer)
    {
        int bucket = BucketOf(timer.Expires, out int level);
        LinkAt(node, bucket, level, timer);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void LinkAt(int node, int bucket, int level, WheelTimer timer)
    {
        timer.Placed = timer.Expires;
        timer.Firing = false;
        int head = _heads[bucket];
        ref Entry entry = ref _nodes[node];
        entry.Previous = None;
        entry.Next = head;
        entry.Bucket = bucket;
        if (head != None)
        {
            _nodes[head].Previous = node;
        }

        _heads[bucket] = node;
        _occupied[level] |= 1UL << (bucket & (Slots - 1));
    }

    private void Unlink(int node)
    {
        ref Entry entry = ref _nodes[node];
        int bucket = entry.Bucket;
        Debug.Assert(bucket is >= 0 and <= FiringBucket, "unlinking a node that is not in a list");
        int next = entry.Next;
        int previous = entry.Previous;
        if (previous != None)
        {
            _nodes[previous].Next = next;
        }
        else
        {
            _heads[bucket] = next;
            if (next == None && bucket < FiringBucket)
            {
                _occupied[bucket >> SlotBits] &= ~(1UL << (bucket & (Slots - 1)));
            }
        }

        if (next != None)
        {
            _nodes[next].Previous = previous;
        }
    }

    private int Allocate(WheelTimer timer)
    {
        if (_freeCount == 0)
        {
            Grow(timer);
        }

        int node = _free[--_freeCount];
        _owners[node].Timer = timer;
        timer.Node = node;
        _linked++;
        return node;
    }

    // The node leaves the lists (already unlinked) and its timer.
    private void Release(int node, WheelTimer timer)
    {
        ref Entry entry = ref _nodes[node];
        entry.Bucket = None;
        _free[_freeCount++] = node;
        _owners[node].Timer = null;
        timer.Node = None;
        timer.Firing = false;
        timer.Placed = Unplaced;
        _linked--;
    }

    // Nodes [from, to) are new: stack them so the lowest number is handed out first.
    private void PushFresh(int from, int to)
    {
        for (int node = to - 1; node >= from; node--)
        {
            _nodes[node].Bucket = None;
            _free[_freeCount++] = node;
        }
    }

    private void Grow(WheelTimer arming)
    {
        if (_linked >= _capacity)
        {
            // Every node is in use; the lazily disarmed ones are free for the taking. O(capacity),
            // and only when the table is full of them (an arm-and-disarm loop over fresh timers).
            SweepDisarmed(arming);
            if (_freeCount > 0)
            {
                return;
            }

            _count--; // this arm fails: the timer is not armed after all
            arming.Armed = false;
            ThrowFull();
        }

        int old = _nodes.Length;
        int size = (int)Math.Min((long)old * 2, _capacity);
        Array.Resize(ref _nodes, size);
        Array.Resize(ref _owners, size);
        Array.Resize(ref _free, size);
        PushFresh(old, size);
    }

    private void SweepDisarmed(WheelTimer arming)
    {
        for (int node = 0; node < _nodes.Length; node++)
        {
            WheelTimer? owner = _owners[node].Timer;
            if (owner is not null && !owner.Armed && !ReferenceEquals(owner, arming))
            {
                Unlink(node);
                Release(node, owner);
            }
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowFull() =>
        throw new InvalidOperationException($"This core has {_count} armed timers (MaxTimersPerCore = {_capacity}).");
}
