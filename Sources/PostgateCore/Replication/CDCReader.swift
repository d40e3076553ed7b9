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
    let sink: ReadSink
    let logger: Logger
    static let markerPrefix = "postgate-marker"

    struct Stream {
        var configured: ConfiguredStream
        var discovered: DiscoveredStream
        var id: StreamID { discovered.id }
    }

    /// What a Relation message told us, bound to a configured stream if there is one.
    struct Relation {
        var stream: Stream?
        var columns: [PgOutputMessage.Column]
        /// The row shape of the stream's changes (nil for relations no stream reads).
        var shape: RowShape?
    }

    /// Keep streaming after catching up, until `stopRequested` says to stop (at a transaction boundary).
    public var follow = false
    /// Polled between replication messages while following.
    public var stopRequested: @Sendable () -> Bool = { false }
    /// When set, the destination owns durability: the slot is confirmed only up to what it reports
    /// as committed (whatever `lsn_commit_behaviour` says), the run waits for it to commit its final
    /// state, and a follow survives a server restart by rolling back to its last state.
    public var commitFeedback: CDCCommitFeedback?
    /// Names where a resumed state came from (a file, or the destination), for errors.
    public var stateOrigin = "the saved state"
    /// How long a follow keeps trying to reconnect after losing the server.
    public var reconnectLimit: Double = 600

    public init(factory: ConnectionFactory, config: PostgateConfig, cdc: CDCSettings, sink: ReadSink, logger: Logger) {
        self.factory = factory
        self.config = config
        self.cdc = cdc
        self.sink = sink
        self.logger = logger
    }

    public func run(_ streams: [(ConfiguredStream, DiscoveredStream)], state: CDCState?) throws {
        let conn = try factory.connect()
        let all = streams.map { Stream(configured: $0.0, discovered: $0.1) }
        for s in all { try sink.status(s.id, .started) }
        let slotName = cdc.replicationSlot
        try ensureReplicaIdentity(all, conn: conn)
        let slotQuery = """
            SELECT confirmed_flush_lsn::text AS c, plugin, database,
                   (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text AS w
            FROM pg_catalog.pg_replication_slots WHERE slot_name = $1
            """
        var slot = try conn.query(slotQuery, [slotName])
        if slot.rowCount == 0 && cdc.createSlot && state == nil {
            // The slot's exported snapshot is exactly its start: no filter is needed.
            try createSlotAndSnapshot(all, conn: conn)
            slot = try conn.query(slotQuery, [slotName])
        }
        guard slot.rowCount == 1 else {
            throw SnapshotReader.ReadError(message: "replication slot \"\(slotName)\" does not exist; create it with SELECT pg_create_logical_replication_slot(\(PGConnection.quoteLiteral(slotName)), 'pgoutput'); or set replication_method.create_slot (postgate check explains every CDC prerequisite)")
        }
        guard slot.string(0, "plugin") == "pgoutput" else {
            throw SnapshotReader.ReadError(message: "replication slot \"\(slotName)\" uses plugin \(slot.string(0, "plugin") ?? "?"); Postgate needs pgoutput")
        }
        let confirmed = slot.string(0, "c").flatMap(LSN.init) ?? LSN(0)
        guard let written = slot.string(0, "w").flatMap(LSN.init) else {
            throw SnapshotReader.ReadError(message: "CDC: could not read the server's WAL position")
        }
        try SlotPosition.checkResume(state: state?.lsn, origin: stateOrigin, slotConfirmed: confirmed, serverWritten: written, slot: slotName)
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
        let need = all.filter { !current.snapshotted.contains($0.id) }
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
            current.filters.append(CDCState.SnapshotFilter(xmin: xmin, xmax: xmax, inProgress: xip, lsn: snapLSN, streams: need.map(\.id)))
            current.snapshotted.formUnion(need.map(\.id))
            try emitState(current)
        }

        // 2. Changes from the slot, up to a marker written now (or, following, until asked to stop).
        lastEmitted = current
        runStart = current.lsn
        try streamReconnecting(all, conn: conn, state: &current)
        for s in all { try sink.status(s.id, .complete) }
    }

    /// Streams changes; while following under a destination that owns durability, a lost server
    /// (restart, fast shutdown, broken connection) is waited for with bounded, logged backoff, and
    /// the stream continues from the last state handed to the destination (what came after it is
    /// rolled back there first, so nothing is applied twice).
    private func streamReconnecting(_ streams: [Stream], conn first: PGConnection, state current: inout CDCState) throws {
        var conn = first
        var lostSince: Date?
        var attempt = 0
        while true {
            do {
                if lostSince != nil { conn = try factory.connect() }
                let from = current.lsn
                try stream(streams, conn: conn, state: &current) {
                    if lostSince != nil { log(.info, "CDC: reconnected to the server after \(attempt) attempt(s); continuing from \(from)") }
                    lostSince = nil
                    attempt = 0
                }
                return
            } catch {
                // Reconnecting, the old walsender may still hold the slot until it notices (55006).
                let retryable = Self.isServerLoss(error) || (lostSince != nil && (error as? PostgresError)?.sqlState == "55006")
                guard follow, commitFeedback != nil, retryable else { throw error }
                // Asked to stop: what was handed over is committed by the destination; the next run resumes.
                if stopRequested() { return }
                let since = lostSince ?? Date()
                guard Date().timeIntervalSince(since) < reconnectLimit else {
                    throw CDCError.serverLost(seconds: Int(reconnectLimit), last: "\(error)")
                }
                if lostSince == nil {
                    // What went out after the last state is rolled back, then read again from that state.
                    if emittedSinceState {
                        log(.info, "CDC: what was applied after the last state (\(lastEmitted.lsn)) is rolled back and read again")
                        try sink.rollback()
                    }
                    emittedSinceState = false
                    current = lastEmitted
                }
                lostSince = since
                attempt += 1
                let delay = min(30, 0.5 * Double(1 << min(attempt, 6)))
                log(.warning, "CDC: lost the server (\(error)); reconnecting in \(delay) s (attempt \(attempt); gives up \(Int(reconnectLimit)) s after the loss)")
                let until = Date().addingTimeInterval(delay)
                while Date() < until && !stopRequested() { Thread.sleep(forTimeInterval: 0.1) }
                if stopRequested() { return }
            }
        }
    }

    /// True for failures a restarted or reachable-again server cures: a broken or refused
    /// connection, an administrator's shutdown, a server starting up or shutting down.
    static func isServerLoss(_ error: Error) -> Bool {
        if error is TunnelError { return true }
        guard let e = error as? PostgresError else { return false }
        switch e.kind {
        case .client, .connection: return e.sqlState.map { $0.hasPrefix("57P") || $0.hasPrefix("08") } ?? true
        case .server: return e.sqlState.map { $0.hasPrefix("57P") || $0.hasPrefix("08") } ?? false
        }
    }

    private func stream(_ streams: [Stream], conn: PGConnection, state current: inout CDCState, connected: () -> Void) throws {
        let byID = Dictionary(streams.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        let repl = try factory.connect(replication: true)
        let start = current.lsn
        let publication = PGConnection.quoteLiteral(PGConnection.quoteIdentifier(cdc.publication))
        // Protocol 2 where the server has it (PostgreSQL 14+); in-progress streaming stays off, so
        // transactions arrive whole, at their commit, one change at a time.
        let proto = repl.serverVersion >= 140_000 ? 2 : 1
        try repl.startCopyBoth("START_REPLICATION SLOT \(PGConnection.quoteIdentifier(cdc.replicationSlot)) LOGICAL \(start) (\"proto_version\" '\(proto)', \"publication_names\" \(publication), \"messages\" 'true')")
        defer { repl.endCopyBoth() }
        var heard = false
        // The previous run's state was durably taken by then (checked against the server's WAL
        // before starting): confirm it so the slot can release WAL.
        // After a reconnect, the start may not be committed yet: confirm only what the destination has.
        let durable = commitFeedback?.durableLSN().map { max($0, runStart) } ?? runStart
        var position = SlotPosition(start: start, confirmed: min(start, durable))
        func report() throws { try repl.sendCopyData(ReplicationFrame.standbyStatus(written: position.received, flushed: position.confirmed)) }
        try report()
        let confirmWhileReading = cdc.lsnCommitBehaviour == .whileReadingData && commitFeedback == nil

        let markerID = UUID().uuidString
        if !follow {
            _ = try conn.query("SELECT pg_logical_emit_message(false, $1, $2)", [Self.markerPrefix, markerID])
        }
        var lastState = Date()
        var lastFeedback = Date()
        /// Confirms to the slot what the destination has committed (never beyond it, nor beyond what was received).
        func confirmDurable() throws {
            guard let feedback = commitFeedback, let d = feedback.durableLSN(), position.confirm(d) else { return }
            try report()
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
        /// The server's WAL end from a keepalive that came while nothing was pending: every
        /// transaction committed before it has been received, so a state there loses nothing.
        var idleEnd: LSN?

        while !done {
            let got = try repl.receiveCopyData(timeout: follow ? 0.2 : 1.0) { bytes in
                // The stream counts as back once the server sends something, not when it accepts the command.
                if !heard {
                    heard = true
                    connected()
                }
                switch try ReplicationFrame.decode(bytes) {
                case .keepalive(let walEnd, _, let reply):
                    position.receive(walEnd)
                    if follow && !inTx && sinceState == 0 && walEnd > current.lsn { idleEnd = walEnd }
                    try confirmDurable()
                    if reply { try report() }
                case .xlogData(let walStart, _, _, let payload):
                    lastChange = Date()
                    switch try PgOutputDecoder.decode(payload) {
                    case .begin(_, let time, let xid):
                        inTx = true
                        idleEnd = nil
                        commitTime = ReplicationFrame.isoTimestamp(time)
                        skipTx = false
                        for f in current.filters where f.contains(xid: xid) { skipTx = true }
                        // A transaction in a snapshot is skipped only for the streams that snapshot covered.
                        skipFor = skipTx ? Set(current.filters.filter { $0.contains(xid: xid) }.flatMap(\.streams)) : []
                    case .commit(_, _, let end, _):
                        inTx = false
                        current.lsn = end
                        position.receive(end)
                        current.filters.removeAll { $0.lsn <= end }
                        if confirmWhileReading && position.confirm(end) { try report() }
                        // Following, a state goes out soon after each change so the destination commits it promptly.
                        if sinceState >= Int64(config.batchFetchLimit) || (follow && sinceState > 0 && Date().timeIntervalSince(lastState) >= 0.2) {
                            try emitState(current)
                            sinceState = 0
                            lastState = Date()
                        }
                    case .relation(let oid, let ns, let name, _, let cols):
                        let stream = byID[StreamID(namespace: ns, name: name)]
                        if let s = stream { reportColumnChanges(s, previous: relations[oid]?.columns.map(\.name), cols) }
                        relations[oid] = try relation(stream, cols, conn: conn, types: &typeCache)
                    case .insert(let rel, let new):
                        if let r = relations[rel], let s = r.stream, let shape = r.shape, !skipFor.contains(s.id) {
                            try emit(shape, Change(kind: .insert, values: new, old: nil, keyOnly: false, lsn: walStart, time: commitTime))
                            sinceState += 1
                        }
                    case .update(let rel, let oldKind, let old, let new):
                        if let r = relations[rel], let s = r.stream, let shape = r.shape, !skipFor.contains(s.id) {
                            try emit(shape, Change(kind: .update, values: new, old: old, oldKeyOnly: oldKind == UInt8(ascii: "K"),
                                                   keyOnly: false, lsn: walStart, time: commitTime))
                            sinceState += 1
                        }
                    case .delete(let rel, let kind, let old):
                        if let r = relations[rel], let s = r.stream, let shape = r.shape, !skipFor.contains(s.id) {
                            try emit(shape, Change(kind: .delete, values: old, old: nil, keyOnly: kind == UInt8(ascii: "K"), lsn: walStart, time: commitTime))
                            sinceState += 1
                        }
                    case .truncate(_, let rels):
                        for rel in rels {
                            if let r = relations[rel], let s = r.stream, !skipFor.contains(s.id) {
                                log(.warning, "CDC: TRUNCATE of \(s.id) at \(walStart): every row of the stream was removed at the source")
                                try sink.truncate(s.id)
                                emittedSinceState = true
                                sinceState += 1
                            }
                        }
                    case .message(_, let at, let prefix, let content):
                        if prefix == Self.markerPrefix && String(decoding: content, as: UTF8.self) == markerID && !inTx {
                            // Everything committed before the marker has been decoded and emitted.
                            position.receive(at)
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
                    } else if sinceState == 0, let end = idleEnd, end > current.lsn, Date().timeIntervalSince(lastState) >= 1 {
                        // Idle published tables: move the state to the server's WAL end so the slot
                        // does not hold back WAL written to other tables (confirmed once committed).
                        current.lsn = end
                        current.filters.removeAll { $0.lsn <= end }
                        try emitState(current)
                        lastState = Date()
                        idleEnd = nil
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
        if let feedback = commitFeedback, let d = try feedback.waitUntilDurable(current.lsn), position.confirm(d) {
            try report()
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
        createdState = CDCState(lsn: point, filters: [], snapshotted: Set(all.map(\.id)))
        try emitState(createdState!)
    }

    /// Reads each stream in full inside the current transaction, as CDC records at `lsn`.
    private func snapshot(_ streams: [Stream], conn: PGConnection, lsn: LSN) throws {
        let when = (try conn.query("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')").string(0, 0)) ?? ""
        let reader = SnapshotReader(conn: conn, config: config, sink: sink, logger: logger)
        for s in streams {
            let n = try reader.copyAll(s.configured, s.discovered, stamp: RowShape.CDCStamp(lsn: lsn, time: when))
            log(.info, "CDC: initial snapshot of \(s.id): \(n) rows at \(lsn)")
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
    private var skipFor: Set<StreamID> = []
    /// The last state handed to the sink, and whether records followed it.
    private var lastEmitted = CDCState(lsn: LSN(0), filters: [], snapshotted: [])
    private var emittedSinceState = false
    /// The position the run resumed from (validated against the server's WAL).
    private var runStart = LSN(0)

    private func relation(_ stream: Stream?, _ cols: [PgOutputMessage.Column], conn: PGConnection, types: inout [UInt32: PostgresType]) throws -> Relation {
        guard let s = stream else { return Relation(stream: nil, columns: cols, shape: nil) }
        let known = Dictionary(s.discovered.columns.map { ($0.name, $0.type) }, uniquingKeysWith: { a, _ in a })
        let selected = s.configured.selectedColumns.map { Set($0) }
        // Columns the catalog did not list (added since discovery) are typed as discovery types them.
        let missing = Set(cols.filter { known[$0.name] == nil && types[$0.typeOID] == nil }.map(\.typeOID))
        if !missing.isEmpty {
            for (oid, t) in try Discovery.types(conn, oids: Array(missing)) { types[oid] = t }
        }
        let columns = cols.map { c -> RowShape.Column in
            let type = known[c.name] ?? types[c.typeOID]
            // A column the catalog did not list is emitted too.
            let emitted = selected == nil || selected!.contains(c.name) || known[c.name] == nil
            return RowShape.Column(name: c.name, encoding: type.map(ValueEncoding.init) ?? .string, type: type, emitted: emitted, isKey: c.isKey)
        }
        return Relation(stream: s, columns: cols, shape: RowShape(stream: s.id, columns: columns))
    }

    /// Logs columns added or dropped since the previous Relation message (or, for the first one,
    /// columns the catalog did not list).
    private func reportColumnChanges(_ s: Stream, previous: [String]?, _ cols: [PgOutputMessage.Column]) {
        let before = previous ?? s.discovered.columns.map(\.name)
        let known = Set(before)
        let now = Set(cols.map(\.name))
        let added = cols.map(\.name).filter { !known.contains($0) }
        let dropped = previous == nil ? [] : before.filter { !now.contains($0) }
        if !added.isEmpty { log(.info, "CDC: \(s.id) has new columns \(added.joined(separator: ", ")); they are included in its records from here on") }
        if !dropped.isEmpty { log(.info, "CDC: \(s.id) no longer has columns \(dropped.joined(separator: ", ")); its records from here on lack them") }
    }

    private func emit(_ shape: RowShape, _ change: Change) throws {
        emittedSinceState = true
        try sink.change(shape, change)
    }

    func emitState(_ state: CDCState) throws {
        try sink.checkpoint(.global(state))
        lastEmitted = state
        emittedSinceState = false
    }

    func log(_ level: Logger.Level, _ message: String) {
        logger.log(level: level, "\(message)")
        sink.log(level, message)
    }
}

/// The positions of one replication connection: what was received and what may be confirmed.
/// A position is confirmed only once it was received in this run (or is the validated start), so
/// the slot never moves past what the server wrote; confirmations only move forward.
struct SlotPosition: Equatable {
    /// The newest position this run received (commit ends, keepalive WAL ends, the marker).
    private(set) var received: LSN
    /// The newest position confirmed (flushed) to the slot.
    private(set) var confirmed: LSN

    init(start: LSN, confirmed: LSN) {
        received = start
        self.confirmed = min(confirmed, start)
    }

    mutating func receive(_ lsn: LSN) {
        if lsn > received { received = lsn }
    }

    /// Confirms `lsn`, capped at what was received; true when the confirmed position moved.
    mutating func confirm(_ lsn: LSN) -> Bool {
        let next = min(lsn, received)
        guard next > confirmed else { return false }
        confirmed = next
        return true
    }

    /// Refuses to resume from a position the server never wrote (a state from another server or
    /// an edited one), and a slot whose confirmed position is past the server's WAL.
    static func checkResume(state: LSN?, origin: String, slotConfirmed: LSN, serverWritten: LSN, slot: String) throws(CDCError) {
        if let state, state > serverWritten {
            throw .aheadOfServer(origin: origin, saved: state, written: serverWritten)
        }
        if slotConfirmed > serverWritten {
            throw .slotAheadOfServer(slot: slot, confirmed: slotConfirmed, written: serverWritten)
        }
    }
}

/// CDC failures that are not a single statement's error.
public enum CDCError: Error, UserFacingError, CustomStringConvertible {
    case aheadOfServer(origin: String, saved: LSN, written: LSN)
    case slotAheadOfServer(slot: String, confirmed: LSN, written: LSN)
    case serverLost(seconds: Int, last: String)

    public var description: String {
        switch self {
        case .aheadOfServer(let origin, let saved, let written):
            return "CDC: the position \(saved) in \(origin) is ahead of the server's WAL, which ends at \(written): the state belongs to another server or database, or was edited. Nothing was confirmed to the replication slot. Remove that state (or point it at the right server) to load the streams again"
        case .slotAheadOfServer(let slot, let confirmed, let written):
            return "CDC: replication slot \"\(slot)\" is confirmed up to \(confirmed), past the server's WAL end \(written), so it would skip every change until then. Drop and recreate it: SELECT pg_drop_replication_slot('\(slot)'); then sync or read without a saved state"
        case .serverLost(let seconds, let last):
            return "CDC: the server could not be reached again within \(seconds) s (\(last)); everything applied was committed, and the next run resumes from there"
        }
    }
    public var userMessage: String { description }
    public var failureType: String {
        switch self {
        case .aheadOfServer, .slotAheadOfServer: return "config_error"
        case .serverLost: return "transient_error"
        }
    }
}
