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
            // The 64-bit xid is the one nearest xmax (PostgreSQL keeps every live xid within 2^31
            // of the next one): an xid whose low bits are above xmax's started after the snapshot,
            // whatever the epoch, and is never in it.
            let delta = Int64(Int32(bitPattern: xid &- UInt32(truncatingIfNeeded: xmax)))
            guard delta < 0 || xmax <= UInt64(Int64.max) - UInt64(delta) else { return false }
            if delta < 0 && UInt64(-delta) > xmax { return true }
            let full = delta < 0 ? xmax - UInt64(-delta) : xmax + UInt64(delta)
            if full < xmin { return true }
            if full >= xmax { return false }
            return !inProgress.contains(full)
        }
    }

    public var lsn: LSN
    public var filters: [SnapshotFilter]
    public var snapshotted: Set<StreamID>
    /// Streams whose initial load is being read in key-range chunks between their changes: the
    /// last key read (nil: none yet). Every chunk went out before the state's `lsn`.
    public var backfills: [StreamID: Backfill] = [:]
    /// The snapshots of recent chunks, until the slot passes them.
    public var chunkFilters: [ChunkFilter] = []
    /// Each stream's source columns as of `lsn` (what later Relation and DDL messages change).
    var schemas: [StreamID: SchemaTracker] = [:]
    /// Each partitioned stream's leaf partitions (oids, sorted) as of `lsn`: one attached,
    /// detached or dropped since means rows joined or left the stream without changes.
    var partitions: [StreamID: [UInt32]] = [:]
    /// Each stream's table (its oid) as of `lsn`: another table under the stream's name later
    /// (dropped and created again, or renamed away, while nothing read) is not what was synced.
    var tables: [StreamID: UInt32] = [:]

    /// How far a chunked initial load got.
    public struct Backfill: Sendable, Equatable {
        /// The primary key (values as PostgreSQL prints them) up to which rows were read.
        public var loadedThrough: [String]?
        /// The stream is read again while the destination holds its rows (after a table rewrite):
        /// deletes of keys not read yet go out too, since those rows may be there.
        public var reload: Bool
        public init(loadedThrough: [String]?, reload: Bool = false) {
            self.loadedThrough = loadedThrough
            self.reload = reload
        }
    }

    /// A chunk's snapshot: changes to keys in (`after`, `through`] of `stream` made by
    /// transactions the snapshot saw are in the chunk's rows already, so they do not go out again.
    public struct ChunkFilter: Sendable, Equatable {
        public var stream: StreamID
        /// nil: from the first key.
        public var after: [String]?
        /// nil: to the last key.
        public var through: [String]?
        public var snapshot: SnapshotFilter
    }

    public init(lsn: LSN, filters: [SnapshotFilter], snapshotted: Set<StreamID>, backfills: [StreamID: Backfill] = [:], chunkFilters: [ChunkFilter] = []) {
        self.lsn = lsn
        self.filters = filters
        self.snapshotted = snapshotted
        self.backfills = backfills
        self.chunkFilters = chunkFilters
    }

    /// Drops the filters of snapshots taken before `lsn` (no later transaction is in them).
    public mutating func passed(_ lsn: LSN) {
        filters.removeAll { $0.lsn <= lsn }
        chunkFilters.removeAll { $0.snapshot.lsn <= lsn }
    }

    public func globalJSON() -> JSONValue {
        var shared = JSONObject([
            ("state_type", "cdc"), ("version", 2), ("lsn", .string(lsn.description)), ("lsn_int", .number(String(lsn.value))),
        ])
        func snapshotJSON(_ f: SnapshotFilter) -> JSONObject {
            JSONObject([
                ("xmin", .number(String(f.xmin))), ("xmax", .number(String(f.xmax))),
                ("xip", .array(f.inProgress.map { .number(String($0)) })), ("lsn", .string(f.lsn.description)),
            ])
        }
        func keyJSON(_ k: [String]?) -> JSONValue { k.map { .array($0.map { .string($0) }) } ?? .null }
        if !filters.isEmpty {
            shared["snapshot_filters"] = .array(filters.map { f in
                var o = snapshotJSON(f)
                o["streams"] = .array(f.streams.map { ["namespace": .string($0.namespace), "name": .string($0.name)] })
                return .object(o)
            })
        }
        if !chunkFilters.isEmpty {
            shared["chunk_filters"] = .array(chunkFilters.map { f in
                var o = snapshotJSON(f.snapshot)
                o["stream"] = ["namespace": .string(f.stream.namespace), "name": .string(f.stream.name)]
                o["after"] = keyJSON(f.after)
                o["through"] = keyJSON(f.through)
                return .object(o)
            })
        }
        func columnsJSON(_ id: StreamID, _ o: inout JSONObject) {
            guard let t = schemas[id] else { return }
            o["columns"] = .array(t.columns.map { c in
                .array([c.attnum.map { .number(String($0)) } ?? .null, .string(c.name), .number(String(c.typeOID)), .number(String(c.typeModifier))])
            })
            if let p = partitions[id] { o["partitions"] = .array(p.map { .number(String($0)) }) }
            if let t = tables[id] { o["table_oid"] = .number(String(t)) }
        }
        var streamStates: [JSONValue] = snapshotted.sorted().map { id in
            var o = JSONObject([("state_type", "cdc_stream"), ("version", 2), ("status", "snapshot_complete")])
            columnsJSON(id, &o)
            return ["stream_descriptor": ["namespace": .string(id.namespace), "name": .string(id.name)], "stream_state": .object(o)]
        }
        for id in backfills.keys.sorted() where !snapshotted.contains(id) {
            var o = JSONObject([("state_type", "cdc_stream"), ("version", 2), ("status", "snapshot_in_progress"), ("loaded_through", keyJSON(backfills[id]!.loadedThrough))])
            if backfills[id]!.reload { o["reload"] = true }
            columnsJSON(id, &o)
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
            var snap = try parseSnapshot(f, file: file, path: ff.path)
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
            snap.streams = streams
            filters.append(snap)
        }
        var done: Set<StreamID> = []
        var backfills: [StreamID: Backfill] = [:]
        var schemas: [StreamID: SchemaTracker] = [:]
        var partitions: [StreamID: [UInt32]] = [:]
        var tables: [StreamID: UInt32] = [:]
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
                let at = "\(path).stream_states[\(k)].stream_state.loaded_through"
                backfills[id] = Backfill(loadedThrough: try parseKey(s["stream_state"]?["loaded_through"], file: file, path: at),
                                         reload: s["stream_state"]?["reload"] == .bool(true))
            default:
                break
            }
            if let cols = s["stream_state"]?["columns"] {
                schemas[id] = try parseColumns(cols, file: file, path: "\(path).stream_states[\(k)].stream_state.columns")
            }
            if let p = s["stream_state"]?["partitions"] {
                let at = "\(path).stream_states[\(k)].stream_state.partitions"
                guard let list = p.arrayValue else { throw InputError(file: file, path: at, reason: "expected an array of table oids") }
                var oids: [UInt32] = []
                for (i, v) in list.enumerated() {
                    guard case .number(let n) = v, let oid = UInt32(n), oid > 0 else {
                        throw InputError(file: file, path: "\(at)[\(i)]", reason: "expected a table oid (a positive 32-bit integer)")
                    }
                    oids.append(oid)
                }
                partitions[id] = oids
            }
            if let t = s["stream_state"]?["table_oid"] {
                guard case .number(let n) = t, let oid = UInt32(n), oid > 0 else {
                    throw InputError(file: file, path: "\(path).stream_states[\(k)].stream_state.table_oid", reason: "expected a table oid (a positive 32-bit integer)")
                }
                tables[id] = oid
            }
        }
        var chunkFilters: [ChunkFilter] = []
        let chunks = shared.value["chunk_filters"] ?? .null
        guard chunks == .null || chunks.arrayValue != nil else { throw shared.fail("chunk_filters", "expected an array") }
        for (k, f) in (chunks.arrayValue ?? []).enumerated() {
            let at = "\(shared.path).chunk_filters[\(k)]"
            let snap = try parseSnapshot(f, file: file, path: at)
            guard let ns = f["stream"]?["namespace"]?.stringValue, let name = f["stream"]?["name"]?.stringValue else {
                throw InputError(file: file, path: "\(at).stream", reason: "expected {\"namespace\": ..., \"name\": ...}")
            }
            chunkFilters.append(ChunkFilter(stream: StreamID(namespace: ns, name: name), after: try parseKey(f["after"], file: file, path: "\(at).after"),
                                            through: try parseKey(f["through"], file: file, path: "\(at).through"), snapshot: snap))
        }
        var state = CDCState(lsn: lsn, filters: filters, snapshotted: done, backfills: backfills, chunkFilters: chunkFilters)
        state.schemas = schemas
        state.partitions = partitions
        state.tables = tables
        return state
    }

    /// A stream's saved columns: `[attnum or null, name, type oid, type modifier]` each.
    static func parseColumns(_ v: JSONValue, file: String, path: String) throws(InputError) -> SchemaTracker {
        guard let list = v.arrayValue else { throw InputError(file: file, path: path, reason: "expected an array of columns") }
        var cols: [SchemaTracker.Column] = []
        for (i, c) in list.enumerated() {
            guard let a = c.arrayValue, a.count == 4, let name = a[1].stringValue,
                  case .number(let oid) = a[2], let typeOID = UInt32(oid), case .number(let mod) = a[3], let typmod = Int32(mod) else {
                throw InputError(file: file, path: "\(path)[\(i)]", reason: "expected [attnum, name, type oid, type modifier]")
            }
            var attnum: Int?
            if case .number(let n) = a[0] {
                guard let v = Int(n), v > 0, v < 1700 else { throw InputError(file: file, path: "\(path)[\(i)][0]", reason: "expected a column number from 1 to 1599") }
                attnum = v
            } else if a[0] != .null {
                throw InputError(file: file, path: "\(path)[\(i)][0]", reason: "expected a column number or null")
            }
            cols.append(SchemaTracker.Column(attnum: attnum, name: name, typeOID: typeOID, typeModifier: typmod))
        }
        return SchemaTracker(columns: cols)
    }

    /// A primary key's values (strings), or null.
    static func parseKey(_ v: JSONValue?, file: String, path: String) throws(InputError) -> [String]? {
        switch v {
        case nil, .null?: return nil
        case .array(let a)? where !a.isEmpty:
            var key: [String] = []
            for x in a {
                guard case .string(let t) = x else { throw InputError(file: file, path: path, reason: "expected the key's values as strings") }
                key.append(t)
            }
            return key
        default:
            throw InputError(file: file, path: path, reason: "expected an array of the key's values (strings) or null")
        }
    }

    /// The visibility fields of one snapshot (xmin, xmax, xip, lsn).
    static func parseSnapshot(_ f: JSONValue, file: String, path: String) throws(InputError) -> SnapshotFilter {
        let ff = StateFields(f, file: file, path: path)
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
        return SnapshotFilter(xmin: xmin, xmax: xmax, inProgress: xip, lsn: l, streams: [])
    }
}
