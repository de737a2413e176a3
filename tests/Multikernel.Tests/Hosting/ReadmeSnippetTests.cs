using System.Reflection;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;

namespace Multikernel.Tests.Hosting;

/// <summary>
/// The README's embedding snippet is a complete program: this test takes it out of README.md,
/// compiles it in-process with Roslyn against the real assemblies, and runs it (it boots a
/// two-core machine, echoes a value, counts the cores with a sharded service and stops), so the
/// documentation cannot drift from the API.
/// </summary>
public sealed class ReadmeSnippetTests
{
    private const string Marker = "<!-- embedding-snippet -->";

    internal static string Snippet()
    {
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string readme = Path.Combine(dir.FullName, "README.md");
            if (File.Exists(readme) && File.ReadAllText(readme) is { } text && text.Contains(Marker, StringComparison.Ordinal))
            {
                int start = text.IndexOf("```csharp", text.IndexOf(Marker, StringComparison.Ordinal), StringComparison.Ordinal) + "```csharp".Length;
                int end = text.IndexOf("```", start, StringComparison.Ordinal);
                return text[start..end];
            }
        }

        throw new FileNotFoundException($"No README.md with {Marker} above the build output.");
    }

    [Fact]
    public void EmbeddingSnippet_CompilesAndRuns()
    {
        string source = Snippet();
        var references = new Dictionary<string, MetadataReference>(StringComparer.OrdinalIgnoreCase);
        string tpa = (string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!;
        foreach (string path in tpa.Split(Path.PathSeparator).Concat(Directory.EnumerateFiles(AppContext.BaseDirectory, "*.dll")))
        {
            string name = Path.GetFileName(path);
            if (references.ContainsKey(name) || !IsManaged(path))
            {
                continue;
            }

            references[name] = MetadataReference.CreateFromFile(path);
        }

        CSharpCompilation compilation = CSharpCompilation.Create(
            "ReadmeSnippet",
            [CSharpSyntaxTree.ParseText(source, new CSharpParseOptions(LanguageVersion.Latest))],
            references.Values,
            new CSharpCompilationOptions(OutputKind.ConsoleApplication, nullableContextOptions: NullableContextOptions.Enable));
        using var image = new MemoryStream();
        Microsoft.CodeAnalysis.Emit.EmitResult result = compilation.Emit(image);
        Diagnostic[] errors = [.. result.Diagnostics.Where(d => d.Severity == DiagnosticSeverity.Error)];
        Assert.True(result.Success, "The README snippet does not compile:" + Environment.NewLine + string.Join(Environment.NewLine, errors.Select(e => e.ToString())));

        Assembly program = Assembly.Load(image.ToArray());
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                program.EntryPoint!.Invoke(null, [Array.Empty<string>()]);
            }
#pragma warning disable CA1031 // reported by the assertion below
            catch (Exception ex)
#pragma warning restore CA1031
            {
                failure = ex;
            }
        })
        { IsBackground = true, Name = "README snippet" };
        thread.Start();
        Assert.True(thread.Join(TimeSpan.FromSeconds(60)), "The README snippet did not finish within 60 s.");
        Assert.Null(failure);
    }

    private static bool IsManaged(string path)
    {
        try
        {
            _ = AssemblyName.GetAssemblyName(path);
            return true;
        }
        catch (BadImageFormatException)
        {
            return false;
        }
    }
}
