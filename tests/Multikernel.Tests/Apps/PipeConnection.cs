using System.Buffers;
using System.IO.Pipelines;
using System.Text;

namespace Multikernel.Tests.Apps;

/// <summary>
/// An in-memory connection: two bounded pipes, one per direction. The server gets
/// <see cref="ServerSide"/>; the test plays the client on the other ends.
/// </summary>
public sealed class PipeConnection
{
    private readonly Pipe _toServer;
    private readonly Pipe _toClient;

    public PipeConnection(long serverInputBytes = 1 << 20, long serverOutputBytes = 64 * 1024)
    {
        _toServer = new Pipe(new PipeOptions(pauseWriterThreshold: serverInputBytes, resumeWriterThreshold: serverInputBytes / 2, useSynchronizationContext: false));
        _toClient = new Pipe(new PipeOptions(pauseWriterThreshold: serverOutputBytes, resumeWriterThreshold: serverOutputBytes / 2, useSynchronizationContext: false));
        ServerSide = new Duplex(_toServer.Reader, _toClient.Writer);
    }

    public IDuplexPipe ServerSide { get; }

    public PipeWriter ClientOutput => _toServer.Writer;

    public PipeReader ClientInput => _toClient.Reader;

    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    public async Task SendAsync(string text) => await SendAsync(Encoding.ASCII.GetBytes(text));

    public async Task SendAsync(byte[] bytes)
    {
        FlushResult r = await ClientOutput.WriteAsync(bytes).AsTask().WaitAsync(Patience);
        _ = r;
    }

    /// <summary>Reads until <paramref name="done"/> holds for everything received so far (or the server closes); returns it all, consumed.</summary>
    public async Task<byte[]> ReadUntilAsync(Func<byte[], bool> done)
    {
        using var cts = new CancellationTokenSource(Patience);
        while (true)
        {
            ReadResult read = await ClientInput.ReadAsync(cts.Token);
            byte[] bytes = read.Buffer.ToArray();
            if (done(bytes) || read.IsCompleted)
            {
                ClientInput.AdvanceTo(read.Buffer.End);
                return bytes;
            }

            ClientInput.AdvanceTo(read.Buffer.Start, read.Buffer.End);
        }
    }

    /// <summary>Reads until the server completes its output; returns everything.</summary>
    public async Task<byte[]> ReadToEndAsync() => await ReadUntilAsync(_ => false);

    /// <summary>True once the server has completed its output (closed the connection); drains what is left.</summary>
    public async Task<bool> ServerClosedAsync(TimeSpan within)
    {
        using var cts = new CancellationTokenSource(within);
        try
        {
            while (true)
            {
                ReadResult read = await ClientInput.ReadAsync(cts.Token);
                ClientInput.AdvanceTo(read.Buffer.End);
                if (read.IsCompleted)
                {
                    return true;
                }
            }
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    private sealed class Duplex(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input => input;

        public PipeWriter Output => output;
    }
}
