using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.FileProviders;
using Microsoft.Extensions.Logging;

// `dotnet KestrelPeer.dll --urls http://IP:PORT --root DIR`: static files from DIR, nothing else
// (no logging, no routing), the way someone would serve a directory with Kestrel. The same file
// our http application serves in the same run of `multikernel bench net`.
WebApplicationBuilder builder = WebApplication.CreateSlimBuilder(args);
builder.Logging.ClearProviders();
string root = builder.Configuration["root"] is { Length: > 0 } r && Directory.Exists(r)
    ? Path.GetFullPath(r)
    : throw new ArgumentException("--root DIR (an existing directory) is required");

WebApplication app = builder.Build();
app.UseStaticFiles(new StaticFileOptions { FileProvider = new PhysicalFileProvider(root), ServeUnknownFileTypes = true });
await app.RunAsync();
