namespace Multikernel.Apps.Kv;

/// <summary>Marker for the Kv application assembly.</summary>
public static class KvAssembly
{
}
