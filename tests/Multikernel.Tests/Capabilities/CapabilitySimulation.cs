using Multikernel.CpuDriver.Capabilities;
using Multikernel.CpuDriver.Memory;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.Tests.Capabilities;

/// <summary>
/// Deterministic simulation of N cores running the real capability protocol: one bounded FIFO
/// queue per ordered pair of cores (like the URPC rings), messages delivered one at a time from a
/// randomly chosen (seeded) queue. Single-threaded, so any failure replays from its seed.
/// The scheduler is adversarial on demand: any link can be held back (<see cref="Hold"/>) so the
/// messages behind it wait while every other link runs, which is how an ordering the protocol
/// does not enforce (FIFO holds per link only) is found. A held link is released when nothing
/// else can move, so starvation delays without deadlocking the simulation.
/// </summary>
internal sealed class CapabilitySimulation : IDisposable
{
    public const int DomainsPerCore = 3;

    /// <summary>Slot of the monitor's Kernel capability.</summary>
    public const int KernelSlot = 0;

    /// <summary>Slot of each core's boot RAM in its monitor's CSpace.</summary>
    public const int RootRamSlot = 1;

    private readonly Queue<Message>[] _links;
    private readonly Transport[] _transports;
    private readonly int _linkCapacity;
    private readonly int[] _order;
    private readonly bool[] _held;

    /// <summary>Slot of core 0's Nic capability in its monitor's CSpace (when the options reserve a device region).</summary>
    public const int NicSlot = 2;

    public CapabilitySimulation(int cores, int seed, int framesPerCore = 96, int appRamFrames = 24, int linkCapacity = 8, CapabilityOptions? options = null, int deviceFrames = 0)
    {
        AppRamFrames = appRamFrames;
        CoreCount = cores;
        Random = new Random(seed);
        _linkCapacity = linkCapacity;
        Memory = new PhysicalMemory((long)cores * framesPerCore * PhysicalMemory.FrameSize);
        FrameRange[] shares = Memory.Split(cores);
        Cores = new CoreCapabilities[cores];
        Domains = new CSpace[cores][];
        _links = new Queue<Message>[cores * cores];
        _transports = new Transport[cores];
        _order = new int[cores];
        _held = new bool[cores * cores];
        for (int i = 0; i < _links.Length; i++)
        {
            _links[i] = new Queue<Message>();
        }

        for (int c = 0; c < cores; c++)
        {
            _transports[c] = new Transport(this, c);
            var core = new CoreCapabilities(c, cores, Memory, shares[c], options ?? new CapabilityOptions
            {
                MaxObjectsPerCore = 512,
                MaxReferencesPerCore = 1024,
                MaxDomainsPerCore = 8,
                SlotsPerDomain = 64,
                MaxOperations = 16,
                OutboxCapacity = 256,
                MulticastFanout = 2,
                DeviceFrames = deviceFrames,
            });
            Cores[c] = core;
            // In the simulation a domain's channel id is its domain id: a transfer to
            // (core, channel d) reaches domain d there, resolved by the receiving core.
            core.ChannelOwner = channel => core.FindDomain((int)channel);
            Domains[c] = new CSpace[DomainsPerCore];
            CSpace monitor = core.CreateDomain("monitor");
            Domains[c][0] = monitor;
            Assert.Equal(KernelSlot, core.CreateKernelCapability(monitor));
            int root = core.CreateRoot(monitor, KernelSlot, monitor, CapabilityType.Ram, core.RamShare.BaseFrame, core.RamShare.FrameCount);
            Assert.Equal(RootRamSlot, root);
            if (core.DeviceRegion.FrameCount > 0)
            {
                Assert.Equal(NicSlot, core.CreateRoot(monitor, KernelSlot, monitor, CapabilityType.Nic));
            }

            for (int d = 1; d < DomainsPerCore; d++)
            {
                CSpace app = core.CreateDomain($"app{c}.{d}");
                Domains[c][d] = app;
                monitor.MoveTo(monitor.Retype(root, CapabilityType.Ram, appRamFrames), app);
            }
        }
    }

    public int CoreCount { get; }

    /// <summary>RAM each application domain gets from its monitor.</summary>
    public int AppRamFrames { get; }

