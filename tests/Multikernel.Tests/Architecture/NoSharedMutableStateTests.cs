using System.Collections;
using System.Reflection;
using System.Runtime.CompilerServices;

namespace Multikernel.Tests.Architecture;

/// <summary>
/// Kernels share no mutable state: no assembly of the kernel side (cpudriver, monitor, and netd
/// when it exists) has a mutable static field, nor a static readonly field holding a mutable
/// collection.
/// </summary>
public sealed class NoSharedMutableStateTests
{
    public static TheoryData<string> KernelAssemblies() => new()
    {
        "Multikernel.CpuDriver",
        "Multikernel.Monitor",
        "Multikernel.Netd",
        "Multikernel.Net",
    };

    [Theory]
    [MemberData(nameof(KernelAssemblies))]
    public void KernelAssemblies_HaveNoMutableStaticFields(string assemblyName)
    {
        Assembly assembly = Assembly.Load(assemblyName);
        string[] offenders = [.. MutableStatics(assembly)];
        Assert.True(offenders.Length == 0, $"Mutable static state in {assemblyName}:{Environment.NewLine}{string.Join(Environment.NewLine, offenders)}");
    }

    [Fact]
    public void TheCheckItself_FindsAMutableStatic()
    {
        // The rule must be able to fail: this test assembly has one on purpose.
        Assert.Contains(MutableStatics(typeof(NoSharedMutableStateTests).Assembly), f => f.Contains(nameof(Bait.Counter), StringComparison.Ordinal));
        Assert.Contains(MutableStatics(typeof(NoSharedMutableStateTests).Assembly), f => f.Contains(nameof(Bait.Table), StringComparison.Ordinal));
    }

    internal static IEnumerable<string> MutableStatics(Assembly assembly)
    {
        foreach (Type type in assembly.GetTypes())
        {
            // Lambda caches the compiler emits (<>c.<>9__x) are write-once delegates, not state.
            if (type.IsDefined(typeof(CompilerGeneratedAttribute), inherit: false))
            {
                continue;
            }

            foreach (FieldInfo field in type.GetFields(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            {
                if (field.IsLiteral || field.IsDefined(typeof(CompilerGeneratedAttribute), inherit: false))
                {
                    continue;
                }

                if (!field.IsInitOnly)
                {
                    yield return $"{type.FullName}.{field.Name} is a mutable static field";
                }
                else if (IsMutableContainer(field.FieldType))
                {
                    yield return $"{type.FullName}.{field.Name} is static readonly but holds a mutable {field.FieldType.Name}";
                }
            }
        }
    }

    private static bool IsMutableContainer(Type type) =>
        type.IsArray
        || type == typeof(System.Text.StringBuilder)
        || (typeof(IEnumerable).IsAssignableFrom(type)
            && type != typeof(string)
            && !type.Namespace!.StartsWith("System.Collections.Immutable", StringComparison.Ordinal)
            && !type.Namespace!.StartsWith("System.Collections.Frozen", StringComparison.Ordinal));

#pragma warning disable CA2211, IDE1006, CA1823, CS0169, CS0649 // deliberately bad
    internal static class Bait
    {
        public static int Counter;
        public static readonly List<int> Table = [];
    }
#pragma warning restore CA2211, IDE1006, CA1823, CS0169, CS0649
}
