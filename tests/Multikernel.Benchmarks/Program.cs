using BenchmarkDotNet.Running;

namespace Multikernel.Benchmarks;

/// <summary>
/// BenchmarkDotNet entry point. Examples:
/// <c>dotnet run -c Release --project tests/Multikernel.Benchmarks -- --filter '*' --job dry</c> (smoke run),
/// <c>... -- --filter '*RoundTrip*' --job short</c>.
/// </summary>
public static class Program
{
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}
