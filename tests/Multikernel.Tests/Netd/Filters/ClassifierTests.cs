using Multikernel.Netd.Filters;

namespace Multikernel.Tests.Netd.Filters;

/// <summary>Overlap refusals, limits, removal, counters and listing of the merged classifier.</summary>
public sealed class ClassifierTests
{
    [Theory]
    [InlineData("tcp.dport == 80", "tcp.dport == 80", true)]
    [InlineData("tcp.dport == 80", "udp.dport == 80", false)] // ip.proto 6 vs 17
    [InlineData("tcp.dport == 80", "tcp.dport == 81", false)]
    [InlineData("tcp.dport == 80", "tcp.sport == 80", true)] // a frame from 80 to 80 matches both
    [InlineData("ip.dst == 10.0.0.0/8", "ip.dst == 10.1.2.3 && tcp.dport == 80", true)]
    [InlineData("ip.dst == 10.0.0.0/8", "ip.dst == 11.0.0.1", false)]
    [InlineData("ip.dst == 10.0.0.0/16", "ip.dst == 10.1.0.0/16", false)]
    [InlineData("eth.type == 0x0800", "tcp.dport == 80", true)]
    [InlineData("arp.op == 1", "tcp.dport == 80", false)] // eth.type 0x0806 vs 0x0800
    [InlineData("eth.dst == 02:00:00:00:00:01", "eth.dst == 02:00:00:00:00:02", false)]
    [InlineData("frame[12:1] == 0x86", "eth.type == 0x0800", false)] // different widths, one byte contradicts
    [InlineData("frame[14:1] & 0xF0 == 0x40", "frame[14:1] & 0x0F == 0x05", true)] // different bits of one byte
    [InlineData("ip.dst == 0.0.0.0/0", "udp.dport == 53", true)]
    public void Install_RefusesOverlapWithAnotherOwner_Only(string first, string second, bool overlap)
    {
        var classifier = new PacketClassifier();
        FilterInstallResult a = classifier.Install(first, owner: 1);
        Assert.True(a.Succeeded, a.ToString());
        FilterInstallResult b = classifier.Install(second, owner: 2);
        if (overlap)
        {
            Assert.Equal(FilterRejection.Overlap, b.Problem.Reason);
            Assert.Contains($"filter {a.FilterId} ('{first}') of owner 1 claims", b.Problem.Message, StringComparison.Ordinal);
            Assert.Equal(1, classifier.Count);

            // The owner that claims the traffic may add it.
            Assert.True(classifier.Install(second, owner: 1).Succeeded);
        }
        else
        {
            Assert.True(b.Succeeded, b.ToString());
        }
    }

    [Fact]
    public void Overlap_IsConservative_AcrossBases()
    {
        // With IHL fixed to 5 the ports sit at 34..37, so these two can never both match — but one
        // tests a constant offset and the other an offset after the IPv4 header, and the rule does
        // not reason through the shift: refused as overlapping (documented in docs/netd-filters.md).
        var classifier = new PacketClassifier();
        Assert.True(classifier.Install("frame[14:1] & 0x0F == 5 && frame[36:2] == 80", owner: 1).Succeeded);
        Assert.Equal(FilterRejection.Overlap, classifier.Install("frame[14:1] & 0x0F == 5 && tcp.dport == 81", owner: 2).Problem.Reason);
    }

    [Fact]
    public void SameOwnerOverlap_GoesToTheLowestId_AndRemovalHandsItOn()
    {
        var classifier = new PacketClassifier();
        int general = classifier.Install("tcp.dport == 80", owner: 7).FilterId;
        int specific = classifier.Install("ip.dst == 10.0.0.1 && tcp.dport == 80", owner: 7).FilterId;
        byte[] frame = Frames.Tcp("10.0.0.9", "10.0.0.1", 1234, 80);
        Assert.Equal(new ClassifyResult(general, 7), classifier.Classify(frame));
        Assert.True(classifier.Remove(general));
        Assert.False(classifier.Remove(general));
        Assert.Equal(new ClassifyResult(specific, 7), classifier.Classify(frame));
        Assert.False(classifier.Classify(Frames.Tcp("10.0.0.9", "10.0.0.2", 1234, 80)).Matched);
    }

