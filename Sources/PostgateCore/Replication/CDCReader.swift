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
    static let watermarkPrefix = "postgate-chunk"

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

        // 1. Initial loads. Tables with a primary key are read in chunks between changes (see
        // `readChunks`); the others in one snapshot whose visibility filters their changes.
        let need = all.filter { !current.snapshotted.contains($0.id) && current.backfills[$0.id] == nil }
        for s in need where !s.discovered.primaryKey.isEmpty {
            current.backfills[s.id] = StreamState.Load(nextPage: 0, relationFilenode: 0, incremental: nil, xminLowerBound: nil)
        }
        let whole = need.filter { $0.discovered.primaryKey.isEmpty }
        if !whole.isEmpty {
            for s in whole {
                log(.info, "CDC: \(s.id) has no primary key, so its initial load is read in one snapshot (one transaction) rather than in chunks between changes")
            }
            try conn.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            let snap = try conn.query("SELECT pg_current_snapshot()::text AS s, pg_current_wal_insert_lsn()::text AS l")
            guard let text = snap.string(0, "s"), let snapLSN = snap.string(0, "l").flatMap(LSN.init), let filter = Self.snapshotFilter(text, lsn: snapLSN, streams: whole.map(\.id)) else {
                throw SnapshotReader.ReadError(message: "CDC: could not read the snapshot position")
            }
            try snapshot(whole, conn: conn, lsn: snapLSN)
            try conn.query("COMMIT")
            current.filters.append(filter)
            current.snapshotted.formUnion(whole.map(\.id))
            try emitState(current)
        }

        // 2. Changes from the slot, up to a marker written now (or, following, until asked to stop).
        lastEmitted = current
        runStart = current.lsn
        try streamReconnecting(all, conn: conn, state: &current)
        for s in all { try sink.status(s.id, current.backfills[s.id] == nil ? .complete : .incomplete) }
        if !current.backfills.isEmpty {
            throw CDCError.initialLoadTimeout(hours: cdc.initialLoadTimeoutHours, streams: current.backfills.keys.sorted().map(\.description))
        }
    }

    /// A snapshot's visibility (`pg_current_snapshot()` text) as a filter for `streams`.
    static func snapshotFilter(_ text: String, lsn: LSN, streams: [StreamID]) -> CDCState.SnapshotFilter? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 3, let xmin = UInt64(parts[0]), let xmax = UInt64(parts[1]) else { return nil }
        let xip = parts[2].split(separator: ",").compactMap { UInt64($0) }
        return CDCState.SnapshotFilter(xmin: xmin, xmax: xmax, inProgress: xip, lsn: lsn, streams: streams)
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
        var markerSent = false
        /// Ends a run that does not follow: everything committed before the marker is read.
        func sendMarker() throws {
            guard !follow, !markerSent else { return }
            _ = try conn.query("SELECT pg_logical_emit_message(false, $1, $2)", [Self.markerPrefix, markerID])
            markerSent = true
        }
        var fills = try planBackfills(streams, state: &current, conn: conn)
        /// The watermark written for the next chunks, while it is on its way through the slot.
        var watermark: String?
        /// Transactions committed since the last chunks were read: their snapshots must see them.
        var committedXids: [UInt32] = []
        var txXid: UInt32 = 0
        var timedOut = false
        /// Asks for the next chunks: they are read once the watermark comes back through the
        /// slot, after every change committed before it.
        func scheduleChunks() throws {
            guard watermark == nil, !fills.isEmpty, !timedOut else { return }
            if Date() >= loadDeadline {
                timedOut = true
                log(.warning, "CDC: the initial load has run for initial_load_timeout_hours (\(cdc.initialLoadTimeoutHours)); it stops here so the slot is drained, and the next run resumes it")
                try sendMarker()
                return
            }
            let id = UUID().uuidString
            _ = try conn.query("SELECT pg_logical_emit_message(false, $1, $2)", [Self.watermarkPrefix, id])
            watermark = id
        }
        if fills.isEmpty { try sendMarker() } else { try scheduleChunks() }
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
                        txXid = xid
                        idleEnd = nil
                        commitTime = ReplicationFrame.isoTimestamp(time)
                        skipTx = false
                        for f in current.filters where f.contains(xid: xid) { skipTx = true }
                        // A transaction in a snapshot is skipped only for the streams that snapshot covered.
                        skipFor = skipTx ? Set(current.filters.filter { $0.contains(xid: xid) }.flatMap(\.streams)) : []
                    case .commit(_, _, let end, _):
                        inTx = false
                        if !fills.isEmpty { committedXids.append(txXid) }
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
                        if prefix == Self.watermarkPrefix, let w = watermark, !inTx, String(decoding: content, as: UTF8.self) == w {
                            // Every change committed before the watermark was emitted: the chunks go out here.
                            position.receive(at)
                            if current.lsn < at { current.lsn = at }
                            current.filters.removeAll { $0.lsn <= at }
                            try readChunks(&fills, state: &current, committed: committedXids, conn: conn)
                            committedXids.removeAll(keepingCapacity: true)
                            sinceState = 0
                            lastState = Date()
                            watermark = nil
                            if fills.isEmpty { try sendMarker() } else { try scheduleChunks() }
                        } else if prefix == Self.markerPrefix && String(decoding: content, as: UTF8.self) == markerID && !inTx {
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
                if timedOut && !inTx { break }
            } else if !got && fills.isEmpty && Date().timeIntervalSince(lastChange) > idleLimit {
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

    /// Creates the slot on a replication connection. Tables without a primary key are read in
    /// its exported snapshot, so their changes start exactly where that snapshot ends; the
    /// others are loaded in chunks from the slot's start.
    private func createSlotAndSnapshot(_ all: [Stream], conn: PGConnection) throws {
        let whole = all.filter { $0.discovered.primaryKey.isEmpty }
        let repl = try factory.connect(replication: true)
        let r = try repl.query("CREATE_REPLICATION_SLOT \(PGConnection.quoteIdentifier(cdc.replicationSlot)) LOGICAL pgoutput (SNAPSHOT '\(whole.isEmpty ? "nothing" : "export")')")
        guard let point = r.string(0, "consistent_point").flatMap(LSN.init) else {
            throw SnapshotReader.ReadError(message: "CDC: creating the replication slot returned no position")
        }
        log(.info, "CDC: created replication slot \(cdc.replicationSlot) at \(point)")
        var state = CDCState(lsn: point, filters: [], snapshotted: Set(whole.map(\.id)))
        if !whole.isEmpty {
            guard let name = r.string(0, "snapshot_name") else {
                throw SnapshotReader.ReadError(message: "CDC: creating the replication slot returned no snapshot")
            }
            try conn.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try conn.query("SET TRANSACTION SNAPSHOT \(PGConnection.quoteLiteral(name))")
            try snapshot(whole, conn: conn, lsn: point)
            try conn.query("COMMIT")
        }
        for s in all where !s.discovered.primaryKey.isEmpty {
            state.backfills[s.id] = StreamState.Load(nextPage: 0, relationFilenode: 0, incremental: nil, xminLowerBound: nil)
        }
        createdState = state
        try emitState(state)
    }

    /// Reads each stream in full inside the current transaction, as CDC records at `lsn`.
    private func snapshot(_ streams: [Stream], conn: PGConnection, lsn: LSN) throws {
        let when = try Self.now(conn)
        let reader = SnapshotReader(conn: conn, config: config, sink: sink, logger: logger)
        for s in streams {
            let plan = try reader.makePlan(s.configured, s.discovered, tracking: nil, stamp: RowShape.CDCStamp(lsn: lsn, time: when))
            var n: Int64 = 0
            try conn.copyOut("COPY (SELECT \(plan.selectList) FROM \(reader.qualified(s.discovered))) TO STDOUT") { row in
                try sink.row(plan.shape, copyText: row)
                n += 1
            }
            log(.info, "CDC: initial snapshot of \(s.id): \(n) rows at \(lsn)")
        }
    }

    static func now(_ conn: PGConnection) throws -> String {
        (try conn.query("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')").string(0, 0)) ?? ""
    }

    // MARK: chunked initial loads

    /// One stream's initial load, read in page-range chunks between its changes.
    final class Backfill {
        let stream: Stream
        let plan: SnapshotReader.Plan
        let filenode: UInt64
        let leafPlanned: Bool
        let ownOID: UInt32
        var progress: [UInt32: PageProgress]
        /// Chunks not read yet, in page order.
        var pending: [(SnapshotReader.ScanRelation, Range<UInt32>)]
        var rows: Int64 = 0

        init(stream: Stream, plan: SnapshotReader.Plan, filenode: UInt64, leafPlanned: Bool, progress: [UInt32: PageProgress],
             pending: [(SnapshotReader.ScanRelation, Range<UInt32>)]) {
            self.stream = stream
            self.plan = plan
            self.filenode = filenode
            self.leafPlanned = leafPlanned
            ownOID = stream.discovered.oid
            self.progress = progress
            self.pending = pending
        }

        var load: StreamState.Load {
            StreamState.Load(progress: leafPlanned ? PageProgress() : progress[ownOID] ?? PageProgress(), partitions: leafPlanned ? progress : nil,
                             relationFilenode: filenode, incremental: nil, xminLowerBound: nil, snapshotXmin: nil)
        }
    }

    /// One chunk for one connection.
    struct Chunk {
        let fill: Backfill
        let relation: SnapshotReader.ScanRelation
        let range: Range<UInt32>
        let shape: RowShape
    }

    /// When the initial load stops for this run (`initial_load_timeout_hours` after its start).
    private lazy var loadDeadline = Date().addingTimeInterval(cdc.initialLoadTimeoutHours * 3600)
    /// Connections reading chunks; the first is the reader's own.
    private var chunkConnections: [PGConnection] = []

    /// Plans the chunks of every stream whose initial load is in progress, from its saved progress.
    private func planBackfills(_ streams: [Stream], state: inout CDCState, conn: PGConnection) throws -> [Backfill] {
        _ = loadDeadline
        let reader = SnapshotReader(conn: conn, config: config, sink: sink, logger: logger)
        var fills: [Backfill] = []
        for s in streams {
            guard let saved = state.backfills[s.id] else { continue }
            let info = try reader.relationInfo(s.discovered)
            let (relations, leafPlanned) = try reader.scanRelations(s.discovered, info: info)
            var progress: [UInt32: PageProgress] = [:]
            if !saved.isFresh {
                let kept = saved.partitions ?? [s.discovered.oid: saved.progress]
                if saved.relationFilenode == info.filenode && (saved.partitions != nil) == leafPlanned && Set(kept.keys).isSubset(of: relations.map(\.oid)) {
                    progress = kept
                } else {
                    // Rows already loaded are keyed, so reading them again only rewrites them.
                    log(.warning, "CDC: \(s.id) was rewritten or repartitioned since its initial load began (e.g. by VACUUM FULL); the load starts over")
                }
            }
            let pending = SnapshotReader.pageItems(relations, progress: progress, chunkPages: reader.chunkPages(info))
            let fill = Backfill(stream: s, plan: try reader.makePlan(s.configured, s.discovered, tracking: nil), filenode: info.filenode,
                                leafPlanned: leafPlanned, progress: progress, pending: pending)
            state.backfills[s.id] = fill.load
            fills.append(fill)
            log(.info, "CDC: initial load of \(s.id) in \(pending.count) chunks of about \(config.batchFetchLimit) rows, read between its changes")
        }
        return fills
    }

    /// Reads the next chunks (one per connection) and hands them out at the watermark just
    /// received: every change committed before it went out already, and every change after it
    /// follows the chunks. Each chunk is read in a transaction of its own whose snapshot sees
    /// every transaction committed before the watermark; a change between the watermark and
    /// that snapshot is then in the chunk and follows it too, which leaves the same row (the
    /// stream has a primary key). The state after the chunks records them, so a kill repeats
    /// at most the chunks of this watermark.
    private func readChunks(_ fills: inout [Backfill], state current: inout CDCState, committed: [UInt32], conn: PGConnection) throws {
        let width = max(1, config.maxDBConnections)
        if chunkConnections.isEmpty { chunkConnections = [conn] }
        while chunkConnections.count < width {
            do {
                chunkConnections.append(try factory.connect())
            } catch {
                log(.warning, "CDC: could not open chunk reading connection \(chunkConnections.count + 1) of \(width) (\(error)); reading with \(chunkConnections.count) (setting max_db_connections)")
                break
            }
        }
        let lsn = current.lsn
        let stamp = RowShape.CDCStamp(lsn: lsn, time: try Self.now(conn))
        var chunks: [Chunk] = []
        var shapes: [ObjectIdentifier: RowShape] = [:]
        for fill in fills {
            while chunks.count < chunkConnections.count, !fill.pending.isEmpty {
                let (rel, range) = fill.pending.removeFirst()
                let shape = shapes[ObjectIdentifier(fill)] ?? RowShape(stream: fill.stream.id, columns: fill.plan.shape.columns, cdcStamp: stamp)
                shapes[ObjectIdentifier(fill)] = shape
                chunks.append(Chunk(fill: fill, relation: rel, range: range, shape: shape))
            }
        }
        let reader = SnapshotReader(conn: conn, config: config, sink: sink, logger: logger)
        let runner = ParallelItems(items: chunks, sink: sink)
        let shared = UncheckedBox(reader)
        let connections = Array(chunkConnections.prefix(chunks.count))
        try runner.run(connections: connections) { chunk, worker in
            worker.handed = { chunk.fill.rows += $0 }
            try Self.readChunk(chunk, worker, committed: committed, sql: shared.value.pageSQL(chunk.fill.plan, chunk.relation, chunk.range, xminLowerBound: nil))
            try worker.locked { chunk.fill.progress[chunk.relation.oid, default: PageProgress()].add(chunk.range) }
        }
        for fill in fills {
            if fill.pending.isEmpty {
                current.backfills[fill.stream.id] = nil
                current.snapshotted.insert(fill.stream.id)
                log(.info, "CDC: initial load of \(fill.stream.id) complete: \(fill.rows) rows")
            } else {
                current.backfills[fill.stream.id] = fill.load
            }
        }
        fills.removeAll { $0.pending.isEmpty }
        try emitState(current)
    }

    /// Reads one chunk in a short transaction whose snapshot sees every transaction in `committed`
    /// (those whose commits came through the slot before the watermark).
    private static func readChunk(_ chunk: Chunk, _ worker: ParallelItems<Chunk>.Worker, committed: [UInt32], sql: String) throws {
        let conn = worker.conn
        var attempts = 0
        while true {
            try conn.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            let text = try conn.query("SELECT pg_current_snapshot()::text AS s").string(0, "s") ?? ""
            guard let filter = snapshotFilter(text, lsn: LSN(0), streams: []) else {
                throw SnapshotReader.ReadError(message: "CDC: unexpected snapshot text \(text)")
            }
            if committed.allSatisfy(filter.contains(xid:)) { break }
            // A commit already in the WAL is not visible yet (it is being completed): try again.
            try conn.query("ROLLBACK")
            attempts += 1
            guard attempts < 2000 else {
                throw SnapshotReader.ReadError(message: "CDC: a committed transaction did not become visible to a new snapshot within 10 s")
            }
            Thread.sleep(forTimeInterval: 0.005)
        }
        do {
            try conn.copyOut(sql) { row in try worker.row(chunk.shape, row) }
            try conn.query("COMMIT")
        } catch {
            _ = try? conn.query("ROLLBACK")
            throw error
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
    case initialLoadTimeout(hours: Double, streams: [String])

    public var description: String {
        switch self {
        case .aheadOfServer(let origin, let saved, let written):
            return "CDC: the position \(saved) in \(origin) is ahead of the server's WAL, which ends at \(written): the state belongs to another server or database, or was edited. Nothing was confirmed to the replication slot. Remove that state (or point it at the right server) to load the streams again"
        case .slotAheadOfServer(let slot, let confirmed, let written):
            return "CDC: replication slot \"\(slot)\" is confirmed up to \(confirmed), past the server's WAL end \(written), so it would skip every change until then. Drop and recreate it: SELECT pg_drop_replication_slot('\(slot)'); then sync or read without a saved state"
        case .serverLost(let seconds, let last):
            return "CDC: the server could not be reached again within \(seconds) s (\(last)); everything applied was committed, and the next run resumes from there"
        case .initialLoadTimeout(let hours, let streams):
            return "CDC: the initial load of \(streams.joined(separator: ", ")) is not finished after initial_load_timeout_hours (\(hours)); the changes so far were read and the state records how far the load got. Run again to continue it"
        }
    }
    public var userMessage: String { description }
    public var failureType: String {
        switch self {
        case .aheadOfServer, .slotAheadOfServer: return "config_error"
        case .serverLost, .initialLoadTimeout: return "transient_error"
        }
    }
}
