using System.Reflection;
using Multikernel.CpuDriver.Capabilities;
using Multikernel.CpuDriver.Channels;
using Multikernel.CpuDriver.Domains;
using Multikernel.CpuDriver.Kernel;
using Multikernel.CpuDriver.Memory;
using Multikernel.CpuDriver.Urpc;
using Multikernel.Monitor;
using Multikernel.Monitor.Hosting;
using Multikernel.Monitor.Protocol;
using Multikernel.Monitor.Telemetry;

namespace Multikernel.Tests.Architecture;

/// <summary>
/// Issue 7, item 2: domain code reaches only its own CSpace, its own channels and the monitor's
/// services. The walk starts at <see cref="DomainContext"/> (and the other objects a domain's code
/// is handed: channels, listeners, a sharded service) and follows everything a domain can get
/// from them through public members: property and field types, method return types, out/ref
/// parameters, the parameters of delegates it receives (callbacks hand it values), generic
/// arguments, array elements, and base types, transitively. No path may lead to a kernel object.
/// </summary>
public sealed class DomainSurfaceTests
{
    // What a domain must never hold: the kernel and the machine, any core's capability tables,
    // the monitors, the runtime, other domains' dispatchers, the raw rings and memory.
    private static readonly Type[] Forbidden =
    [
        typeof(CoreKernel), typeof(Machine), typeof(CoreCapabilities), typeof(CoreMonitor), typeof(Domain),
        typeof(MultikernelRuntime), typeof(CapabilityService), typeof(PhysicalMemory), typeof(UrpcRing),
        typeof(Doorbell), typeof(CoreCounters), typeof(MultikernelMetrics), typeof(CoreTaskScheduler),
    ];

    // A CSpace and endpoints are fine when they are the domain's own: only these members hand them out.
    private static readonly string[] OwnCSpace = ["DomainContext.Capabilities"];
    private static readonly string[] OwnEndpoints = ["DomainChannel.Endpoint"];

    [Fact]
    public void NothingReachableFromADomainsContext_LeadsToTheKernelOrAnotherDomain()
    {
        Walk walk = Walk.From(typeof(DomainContext), typeof(DomainChannel<long>), typeof(ServiceListener), typeof(Sharded<object>));

        string[] violations = [.. Forbidden.Where(walk.Reached.ContainsKey).Select(t => $"{t.Name} via {walk.PathTo(t)}")];
        Assert.True(violations.Length == 0, "Reachable from a domain's surface:" + Environment.NewLine + string.Join(Environment.NewLine, violations));
        Assert.All(walk.Sources(typeof(CSpace)), source => Assert.Contains(source, OwnCSpace));
        Assert.All(walk.Sources(typeof(Endpoint)), source => Assert.Contains(source, OwnEndpoints));
    }

    [Fact]
    public void TheWalk_FindsAPathWhereOneExists()
    {
        // The check must be able to fail: a public Domain leads to its kernel and every domain of it.
        Walk walk = Walk.From(typeof(Bait));

        Assert.Contains(typeof(Domain), walk.Reached.Keys); // through the callback's parameter
        Assert.Equal("DomainSurfaceTests.Bait.Host -> Machine.Kernels", walk.PathTo(typeof(CoreKernel)));
        Assert.Contains("DomainSurfaceTests.Bait.Leak", walk.Sources(typeof(CSpace)));
    }

#pragma warning disable CA1034, CA1812 // bait for the walk only
    public sealed class Bait
    {
        public Task<IReadOnlyList<CSpace>> Leak() => Task.FromResult<IReadOnlyList<CSpace>>([]);

        public void Peer(Action<Dictionary<int, Domain>> callback) => callback([]);

        public Machine? Host => null;
    }
#pragma warning restore CA1034, CA1812

    /// <summary>A breadth-first walk over the public surface of types.</summary>
    private sealed class Walk
    {
        private readonly Queue<Type> _queue = new();

        public Dictionary<Type, (Type? From, string Member)> Reached { get; } = [];

        private readonly List<(Type Type, string Member)> _edges = [];