    [Fact]
    public void RemoveOwner_FreesItsTraffic_ForAnotherOwner()
    {
        var classifier = new PacketClassifier();
        Assert.True(classifier.Install("tcp.dport == 80", owner: 1).Succeeded);
        Assert.True(classifier.Install("tcp.dport == 443", owner: 1).Succeeded);
        Assert.True(classifier.Install("udp.dport == 53", owner: 2).Succeeded);
        Assert.Equal(FilterRejection.Overlap, classifier.Install("tcp.dport == 80", owner: 3).Problem.Reason);
        Assert.Equal(2, classifier.RemoveOwner(1));
        Assert.Equal(0, classifier.RemoveOwner(1));
        FilterInstallResult taken = classifier.Install("tcp.dport == 80", owner: 3);
        Assert.True(taken.Succeeded);
        Assert.Equal(new ClassifyResult(taken.FilterId, 3), classifier.Classify(Frames.Tcp("1.1.1.1", "2.2.2.2", 9, 80)));
        Assert.False(classifier.Classify(Frames.Tcp("1.1.1.1", "2.2.2.2", 9, 443)).Matched);
    }

    [Fact]
    public void Counters_CountMatchesAndBytesPerFilter_AndListShowsThem()
    {
        var classifier = new PacketClassifier();
        int web = classifier.Install("tcp.dport == 80", owner: 1).FilterId;
        int dns = classifier.Install("udp.dport == 53", owner: 2).FilterId;
        byte[] a = Frames.Tcp("10.0.0.1", "10.0.0.2", 5000, 80);
        byte[] b = Frames.Udp("10.0.0.1", "10.0.0.2", 5000, 53);
        for (int i = 0; i < 3; i++)
        {
            classifier.Classify(a);
        }

        classifier.Classify(b);
        classifier.Classify(Frames.Udp("10.0.0.1", "10.0.0.2", 5000, 54));
        IReadOnlyList<FilterInfo> list = classifier.List();
        Assert.Equal([web, dns], list.Select(f => f.Id));
        Assert.Equal(new FilterInfo(web, 1, "tcp.dport == 80", 4, 3, 3L * a.Length), list[0]);
        Assert.Equal(new FilterInfo(dns, 2, "udp.dport == 53", 4, 1, b.Length), list[1]);
        Assert.Equal(1, classifier.Unmatched);

        // Counters survive a rebuild of the trie (another install).
        Assert.True(classifier.Install("tcp.dport == 22", owner: 1).Succeeded);
        Assert.Equal(3, classifier.List()[0].Matches);
    }

    [Fact]
    public void MaxFilters_RefusesTheNext_UntilOneIsRemoved()
    {
        var classifier = new PacketClassifier(new ClassifierOptions { MaxFilters = 3 });
        int first = 0;
        for (int port = 1; port <= 3; port++)
        {
            FilterInstallResult ok = classifier.Install($"tcp.dport == {port}", owner: port);
            Assert.True(ok.Succeeded);
            first = first == 0 ? ok.FilterId : first;
        }

        FilterInstallResult refused = classifier.Install("tcp.dport == 4", owner: 4);
        Assert.Equal(FilterRejection.TooManyFilters, refused.Problem.Reason);
        Assert.Contains("holds 3 filters; the limit is 3", refused.Problem.Message, StringComparison.Ordinal);
        Assert.Equal(3, classifier.Count);
        Assert.True(classifier.Remove(first));
        Assert.True(classifier.Install("tcp.dport == 4", owner: 4).Succeeded);
    }

