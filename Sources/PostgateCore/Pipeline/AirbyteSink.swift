import Logging

/// Encodes rows and changes as records on an `OutputSink`, for the sinks of `read` and Singer
/// mode: encoders per row shape (the last kept at hand for the hot path), lanes for parallel
/// reads, and the count of records since the last checkpoint.
final class RecordWriter {
    let out: OutputSink
    let envelope: @Sendable (StreamID) -> RecordEnvelope
    let cdcFields: CDCFields
    /// Each encoder is held with its shape, so that the shape's identity is not reused meanwhile.
    private var encoders: [ObjectIdentifier: (RowShape, RecordEncoder)] = [:]
    private var lastShape: RowShape?
    private var lastEncoder: RecordEncoder?
    private var rowsSinceRefresh = 0
    private var changeEncoders: [ObjectIdentifier: ChangeEncoder] = [:]
    /// Records written since the last checkpoint (lanes' records count once handed over).
    var recordsSinceCheckpoint: Int64 = 0

    init(out: OutputSink, cdcFields: CDCFields, envelope: @escaping @Sendable (StreamID) -> RecordEnvelope) {
        self.out = out
        self.cdcFields = cdcFields
        self.envelope = envelope
    }

    static func makeEncoder(_ shape: RowShape, envelope: RecordEnvelope, cdcFields: CDCFields) -> RecordEncoder {
        RecordEncoder(envelope: envelope,
                      columns: shape.columns.map { RecordEncoder.Column(name: $0.name, encoding: $0.encoding, emitted: $0.emitted) },
                      dataSuffix: shape.cdcStamp.map(cdcFields.snapshotSuffix) ?? [])
    }

    func row(_ shape: RowShape, copyText: UnsafeRawBufferPointer) throws {
        let e: RecordEncoder
        if shape === lastShape, let l = lastEncoder {
            e = l
        } else {
            e = encoders[ObjectIdentifier(shape)]?.1 ?? Self.makeEncoder(shape, envelope: envelope(shape.stream), cdcFields: cdcFields)
            encoders[ObjectIdentifier(shape)] = (shape, e)
            lastShape = shape
            lastEncoder = e
        }
        recordsSinceCheckpoint &+= 1
        rowsSinceRefresh &+= 1
        if rowsSinceRefresh & 4095 == 0 { e.refreshEmittedAt() }
        try out.append { buf in try e.encode(copyRow: copyText, into: &buf) }
    }

    func change(_ shape: RowShape, _ change: Change) throws {
        let id = ObjectIdentifier(shape)
        let enc = changeEncoders[id] ?? ChangeEncoder(shape, envelope: envelope(shape.stream), fields: cdcFields)
        changeEncoders[id] = enc
        recordsSinceCheckpoint &+= 1
        try out.append { buf in enc.encode(change, into: &buf) }
    }

    /// After a checkpoint: the count starts again, and encoders of finished reads are let go.
    func checkpointed() {
        recordsSinceCheckpoint = 0
        lastEncoder?.refreshEmittedAt()
        if encoders.count > 64 { encoders = [:]; lastShape = nil; lastEncoder = nil }
    }

    func makeLane() -> RowLane {
        let envelope = self.envelope, fields = cdcFields
        return Lane(out: out, make: { Self.makeEncoder($0, envelope: envelope($0.stream), cdcFields: fields) },
                    handed: { [unowned self] n in self.recordsSinceCheckpoint &+= n })
    }

    /// Encodes one connection's rows into its own buffer; whole records go to the output.
    final class Lane: RowLane {
        let out: OutputSink
        private var buffer = ByteBuffer(capacity: 320 << 10)
        private var encoders: [ObjectIdentifier: (RowShape, RecordEncoder)] = [:]
        private var lastShape: RowShape?
        private var lastEncoder: RecordEncoder?
        private var rows = 0
        /// Rows in `buffer`, told to the writer when it is handed over (under the sink's lock).
        private var unhanded: Int64 = 0
        private let make: (RowShape) -> RecordEncoder
        private let handed: (Int64) -> Void

        init(out: OutputSink, make: @escaping (RowShape) -> RecordEncoder, handed: @escaping (Int64) -> Void) {
            self.out = out
            self.make = make
            self.handed = handed
        }
        deinit { buffer.deallocate() }

        func row(_ shape: RowShape, copyText: UnsafeRawBufferPointer) throws {
            let e: RecordEncoder
            if shape === lastShape, let l = lastEncoder {
                e = l
            } else {
                e = encoders[ObjectIdentifier(shape)]?.1 ?? make(shape)
                encoders[ObjectIdentifier(shape)] = (shape, e)
                if encoders.count > 64 { encoders = [ObjectIdentifier(shape): (shape, e)] }
                lastShape = shape
                lastEncoder = e
            }
            rows &+= 1
            unhanded &+= 1
            if rows & 4095 == 0 { e.refreshEmittedAt() }
            try e.encode(copyRow: copyText, into: &buffer)
        }

        var buffered: Int { buffer.count }

        func handOver() throws {
            guard buffer.count > 0 else { return }
            try out.write(buffer.bytes)
            buffer.removeAll()
            handed(unhanded)
            unhanded = 0
            // A huge record grew the buffer: give that memory back.
            if buffer.capacity > 4 << 20 {
                buffer.deallocate()
                buffer = ByteBuffer(capacity: 320 << 10)
            }
        }
    }
}

/// `read`'s sink: Airbyte RECORD, STATE and TRACE messages on an `OutputSink`.
public final class AirbyteSink: ReadSink {
    let out: OutputSink
    let writer: RecordWriter