    /// <summary>
    /// Destroys application domain <paramref name="d"/> of <paramref name="core"/> (everything it
    /// held goes) and starts a new one in its place with fresh RAM: the domain id is reused.
    /// </summary>
    public void RestartDomain(int core, int d)
    {
        CSpace old = Domains[core][d];
        Cores[core].DestroyDomain(old);
        CSpace app = Cores[core].CreateDomain($"{old.Name}'");
        Domains[core][d] = app;
        CSpace monitor = Domains[core][0];
        try
        {
            monitor.MoveTo(monitor.Retype(RootRamSlot, CapabilityType.Ram, AppRamFrames), app);
        }
        catch (CapabilityException)
        {
            // The monitor's RAM is in use elsewhere: the new domain starts without any.
        }
    }

    public Random Random { get; }

    public PhysicalMemory Memory { get; }

    public CoreCapabilities[] Cores { get; }

    public CSpace[][] Domains { get; }

    public long Delivered { get; private set; }

    public long Refused { get; private set; }

    /// <summary>Holds back one random link (an adversarial schedule: its messages wait while everything else runs).</summary>
    public void StarveRandomLink()
    {
        int from = Random.Next(CoreCount);
        int to = Random.Next(CoreCount);
        if (from != to)
        {
            Hold(from, to);
        }
    }

    /// <summary>Cores whose inbound rings are drained ten times less often than the others.</summary>
    public ulong SlowCores { get; set; }

    /// <summary>How often the scheduler had to release held links because nothing else could move.</summary>
    public long ForcedReleases { get; private set; }

    /// <summary>Holds back the link <paramref name="from"/> -> <paramref name="to"/>: its messages wait until <see cref="Release"/> (or until nothing else can move).</summary>
    public void Hold(int from, int to) => _held[(from * CoreCount) + to] = true;

    /// <summary>Lets a held link deliver again.</summary>
    public void Release(int from, int to) => _held[(from * CoreCount) + to] = false;

    /// <summary>Releases every held link.</summary>
    public void ReleaseAll() => Array.Clear(_held);

    /// <summary>Messages waiting on the link <paramref name="from"/> -> <paramref name="to"/>.</summary>
    public int Queued(int from, int to) => _links[(from * CoreCount) + to].Count;

    private int Weight(int link) => (SlowCores & (1UL << (link % CoreCount))) != 0 ? 1 : 10;

    public void Dispose() => Memory.Dispose();

    /// <summary>The result of a completed operation (the simulation completes them synchronously; nothing blocks).</summary>
    public static T Result<T>(ValueTask<T> task)
    {
        Assert.True(task.IsCompleted, "operation still pending");
        return task.GetAwaiter().GetResult();
    }

    /// <summary>Passes the capability to domain <paramref name="toDomain"/> of core <paramref name="toCore"/> (over the channel the simulation gives every domain).</summary>
    public PendingTransfer Send(CSpace from, int slot, int toCore, int toDomain, TransferMode mode, CapabilityRights rights = CapabilityRights.All)
    {
        ValueTask task = from.TransferAsync(slot, toCore, (uint)toDomain, mode, rights);
        CSpace? receiver = (uint)toCore < (uint)CoreCount ? Cores[toCore].FindDomain(toDomain) : null;
        return new PendingTransfer(task, receiver, (uint)toDomain);
    }

    /// <summary>The receiver's slot of a completed transfer, taken from the receiver's own grant queue (throws the transfer's error, if any).</summary>
    public static int Result(PendingTransfer transfer)
    {
        Result(transfer.Task);
        Assert.NotNull(transfer.Receiver);
        int slot = transfer.Receiver.TakeGrant(transfer.Channel);
        Assert.True(slot >= 0, "the transfer completed but the receiver's kernel queued no grant");
        return slot;
    }

    /// <summary>Takes every grant waiting in every domain (a workload that does not care where they landed).</summary>
    public void TakeAllGrants()
    {
        foreach (CSpace[] core in Domains)
        {
            foreach (CSpace cs in core)
            {
                if (!cs.IsDestroyed)
                {
                    while (cs.TakeGrant((uint)cs.Id) >= 0)
                    {
                    }
                }
            }
        }
    }

    /// <summary>Throws the error of a completed operation, if any.</summary>
    public static void Result(ValueTask task)
    {
        Assert.True(task.IsCompleted, "operation still pending");
        task.GetAwaiter().GetResult();
    }

