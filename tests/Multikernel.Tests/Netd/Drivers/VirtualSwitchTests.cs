using System.Runtime.InteropServices;
using Multikernel.Netd.Drivers;
using static Multikernel.Tests.Netd.Drivers.Frames;
using Multikernel.Netd.Wire;

namespace Multikernel.Tests.Netd.Drivers;

public sealed class VirtualSwitchTests
{
    private static (VirtualSwitch Switch, SwitchPort A, SwitchPort B, SwitchPort C) ThreePorts(VirtualSwitchOptions? options = null, TimeProvider? time = null)
    {
        var sw = new VirtualSwitch(options, time);
        return (sw, sw.AddPort("a", Mac(1)), sw.AddPort("b", Mac(2)), sw.AddPort("c", Mac(3)));
    }

    [Fact]
    public void Broadcast_IsFlooded_ToEveryOtherPort_NotBackToTheSender()
    {
        var (sw, a, b, c) = ThreePorts();
        using (sw)
        {
            Send(a, MacAddress.Broadcast, Mac(1), 7);
            Assert.Equal([7], Sequences(b));
            Assert.Equal([7], Sequences(c));
            Assert.Empty(Sequences(a));
        }
    }

    [Fact]
    public void UnknownUnicast_IsFlooded_ThenTheLearnedStationGetsItAlone()
    {
        var (sw, a, b, c) = ThreePorts();
        using (sw)
        {
            Send(a, Mac(2), Mac(1), 1);               // b unknown: flooded
            Assert.Equal([1], Sequences(b));
            Assert.Equal([1], Sequences(c));

            Send(b, Mac(1), Mac(2), 2);               // a was learned from frame 1
            Assert.Equal([2], Sequences(a));
            Assert.Empty(Sequences(c));

            Send(a, Mac(2), Mac(1), 3);               // b was learned from frame 2
            Assert.Equal([3], Sequences(b));
            Assert.Empty(Sequences(c));
            Assert.Same(b, sw.PortOf(Mac(2)));
            Assert.Equal(2, sw.LearnedStations);
        }
    }

    [Fact]
    public void StationThatMoves_IsRelearnedOnItsNewPort()
    {
        var (sw, a, b, c) = ThreePorts();
        using (sw)
        {
            Send(a, MacAddress.Broadcast, Mac(9), 1);
            Assert.Same(a, sw.PortOf(Mac(9)));
            Send(c, MacAddress.Broadcast, Mac(9), 2);
            Assert.Same(c, sw.PortOf(Mac(9)));
            _ = ReceiveAll(a);
            _ = ReceiveAll(b);
            _ = ReceiveAll(c);
            Send(b, Mac(9), Mac(2), 3);
            Assert.Equal([3], Sequences(c));
            Assert.Empty(Sequences(a));
        }
    }

    [Fact]
    public void LearnedStation_AgesOut_AndIsFloodedAgain()
    {
        var time = new ManualTimeProvider();
        var (sw, a, b, c) = ThreePorts(new VirtualSwitchOptions { MacAgingTime = TimeSpan.FromSeconds(10) }, time);
        using (sw)
        {
            Send(a, MacAddress.Broadcast, Mac(1), 1);
            _ = ReceiveAll(b);
            _ = ReceiveAll(c);

            time.Advance(TimeSpan.FromSeconds(10));   // exactly the aging time: still known
            Send(b, Mac(1), Mac(2), 2);
            Assert.Equal([2], Sequences(a));
            Assert.Empty(Sequences(c));

            time.Advance(TimeSpan.FromSeconds(10.01)); // a silent for longer than the aging time
            Assert.Null(sw.PortOf(Mac(1)));
            Send(b, Mac(1), Mac(2), 3);
            Assert.Equal([3], Sequences(a));
            Assert.Equal([3], Sequences(c));          // flooded again
        }
    }

