import Logging

/// `read`'s sink: Airbyte RECORD, STATE and TRACE messages on an `OutputSink`.
public final class AirbyteSink: ReadSink {
    let out: OutputSink
    /// Snapshot encoders per row shape (the last one is kept at hand for the hot path). The shape
    /// is held with its encoder so that its identity is not reused by another shape meanwhile.
    private var encoders: [ObjectIdentifier: (RowShape, RecordEncoder)] = [:]
    private var lastShape: RowShape?
    private var lastEncoder: RecordEncoder?
    private var rowsSinceRefresh = 0
    /// CDC record prefixes and keys per relation shape.
    private var changeEncoders: [ObjectIdentifier: ChangeEncoder] = [:]

    /// Records written since the last checkpoint, for a GLOBAL state's `sourceStats` (a STREAM
    /// state is told its stream's count by the reader).
    private var recordsSinceCheckpoint: Int64 = 0

    public init(out: OutputSink) { self.out = out }

    public func status(_ stream: StreamID, _ status: StreamStatus) throws {
        try out.emit(AirbyteMessage.streamStatus(namespace: stream.namespace, name: stream.name, status: status.rawValue))
        if status != .started { try out.flush() }
    }

    public func estimate(_ stream: StreamID, rows: Int64, bytes: Int64) throws {
        try out.emit(AirbyteMessage.estimate(namespace: stream.namespace, name: stream.name, rows: rows, bytes: bytes))
    }

    @inline(__always)
    private func encoder(_ shape: RowShape) -> RecordEncoder {
        if shape === lastShape, let e = lastEncoder { return e }
        let e = encoders[ObjectIdentifier(shape)]?.1 ?? Self.makeEncoder(shape)
        encoders[ObjectIdentifier(shape)] = (shape, e)
        lastShape = shape
        lastEncoder = e
        return e
    }

    static func makeEncoder(_ shape: RowShape) -> RecordEncoder {
        RecordEncoder(namespace: shape.stream.namespace, stream: shape.stream.name,
                      columns: shape.columns.map { RecordEncoder.Column(name: $0.name, encoding: $0.encoding, emitted: $0.emitted) },
                      dataSuffix: shape.cdcStamp.map(cdcSuffix) ?? [])
    }

    /// The CDC members of a snapshot row's data, after its columns.
    static func cdcSuffix(_ stamp: RowShape.CDCStamp) -> [UInt8] {
        var suffix = Array(#","_ab_cdc_lsn":"#.utf8) + Array(String(stamp.lsn.value).utf8)
        suffix += Array(#","_ab_cdc_updated_at":"#.utf8)
        JSONBytes.appendString(stamp.time, to: &suffix)
        suffix += Array(#","_ab_cdc_deleted_at":null"#.utf8)
        return suffix
    }

    public func row(_ shape: RowShape, copyText: UnsafeRawBufferPointer) throws {
        let e = encoder(shape)
        recordsSinceCheckpoint &+= 1
        rowsSinceRefresh &+= 1
        if rowsSinceRefresh & 4095 == 0 { e.refreshEmittedAt() }
        try out.append { buf in try e.encode(copyRow: copyText, into: &buf) }
    }

    public func change(_ shape: RowShape, _ change: Change) throws {
        let id = ObjectIdentifier(shape)
        let enc = changeEncoders[id] ?? ChangeEncoder(shape)
        changeEncoders[id] = enc
        recordsSinceCheckpoint &+= 1
        try out.append { buf in enc.encode(change, into: &buf) }
    }

    public func truncate(_ stream: StreamID) throws {}

    public func checkpoint(_ checkpoint: Checkpoint) throws {
        switch checkpoint {
        case .stream(let id, let state, let records):
            try out.emit(AirbyteMessage.streamState(namespace: id.namespace, name: id.name, state: state, recordCount: records))
        case .global(let state):
            var message = state.globalJSON()
            if case .object(var o) = message {
                o["sourceStats"] = ["recordCount": .number(String(recordsSinceCheckpoint))]
                message = .object(o)
            }
            try out.emit(["type": "STATE", "state": message])
        }
        recordsSinceCheckpoint = 0
        try out.flush()
        lastEncoder?.refreshEmittedAt()
        // Encoders of finished reads are not kept for the rest of the run.
        if encoders.count > 64 { encoders = [:]; lastShape = nil; lastEncoder = nil }
    }

    public func rollback() throws {}

    public func log(_ level: Logger.Level, _ message: String) {
        try? out.emit(AirbyteMessage.log(level: level == .warning ? "WARN" : "INFO", message: message))
    }

    public func flush() throws { try out.flush() }

    public func makeLane() -> RowLane { Lane(out: out, handed: { [unowned self] n in self.recordsSinceCheckpoint &+= n }) }

    /// Encodes one connection's rows into its own buffer; whole records go to the output.
    final class Lane: RowLane {
        let out: OutputSink
        private var buffer = ByteBuffer(capacity: 320 << 10)
        private var encoders: [ObjectIdentifier: (RowShape, RecordEncoder)] = [:]
        private var lastShape: RowShape?
        private var lastEncoder: RecordEncoder?
        private var rows = 0
        /// Rows in `buffer`, told to the sink when it is handed over (under the sink's lock).
        private var unhanded: Int64 = 0
        private let handed: (Int64) -> Void

        init(out: OutputSink, handed: @escaping (Int64) -> Void) {
            self.out = out
            self.handed = handed
        }
        deinit { buffer.deallocate() }

        func row(_ shape: RowShape, copyText: UnsafeRawBufferPointer) throws {
            let e: RecordEncoder
            if shape === lastShape, let l = lastEncoder {
                e = l
            } else {
                e = encoders[ObjectIdentifier(shape)]?.1 ?? AirbyteSink.makeEncoder(shape)
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

/// Writes CDC changes of one relation as RECORD lines. Unchanged TOASTed values are taken from the
/// old row when it was sent; otherwise they are left out and listed in `meta.changes`.
final class ChangeEncoder {
    let shape: RowShape
    let prefix: [UInt8]
    let keys: [[UInt8]]

    init(_ shape: RowShape) {
        self.shape = shape
        var p: [UInt8] = Array(#"{"type":"RECORD","record":{"namespace":"#.utf8)
        JSONBytes.appendString(shape.stream.namespace, to: &p)
        p += Array(#","stream":"#.utf8)
        JSONBytes.appendString(shape.stream.name, to: &p)
        p += Array(#","data":{"#.utf8)
        prefix = p
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
        buf.append(#""_ab_cdc_lsn":"#)
        JSONBytes.appendInt(Int64(bitPattern: change.lsn.value), to: &buf)
        buf.append(#","_ab_cdc_updated_at":"#)
        JSONBytes.appendString(change.time, to: &buf)
        buf.append(#","_ab_cdc_deleted_at":"#)
        if deleted { JSONBytes.appendString(change.time, to: &buf) } else { buf.append("null") }
        buf.append(UInt8(ascii: "}"))
        if !omitted.isEmpty || !nulled.isEmpty {
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
        buf.append(#","emitted_at":"#)
        JSONBytes.appendInt(AirbyteMessage.nowMillis, to: &buf)
        buf.append("}}\n")
    }
}
