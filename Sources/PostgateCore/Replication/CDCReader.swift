import Foundation
import Logging

/// Reads configured streams by change data capture: an initial snapshot of each new stream, then
/// the changes from the replication slot (pgoutput) up to the WAL position current at the start of
/// the run. Records carry `_ab_cdc_lsn`, `_ab_cdc_updated_at` and `_ab_cdc_deleted_at`; the run ends
/// with a GLOBAL state whose LSN a later run resumes from (and confirms to the slot).
/// What a destination reports back to the CDC reader about committed positions.
public protocol CDCCommitFeedback: AnyObject, Sendable {
    /// The newest LSN the destination has durably committed, if any.
    func durableLSN() -> LSN?
    /// Blocks until the destination has committed a state at `lsn` or later (returning the
    /// committed LSN), or has stopped (throwing why).
    func waitUntilDurable(_ lsn: LSN) throws -> LSN?
}

public final class CDCReader {
    let factory: ConnectionFactory
    let config: PostgateConfig
    let cdc: CDCSettings
    let out: OutputSink
    let logger: Logger
    static let markerPrefix = "postgate-marker"

    struct Stream {
        var configured: ConfiguredStream
        var discovered: DiscoveredStream
        var key: String { "\(discovered.schema).\(discovered.name)" }
    }

    /// What a Relation message told us, bound to a configured stream if there is one.
    struct Relation {
        var stream: Stream?
        var columns: [PgOutputMessage.Column]
        var encodings: [ValueEncoding]
        var emitted: [Bool]
        var keys: [[UInt8]]
        var prefix: [UInt8]
    }

    /// Keep streaming after catching up, until `stopRequested` says to stop (at a transaction boundary).
    public var follow = false
    /// Polled between replication messages while following.
    public var stopRequested: @Sendable () -> Bool = { false }
    /// When set, the slot is confirmed only up to what the destination reports as committed, and
    /// the run waits for the destination to commit its final state before confirming it.
    public var commitFeedback: CDCCommitFeedback?
    /// Also write a `POSTGATE_TRUNCATE` line for each truncated stream (for `sync`, which applies it).
    public var emitTruncateEvents = false

    public init(factory: ConnectionFactory, config: PostgateConfig, cdc: CDCSettings, out: OutputSink, logger: Logger) {
        self.factory = factory
        self.config = config
        self.cdc = cdc
        self.out = out
        self.logger = logger
    }

