using System.IO.Pipelines;

namespace Multikernel.Net.Tcp;

/// <summary>
/// <see cref="IDuplexPipe"/> over a connection (System.IO.Pipelines), so parsers written against
/// <see cref="PipeReader"/>/<see cref="PipeWriter"/> run on the stack. Built on the stream
/// adapter; completing both sides closes the connection.
/// </summary>
public sealed class TcpPipe : IDuplexPipe
{
    internal TcpPipe(TcpConnection connection, int minimumReadSize)
    {
        Stream = connection.AsStream();
        Input = PipeReader.Create(Stream, new StreamPipeReaderOptions(bufferSize: minimumReadSize, leaveOpen: false));
        Output = PipeWriter.Create(Stream, new StreamPipeWriterOptions(leaveOpen: true));
    }

    public TcpStream Stream { get; }

    public PipeReader Input { get; }

    public PipeWriter Output { get; }
}

public sealed partial class TcpConnection
{
    /// <summary>A <see cref="PipeReader"/>/<see cref="PipeWriter"/> pair over this connection.</summary>
    public TcpPipe AsPipe(int minimumReadSize = 4096) => new(this, minimumReadSize);
}
