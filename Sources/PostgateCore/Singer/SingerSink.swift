import Logging

/// Singer mode's sink: SCHEMA before a stream's records (again when CDC sees its columns
/// change), RECORD with `time_extracted` (and `version` for full tables), ACTIVATE_VERSION around
/// a full table's load, and STATE with the whole state after each checkpoint. Log lines go to
/// stderr only (stdout carries Singer messages alone).
public final class SingerSink: ReadSink {
    /// What the sink knows of each stream read.
    public struct Plan: Sendable {
        public var singer: SingerStream
        /// The columns announced in the first SCHEMA.
        public var columns: [DiscoveredStream.Column]
        /// A full table's version (milliseconds since the epoch when its load began).
        public var version: Int64?

        public init(singer: SingerStream, columns: [DiscoveredStream.Column], version: Int64?) {
            self.singer = singer
            self.columns = columns
            self.version = version
        }
    }

    let out: OutputSink
    let plans: [StreamID: Plan]
    let writer: RecordWriter
    var state: SingerState
    /// The emitted column names each stream's last SCHEMA announced.
    private var announced: [StreamID: [String]] = [:]
    private var lastChangeShape: RowShape?

    public init(out: OutputSink, plans: [Plan], state: SingerState) {
        self.out = out
        let byID = Dictionary(plans.map { ($0.singer.configured.id, $0) }, uniquingKeysWith: { a, _ in a })
        self.plans = byID
        self.state = state
        let envelopes = byID.mapValues { RecordEnvelope.singer(stream: $0.singer.tapStreamID, version: $0.version) }
        writer = RecordWriter(out: out, cdcFields: .singer, envelope: { envelopes[$0] ?? .singer(stream: SingerCatalog.tapStreamID($0), version: nil) })
    }

    /// The version a full-table stream's records carry this run: the interrupted load's, when the
    /// state resumes one, else now.
    public static func version(for stream: SingerStream, state: SingerState, now: Int64 = AirbyteMessage.nowMillis) -> Int64? {
        guard stream.method == .fullTable else { return nil }
        return state.version(of: stream) ?? now
    }

    func schemaMessage(_ plan: Plan, columns: [(String, JSONValue)]) -> JSONValue {
        var properties = JSONObject()
        for (n, s) in columns { properties[n] = s }
        if plan.singer.method == .logBased {
            for (n, s) in CDCFields.singer.schemas { properties[n] = SingerCatalog.propertySchema(s, nullable: true) }
        }
        var message = JSONObject([
            ("type", "SCHEMA"),
            ("stream", .string(plan.singer.tapStreamID)),
            ("schema", ["type": "object", "properties": .object(properties)]),
            ("key_properties", .array(plan.singer.configured.primaryKey.compactMap(\.first).map { .string($0) })),
        ])
        if let key = plan.singer.replicationKey { message["bookmark_properties"] = [.string(key)] }
        return .object(message)
    }

    func activateVersion(_ plan: Plan) throws {
        guard let v = plan.version else { return }
        try out.emit(["type": "ACTIVATE_VERSION", "stream": .string(plan.singer.tapStreamID), "version": .number(String(v))])
    }

    public func status(_ stream: StreamID, _ status: StreamStatus) throws {
        guard let plan = plans[stream] else { return }
        switch status {
        case .started:
            let keys = Set(plan.singer.configured.primaryKey.compactMap(\.first))
            try out.emit(schemaMessage(plan, columns: plan.columns.map {
                ($0.name, SingerCatalog.propertySchema($0.kind.jsonSchema, nullable: !(keys.contains($0.name) && $0.notNull)))
            }))
            announced[stream] = plan.columns.map(\.name)
            // Only the first load ever begins with ACTIVATE_VERSION (the target makes the empty
            // table); later ones swap versions at their end only.
            if plan.singer.method == .fullTable && !state.hasVersion(plan.singer) { try activateVersion(plan) }
        case .complete:
            // Rows of older versions are gone at the source.
            if plan.singer.method == .fullTable { try activateVersion(plan) }
            try out.flush()
        case .running, .incomplete:
            try out.flush()
        }
    }

    public func estimate(_ stream: StreamID, rows: Int64, bytes: Int64) throws {}

    public func row(_ shape: RowShape, copyText: UnsafeRawBufferPointer) throws { try writer.row(shape, copyText: copyText) }

    public func change(_ shape: RowShape, _ change: Change) throws {
        if shape !== lastChangeShape {
            // A relation's columns changed (added, dropped, retyped): announce the new schema first.
            let names = shape.columns.filter(\.emitted).map(\.name)
            if let plan = plans[shape.stream], announced[shape.stream] != names {
                try out.emit(schemaMessage(plan, columns: shape.columns.filter(\.emitted).map { c in
                    (c.name, SingerCatalog.propertySchema(c.type.map { JSONKind($0).jsonSchema } ?? ["type": "string"], nullable: true))
                }))
                announced[shape.stream] = names
            }
            lastChangeShape = shape
        }
        try writer.change(shape, change)
    }

    public func truncate(_ stream: StreamID) throws {}

    public func checkpoint(_ checkpoint: Checkpoint) throws {
        switch checkpoint {
        case .stream(let id, let st, _):
            guard let plan = plans[id] else { return }
            state.bookmarks[plan.singer.tapStreamID] = SingerState.bookmark(st, version: plan.version)
        case .global(let cdc):
            state.cdc = cdc.globalJSON()["global"]
            for plan in plans.values where plan.singer.method == .logBased {
                state.bookmarks[plan.singer.tapStreamID] = ["lsn": .string(cdc.lsn.description), "replication_method": "LOG_BASED"]
            }
        }
        try out.emit(["type": "STATE", "value": state.json])
        writer.checkpointed()
        try out.flush()
    }

    public func rollback() throws {}

    public func log(_ level: Logger.Level, _ message: String) {}

    public func flush() throws { try out.flush() }

    public func makeLane() -> RowLane { writer.makeLane() }
}