    public func run(_ streams: [(ConfiguredStream, DiscoveredStream)], state: CDCState?) throws {
        let conn = try factory.connect()
        let all = streams.map { Stream(configured: $0.0, discovered: $0.1) }
        for s in all {
            try out.emit(AirbyteMessage.streamStatus(namespace: s.discovered.schema, name: s.discovered.name, status: "STARTED"))
        }
        let slotName = cdc.replicationSlot
        try ensureReplicaIdentity(all, conn: conn)
        var slot = try conn.query("SELECT confirmed_flush_lsn::text AS c, plugin, database FROM pg_catalog.pg_replication_slots WHERE slot_name = $1", [slotName])
        if slot.rowCount == 0 && cdc.createSlot && state == nil {
            // The slot's exported snapshot is exactly its start: no filter is needed.
            try createSlotAndSnapshot(all, conn: conn)
            slot = try conn.query("SELECT confirmed_flush_lsn::text AS c, plugin, database FROM pg_catalog.pg_replication_slots WHERE slot_name = $1", [slotName])
        }
        guard slot.rowCount == 1 else {
            throw SnapshotReader.ReadError(message: "replication slot \"\(slotName)\" does not exist; create it with SELECT pg_create_logical_replication_slot(\(PGConnection.quoteLiteral(slotName)), 'pgoutput'); or set replication_method.create_slot (postgate check explains every CDC prerequisite)")
        }
        guard slot.string(0, "plugin") == "pgoutput" else {
            throw SnapshotReader.ReadError(message: "replication slot \"\(slotName)\" uses plugin \(slot.string(0, "plugin") ?? "?"); Postgate needs pgoutput")
        }
        let confirmed = slot.string(0, "c").flatMap(LSN.init) ?? LSN(0)
        var current = state ?? createdState ?? CDCState(lsn: confirmed, filters: [], snapshotted: [])
        if let s = state, s.lsn < confirmed {
            let why = "the saved position \(s.lsn) is behind the slot's confirmed position \(confirmed): the changes in between were released by the slot and cannot be read again"
            switch cdc.invalidCursorBehaviour {
            case .failSync:
                throw SnapshotReader.ReadError(message: "CDC: \(why). Rerun without --state to load the streams again, or set replication_method.invalid_cdc_cursor_position_behavior to \"Re-sync data\" to do that automatically.")
            case .resync:
                log(.warning, "CDC: \(why); loading every stream again (invalid_cdc_cursor_position_behavior is \"Re-sync data\")")
                current = CDCState(lsn: confirmed, filters: [], snapshotted: [])
            }
        }
        // A position before the slot's start is served from the slot's start.
        if current.lsn < confirmed { current.lsn = confirmed }

        // 1. Initial snapshots of streams that have none, in one snapshot whose visibility filters the stream.
        let need = all.filter { !current.snapshotted.contains($0.key) }
        if !need.isEmpty {
            try conn.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            let snap = try conn.query("SELECT pg_current_snapshot()::text AS s, pg_current_wal_insert_lsn()::text AS l")
            guard let text = snap.string(0, "s"), let snapLSN = snap.string(0, "l").flatMap(LSN.init) else {
                throw SnapshotReader.ReadError(message: "CDC: could not read the snapshot position")
            }
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 3, let xmin = UInt64(parts[0]), let xmax = UInt64(parts[1]) else {
                throw SnapshotReader.ReadError(message: "CDC: unexpected snapshot text \(text)")
            }
            let xip = parts[2].split(separator: ",").compactMap { UInt64($0) }
            try snapshot(need, conn: conn, lsn: snapLSN)
            try conn.query("COMMIT")
            current.filters.append(CDCState.SnapshotFilter(xmin: xmin, xmax: xmax, inProgress: xip, lsn: snapLSN, streams: need.map(\.key)))
            current.snapshotted.formUnion(need.map(\.key))
            try emitState(current)
        }

        // 2. Changes from the slot, up to a marker written now.
        try stream(all, conn: conn, state: &current)
        for s in all {
            try out.emit(AirbyteMessage.streamStatus(namespace: s.discovered.schema, name: s.discovered.name, status: "COMPLETE"))
        }
        try out.flush()
    }

