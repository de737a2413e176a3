namespace Multikernel.Apps.Http;

/// <summary>Marker for the Http application assembly.</summary>
public static class HttpAssembly
{
}
