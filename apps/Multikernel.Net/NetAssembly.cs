namespace Multikernel.Net;

/// <summary>Marker for the network-stack assembly (architecture tests find it through this type).</summary>
public static class NetAssembly
{
}