    /// <summary>Flushes every core, then delivers one message from a random non-empty queue. False when nothing is left.</summary>
    public bool Step()
    {
        FlushAll();
        // Weighted choice among non-empty links; a slow receiver is chosen a tenth as often
        // (fault injection: a core that is busy elsewhere and drains its rings late).
        int total = 0;
        bool anyHeld = false;
        for (int i = 0; i < _links.Length; i++)
        {
            if (_links[i].Count != 0 && _held[i])
            {
                anyHeld = true;
                continue;
            }

            total += _links[i].Count == 0 ? 0 : Weight(i);
        }

        if (total == 0 && anyHeld && !QuietWhileHeld)
        {
            // Starvation is a delay, not a deadlock: when only held links have messages, let them go.
            ReleaseAll();
            ForcedReleases++;
            return true;
        }

        if (total == 0)
        {
            return false;
        }

        int pick = Random.Next(total);
        for (int i = 0; i < _links.Length; i++)
        {
            if (_links[i].Count == 0 || _held[i])
            {
                continue;
            }

            pick -= Weight(i);
            if (pick < 0)
            {
                int from = i / CoreCount;
                int to = i % CoreCount;
                Message m = _links[i].Peek();
                if (Cores[to].TryHandle(from, in m))
                {
                    _links[i].Dequeue();
                    Delivered++;
                }
                else
                {
                    Refused++;
                }

                break;
            }
        }

        return true;
    }

    /// <summary>Delivers the next message on the link <paramref name="from"/> -> <paramref name="to"/>, if any.</summary>
    public bool Deliver(int from, int to)
    {
        FlushAll();
        Queue<Message> q = _links[(from * CoreCount) + to];
        if (q.Count == 0)
        {
            return false;
        }

        Message m = q.Peek();
        Assert.True(Cores[to].TryHandle(from, in m));
        q.Dequeue();
        Delivered++;
        return true;
    }

    public void FlushAll()
    {
        for (int i = 0; i < _order.Length; i++)
        {
            _order[i] = i;
        }

        Random.Shuffle(_order);
        foreach (int c in _order)
        {
            Cores[c].Flush(_transports[c]);
        }
    }

    /// <summary>
    /// When true, <see cref="Step"/> reports "nothing left" instead of releasing held links, so a
    /// test can run everything except the held links to completion (<see cref="RunUntilQuiet"/>
    /// then returns with the held messages still queued).
    /// </summary>
    public bool QuietWhileHeld { get; set; }

    public void RunUntilQuiet(int maxSteps = 500_000)
    {
        for (int i = 0; i < maxSteps; i++)
        {
            if (!Step())
            {
                FlushAll();
                bool unheldEmpty = true;
                for (int l = 0; l < _links.Length; l++)
                {
                    unheldEmpty &= _links[l].Count == 0 || (QuietWhileHeld && _held[l]);
                }

                if (Cores.All(c => c.OutboxCount == 0) && unheldEmpty)
                {
                    return;
                }
            }
        }

        throw new InvalidOperationException($"The simulation did not quiesce within {maxSteps} steps (livelock or deadlock).");
    }

