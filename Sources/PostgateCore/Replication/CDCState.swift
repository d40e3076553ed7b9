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
        /// Streams (`namespace.name`) the snapshot covered.
        public var streams: [String]

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
    public var snapshotted: Set<String>

    public func globalJSON() -> JSONValue {
        var shared = JSONObject([
            ("state_type", "cdc"), ("version", 2), ("lsn", .string(lsn.description)), ("lsn_int", .number(String(lsn.value))),
        ])
        if !filters.isEmpty {
            shared["snapshot_filters"] = .array(filters.map { f in
                [
                    "xmin": .number(String(f.xmin)), "xmax": .number(String(f.xmax)),
                    "xip": .array(f.inProgress.map { .number(String($0)) }), "lsn": .string(f.lsn.description),
                    "streams": .array(f.streams.map { .string($0) }),
                ]
            })
        }
        let streamStates: [JSONValue] = snapshotted.sorted().map { key in
            let dot = key.firstIndex(of: ".")!
            return [
                "stream_descriptor": ["namespace": .string(String(key[..<dot])), "name": .string(String(key[key.index(after: dot)...]))],
                "stream_state": ["state_type": "cdc_stream", "version": 2, "status": "snapshot_complete"],
            ]
        }
        return ["type": "GLOBAL", "global": ["shared_state": .object(shared), "stream_states": .array(streamStates)]]
    }

    /// Reads the GLOBAL state from `read --state` input; nil when there is none.
    public static func parse(_ bytes: [UInt8], file: String) throws -> CDCState? {
        var docs: [JSONValue] = []
        if let whole = try? JSONParser.parse(bytes) {
            if case .array(let a) = whole { docs = a } else { docs = [whole] }
        } else {
            docs = bytes.split(separator: 0x0a).compactMap { try? JSONParser.parse(Array($0)) }
        }
        var found: JSONValue?
        for d in docs {
            let m = d["type"]?.stringValue == "STATE" ? (d["state"] ?? .null) : d
            if m["type"]?.stringValue == "GLOBAL", let g = m["global"] { found = g }
        }
        guard let g = found else { return nil }
        let shared = g["shared_state"] ?? .null
        guard let text = shared["lsn"]?.stringValue, let lsn = LSN(text) else {
            throw InputError(file: file, path: "global.shared_state.lsn", reason: "expected an LSN such as \"0/16B3748\"")
        }
        var filters: [SnapshotFilter] = []
        for (k, f) in (shared["snapshot_filters"]?.arrayValue ?? []).enumerated() {
            guard let xmin = f["xmin"]?.int64Value, let xmax = f["xmax"]?.int64Value, let l = f["lsn"]?.stringValue.flatMap(LSN.init) else {
                throw InputError(file: file, path: "global.shared_state.snapshot_filters[\(k)]", reason: "expected xmin, xmax and lsn")
            }
            filters.append(SnapshotFilter(
                xmin: UInt64(xmin), xmax: UInt64(xmax), inProgress: (f["xip"]?.arrayValue ?? []).compactMap { $0.int64Value.map(UInt64.init) },
                lsn: l, streams: (f["streams"]?.arrayValue ?? []).compactMap(\.stringValue)))
        }
        var done: Set<String> = []
        for s in g["stream_states"]?.arrayValue ?? [] {
            guard let name = s["stream_descriptor"]?["name"]?.stringValue else { continue }
            let ns = s["stream_descriptor"]?["namespace"]?.stringValue ?? "public"
            if s["stream_state"]?["status"]?.stringValue == "snapshot_complete" { done.insert("\(ns).\(name)") }
        }
        return CDCState(lsn: lsn, filters: filters, snapshotted: done)
    }
}
