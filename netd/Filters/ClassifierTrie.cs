using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Multikernel.Netd.Filters;

/// <summary>
/// All installed filters merged into one decision trie (DPF / PathFinder): each filter's
/// canonical atoms are a path from the root, and filters that begin with the same atoms share
/// the nodes. At a node, the filters' next atoms are grouped by field (offset, width, shift,
/// mask); a group reads its field once and dispatches on the value — a direct compare for one
/// value, an open-addressing hash table for many — so 1000 filters on 1000 ports cost one
/// lookup, not 1000 compares. A node can have several groups (filters that test different
/// fields next); the walk visits each that matches, keeping the lowest filter id, and skips any
/// subtree whose lowest id cannot beat the best match so far.
/// <para>
/// Built once per change of the filter set into flat arrays (no objects on the walk) and then
/// never changed: <see cref="PacketClassifier"/> swaps in a new one. The walk allocates nothing;
/// its recursion depth is at most the atoms of one filter plus one.
/// </para>
/// </summary>
internal sealed class ClassifierTrie
{
    private const int Empty = -1;

    private readonly Node[] _nodes;
    private readonly Group[] _groups;
    private readonly Entry[] _entries;

    private ClassifierTrie(Node[] nodes, Group[] groups, Entry[] entries, InstalledFilter[] filters)
    {
        _nodes = nodes;
        _groups = groups;
        _entries = entries;
        Filters = filters;
    }

    /// <summary>The filters by slot (a dense index the trie's terminals refer to).</summary>
    public InstalledFilter[] Filters { get; }

    public int NodeCount => _nodes.Length;

    /// <summary>The trie of no filters: one root that matches nothing.</summary>
    public static ClassifierTrie CreateEmpty() => new([new Node(0, 0, Empty, int.MaxValue, int.MaxValue)], [], [], []);

    /// <summary>Builds the trie of <paramref name="filters"/>, or returns null if it would need more than <paramref name="maxNodes"/> nodes.</summary>
    public static ClassifierTrie? Build(IReadOnlyList<InstalledFilter> filters, int maxNodes)
    {
        var root = new BuildNode();
        int nodes = 1;
        for (int slot = 0; slot < filters.Count; slot++)
        {
            BuildNode node = root;
            foreach (FilterAtom atom in filters[slot].Canonical)
            {
                var key = new FieldKey(atom.Offset, atom.Width, atom.Shift, atom.Mask);
                BuildGroup? group = node.Groups.Find(g => g.Key == key);
                if (group is null)
                {
                    group = new BuildGroup(key);
                    node.Groups.Add(group);
                }

                if (!group.Children.TryGetValue(atom.Value, out BuildNode? child))
                {
                    if (++nodes > maxNodes)
                    {
                        return null;
                    }

                    child = new BuildNode();
                    group.Children.Add(atom.Value, child);
                }

                node = child;
            }

            if (node.TerminalSlot == Empty || filters[slot].Id < filters[node.TerminalSlot].Id)
            {
                node.TerminalSlot = slot;
            }
        }

        var compiler = new Compiler(filters, nodes);
        compiler.Emit(root);
        Debug.Assert(compiler.Nodes.Count == nodes, "every built node is emitted once");
        return new ClassifierTrie([.. compiler.Nodes], [.. compiler.Groups], [.. compiler.Entries], [.. filters]);
    }

    /// <summary>The slot of the lowest-id filter matching <paramref name="frame"/>, or -1.</summary>
    public int Classify(ReadOnlySpan<byte> frame)
    {
        int bestId = int.MaxValue;
        int bestSlot = Empty;
        Visit(0, frame, ref bestId, ref bestSlot);
        return bestSlot;
    }