    /// <summary>Checks the global invariants of the distributed mapping database at quiescence.</summary>
    public void CheckInvariants()
    {
        var objects = new Dictionary<(int Owner, int Index), ObjectView>();
        var refCounts = new Dictionary<(int Owner, int Index), int>();
        var holders = new Dictionary<(int Owner, int Index), ulong>();
        for (int c = 0; c < CoreCount; c++)
        {
            Assert.Equal(0, Cores[c].OperationsInProgress);
            Assert.Equal(0, Cores[c].OutboxCount);
            foreach (ObjectView o in Cores[c].InspectObjects())
            {
                Assert.True(o.Live, $"object {c}/{o.Index} still marked at quiescence");
                objects[(c, o.Index)] = o;
            }
        }

        for (int c = 0; c < CoreCount; c++)
        {
            foreach (ReferenceView r in Cores[c].InspectReferences())
            {
                Assert.False(r.Marked || r.InTransit || r.Detached, $"reference {c}/{r.Index} left marked/in transit/detached");
                Assert.True(objects.TryGetValue((r.Owner, r.Object), out ObjectView o), $"reference {c}/{r.Index} names a dead object {r.Owner}/{r.Object}");
                Assert.Equal(o.Generation, r.ObjectGeneration);
                Assert.Equal(o.Type, r.Type);
                CSpace cs = Cores[c].FindDomain(r.Domain) ?? throw new InvalidOperationException($"reference {c}/{r.Index} in a destroyed domain");
                Assert.Equal((r.Index, r.Generation), Cores[c].InspectSlot(cs, r.Slot));
                refCounts[(r.Owner, r.Object)] = refCounts.GetValueOrDefault((r.Owner, r.Object)) + 1;
                holders[(r.Owner, r.Object)] = holders.GetValueOrDefault((r.Owner, r.Object)) | (1UL << c);
            }
        }

        var leaves = new List<(int Base, int Count)>();
        foreach (((int owner, int index), ObjectView o) in objects)
        {
            int count = refCounts.GetValueOrDefault((owner, index));
            Assert.True(count == o.Total, $"object {owner}/{index} ({o.Type}) counts {o.Total} references, {count} exist");
            Assert.True(count > 0, $"object {owner}/{index} ({o.Type}) is orphaned");
            ulong held = holders.GetValueOrDefault((owner, index));
            Assert.True((held & ~o.Mask) == 0, $"object {owner}/{index}: cores {held:X} hold copies but the mask is {o.Mask:X}");
            var children = objects.Where(kv => kv.Key.Owner == owner && kv.Value.Parent == index).Select(kv => kv.Value).OrderBy(v => v.BaseFrame).ToList();
            if (o.Type is not (CapabilityType.Ram or CapabilityType.Nic))
            {
                // Only minted sub-copies (aliases of the same frames) derive from a non-container.
                Assert.All(children, ch => Assert.True(ch.Alias, $"object {owner}/{index} ({o.Type}) has a non-alias child"));
                Assert.Equal(0, o.UsedFrames);
                if (!o.Alias)
                {
                    leaves.Add((o.BaseFrame, o.FrameCount));
                }

                continue;
            }

            Assert.Equal(children.Sum(ch => ch.FrameCount), o.UsedFrames);
            int cursor = o.BaseFrame;
            foreach (ObjectView ch in children)
            {
                Assert.True(ch.BaseFrame >= cursor, $"children of {owner}/{index} overlap");
                cursor = ch.BaseFrame + ch.FrameCount;
            }

            Assert.True(cursor <= o.BaseFrame + o.FrameCount, $"children of {owner}/{index} exceed it");
        }

        leaves.Sort();
        for (int i = 1; i < leaves.Count; i++)
        {
            Assert.True(leaves[i - 1].Base + leaves[i - 1].Count <= leaves[i].Base, "two live objects share a frame (double allocation)");
        }
    }

    /// <summary>Every live reference on every core whose object is <paramref name="root"/> or derives from it.</summary>
    public List<(int Core, int Index, uint Generation)> ReferencesInTree(int owner, int root, (int Core, int Index) except)
    {
        List<ObjectView> objects = Cores[owner].InspectObjects();
        var tree = new HashSet<int> { root };
        bool grew = true;
        while (grew)
        {
            grew = false;
            foreach (ObjectView o in objects)
            {
                if (o.Parent >= 0 && tree.Contains(o.Parent) && tree.Add(o.Index))
                {
                    grew = true;
                }
            }
        }

        var result = new List<(int, int, uint)>();
        for (int c = 0; c < CoreCount; c++)
        {
            foreach (ReferenceView r in Cores[c].InspectReferences())
            {
                if (r.Owner == owner && tree.Contains(r.Object) && (c, r.Index) != except)
                {
                    result.Add((c, r.Index, r.Generation));
                }
            }
        }

        return result;
    }

    /// <summary>A transfer in flight: its completion, and where the receiver will find the grant.</summary>
    public sealed record PendingTransfer(ValueTask Task, CSpace? Receiver, uint Channel)
    {
        public bool IsCompleted => Task.IsCompleted;
    }

    private sealed class Transport(CapabilitySimulation sim, int from) : ICapabilityTransport
    {
        public bool TrySend(int core, in Message message)
        {
            Queue<Message> q = sim._links[(from * sim.CoreCount) + core];
            if (q.Count >= sim._linkCapacity)
            {
                return false;
            }

            q.Enqueue(message);
            return true;
        }
    }
}
