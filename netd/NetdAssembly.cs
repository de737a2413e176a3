namespace Multikernel.Netd;

/// <summary>Marker for the netd assembly (architecture tests find it through this type).</summary>
public static class NetdAssembly
{
}