    private func stream(_ streams: [Stream], conn: PGConnection, state current: inout CDCState) throws {
        let byKey = Dictionary(streams.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        let repl = try factory.connect(replication: true)
        let start = current.lsn
        let publication = PGConnection.quoteLiteral(PGConnection.quoteIdentifier(cdc.publication))
        // Protocol 2 where the server has it (PostgreSQL 14+); in-progress streaming stays off, so
        // transactions arrive whole, at their commit, one change at a time.
        let proto = repl.serverVersion >= 140_000 ? 2 : 1
        try repl.startCopyBoth("START_REPLICATION SLOT \(PGConnection.quoteIdentifier(cdc.replicationSlot)) LOGICAL \(start) (\"proto_version\" '\(proto)', \"publication_names\" \(publication), \"messages\" 'true')")
        defer { repl.endCopyBoth() }
        // The previous run's state was durably taken by then: confirm it so the slot can release WAL.
        var confirmedToSlot = start
        try repl.sendCopyData(ReplicationFrame.standbyStatus(flushed: start))

        let markerID = UUID().uuidString
        if !follow {
            _ = try conn.query("SELECT pg_logical_emit_message(false, $1, $2)", [Self.markerPrefix, markerID])
        }
        var lastState = Date()
        var lastFeedback = Date()
        /// Confirms to the slot what the destination has committed (never beyond it).
        func confirmDurable() throws {
            guard let feedback = commitFeedback, let d = feedback.durableLSN(), d > confirmedToSlot else { return }
            confirmedToSlot = d
            try repl.sendCopyData(ReplicationFrame.standbyStatus(flushed: d))
        }
        var relations: [UInt32: Relation] = [:]
        var typeCache: [UInt32: PostgresType] = [:]
        var inTx = false
        var skipTx = false
        var commitTime = ""
        var sinceState: Int64 = 0
        var lastChange = Date()
        var done = false
        let idleLimit = Double(cdc.initialWaitingSeconds)
        var lastHeartbeat = Date()

        while !done {
            let got = try repl.receiveCopyData(timeout: follow ? 0.2 : 1.0) { bytes in
                switch try ReplicationFrame.decode(bytes) {
                case .keepalive(_, _, let reply):
                    try confirmDurable()
                    if reply { try repl.sendCopyData(ReplicationFrame.standbyStatus(flushed: confirmedToSlot)) }
                case .xlogData(let walStart, _, _, let payload):
                    lastChange = Date()
                    switch try PgOutputDecoder.decode(payload) {
                    case .begin(_, let time, let xid):
                        inTx = true
                        commitTime = ReplicationFrame.isoTimestamp(time)
                        skipTx = false
                        for f in current.filters where f.contains(xid: xid) { skipTx = true }
                        // A transaction in a snapshot is skipped only for the streams that snapshot covered.
                        skipFor = skipTx ? Set(current.filters.filter { $0.contains(xid: xid) }.flatMap(\.streams)) : []
                    case .commit(_, _, let end, _):
                        inTx = false
                        current.lsn = end
                        current.filters.removeAll { $0.lsn <= end }
                        if cdc.lsnCommitBehaviour == .whileReadingData {
                            confirmedToSlot = end
                            try repl.sendCopyData(ReplicationFrame.standbyStatus(flushed: end))
                        }
                        // Following, a state goes out soon after each change so the destination commits it promptly.
                        if sinceState >= Int64(config.batchFetchLimit) || (follow && sinceState > 0 && Date().timeIntervalSince(lastState) >= 0.2) {
                            try emitState(current)
                            sinceState = 0
                            lastState = Date()
                        }
                    case .relation(let oid, let ns, let name, _, let cols):
                        let stream = byKey["\(ns).\(name)"]
                        if let s = stream { reportColumnChanges(s, previous: relations[oid]?.columns.map(\.name), cols) }
                        relations[oid] = try relation(stream, cols, conn: conn, types: &typeCache)
                    case .insert(let rel, let new):
                        if let r = relations[rel], let s = r.stream, !skipFor.contains(s.key) {
                            try emitRecord(r, values: new, old: nil, lsn: walStart, time: commitTime, deleted: false)
                            sinceState += 1
                        }
                    case .update(let rel, _, let old, let new):
                        if let r = relations[rel], let s = r.stream, !skipFor.contains(s.key) {
                            try emitRecord(r, values: new, old: old, lsn: walStart, time: commitTime, deleted: false)
                            sinceState += 1
                        }
                    case .delete(let rel, let kind, let old):
                        if let r = relations[rel], let s = r.stream, !skipFor.contains(s.key) {
                            try emitRecord(r, values: old, old: nil, lsn: walStart, time: commitTime, deleted: true, keyOnly: kind == UInt8(ascii: "K"))
                            sinceState += 1
                        }
                    case .truncate(_, let rels):
                        for rel in rels {
                            if let r = relations[rel], let s = r.stream, !skipFor.contains(s.key) {
                                log(.warning, "CDC: TRUNCATE of \(s.key) at \(walStart): every row of the stream was removed at the source")
                                if emitTruncateEvents {
                                    try out.emit(["type": "POSTGATE_TRUNCATE", "stream": ["namespace": .string(s.discovered.schema), "name": .string(s.discovered.name)]])
                                    sinceState += 1
                                }
                            }
                        }
                    case .message(_, let at, let prefix, let content):
                        if prefix == Self.markerPrefix && String(decoding: content, as: UTF8.self) == markerID && !inTx {
                            // Everything committed before the marker has been decoded and emitted.
                            if current.lsn < at { current.lsn = at }
                            current.filters.removeAll { $0.lsn <= at }
                            done = true
                        }
                    case .origin, .type:
                        break
                    }
                }
            }
            if follow {
                if !inTx {
                    if sinceState > 0 && (!got || Date().timeIntervalSince(lastState) >= 0.2) {
                        try emitState(current)
                        sinceState = 0
                        lastState = Date()
                    }
                    if stopRequested() { break }
                }
                if Date().timeIntervalSince(lastFeedback) >= 1 {
                    try confirmDurable()
                    lastFeedback = Date()
                }
            } else if !got && Date().timeIntervalSince(lastChange) > idleLimit {
                break
            }
            if let q = cdc.heartbeatActionQuery, Date().timeIntervalSince(lastHeartbeat) > 10 {
                _ = try? conn.query(q)
                lastHeartbeat = Date()
            }
        }
        try emitState(current)
        // The destination commits that state; only then is it confirmed, so the slot never
        // releases a change the destination has not durably taken.
        if let feedback = commitFeedback, let d = try feedback.waitUntilDurable(current.lsn), d > confirmedToSlot {
            confirmedToSlot = d
            try repl.sendCopyData(ReplicationFrame.standbyStatus(flushed: d))
        }
    }

    /// State after a slot was created here with its snapshot read (nil otherwise).
    private var createdState: CDCState?

    /// Creates the slot on a replication connection, exporting its snapshot, and reads every
    /// stream inside that snapshot: the changes then start exactly where the snapshot ends.
    private func createSlotAndSnapshot(_ all: [Stream], conn: PGConnection) throws {
        let repl = try factory.connect(replication: true)
        let r = try repl.query("CREATE_REPLICATION_SLOT \(PGConnection.quoteIdentifier(cdc.replicationSlot)) LOGICAL pgoutput (SNAPSHOT 'export')")
        guard let name = r.string(0, "snapshot_name"), let point = r.string(0, "consistent_point").flatMap(LSN.init) else {
            throw SnapshotReader.ReadError(message: "CDC: creating the replication slot returned no snapshot")
        }
        log(.info, "CDC: created replication slot \(cdc.replicationSlot) at \(point); reading the streams in its snapshot")
        try conn.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try conn.query("SET TRANSACTION SNAPSHOT \(PGConnection.quoteLiteral(name))")
        try snapshot(all, conn: conn, lsn: point)
        try conn.query("COMMIT")
        createdState = CDCState(lsn: point, filters: [], snapshotted: Set(all.map(\.key)))
        try emitState(createdState!)
    }

    /// Reads each stream in full inside the current transaction, as CDC records at `lsn`.
    private func snapshot(_ streams: [Stream], conn: PGConnection, lsn: LSN) throws {
        let when = (try conn.query("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')").string(0, 0)) ?? ""
        var suffix: [UInt8] = Array(#","_ab_cdc_lsn":"#.utf8) + Array(String(lsn.value).utf8)
        suffix += Array(#","_ab_cdc_updated_at":"#.utf8)
        JSONBytes.appendString(when, to: &suffix)
        suffix += Array(#","_ab_cdc_deleted_at":null"#.utf8)
        let reader = SnapshotReader(conn: conn, config: config, out: out, logger: logger)
        for s in streams {
            let n = try reader.copyAll(s.configured, s.discovered, dataSuffix: suffix)
            log(.info, "CDC: initial snapshot of \(s.key): \(n) rows at \(lsn)")
        }
    }

    /// Tables with neither a primary key nor a replica identity cannot publish updates or deletes.
    private func ensureReplicaIdentity(_ all: [Stream], conn: PGConnection) throws {
        for s in all where s.discovered.primaryKey.isEmpty {
            let r = try conn.query("SELECT relreplident::text AS r FROM pg_catalog.pg_class WHERE oid = $1", [String(s.discovered.oid)])
            guard r.string(0, "r") == "d" else { continue }
            let table = PGConnection.quoteIdentifier(s.discovered.schema) + "." + PGConnection.quoteIdentifier(s.discovered.name)
            if cdc.setReplicaIdentity {
                do {
                    try conn.query("ALTER TABLE \(table) REPLICA IDENTITY FULL")
                    log(.info, "CDC: set REPLICA IDENTITY FULL on \(table), which has no primary key (replication_method.set_replica_identity)")
                } catch {
                    log(.warning, "CDC: could not set REPLICA IDENTITY FULL on \(table) (\(error)); its updates and deletes cannot be captured. The table owner can run: ALTER TABLE \(table) REPLICA IDENTITY FULL;")
                }
            } else {
                log(.warning, "CDC: \(table) has no primary key and no replica identity, so its updates and deletes cannot be captured (PostgreSQL refuses them while it is published). Fix: ALTER TABLE \(table) REPLICA IDENTITY FULL; or set replication_method.set_replica_identity")
            }
        }
    }

    /// Streams whose changes the current transaction must skip (already in their snapshot).
    private var skipFor: Set<String> = []

    private func relation(_ stream: Stream?, _ cols: [PgOutputMessage.Column], conn: PGConnection, types: inout [UInt32: PostgresType]) throws -> Relation {
        guard let s = stream else { return Relation(stream: nil, columns: cols, encodings: [], emitted: [], keys: [], prefix: []) }
        let known = Dictionary(s.discovered.columns.map { ($0.name, $0.type) }, uniquingKeysWith: { a, _ in a })
        let selected = s.configured.selectedColumns.map { Set($0) }
        var encodings: [ValueEncoding] = []
        var emitted: [Bool] = []
        var keys: [[UInt8]] = []
        for c in cols {
            var type = known[c.name]
            if type == nil {
                if types[c.typeOID] == nil { types[c.typeOID] = try lookupType(c.typeOID, conn: conn) }
                type = types[c.typeOID]
            }
            encodings.append(type.map(ValueEncoding.init) ?? .string)
            // A column the catalog did not list (added since discovery) is emitted too.
            emitted.append(selected == nil || selected!.contains(c.name) || known[c.name] == nil)
            var k: [UInt8] = []
            JSONBytes.appendString(c.name, to: &k)
            k.append(UInt8(ascii: ":"))
            keys.append(k)
        }
        var p: [UInt8] = Array(#"{"type":"RECORD","record":{"namespace":"#.utf8)
        JSONBytes.appendString(s.discovered.schema, to: &p)
        p += Array(#","stream":"#.utf8)
        JSONBytes.appendString(s.discovered.name, to: &p)
        p += Array(#","data":{"#.utf8)
        return Relation(stream: s, columns: cols, encodings: encodings, emitted: emitted, keys: keys, prefix: p)
    }

    private func lookupType(_ oid: UInt32, conn: PGConnection) throws -> PostgresType? {
        let r = try conn.query("""
            SELECT t.typname, t.typtype::text AS k, t.typcategory::text AS c, e.typname AS en, e.typtype::text AS ek, e.typcategory::text AS ec
            FROM pg_catalog.pg_type t LEFT JOIN pg_catalog.pg_type e ON t.typcategory = 'A' AND e.oid = t.typelem WHERE t.oid = $1
            """, [String(oid)])
        guard r.rowCount == 1, let name = r.string(0, "typname") else { return nil }
        var element: PostgresType?
        if let en = r.string(0, "en") { element = PostgresType(name: en, kind: r.string(0, "ek")?.first ?? "b", category: r.string(0, "ec")?.first ?? "U", declared: en) }
        return PostgresType(name: name, kind: r.string(0, "k")?.first ?? "b", category: r.string(0, "c")?.first ?? "U", element: element, declared: name)
    }

    /// Logs columns added or dropped since the previous Relation message (or, for the first one,
    /// columns the catalog did not list).
    private func reportColumnChanges(_ s: Stream, previous: [String]?, _ cols: [PgOutputMessage.Column]) {
        let before = previous ?? s.discovered.columns.map(\.name)
        let known = Set(before)
        let now = Set(cols.map(\.name))
        let added = cols.map(\.name).filter { !known.contains($0) }
        let dropped = previous == nil ? [] : before.filter { !now.contains($0) }
        if !added.isEmpty { log(.info, "CDC: \(s.key) has new columns \(added.joined(separator: ", ")); they are included in its records from here on") }
        if !dropped.isEmpty { log(.info, "CDC: \(s.key) no longer has columns \(dropped.joined(separator: ", ")); its records from here on lack them") }
    }

    /// Writes one change as a RECORD. Unchanged TOASTed values are taken from the old row when it
    /// was sent; otherwise they are left out and listed in `meta.changes` so a destination keeps its value.
    private func emitRecord(_ r: Relation, values: [TupleValue], old: [TupleValue]?, lsn: LSN, time ts: String, deleted: Bool, keyOnly: Bool = false) throws {
        try out.append { buf in
            buf.append(r.prefix)
            var first = true
            var omitted: [String] = []
            var nulled: [String] = []
            for (i, v) in values.enumerated() where i < r.columns.count && r.emitted[i] {
                // A delete with the default replica identity carries only the key columns.
                if deleted && keyOnly && !r.columns[i].isKey { continue }
                var value = v
                if case .unchangedToast = v, let old, i < old.count {
                    if case .unchangedToast = old[i] {} else { value = old[i] }
                }
                if case .unchangedToast = value {
                    omitted.append(r.columns[i].name)
                    continue
                }
                if !first { buf.append(UInt8(ascii: ",")) }
                first = false
                buf.append(r.keys[i])
                switch value {
                case .null, .unchangedToast: buf.append("null")
                case .text(let t), .binary(let t):
                    if !t.withUnsafeBytes({ r.encodings[i].append($0, to: &buf) }) { nulled.append(r.columns[i].name) }
                }
            }
            if !first { buf.append(UInt8(ascii: ",")) }
            buf.append(#""_ab_cdc_lsn":"#)
            JSONBytes.appendInt(Int64(bitPattern: lsn.value), to: &buf)
            buf.append(#","_ab_cdc_updated_at":"#)
            JSONBytes.appendString(ts, to: &buf)
            buf.append(#","_ab_cdc_deleted_at":"#)
            if deleted { JSONBytes.appendString(ts, to: &buf) } else { buf.append("null") }
            buf.append(UInt8(ascii: "}"))
            if !omitted.isEmpty || !nulled.isEmpty {
                buf.append(#","meta":{"changes":["#)
                let changes = nulled.map { ($0, #","change":"NULLED","reason":"SOURCE_SERIALIZATION_ERROR"}"#) }
                    + omitted.map { ($0, #","change":"OMITTED","reason":"SOURCE_UNCHANGED_TOAST"}"#) }
                for (k, change) in changes.enumerated() {
                    if k > 0 { buf.append(UInt8(ascii: ",")) }
                    buf.append(#"{"field":"#)
                    JSONBytes.appendString(change.0, to: &buf)
                    buf.append(Array(change.1.utf8))
                }
                buf.append("]}")
            }
            buf.append(#","emitted_at":"#)
            JSONBytes.appendInt(AirbyteMessage.nowMillis, to: &buf)
            buf.append("}}\n")
        }
    }

    func emitState(_ state: CDCState) throws {
        try out.emit(["type": "STATE", "state": state.globalJSON()])
        try out.flush()
    }

    func log(_ level: Logger.Level, _ message: String) {
        logger.log(level: level, "\(message)")
        try? out.emit(AirbyteMessage.log(level: level == .warning ? "WARN" : "INFO", message: message))
    }
}