    [Fact]
    public void MacTable_IsBounded_ExtraStationsAreFloodedAndCounted_UntilEntriesAge()
    {
        var time = new ManualTimeProvider();
        var (sw, a, b, c) = ThreePorts(new VirtualSwitchOptions { MacTableCapacity = 8, MacAgingTime = TimeSpan.FromSeconds(1) }, time);
        using (sw)
        {
            for (int i = 0; i < 20; i++)
            {
                Send(a, MacAddress.Broadcast, Mac(100 + i), i);
            }

            Assert.Equal(8, sw.LearnedStations);
            Assert.Equal(12, sw.MacLearningFailures);
            _ = ReceiveAll(b);
            _ = ReceiveAll(c);

            // The 20th station was not learned: frames to it are flooded.
            Send(b, Mac(119), Mac(2), 50);
            Assert.Equal([50], Sequences(a));
            Assert.Equal([50], Sequences(c));

            time.Advance(TimeSpan.FromSeconds(2));    // everything aged: slots are reclaimed
            Send(c, MacAddress.Broadcast, Mac(119), 51);
            Assert.Same(c, sw.PortOf(Mac(119)));
        }
    }

    [Fact]
    public void FullQueue_DropsAndCountsOnTheReceivingPort_OtherPortsUnaffected()
    {
        var (sw, a, b, c) = ThreePorts(new VirtualSwitchOptions { QueueBytes = 4096, Mtu = 576 });
        using (sw)
        {
            // Learn b and c so the frames are unicast.
            Send(b, MacAddress.Broadcast, Mac(2), -1);
            Send(c, MacAddress.Broadcast, Mac(3), -1);
            _ = ReceiveAll(a);
            _ = ReceiveAll(b);
            _ = ReceiveAll(c);

            // A 100-byte frame takes 128 bytes of ring: 4096 / 128 = 32 fit, the rest drop.
            for (int i = 0; i < 40; i++)
            {
                Send(a, Mac(2), Mac(1), i, length: 100);
                Send(a, Mac(3), Mac(1), 1000 + i, length: 100);
                if (i % 8 == 7)
                {
                    _ = ReceiveAll(c);                 // c keeps reading; b does not
                }
            }

            Assert.Equal(8, b.Counters.Dropped(DropReason.QueueFull));
            Assert.Equal(0, c.Counters.Dropped(DropReason.QueueFull));
            Assert.Equal(Enumerable.Range(0, 32), Sequences(b));
            Assert.Equal(41, c.Counters.RxPackets); // 40 + b's broadcast while learning
            Assert.Equal(80, a.Counters.TxPackets);
        }
    }

    [Fact]
    public void Counters_CountPacketsAndBytesBothWays()
    {
        var (sw, a, b, _) = ThreePorts();
        using (sw)
        {
            Send(b, MacAddress.Broadcast, Mac(2), 0, length: 60);
            Assert.Equal([0], Sequences(a));
            Send(a, Mac(2), Mac(1), 1, length: 100);
            Send(a, Mac(2), Mac(1), 2, length: 200);
            Assert.Equal([1, 2], Sequences(b));
            Assert.Equal(2, a.Counters.TxPackets);
            Assert.Equal(300, a.Counters.TxBytes);
            Assert.Equal(2, b.Counters.RxPackets);
            Assert.Equal(300, b.Counters.RxBytes);
            Assert.Equal(1, b.Counters.TxPackets);
            Assert.Equal(60, b.Counters.TxBytes);
            Assert.Equal(1, a.Counters.RxPackets);
        }
    }

    [Fact]
    public void MalformedFrames_AreDroppedAndCounted_NotForwarded()
    {
        var (sw, a, b, c) = ThreePorts();
        using (sw)
        {
            Assert.True(a.TransmitOne(new byte[13]));
            Assert.True(a.TransmitOne(Build(MacAddress.Broadcast, Mac(1), 1, length: 1515)));
            Assert.True(a.TransmitOne(Build(MacAddress.Broadcast, Mac(1), 2, length: 1514)));
            Assert.Equal(2, a.Counters.Dropped(DropReason.Malformed));
            Assert.Equal([2], Sequences(b));
            Assert.Equal([2], Sequences(c));
        }
    }