    public init(out: OutputSink) {
        self.out = out
        writer = RecordWriter(out: out, cdcFields: .airbyte, envelope: { .airbyte($0) })
    }

    public func status(_ stream: StreamID, _ status: StreamStatus) throws {
        try out.emit(AirbyteMessage.streamStatus(namespace: stream.namespace, name: stream.name, status: status.rawValue))
        if status != .started { try out.flush() }
    }

    public func estimate(_ stream: StreamID, rows: Int64, bytes: Int64) throws {
        try out.emit(AirbyteMessage.estimate(namespace: stream.namespace, name: stream.name, rows: rows, bytes: bytes))
    }

    public func row(_ shape: RowShape, copyText: UnsafeRawBufferPointer) throws { try writer.row(shape, copyText: copyText) }

    public func change(_ shape: RowShape, _ change: Change) throws { try writer.change(shape, change) }

    public func truncate(_ stream: StreamID) throws {}

    public func checkpoint(_ checkpoint: Checkpoint) throws {
        switch checkpoint {
        case .stream(let id, let state, let records):
            try out.emit(AirbyteMessage.streamState(namespace: id.namespace, name: id.name, state: state, recordCount: records))
        case .global(let state):
            // A GLOBAL state's `sourceStats` counts every record since the last state; a STREAM
            // state is told its stream's count by the reader.
            var message = state.globalJSON()
            if case .object(var o) = message {
                o["sourceStats"] = ["recordCount": .number(String(writer.recordsSinceCheckpoint))]
                message = .object(o)
            }
            try out.emit(["type": "STATE", "state": message])
        }
        writer.checkpointed()
        try out.flush()
    }

    public func rollback() throws {}

    public func log(_ level: Logger.Level, _ message: String) {
        try? out.emit(AirbyteMessage.log(level: level == .warning ? "WARN" : "INFO", message: message))
    }

    public func flush() throws { try out.flush() }

    public func makeLane() -> RowLane { writer.makeLane() }

    public func lag(_ lag: CDCLag) throws {
        try out.emit(lag.trace)
        try out.flush()
    }
}

/// Writes CDC changes of one relation as RECORD lines. Unchanged TOASTed values are taken from the
/// old row when it was sent; otherwise they are left out and listed in `meta.changes` (where the
/// envelope has one).
final class ChangeEncoder {
    let shape: RowShape
    let envelope: RecordEnvelope
    let prefix: [UInt8]
    let keys: [[UInt8]]
    /// `"lsn":`, `,"updated_at":`, `,"deleted_at":` under the envelope's CDC field names.
    let fieldKeys: (lsn: [UInt8], updatedAt: [UInt8], deletedAt: [UInt8])

    init(_ shape: RowShape, envelope: RecordEnvelope, fields: CDCFields) {
        self.shape = shape
        self.envelope = envelope
        prefix = envelope.prefix
        func key(_ name: String, comma: Bool) -> [UInt8] {
            var k: [UInt8] = comma ? [UInt8(ascii: ",")] : []
            JSONBytes.appendString(name, to: &k)
            k.append(UInt8(ascii: ":"))
            return k
        }
        fieldKeys = (key(fields.lsn, comma: false), key(fields.updatedAt, comma: true), key(fields.deletedAt, comma: true))
        keys = shape.columns.map { c in
            var k: [UInt8] = []
            JSONBytes.appendString(c.name, to: &k)
            k.append(UInt8(ascii: ":"))
            return k
        }
    }

    func encode(_ change: Change, into buf: inout ByteBuffer) {
        let columns = shape.columns
        let deleted = change.kind == .delete
        buf.append(prefix)
        var first = true
        var omitted: [String] = []
        var nulled: [String] = []
        for (i, v) in change.values.enumerated() where i < columns.count && columns[i].emitted {
            if deleted && change.keyOnly && !columns[i].isKey { continue }
            var value = v
            if case .unchangedToast = v, !change.oldKeyOnly, let old = change.old, i < old.count {
                if case .unchangedToast = old[i] {} else { value = old[i] }
            }
            if case .unchangedToast = value {
                omitted.append(columns[i].name)
                continue
            }
            if !first { buf.append(UInt8(ascii: ",")) }
            first = false
            buf.append(keys[i])
            switch value {
            case .null, .unchangedToast: buf.append("null")
            case .text(let t), .binary(let t):
                if !t.withUnsafeBytes({ columns[i].encoding.append($0, to: &buf) }) { nulled.append(columns[i].name) }
            }
        }
        if !first { buf.append(UInt8(ascii: ",")) }
        buf.append(fieldKeys.lsn)
        JSONBytes.appendInt(Int64(bitPattern: change.lsn.value), to: &buf)
        buf.append(fieldKeys.updatedAt)
        JSONBytes.appendString(change.time, to: &buf)
        buf.append(fieldKeys.deletedAt)
        if deleted { JSONBytes.appendString(change.time, to: &buf) } else { buf.append("null") }
        buf.append(UInt8(ascii: "}"))
        if (!omitted.isEmpty || !nulled.isEmpty) && envelope.carriesMeta {
            buf.append(#","meta":{"changes":["#)
            let changes = nulled.map { ($0, #","change":"NULLED","reason":"SOURCE_SERIALIZATION_ERROR"}"#) }
                + omitted.map { ($0, #","change":"OMITTED","reason":"SOURCE_UNCHANGED_TOAST"}"#) }
            for (k, c) in changes.enumerated() {
                if k > 0 { buf.append(UInt8(ascii: ",")) }
                buf.append(#"{"field":"#)
                JSONBytes.appendString(c.0, to: &buf)
                buf.append(Array(c.1.utf8))
            }
            buf.append("]}")
        }
        envelope.appendSuffix(to: &buf)
    }
}
