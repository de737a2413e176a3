using Multikernel.CpuDriver.Channels;

namespace Multikernel.CpuDriver.Kernel;

/// <summary>
/// A core's channel endpoints: a fixed table indexed by the low 16 bits of an endpoint id, with a
/// generation in the high 16 bits so a message for a closed endpoint never reaches the one that
/// reused its slot. The first indices are reserved for the links the boot loader creates.
/// Core thread only (boot endpoints before the core starts).
/// </summary>
internal sealed class EndpointTable
{
    private readonly Endpoint?[] _endpoints;
    private readonly ushort[] _generations;
    private readonly Stack<int> _free;
    private readonly int _bootEndpoints;
    private int _bootCreated;

    public EndpointTable(int capacity, int bootEndpoints)
    {
        _endpoints = new Endpoint?[capacity];
        _generations = new ushort[capacity];
        _bootEndpoints = Math.Min(bootEndpoints, capacity);
        _free = new Stack<int>(capacity);
        for (int i = capacity - 1; i >= _bootEndpoints; i--)
        {
            _free.Push(i);
        }
    }

    public int Capacity => _endpoints.Length;

    public int BootEndpoints => _bootEndpoints;

    /// <summary>Endpoints in use.</summary>
    public int Count => _endpoints.Length - _free.Count - (_bootEndpoints - _bootCreated);

    /// <summary>A free index and the id it gets now, or false when the table is full.</summary>
    public bool TryAllocate(out uint id)
    {
        if (!_free.TryPop(out int index))
        {
            id = 0;
            return false;
        }

        id = ((uint)++_generations[index] << 16) | (uint)index;
        return true;
    }

    /// <summary>The id of boot endpoint <paramref name="index"/>, or false when it is not a free boot index.</summary>
    public bool TryAllocateBoot(int index, out uint id)
    {
        if ((uint)index >= (uint)_bootEndpoints || _endpoints[index] is not null)
        {
            id = 0;
            return false;
        }

        _bootCreated++;
        id = ((uint)++_generations[index] << 16) | (uint)index;
        return true;
    }

    public void Set(Endpoint endpoint) => _endpoints[(int)(endpoint.Id & 0xFFFF)] = endpoint;

    /// <summary>Frees <paramref name="endpoint"/>'s slot; false when it was not the slot's holder.</summary>
    public bool Release(Endpoint endpoint)
    {
        int index = (int)(endpoint.Id & 0xFFFF);
        if (!ReferenceEquals(_endpoints[index], endpoint))
        {
            return false;
        }

        _endpoints[index] = null;
        _free.Push(index);
        return true;
    }

    public Endpoint? Find(uint id)
    {
        int index = (int)(id & 0xFFFF);
        if ((uint)index >= (uint)_endpoints.Length)
        {
            return null;
        }

        Endpoint? endpoint = _endpoints[index];
        return endpoint is not null && endpoint.Id == id ? endpoint : null;
    }
}