    [Fact]
    public void FrameToAStationBehindTheSendingPort_IsFiltered()
    {
        var (sw, a, b, c) = ThreePorts();
        using (sw)
        {
            Send(a, MacAddress.Broadcast, Mac(50), 1);  // station 50 lives behind a
            _ = ReceiveAll(b);
            _ = ReceiveAll(c);
            Send(a, Mac(50), Mac(1), 2);
            Assert.Equal(1, a.Counters.Dropped(DropReason.Filtered));
            Assert.Empty(Sequences(b));
            Assert.Empty(Sequences(c));
        }
    }

    [Fact]
    public void LinkDown_PortSendsNothing_AndGetsNoFloods()
    {
        var (sw, a, b, c) = ThreePorts();
        using (sw)
        {
            b.SetLinkState(false);
            Assert.False(b.IsLinkUp);
            Send(a, MacAddress.Broadcast, Mac(1), 1);
            Assert.Empty(Sequences(b));
            Assert.Equal([1], Sequences(c));
            Send(b, MacAddress.Broadcast, Mac(2), 2);
            Assert.Equal(1, b.Counters.Dropped(DropReason.LinkDown));
            Assert.Empty(Sequences(a));

            c.SetLinkState(false);
            Send(a, MacAddress.Broadcast, Mac(1), 3);
            Assert.Equal(1, a.Counters.Dropped(DropReason.NoDestination));
        }
    }

