namespace Multikernel.Tests.Telemetry;

/// <summary>One field of a protobuf message: number, wire type, and either a scalar or the bytes of a length-delimited value.</summary>
internal readonly record struct ProtoField(int Number, int WireType, ulong Scalar, ReadOnlyMemory<byte> Bytes)
{
    public ProtoMessage Message => ProtoMessage.Parse(Bytes);

    public string String => System.Text.Encoding.UTF8.GetString(Bytes.Span);

    public string Hex => Convert.ToHexStringLower(Bytes.Span);
}

/// <summary>
/// A minimal protobuf wire-format reader (varint, 64-bit, length-delimited, 32-bit), enough to
/// walk an OTLP export request without the generated classes. Rejects malformed input.
/// </summary>
internal sealed class ProtoMessage
{
    private ProtoMessage(List<ProtoField> fields) => Fields = fields;

    public IReadOnlyList<ProtoField> Fields { get; }

    public IEnumerable<ProtoField> All(int number) => Fields.Where(f => f.Number == number);

    public ProtoField? First(int number) => Fields.Where(f => f.Number == number).Select(f => (ProtoField?)f).FirstOrDefault();

    public IEnumerable<ProtoMessage> Messages(int number) => All(number).Select(f => f.Message);

    public static ProtoMessage Parse(ReadOnlyMemory<byte> data)
    {
        var fields = new List<ProtoField>();
        ReadOnlySpan<byte> span = data.Span;
        int position = 0;
        while (position < span.Length)
        {
            ulong key = ReadVarint(span, ref position);
            int number = (int)(key >> 3);
            int wireType = (int)(key & 7);
            if (number == 0)
            {
                throw new FormatException("Field number 0.");
            }

            switch (wireType)
            {
                case 0:
                    fields.Add(new ProtoField(number, wireType, ReadVarint(span, ref position), default));
                    break;
                case 1:
                    Need(span, position, 8);
                    fields.Add(new ProtoField(number, wireType, BitConverter.ToUInt64(span.Slice(position, 8)), default));
                    position += 8;
                    break;
                case 2:
                    ulong length = ReadVarint(span, ref position);
                    if (length > (ulong)(span.Length - position))
                    {
                        throw new FormatException($"Field {number} claims {length} bytes; {span.Length - position} remain.");
                    }

                    fields.Add(new ProtoField(number, wireType, 0, data.Slice(position, (int)length)));
                    position += (int)length;
                    break;
                case 5:
                    Need(span, position, 4);
                    fields.Add(new ProtoField(number, wireType, BitConverter.ToUInt32(span.Slice(position, 4)), default));
                    position += 4;
                    break;
                default:
                    throw new FormatException($"Unsupported wire type {wireType} for field {number}.");
            }
        }

        return new ProtoMessage(fields);
    }

    private static void Need(ReadOnlySpan<byte> span, int position, int bytes)
    {
        if (span.Length - position < bytes)
        {
            throw new FormatException("Truncated fixed-size field.");
        }
    }

    private static ulong ReadVarint(ReadOnlySpan<byte> span, ref int position)
    {
        ulong value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (position >= span.Length)
            {
                throw new FormatException("Truncated varint.");
            }

            byte b = span[position++];
            value |= (ulong)(b & 0x7F) << shift;
            if ((b & 0x80) == 0)
            {
                return value;
            }
        }

        throw new FormatException("Varint longer than 10 bytes.");
    }
}

/// <summary>The parts of an OTLP span the tests check (opentelemetry/proto/trace/v1/trace.proto field numbers).</summary>
internal sealed record OtlpSpan(string TraceId, string SpanId, string ParentSpanId, string Name, int Kind, IReadOnlyList<(string TraceId, string SpanId)> Links, IReadOnlyDictionary<string, object> Attributes, string Scope)
{
    /// <summary>Spans of an ExportTraceServiceRequest: resource_spans(1) → scope_spans(2) → spans(2).</summary>
    public static List<OtlpSpan> FromRequest(ReadOnlyMemory<byte> body)
    {
        var spans = new List<OtlpSpan>();
        foreach (ProtoMessage resourceSpans in ProtoMessage.Parse(body).Messages(1))
        {
            foreach (ProtoMessage scopeSpans in resourceSpans.Messages(2))
            {
                string scope = scopeSpans.First(1)?.Message.First(1)?.String ?? "";
                foreach (ProtoMessage span in scopeSpans.Messages(2))
                {
                    spans.Add(new OtlpSpan(
                        TraceId: span.First(1)?.Hex ?? "",
                        SpanId: span.First(2)?.Hex ?? "",
                        ParentSpanId: span.First(4)?.Hex ?? "",
                        Name: span.First(5)?.String ?? "",
                        Kind: (int)(span.First(6)?.Scalar ?? 0),
                        Links: [.. span.Messages(13).Select(l => (l.First(1)?.Hex ?? "", l.First(2)?.Hex ?? ""))],
                        Attributes: ReadAttributes(span.Messages(9)),
                        Scope: scope));
                }
            }
        }

        return spans;
    }

    /// <summary>KeyValue{key=1, value=AnyValue{string=1, bool=2, int=3, double=4}}.</summary>
    public static Dictionary<string, object> ReadAttributes(IEnumerable<ProtoMessage> keyValues)
    {
        var attributes = new Dictionary<string, object>();
        foreach (ProtoMessage kv in keyValues)
        {
            string key = kv.First(1)?.String ?? "";
            ProtoMessage? any = kv.First(2)?.Message;
            ProtoField? value = any?.Fields.FirstOrDefault();
            if (value is not { } v)
            {
                continue;
            }

            attributes[key] = v.Number switch
            {
                1 => v.String,
                2 => v.Scalar != 0,
                3 => (long)v.Scalar,
                4 => BitConverter.UInt64BitsToDouble(v.Scalar),
                _ => v.Hex,
            };
        }

        return attributes;
    }
}