    private void Visit(int index, ReadOnlySpan<byte> frame, ref int bestId, ref int bestSlot)
    {
        ref Node node = ref _nodes[index];
        if (node.SubtreeMinId >= bestId)
        {
            return; // nothing below can win: DPF-style early exit when matches cannot improve
        }

        if (node.TerminalId < bestId)
        {
            bestId = node.TerminalId;
            bestSlot = node.TerminalSlot;
        }

        int end = node.GroupStart + node.GroupCount;
        for (int g = node.GroupStart; g < end; g++)
        {
            ref Group group = ref _groups[g];
            int offset = group.Offset;
            if (group.ShiftMask != 0)
            {
                if ((uint)group.ShiftOffset >= (uint)frame.Length)
                {
                    continue;
                }

                offset += (frame[group.ShiftOffset] & group.ShiftMask) << group.ShiftLeft;
            }

            if (!FilterAtom.TryReadAt(frame, offset, group.Width, out uint field))
            {
                continue; // a field past the end of this frame: the atom is false
            }

            int child = Lookup(ref group, field & group.Mask);
            if (child != Empty)
            {
                Visit(child, frame, ref bestId, ref bestSlot);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int Lookup(ref Group group, uint value)
    {
        if (group.HashShift < 0)
        {
            ref Entry only = ref _entries[group.TableStart];
            return only.Value == value ? only.Child : Empty;
        }

        int size = 1 << (32 - group.HashShift);
        int i = Hash(value, group.HashShift);
        ref Entry table = ref MemoryMarshal.GetArrayDataReference(_entries);
        for (int probe = 0; probe < size; probe++)
        {
            // Bounds: TableStart + i < TableStart + size, inside the table laid out by the compiler.
            ref Entry e = ref Unsafe.Add(ref table, group.TableStart + i);
            if (e.Child == Empty)
            {
                return Empty;
            }

            if (e.Value == value)
            {
                return e.Child;
            }

            i = (i + 1) & (size - 1);
        }

        return Empty;
    }

    /// <summary>Fibonacci hashing: the top bits of value × 2^32/φ. Tables are at most half full, so probes stay short.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Hash(uint value, int shift) => (int)((value * 2654435769u) >> shift);

    private readonly record struct FieldKey(ushort Offset, byte Width, FilterShift? Shift, uint Mask);

    private sealed class BuildNode
    {
        public List<BuildGroup> Groups { get; } = [];

        public int TerminalSlot { get; set; } = Empty;
    }

    private sealed class BuildGroup(FieldKey key)
    {
        public FieldKey Key { get; } = key;

        public Dictionary<uint, BuildNode> Children { get; } = [];
    }

    private sealed class Compiler(IReadOnlyList<InstalledFilter> filters, int nodes)
    {
        public List<Node> Nodes { get; } = new(nodes);

        public List<Group> Groups { get; } = [];

        public List<Entry> Entries { get; } = [];

        /// <summary>Emits <paramref name="node"/> and its subtree; returns its index and the lowest filter id below it.</summary>
        public (int Index, int MinId) Emit(BuildNode node)
        {
            int index = Nodes.Count;
            Nodes.Add(default);
            int terminalId = node.TerminalSlot == Empty ? int.MaxValue : filters[node.TerminalSlot].Id;
            int minId = terminalId;
            int groupStart = Groups.Count;
            for (int g = 0; g < node.Groups.Count; g++)
            {
                Groups.Add(default);
            }

            for (int g = 0; g < node.Groups.Count; g++)
            {
                BuildGroup group = node.Groups[g];
                var children = new List<(uint Value, int Index)>(group.Children.Count);
                foreach ((uint value, BuildNode child) in group.Children)
                {
                    (int childIndex, int childMin) = Emit(child);
                    children.Add((value, childIndex));
                    minId = Math.Min(minId, childMin);
                }

                Groups[groupStart + g] = Layout(group.Key, children);
            }

            Nodes[index] = new Node(groupStart, node.Groups.Count, node.TerminalSlot, terminalId, minId);
            return (index, minId);
        }

        private Group Layout(FieldKey key, List<(uint Value, int Index)> children)
        {
            int start = Entries.Count;
            int hashShift = -1;
            if (children.Count == 1)
            {
                Entries.Add(new Entry(children[0].Value, children[0].Index));
            }
            else
            {
                int bits = 1;
                while ((1 << bits) < children.Count * 2)
                {
                    bits++;
                }

                hashShift = 32 - bits;
                int size = 1 << bits;
                for (int i = 0; i < size; i++)
                {
                    Entries.Add(new Entry(0, Empty));
                }

                foreach ((uint value, int child) in children)
                {
                    int i = Hash(value, hashShift);
                    while (Entries[start + i].Child != Empty)
                    {
                        i = (i + 1) & (size - 1);
                    }

                    Entries[start + i] = new Entry(value, child);
                }
            }

            FilterShift s = key.Shift ?? default;
            return new Group(key.Offset, key.Width, s.ShiftOffset, s.ShiftMask, s.ShiftLeft, key.Mask, start, hashShift);
        }
    }

    private readonly record struct Node(int GroupStart, int GroupCount, int TerminalSlot, int TerminalId, int SubtreeMinId);

    /// <summary>One field read and its dispatch. ShiftMask 0 means "no shift" (the verifier refuses a shift with mask 0).</summary>
    private readonly record struct Group(ushort Offset, byte Width, ushort ShiftOffset, byte ShiftMask, byte ShiftLeft, uint Mask, int TableStart, int HashShift);

    private readonly record struct Entry(uint Value, int Child);
}