    [Fact]
    public void RemovedPort_LeavesTheSwitch_AndRefusesUse()
    {
        var (sw, a, b, c) = ThreePorts(new VirtualSwitchOptions { MaxPorts = 3 });
        using (sw)
        {
            b.Dispose();
            Assert.Equal(2, sw.Ports.Count);
            Send(a, MacAddress.Broadcast, Mac(1), 1);
            Assert.Equal([1], Sequences(c));
            Assert.Throws<ObjectDisposedException>(() => ReceiveAll(b));
            InvalidOperationException full = Assert.Throws<InvalidOperationException>(() => sw.AddPort("d", Mac(4)));
            Assert.Contains("all 3 ports", full.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void BufferTooSmall_IsRefused_AndTheFrameStaysQueued()
    {
        var (sw, a, b, _) = ThreePorts();
        using (sw)
        {
            Send(a, MacAddress.Broadcast, Mac(1), 5, length: 300);
            var small = new byte[200];
            ArgumentException e = Assert.Throws<ArgumentException>(() => b.ReceiveOne(small));
            Assert.Contains("smaller than the 300-byte frame", e.Message, StringComparison.Ordinal);
            Assert.Equal([5], Sequences(b));
        }
    }

    [Fact]
    public void Options_RejectBadValues()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new VirtualSwitchOptions { QueueBytes = 5000 });
        Assert.Throws<ArgumentOutOfRangeException>(() => new VirtualSwitchOptions { MaxPorts = 1 });
        Assert.Throws<ArgumentOutOfRangeException>(() => new VirtualSwitchOptions { Mtu = 100 });
        Assert.Throws<ArgumentException>(() => new VirtualSwitch(new VirtualSwitchOptions { QueueBytes = 4096, Mtu = 1500 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new FaultInjectionOptions { LossProbability = 1.5 });
        Assert.Throws<ArgumentOutOfRangeException>(() => new FaultInjectionOptions { Delay = TimeSpan.FromSeconds(-1) });
    }

    [Fact]
    public void TwoSenderThreads_OneReceiverThread_EveryFrameDeliveredOnceInOrder_OrCountedAsDropped()
    {
        const int PerSender = 50_000;
        using var sw = new VirtualSwitch(new VirtualSwitchOptions { QueueBytes = 16 * 1024 });
        SwitchPort a = sw.AddPort("a", Mac(1));
        SwitchPort b = sw.AddPort("b", Mac(2));
        SwitchPort c = sw.AddPort("c", Mac(3));
        Send(c, MacAddress.Broadcast, Mac(3), -1); // learn c
        _ = ReceiveAll(a);
        _ = ReceiveAll(b);

        var lastSeen = new Dictionary<int, int> { [1] = -1, [2] = -1 };
        long received = 0;
        bool ordered = true;
        bool intact = true;
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        Thread Sender(SwitchPort port, int id) => new(() =>
        {
            for (int i = 0; i < PerSender; i++)
            {
                byte[] built = Build(Mac(3), Mac(id), (id << 24) | i, 128);
                port.TransmitOne(built);
            }
        });

        Thread[] senders = [Sender(a, 1), Sender(b, 2)];
        var receiver = new Thread(() =>
        {
            var memory = new byte[32 * 2048];
            var lengths = new int[32];
            while (!stop.IsCancellationRequested)
            {
                var buffers = new StridedFrameBuffers(memory, 2048, 32);
                int n = c.ReceiveBurst(ref buffers, lengths);
                for (int i = 0; i < n; i++)
                {
                    ReadOnlySpan<byte> f = memory.AsSpan(i * 2048, lengths[i]);
                    int seq = Sequence(f);
                    int id = seq >> 24;
                    int index = seq & 0xFFFFFF;
                    byte[] expected = Build(Mac(3), Mac(id), seq, 128);
                    intact &= f.SequenceEqual(expected);
                    ordered &= index > lastSeen[id];
                    lastSeen[id] = index;
                    received++;
                }

                if (n == 0 && !senders.Any(s => s.IsAlive) && !c.HasPending())
                {
                    return;
                }
            }
        });
        try
        {
            foreach (Thread s in senders)
            {
                s.Start();
            }

            receiver.Start(); // after the senders: it stops once they are done and nothing is queued
        }
        finally
        {
            foreach (Thread s in senders)
            {
                s.Join();
            }

            receiver.Join();
        }

        Assert.False(stop.IsCancellationRequested, "the receiver did not finish within 60 s");
        Assert.True(ordered, "frames from one sender arrived out of order");
        Assert.True(intact, "a frame arrived with different bytes than were sent");
        Assert.Equal(2L * PerSender, received + c.Counters.Dropped(DropReason.QueueFull));
        Assert.Equal(received, c.Counters.RxPackets);
        Assert.True(received > 0);
    }

    [Fact]
    public unsafe void WakeFileDescriptor_BecomesReadable_WhenAFrameArrivesForAnArmedPort()
    {
        using var sw = new VirtualSwitch();
        SwitchPort a = sw.AddPort("a", Mac(1));
        SwitchPort b = sw.AddPort("b", Mac(2), new SwitchPortOptions { WakeFileDescriptor = true });
        Assert.True(b.WaitFileDescriptor >= 0);
        Assert.Equal(-1, a.WaitFileDescriptor);

        Assert.True(b.PrepareToWait());
        Assert.False(Poll(b.WaitFileDescriptor, 0));
        Send(a, MacAddress.Broadcast, Mac(1), 1);
        Assert.True(Poll(b.WaitFileDescriptor, 2000), "the armed port's eventfd was not signalled");
        Assert.False(b.PrepareToWait()); // a frame is waiting: do not park
        Assert.Equal([1], Sequences(b));

        // Armed again: the next arrival signals again.
        Assert.True(b.PrepareToWait());
        Send(a, MacAddress.Broadcast, Mac(1), 2);
        Assert.True(Poll(b.WaitFileDescriptor, 2000));
        Assert.Equal([2], Sequences(b));
        Assert.True(b.PrepareToWait());          // the stale signal is drained on arming
        Assert.False(Poll(b.WaitFileDescriptor, 0));
        b.Dispose();
        Assert.Equal(-1, b.WaitFileDescriptor);
    }

    internal static unsafe bool Poll(int fd, int timeoutMs)
    {
        PollFd p = new() { Fd = fd, Events = 1 /* POLLIN */ };
        int n = poll(&p, 1, timeoutMs);
        if (n < 0 && Marshal.GetLastPInvokeError() == 4)
        {
            return false; // EINTR (a child process exited): the caller polls again
        }

        Assert.True(n >= 0, $"poll failed: {Marshal.GetLastPInvokeErrorMessage()}");
        return n == 1 && (p.Revents & 1) != 0;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    [DllImport("libc", SetLastError = true)]
    private static extern unsafe int poll(PollFd* fds, nuint count, int timeout);
}
