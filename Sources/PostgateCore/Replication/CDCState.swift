/// The GLOBAL state of a CDC read: the LSN up to which changes were emitted, the snapshot filter
/// still needed for an exact handoff, and which streams have their initial snapshot.
public struct CDCState: Sendable, Equatable {
    /// Transactions visible to an initial snapshot, so the stream can skip them.
    public struct SnapshotFilter: Sendable, Equatable {
        public var xmin: UInt64
        public var xmax: UInt64
        public var inProgress: [UInt64]
        /// WAL position just after the snapshot: a transaction committing later is never in it.
        public var lsn: LSN
        /// Streams the snapshot covered.
        public var streams: [StreamID]

        /// Whether transaction `xid` (32-bit, as pgoutput sends it) is contained in the snapshot.
        public func contains(xid: UInt32) -> Bool {
            // Compare in the snapshot's epoch (a handoff never spans a wraparound).
            let epoch = xmax >> 32
            var full = epoch << 32 | UInt64(xid)
            if full > xmax { full = full &- (1 << 32) }
            if full < xmin { return true }
            if full >= xmax { return false }
            return !inProgress.contains(full)
        }
    }

    public var lsn: LSN
    public var filters: [SnapshotFilter]
    public var snapshotted: Set<StreamID>
    /// Streams whose initial load is being read in chunks between changes: the pages read so far
    /// (every chunk's rows went out before the state's `lsn`).
    public var backfills: [StreamID: StreamState.Load] = [:]

    public init(lsn: LSN, filters: [SnapshotFilter], snapshotted: Set<StreamID>, backfills: [StreamID: StreamState.Load] = [:]) {
        self.lsn = lsn
        self.filters = filters
        self.snapshotted = snapshotted
        self.backfills = backfills
    }

    public func globalJSON() -> JSONValue {
        var shared = JSONObject([
            ("state_type", "cdc"), ("version", 2), ("lsn", .string(lsn.description)), ("lsn_int", .number(String(lsn.value))),
        ])
        if !filters.isEmpty {
            shared["snapshot_filters"] = .array(filters.map { f in
                [
                    "xmin": .number(String(f.xmin)), "xmax": .number(String(f.xmax)),
                    "xip": .array(f.inProgress.map { .number(String($0)) }), "lsn": .string(f.lsn.description),
                    "streams": .array(f.streams.map { ["namespace": .string($0.namespace), "name": .string($0.name)] }),
                ]
            })
        }
        var streamStates: [JSONValue] = snapshotted.sorted().map { id in
            [
                "stream_descriptor": ["namespace": .string(id.namespace), "name": .string(id.name)],
                "stream_state": ["state_type": "cdc_stream", "version": 2, "status": "snapshot_complete"],
            ]
        }
        for id in backfills.keys.sorted() where !snapshotted.contains(id) {
            // The chunked load's progress, in the fields of a ctid state.
            var o = JSONObject([("state_type", "cdc_stream"), ("version", 2), ("status", "snapshot_in_progress")])
            if case .object(let load) = StreamState.load(backfills[id]!).json {
                for (k, v) in load.entries where k != "state_type" && k != "version" && k != "snapshot_xmin" { o[k] = v }
            }
            streamStates.append(["stream_descriptor": ["namespace": .string(id.namespace), "name": .string(id.name)], "stream_state": .object(o)])
        }
        return ["type": "GLOBAL", "global": ["shared_state": .object(shared), "stream_states": .array(streamStates)]]
    }

    /// Reads the GLOBAL state from `read --state` input; nil when there is none.
    public static func parse(_ bytes: [UInt8], file: String) throws -> CDCState? {
        try parse(documents: StateFile.documents(bytes, file: file), file: file)
    }

    /// Reads the last GLOBAL state of a state file's documents; every field is range-checked.
    public static func parse(documents docs: [JSONValue], file: String) throws(InputError) -> CDCState? {
        try SavedState.parse(documents: docs, file: file).cdc
    }