        public static Walk From(params Type[] roots)
        {
            var walk = new Walk();
            foreach (Type root in roots)
            {
                walk.Reach(root, null, "(root)");
            }

            while (walk._queue.TryDequeue(out Type? type))
            {
                walk.Expand(type);
            }

            return walk;
        }

        public IEnumerable<string> Sources(Type type) => _edges.Where(e => e.Type == type).Select(e => e.Member).Distinct();

        public string? PathTo(Type type)
        {
            if (!Reached.ContainsKey(type))
            {
                return null;
            }

            var steps = new List<string>();
            Type? at = type;
            while (at is not null && Reached.TryGetValue(at, out var via) && via.From is not null)
            {
                steps.Add(via.Member);
                at = via.From;
            }

            steps.Reverse();
            return string.Join(" -> ", steps);
        }

        private void Reach(Type type, Type? from, string member)
        {
            if (type.IsByRef || type.IsPointer)
            {
                type = type.GetElementType()!;
            }

            if (type.IsGenericParameter)
            {
                return;
            }

            _edges.Add((type, member));
            if (type.IsArray)
            {
                Reach(type.GetElementType()!, from, member);
                return;
            }

            if (type.IsGenericType)
            {
                foreach (Type argument in type.GetGenericArguments())
                {
                    Reach(argument, from, member);
                }

                // A delegate a domain is handed, or hands in, gets called with its parameters.
                if (typeof(Delegate).IsAssignableFrom(type))
                {
                    MethodInfo invoke = type.GetMethod("Invoke")!;
                    foreach (ParameterInfo parameter in invoke.GetParameters())
                    {
                        Reach(parameter.ParameterType, from, member);
                    }
                }
            }

            if (Reached.ContainsKey(type))
            {
                return;
            }

            Reached[type] = (from, member);
            // Our own types are walked member by member; framework types only through their
            // generic arguments (a List<Domain> leaks a Domain; List itself leaks nothing of ours).
            if (IsOurs(type))
            {
                _queue.Enqueue(type);
            }
        }

        private static bool IsOurs(Type type) => type.Assembly.GetName().Name!.StartsWith("Multikernel", StringComparison.Ordinal) && !type.Assembly.GetName().Name!.StartsWith("Multikernel.Tests", StringComparison.Ordinal)
            || type.DeclaringType == typeof(DomainSurfaceTests);

        private void Expand(Type type)
        {
            const BindingFlags Public = BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.FlattenHierarchy;
            string name = type.DeclaringType == typeof(DomainSurfaceTests) ? $"DomainSurfaceTests.{type.Name}" : Display(type);
            if (type.BaseType is { } baseType && IsOurs(baseType))
            {
                Reach(baseType, type, $"{name} : {baseType.Name}");
            }

            foreach (PropertyInfo property in type.GetProperties(Public))
            {
                Reach(property.PropertyType, type, $"{name}.{property.Name}");
            }

            foreach (FieldInfo field in type.GetFields(Public))
            {
                Reach(field.FieldType, type, $"{name}.{field.Name}");
            }

            foreach (EventInfo e in type.GetEvents(Public))
            {
                Reach(e.EventHandlerType!, type, $"{name}.{e.Name}");
            }

            foreach (MethodInfo method in type.GetMethods(Public))
            {
                if (method.IsSpecialName)
                {
                    continue; // property and event accessors are covered above
                }

                Reach(method.ReturnType, type, $"{name}.{method.Name}");
                foreach (ParameterInfo parameter in method.GetParameters())
                {
                    if (parameter.ParameterType.IsByRef && !parameter.IsIn)
                    {
                        Reach(parameter.ParameterType, type, $"{name}.{method.Name}");
                    }
                    else if (typeof(Delegate).IsAssignableFrom(parameter.ParameterType))
                    {
                        Reach(parameter.ParameterType, type, $"{name}.{method.Name}");
                    }
                }
            }
        }

        private static string Display(Type type)
        {
            string simple = type.Name;
            int tick = simple.IndexOf('`', StringComparison.Ordinal);
            return tick < 0 ? simple : simple[..tick];
        }
    }
}
