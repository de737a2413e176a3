using System.Diagnostics;
using Multikernel.CpuDriver.Urpc;

namespace Multikernel.CpuDriver.Kernel;

/// <summary>
/// Messages between two endpoints of the same core: queued here and dispatched by the loop's
/// receive step like a ring from another core, never inside the sender's send (the receiver's
/// credits would come back before the sender had counted its own, and a handler would re-enter
/// while a read was pending). Bounded like a ring: full refuses, and the sender stalls.
/// Core thread only.
/// </summary>
internal sealed class LocalDelivery
{
    private readonly Message[] _messages;
    private int _head;
    private int _count;

    public LocalDelivery(int capacity) => _messages = new Message[capacity];

    public int Count => _count;

    public bool IsFull => _count == _messages.Length;

    public bool TryWrite(in Message message)
    {
        if (_count == _messages.Length)
        {
            return false;
        }

        int tail = _head + _count;
        _messages[tail >= _messages.Length ? tail - _messages.Length : tail] = message;
        _count++;
        return true;
    }

    public ref readonly Message Peek()
    {
        Debug.Assert(_count > 0, "peek at an empty local queue");
        return ref _messages[_head];
    }

    public void Advance()
    {
        _messages[_head] = default;
        if (++_head == _messages.Length)
        {
            _head = 0;
        }

        _count--;
    }
}