    /// Parses one GLOBAL state (`global` is its `global` member, at JSON path `path`).
    static func parse(global g: JSONValue, path: String, file: String) throws(InputError) -> CDCState {
        guard g.objectValue != nil else {
            throw InputError(file: file, path: path, reason: "expected an object with shared_state and stream_states")
        }
        let shared = StateFields(g["shared_state"] ?? .null, file: file, path: "\(path).shared_state")
        guard let text = try shared.string("lsn"), let lsn = LSN(text) else {
            throw shared.fail("lsn", "expected an LSN such as \"0/16B3748\"")
        }
        var filters: [SnapshotFilter] = []
        let list = shared.value["snapshot_filters"] ?? .null
        guard list == .null || list.arrayValue != nil else { throw shared.fail("snapshot_filters", "expected an array") }
        for (k, f) in (list.arrayValue ?? []).enumerated() {
            let ff = StateFields(f, file: file, path: "\(shared.path).snapshot_filters[\(k)]")
            // xids are 64-bit with the epoch on top; PostgreSQL's never reach 2^63.
            let limit = UInt64(Int64.max)
            guard let xmin = try ff.unsigned("xmin", max: limit) else { throw ff.fail("xmin", "is required") }
            guard let xmax = try ff.unsigned("xmax", max: limit) else { throw ff.fail("xmax", "is required") }
            guard xmin <= xmax else { throw ff.fail("xmin", "\(xmin) is above xmax \(xmax)") }
            guard let lt = try ff.string("lsn"), let l = LSN(lt) else { throw ff.fail("lsn", "expected an LSN such as \"0/16B3748\"") }
            var xip: [UInt64] = []
            for (j, x) in (f["xip"]?.arrayValue ?? []).enumerated() {
                guard case .number(let t) = x, let v = UInt64(t), v >= xmin, v < xmax else {
                    throw ff.fail("xip[\(j)]", "expected a transaction id from xmin \(xmin) up to xmax \(xmax)")
                }
                xip.append(v)
            }
            var streams: [StreamID] = []
            for (j, sv) in (f["streams"]?.arrayValue ?? []).enumerated() {
                let id: StreamID?
                switch sv {
                case .string(let t): id = StreamID(parsing: t)
                case .object: id = sv["namespace"]?.stringValue.flatMap { ns in sv["name"]?.stringValue.map { StreamID(namespace: ns, name: $0) } }
                default: id = nil
                }
                guard let id else { throw ff.fail("streams[\(j)]", "expected {\"namespace\": ..., \"name\": ...}") }
                streams.append(id)
            }
            filters.append(SnapshotFilter(xmin: xmin, xmax: xmax, inProgress: xip, lsn: l, streams: streams))
        }
        var done: Set<StreamID> = []
        var backfills: [StreamID: StreamState.Load] = [:]
        for (k, s) in (g["stream_states"]?.arrayValue ?? []).enumerated() {
            guard let name = s["stream_descriptor"]?["name"]?.stringValue, !name.isEmpty else {
                throw InputError(file: file, path: "\(path).stream_states[\(k)].stream_descriptor.name", reason: "is required")
            }
            let ns = s["stream_descriptor"]?["namespace"]?.stringValue ?? "public"
            let id = StreamID(namespace: ns, name: name)
            switch s["stream_state"]?["status"]?.stringValue {
            case "snapshot_complete"?:
                done.insert(id)
            case "snapshot_in_progress"?:
                var load = s["stream_state"] ?? .null
                if case .object(var o) = load { o["state_type"] = "ctid"; load = .object(o) }
                guard case .load(let l) = try StreamState.parse(load, file: file, path: "\(path).stream_states[\(k)].stream_state") else {
                    throw InputError(file: file, path: "\(path).stream_states[\(k)].stream_state", reason: "expected the chunked load's progress")
                }
                backfills[id] = l
            default:
                break
            }
        }
        return CDCState(lsn: lsn, filters: filters, snapshotted: done, backfills: backfills)
    }
}