    [Fact]
    public void MaxAtomsPerFilter_CountsTheImpliedAtoms()
    {
        var classifier = new PacketClassifier(new ClassifierOptions { MaxAtomsPerFilter = 4 });
        Assert.True(classifier.Install("tcp.dport == 80", owner: 1).Succeeded); // eth.type, fragment, proto, port
        FilterInstallResult refused = classifier.Install("ip.src == 10.0.0.1 && tcp.dport == 81", owner: 1);
        Assert.Equal(FilterRejection.TooManyAtoms, refused.Problem.Reason);
        Assert.Contains("5 atoms; the limit is 4", refused.Problem.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void MaxTrieNodes_RefusesTheFilterThatWouldExceedIt_AndKeepsTheRest()
    {
        // tcp.dport == N: root + eth.type + fragment + proto shared, then one node per port.
        var classifier = new PacketClassifier(new ClassifierOptions { MaxTrieNodes = 7 });
        for (int port = 1; port <= 3; port++)
        {
            Assert.True(classifier.Install($"tcp.dport == {port}", owner: 1).Succeeded);
        }

        Assert.Equal(7, classifier.TrieNodes);
        FilterInstallResult refused = classifier.Install("tcp.dport == 4", owner: 1);
        Assert.Equal(FilterRejection.TooManyTrieNodes, refused.Problem.Reason);
        Assert.Contains("more than 7 trie nodes", refused.Problem.Message, StringComparison.Ordinal);
        Assert.Equal(3, classifier.Count);
        Assert.Equal(7, classifier.TrieNodes);
        Assert.True(classifier.Classify(Frames.Tcp("1.1.1.1", "2.2.2.2", 9, 3)).Matched);
        Assert.False(classifier.Classify(Frames.Tcp("1.1.1.1", "2.2.2.2", 9, 4)).Matched);

        // A filter that shares every node still fits.
        Assert.True(classifier.Install("tcp.dport == 3 && tcp.dport == 3", owner: 1).Succeeded);
    }

    [Fact]
    public void MaxFrameLength_BoundsWhatAtomsMayRead()
    {
        var classifier = new PacketClassifier(new ClassifierOptions { MaxFrameLength = 60 });
        FilterInstallResult refused = classifier.Install("tcp.dport == 80", owner: 1); // up to 14 + 60 + 4 bytes
        Assert.Equal(FilterRejection.ReadPastFrame, refused.Problem.Reason);
        Assert.True(classifier.Install("ip.dst == 10.0.0.1", owner: 1).Succeeded);
    }

    [Theory]
    [InlineData(0, 16, 100, 1514, "MaxFilters")]
    [InlineData(10, 0, 100, 1514, "MaxAtomsPerFilter")]
    [InlineData(10, 65, 100, 1514, "MaxAtomsPerFilter")]
    [InlineData(10, 16, 0, 1514, "MaxTrieNodes")]
    [InlineData(10, 16, 100, 59, "MaxFrameLength")]
    [InlineData(10, 16, 100, 65536, "MaxFrameLength")]
    public void Options_AreValidatedUpFront(int filters, int atoms, int nodes, int frame, string name)
    {
        var options = new ClassifierOptions { MaxFilters = filters, MaxAtomsPerFilter = atoms, MaxTrieNodes = nodes, MaxFrameLength = frame };
        Assert.StartsWith(name, options.Validate(), StringComparison.Ordinal);
        ArgumentException thrown = Assert.Throws<ArgumentException>(() => new PacketClassifier(options));
        Assert.Contains(name, thrown.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Options_AreCopied_SoLaterChangesDoNotLoosenLimits()
    {
        var options = new ClassifierOptions { MaxFilters = 1 };
        var classifier = new PacketClassifier(options);
        options.MaxFilters = 100;
        Assert.True(classifier.Install("tcp.dport == 1", owner: 1).Succeeded);
        Assert.Equal(FilterRejection.TooManyFilters, classifier.Install("tcp.dport == 2", owner: 1).Problem.Reason);
    }

    [Fact]
    public void Classify_AllocatesNothing()
    {
        var classifier = new PacketClassifier();
        for (int i = 0; i < 200; i++)
        {
            Assert.True(classifier.Install($"ip.dst == 10.0.{i / 250}.{i % 250} && udp.dport == {1000 + i}", owner: i).Succeeded);
        }

        byte[][] frames = [.. Enumerable.Range(0, 64).Select(i => Frames.Udp("10.9.9.9", $"10.0.0.{i % 250}", 7, 1000 + i))];
        for (int i = 0; i < 1000; i++)
        {
            classifier.Classify(frames[i % frames.Length]); // warm up (tiering)
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        int matched = 0;
        for (int i = 0; i < 100_000; i++)
        {
            matched += classifier.Classify(frames[i % frames.Length]).Matched ? 1 : 0;
        }

        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(100_000, matched);
        Assert.Equal(0, allocated);
    }

    [Fact]
    public void Trie_SharesPrefixes_SoNodesGrowWithDistinctValuesOnly()
    {
        var classifier = new PacketClassifier();
        for (int port = 1; port <= 1000; port++)
        {
            Assert.True(classifier.Install($"tcp.dport == {port}", owner: port).Succeeded);
        }

        // root, eth.type, fragment, proto, then one leaf per port: 1000 filters in 1004 nodes.
        Assert.Equal(1004, classifier.TrieNodes);
    }
}

/// <summary>The filters share no mutable static state (netd's rule, checked here for this namespace until netd joins the architecture test).</summary>
public sealed class FilterStaticStateTests
{
    [Fact]
    public void FilterTypes_HaveNoMutableStatics()
    {
        string[] offenders = [.. Multikernel.Tests.Architecture.NoSharedMutableStateTests.MutableStatics(typeof(PacketClassifier).Assembly)
            .Where(f => f.StartsWith("Multikernel.Netd.Filters.", StringComparison.Ordinal))];
        Assert.Empty(offenders);
    }
}
