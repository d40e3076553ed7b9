import Foundation
import Logging

/// What a destination reports back to the CDC reader about committed positions.
public protocol CDCCommitFeedback: AnyObject, Sendable {
    /// The newest LSN the destination has durably committed, if any.
    func durableLSN() -> LSN?
    /// Blocks until the destination has committed a state at `lsn` or later (returning the
    /// committed LSN), or has stopped (throwing why).
    func waitUntilDurable(_ lsn: LSN) throws -> LSN?
}

/// Reads configured streams by change data capture: the changes from the replication slot
/// (pgoutput), with each new stream's initial load read in key-range chunks between them (or, for
/// tables without a usable key, one snapshot whose visibility filters their changes), up to the
/// WAL position current at the start of the run (or, once the loads are done, later). Records carry
/// `_ab_cdc_lsn`, `_ab_cdc_updated_at` and `_ab_cdc_deleted_at`; the run ends with a GLOBAL state
/// whose LSN a later run resumes from (and confirms to the slot).
public final class CDCReader {
    let factory: ConnectionFactory
    let config: PostgateConfig
    let cdc: CDCSettings
    let sink: ReadSink
    let logger: Logger
    static let markerPrefix = "postgate-marker"
    static let watermarkPrefix = "postgate-chunk"
    static let heartbeatPrefix = "postgate-heartbeat"
    /// Seconds between lag reports (`POSTGATE_LAG_REPORT_SECONDS`, default 30).
    static var lagReportInterval: Double {
        ProcessInfo.processInfo.environment["POSTGATE_LAG_REPORT_SECONDS"].flatMap(Double.init).map { max(0.2, $0) } ?? 30
    }
    /// Seconds between looks at what the publication holds (`POSTGATE_PUBLICATION_CHECK_SECONDS`, default 10).
    static var membershipInterval: Double {
        ProcessInfo.processInfo.environment["POSTGATE_PUBLICATION_CHECK_SECONDS"].flatMap(Double.init).map { max(0.2, $0) } ?? 10
    }
    /// Seconds between heartbeats while following (`POSTGATE_HEARTBEAT_SECONDS`, default 10).
    static var heartbeatInterval: Double {
        ProcessInfo.processInfo.environment["POSTGATE_HEARTBEAT_SECONDS"].flatMap(Double.init).map { max(0.5, $0) } ?? 10
    }

    struct Stream {
        var configured: ConfiguredStream
        var discovered: DiscoveredStream
        var id: StreamID { discovered.id }
        /// The primary key's columns, and their order when the initial load can be read in key-range chunks.
        let keyColumns: [DiscoveredStream.Column]
        let keyOrder: KeyOrder?

        init(configured: ConfiguredStream, discovered: DiscoveredStream) {
            self.configured = configured
            self.discovered = discovered
            (keyColumns, keyOrder) = Self.key(discovered)
        }

        static func key(_ discovered: DiscoveredStream) -> ([DiscoveredStream.Column], KeyOrder?) {
            let cols = discovered.primaryKey.compactMap { k in discovered.columns.first { $0.name == k } }
            return (cols, cols.count == discovered.primaryKey.count ? KeyOrder(cols.map(\.type)) : nil)
        }
    }

    /// What a Relation message told us, bound to a configured stream if there is one.
    struct Relation {
        var stream: Stream?
        var columns: [PgOutputMessage.Column]
        /// The row shape of the stream's changes (nil for relations no stream reads).
        var shape: RowShape?
        /// Where the primary key's columns are in the tuples (nil when one is missing).
        var keyIndexes: [Int]?
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
        for s in all { try sink.status(s.id, .running) }
        let slotName = cdc.replicationSlot
        try ensureReplicaIdentity(all, conn: conn)
        let published = try conn.query("SELECT schemaname, tablename FROM pg_catalog.pg_publication_tables WHERE pubname = $1", [cdc.publication])
        let inPublication = Set((0..<published.rowCount).compactMap { i in
            published.string(i, "schemaname").flatMap { ns in published.string(i, "tablename").map { StreamID(namespace: ns, name: $0) } }
        })
        for s in all where s.discovered.kind == .table && !inPublication.contains(s.id) {
            unpublished.insert(s.id)
            log(.warning, "CDC: table \(s.id) is not in publication \(cdc.publication), so none of its changes reach the slot: it is loaded, then stays as it was until it joins the publication (then it is read again). Add it: ALTER PUBLICATION \(PGConnection.quoteIdentifier(cdc.publication)) ADD TABLE \(PGConnection.quoteIdentifier(s.discovered.schema)).\(PGConnection.quoteIdentifier(s.discovered.name));")
        }
        let slotQuery = """
            SELECT confirmed_flush_lsn::text AS c, plugin, database, wal_status,
                   (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text AS w
            FROM pg_catalog.pg_replication_slots WHERE slot_name = $1
            """
        var slot = try conn.query(slotQuery, [slotName])
        var recreated = false
        // Each stream's columns as the catalog has them now.
        publishedColumns = conn.serverVersion >= 150_000 ? cdc.publication : nil
        let catalog = try Self.catalogColumns(all.map(\.discovered.oid), publication: publishedColumns, conn: conn)
        /// A stream loaded again is replaced chunk by chunk, each chunk's key range in the
        /// destination (its rows stay in sight meanwhile), where the destination can and the
        /// table's columns are those the saved state gives it (so its key columns are there);
        /// otherwise it is emptied and loaded again.
        let savedState = state
        func replacing(_ s: Stream) -> Bool {
            guard s.keyOrder != nil, sink.replacesKeyRanges, let saved = savedState?.schemas[s.id] else { return false }
            return Self.signature(saved.columns) == Self.signature(catalog[s.discovered.oid] ?? [])
        }
        let found: SlotRecovery.Slot = slot.rowCount == 0 ? .missing : slot.string(0, "wal_status") == "lost" ? .lost : .usable
        switch SlotRecovery.decide(slot: found, name: slotName, saved: state?.lsn, behaviour: cdc.invalidCursorBehaviour, createSlot: cdc.createSlot) {
        case .use:
            break
        case .create:
            // The slot's exported snapshot is exactly its start: no filter is needed.
            try createSlotAndSnapshot(all, conn: conn)
            slot = try conn.query(slotQuery, [slotName])
        case .recreate(let drop, let why):
            log(.warning, "CDC: \(why); recreating the slot and loading every CDC stream again (invalid_cdc_cursor_position_behavior is \"Re-sync data\", create_slot is on)")
            if drop { try conn.query("SELECT pg_drop_replication_slot($1)", [slotName]) }
            // What the destination holds may include rows deleted meanwhile: it is replaced.
            for s in all where !replacing(s) { try sink.truncate(s.id) }
            try createSlotAndSnapshot(all, conn: conn, reload: Set(all.filter(replacing).map(\.id)))
            slot = try conn.query(slotQuery, [slotName])
            recreated = true
        case .fail(let error):
            throw error
        }
        guard slot.rowCount == 1 else { throw CDCError.slotMissing(slot: slotName) }
        guard slot.string(0, "plugin") == "pgoutput" else {
            throw SnapshotReader.ReadError(message: "replication slot \"\(slotName)\" uses plugin \(slot.string(0, "plugin") ?? "?"); Postgate needs pgoutput")
        }
        let confirmed = slot.string(0, "c").flatMap(LSN.init) ?? LSN(0)
        guard let written = slot.string(0, "w").flatMap(LSN.init) else {
            throw SnapshotReader.ReadError(message: "CDC: could not read the server's WAL position")
        }
        // A recreated slot is read from its own start with a fresh state; the saved one is void.
        let state = recreated ? nil : state
        try SlotPosition.checkResume(state: state?.lsn, origin: stateOrigin, slotConfirmed: confirmed, serverWritten: written, slot: slotName)
        var current = state ?? createdState ?? CDCState(lsn: confirmed, filters: [], snapshotted: [])
        if let s = state, s.lsn < confirmed {
            let why = "the saved position \(s.lsn) is behind the slot's confirmed position \(confirmed): the changes in between were released by the slot and cannot be read again"
            switch cdc.invalidCursorBehaviour {
            case .failSync:
                throw SnapshotReader.ReadError(message: "CDC: \(why). Rerun without --state to load the streams again, or set replication_method.invalid_cdc_cursor_position_behavior to \"Re-sync data\" to do that automatically.")
            case .resync:
                log(.warning, "CDC: \(why); loading every stream again (invalid_cdc_cursor_position_behavior is \"Re-sync data\")")
                for s in all where !replacing(s) { try sink.truncate(s.id) }
                current = CDCState(lsn: confirmed, filters: [], snapshotted: [])
                for s in all where replacing(s) { current.backfills[s.id] = CDCState.Backfill(loadedThrough: nil, reload: true) }
            }
        }
        // A position before the slot's start is served from the slot's start.
        if current.lsn < confirmed { current.lsn = confirmed }
        // Each stream's columns as of the state (saved with it), or as the catalog has them now.
        for s in all {
            let cols = catalog[s.discovered.oid] ?? []
            discoveredTypes[s.id] = Dictionary(cols.map { ($0.name, $0.typeOID) }, uniquingKeysWith: { a, _ in a })
            if current.schemas[s.id] == nil { current.schemas[s.id] = SchemaTracker(columns: cols) }
        }

        // 1. Initial loads. Tables with a primary key are read in chunks between changes (see
        // `readChunks`); the others in one snapshot whose visibility filters their changes.
        // A stream no longer in the catalog loses its progress: added again, it is loaded again
        // (the changes made while it was out were never read).
        let selected = Set(all.map(\.id))
        for id in current.backfills.keys where !selected.contains(id) { current.backfills[id] = nil }
        current.chunkFilters.removeAll { !selected.contains($0.stream) }
        current.snapshotted.formIntersection(selected)
        for id in current.schemas.keys where !selected.contains(id) { current.schemas[id] = nil }
        for id in current.partitions.keys where !selected.contains(id) { current.partitions[id] = nil }
        for s in all { live[s.id] = s }
        for id in current.tables.keys where !selected.contains(id) { current.tables[id] = nil }
        for s in all {
            defer { current.tables[s.id] = s.discovered.oid }
            guard let was = current.tables[s.id], was != s.discovered.oid,
                  current.snapshotted.contains(s.id) || current.backfills[s.id] != nil else { continue }
            try replaceTable(s, was: was, catalog: catalog[s.discovered.oid] ?? [], state: &current, conn: conn)
        }
        // Partitions attached, detached or dropped since the state: rows joined or left those
        // streams without changes, so they are read again.
        let parted = all.filter { $0.discovered.kind == .partitionedTable }
        let leaves = try Self.leafPartitions(parted.map(\.discovered.oid), conn: conn)
        for s in parted {
            let now = leaves[s.discovered.oid] ?? [:]
            if let saved = current.partitions[s.id], let moved = Self.partitionsMoved(saved: saved, now: now),
               current.snapshotted.contains(s.id) || current.backfills[s.id] != nil {
                if s.keyOrder == nil {
                    log(.warning, "CDC: \(s.id) must be read again (\(moved)); without an integer or uuid primary key it cannot be read again between its changes. Sync it again from scratch (remove its state) to be sure")
                } else {
                    log(.info, "CDC: \(s.id) is read again (\(moved), so rows joined or left it without changes)")
                    current.backfills[s.id] = CDCState.Backfill(loadedThrough: nil, reload: true)
                    current.chunkFilters.removeAll { $0.stream == s.id }
                    current.snapshotted.remove(s.id)
                }
            }
            current.partitions[s.id] = now.keys.sorted()
        }
        for s in all {
            guard let fill = current.backfills[s.id] else { continue }
            if let through = fill.loadedThrough, !(s.keyOrder?.valid(through) ?? false) {
                // The key changed since (or the state was edited): the rows already loaded are
                // keyed, so loading the stream again from its start only rewrites them.
                log(.warning, "CDC: the saved progress of \(s.id)'s initial load does not fit its primary key (\(s.discovered.primaryKey.joined(separator: ", "))); its load starts over")
                current.backfills[s.id] = CDCState.Backfill(loadedThrough: nil, reload: fill.reload)
                current.chunkFilters.removeAll { $0.stream == s.id }
            }
            if s.keyOrder == nil {
                current.backfills[s.id] = nil
                // A reload that can no longer go by key range empties the stream and reads it whole.
                if fill.reload { try sink.truncate(s.id) }
            }
        }
        let need = all.filter { !current.snapshotted.contains($0.id) && current.backfills[$0.id] == nil }
        for s in need where s.keyOrder != nil { current.backfills[s.id] = CDCState.Backfill(loadedThrough: nil) }
        let whole = need.filter { $0.keyOrder == nil }
        if !whole.isEmpty {
            for s in whole { logWhole(s) }
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
        do {
            try streamReconnecting(all, conn: conn, state: &current)
        } catch let e as PostgresError where Self.slotInvalidated(sqlState: e.sqlState, walStatus: "lost") {
            // Told by the slot's state, not by the message's words (servers speak other languages).
            let status = (try? factory.connect()).flatMap { c in
                try? c.query("SELECT wal_status FROM pg_catalog.pg_replication_slots WHERE slot_name = $1", [slotName]).string(0, "wal_status")
            }
            if Self.slotInvalidated(sqlState: e.sqlState, walStatus: status) {
                throw CDCError.slotInvalidated(slot: slotName, detail: e.detail ?? e.message)
            }
            throw e
        } catch let e as PostgresError where e.sqlState == "42704" {
            // The publication is there now, yet the slot did not find it: the slot decodes each
            // change with the catalog as of that change, from before the publication was made.
            let exists = (try? factory.connect()).flatMap { c in
                try? c.query("""
                    SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1
                      AND EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $2)
                    """, [cdc.publication, slotName]).rowCount
            } == 1
            if exists { throw CDCError.publicationAfterSlot(publication: cdc.publication, slot: slotName) }
            throw e
        }
        for s in all + adopted { try sink.status(s.id, current.backfills[s.id] == nil ? .complete : .incomplete) }
        if !current.backfills.isEmpty {
            throw CDCError.initialLoadTimeout(hours: cdc.initialLoadTimeoutHours, streams: current.backfills.keys.sorted().map(\.description))
        }
    }

    /// Writes a non-transactional logical message and has the WAL flushed past it: the slot sends
    /// only flushed WAL, and PostgreSQL 15 does not flush such a message by itself (it would wait
    /// for the WAL writer, up to `wal_writer_delay`). Its transaction takes an xid and commits with
    /// a local flush whatever the server's `synchronous_commit` (`local`: without waiting for
    /// synchronous standbys); it has no changes, so the slot sends nothing for it.
    static func writeMessage(_ conn: PGConnection, prefix: String, id: String) throws {
        try conn.query("BEGIN; SET LOCAL synchronous_commit = local; SELECT pg_logical_emit_message(false, \(PGConnection.quoteLiteral(prefix)), \(PGConnection.quoteLiteral(id))), pg_current_xact_id(); COMMIT")
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
                try stream(streams + adopted, conn: conn, state: &current) {
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
                    dropped = droppedAtState
                    reloads = []
                    rereadWhy = [:]
                    // Tables adopted after that state are adopted again when seen again (the
                    // destination rolled their tables back too).
                    let kept = current
                    adopted.removeAll { kept.schemas[$0.id] == nil }
                    declined = []
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

    /// The server's WAL end (what it wrote, or on a standby what it replayed) and its clock.
    static let serverEndSQL = "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text AS w, extract(epoch FROM clock_timestamp())::float8::text AS t"

    /// True when a streaming failure means the server invalidated the slot: `pg_replication_slots`
    /// says its WAL is lost, and the failure is the one that brings (the walsender using the slot
    /// is terminated, 57P01; streaming from it again is refused, 55000).
    static func slotInvalidated(sqlState: String?, walStatus: String?) -> Bool {
        (sqlState == "55000" || sqlState == "57P01") && walStatus == "lost"
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
        var byID = Dictionary(streams.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        var byOID = Dictionary(streams.map { ($0.discovered.oid, $0) }, uniquingKeysWith: { a, _ in a })
        // Chunk connections of an earlier attempt may have died with the server.
        chunkConnections = []
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
            try Self.writeMessage(conn, prefix: Self.markerPrefix, id: markerID)
            markerSent = true
        }
        var fills = streams.filter { current.backfills[$0.id] != nil }
        /// The watermark written for the next chunks, while it is on its way through the slot.
        var watermark: String?
        /// Transactions committed since the last chunks were read: their snapshots must see them.
        var committedXids: [UInt32] = []
        var txXid: UInt32 = 0
        var sinceState: Int64 = 0
        /// Emits a change, or what of it goes out while its stream's initial load is in progress.
        func emitChange(_ s: Stream, _ r: Relation, _ shape: RowShape, _ change: Change) throws {
            var change = change
            if Self.guarded(s, current) {
                guard let kept = filtered(s, r, change, xid: txXid, state: current) else { return }
                change = kept
            }
            try emit(shape, change)
            sinceState += 1
        }
        var timedOut = false
        var inTx = false
        /// Asks for the next chunks: they are read once the watermark comes back through the
        /// slot, after every change committed before it.
        func scheduleChunks() throws {
            guard watermark == nil, !fills.isEmpty, !timedOut else { return }
            // Every stream still loading gets a chunk in each run before the timeout stops it, so
            // runs that keep timing out still bring every stream forward (none waits for ever
            // behind the ones that go first).
            if Date() >= loadDeadline, fills.allSatisfy({ loadedRows[$0.id] != nil }) {
                timedOut = true
                log(.warning, "CDC: the initial load has run for initial_load_timeout_hours (\(cdc.initialLoadTimeoutHours)); it stops here so the slot is drained, and the next run resumes it")
                try sendMarker()
                return
            }
            let id = UUID().uuidString
            try Self.writeMessage(conn, prefix: Self.watermarkPrefix, id: id)
            watermark = id
        }
        /// Reads a stream again between its changes (its table was rewritten): the destination's
        /// rows are overwritten chunk by chunk, and deletes of keys not read yet go out meanwhile.
        func reload(_ s: Stream) throws {
            let why = rereadWhy[s.id] ?? "its table was rewritten at the source, so rows already synced may hold other values"
            rereadWhy[s.id] = nil
            guard s.keyOrder != nil else {
                log(.warning, "CDC: \(s.id) must be read again (\(why)); without an integer or uuid primary key it cannot be read again between its changes. Sync it again from scratch (remove its state) to be sure")
                return
            }
            log(.info, "CDC: \(s.id) is read again (\(why))")
            current.backfills[s.id] = CDCState.Backfill(loadedThrough: nil, reload: true)
            current.chunkFilters.removeAll { $0.stream == s.id }
            current.snapshotted.remove(s.id)
            if !fills.contains(where: { $0.id == s.id }) { fills.append(s) }
            try scheduleChunks()
        }
        /// Makes a stream of table `oid` (or of the partitioned table it is a partition of), which
        /// joined the publication, when the sink takes it: it is loaded in chunks from here on
        /// and its changes followed. `relation`: the columns a Relation message just gave it.
        func adopt(_ oid: UInt32, relation: [PgOutputMessage.Column]?) throws -> Stream? {
            guard sink.adoptsTables, !declined.contains(oid) else { return nil }
            declined.insert(oid)
            let r = try conn.query("""
                SELECT c.oid::int8 AS oid, n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE c.oid = coalesce(pg_catalog.pg_partition_root($1::oid), $1::oid)
                """, [String(oid)])
            guard r.rowCount == 1, let root = r.int(0, "oid").map(UInt32.init), let ns = r.string(0, "nspname") else { return nil }
            if let s = byOID[root] { return s }
            guard let ds = try Discovery.discover(conn, schemas: [ns], publication: cdc.publication).first(where: { $0.oid == root }),
                  ds.kind == .table || ds.kind == .partitionedTable else { return nil }
            // Another table under a stream's name (its table dropped, or renamed away): the next
            // run loads it from the start (with DDL capture the stream's state went with the drop;
            // without, the next run sees the table is another and replaces its rows).
            if dropped.contains(ds.id) || byID[ds.id] != nil {
                log(.info, "CDC: table \(ds.id) was created under the name of a stream whose table was dropped or renamed; it is read from the next run")
                return nil
            }
            guard Stream.key(ds).1 != nil else {
                log(.info, "CDC: table \(ds.id) joined publication \(cdc.publication); without an integer or uuid primary key it cannot be loaded between changes, so it is synced from the next run")
                return nil
            }
            guard let configured = try sink.adopt(ds) else {
                log(.info, "CDC: table \(ds.id) joined publication \(cdc.publication) but is not one of this run's streams (sync takes such a table when it has a primary key, is in `schemas` and no catalog was given); it is left out")
                return nil
            }
            let stream = Stream(configured: configured, discovered: ds)
            log(.info, "CDC: table \(ds.id) joined publication \(cdc.publication); it is loaded in chunks and followed from here on")
            adopted.append(stream)
            byOID[root] = stream
            byID[stream.id] = stream
            live[stream.id] = stream
            let cols = try Self.catalogColumns([root], publication: publishedColumns, conn: conn)[root] ?? []
            discoveredTypes[stream.id] = Dictionary(cols.map { ($0.name, $0.typeOID) }, uniquingKeysWith: { a, _ in a })
            // Its columns where the slot is (its chunks wait for the catalog's to come through).
            current.schemas[stream.id] = SchemaTracker(columns: relation.map { rc in
                rc.map { SchemaTracker.Column(attnum: nil, name: $0.name, typeOID: $0.typeOID, typeModifier: $0.typeModifier) }
            } ?? cols)
            current.backfills[stream.id] = CDCState.Backfill(loadedThrough: nil)
            current.tables[stream.id] = root
            current.chunkFilters.removeAll { $0.stream == stream.id }
            current.snapshotted.remove(stream.id)
            if ds.kind == .partitionedTable { current.partitions[stream.id] = (try Self.leafPartitions([root], conn: conn)[root] ?? [:]).keys.sorted() }
            try sink.status(stream.id, .started)
            try sink.status(stream.id, .running)
            emittedSinceState = true
            fills.append(stream)
            try scheduleChunks()
            return stream
        }
        /// Looks at what the publication holds now: tables that joined it become streams (when
        /// the sink takes them); a stream whose table joined it late is read again (its changes
        /// before did not reach the slot); partitioned streams whose partitions were attached,
        /// detached or dropped are read again. Reloads start at the next commit (or now, between
        /// transactions).
        func membership() throws {
            let r = try conn.query("""
                SELECT DISTINCT coalesce(pg_catalog.pg_partition_root(c.oid), c.oid)::int8 AS root
                FROM pg_catalog.pg_publication_tables pt
                JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
                JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
                WHERE pt.pubname = $1
                """, [cdc.publication])
            var published: Set<UInt32> = []
            for i in 0..<r.rowCount { if let o = r.int(i, "root") { published.insert(UInt32(o)) } }
            for oid in published.sorted() where byOID[oid] == nil { _ = try adopt(oid, relation: nil) }
            for s in byOID.values.sorted(by: { $0.id < $1.id }) where s.discovered.kind == .table && !dropped.contains(s.id) {
                if published.contains(s.discovered.oid) {
                    if unpublished.remove(s.id) != nil {
                        rereadWhy[s.id] = "its table joined publication \(cdc.publication), and its changes before did not reach the slot"
                        reloads.insert(s.id)
                    }
                } else if unpublished.insert(s.id).inserted {
                    log(.warning, "CDC: table \(s.id) left publication \(cdc.publication): its changes no longer reach the slot and its destination table stays as it is; it is read again if it joins again")
                }
            }
            let parted = byOID.values.filter { $0.discovered.kind == .partitionedTable && !dropped.contains($0.id) }
            let now = try Self.leafPartitions(parted.map(\.discovered.oid), conn: conn)
            for s in parted {
                let after = now[s.discovered.oid] ?? [:]
                guard current.partitions[s.id] != after.keys.sorted() else { continue }
                // (A leaf detached becomes a table of its own.)
                partitionRoots = [:]
                if let moved = Self.partitionsMoved(saved: current.partitions[s.id] ?? [], now: after) {
                    rereadWhy[s.id] = "\(moved), so rows joined or left it without changes"
                    reloads.insert(s.id)
                }
                current.partitions[s.id] = after.keys.sorted()
            }
            if !inTx {
                for id in reloads.sorted() { if let s = live[id] { try reload(s) } }
                reloads.removeAll()
            }
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
        var skipTx = false
        var commitTime = ""
        var commitMicros: Int64 = 0
        var lastChange = Date()
        var done = false
        let idleLimit = Double(cdc.initialWaitingSeconds)
        var lastHeartbeat = Date()
        var lastMembership = Date()
        let membershipInterval = Self.membershipInterval
        // A standby cannot write WAL: no built-in heartbeat there.
        var builtInHeartbeat = cdc.heartbeatActionQuery == nil && (try? conn.query("SELECT pg_is_in_recovery() AS r").bool(0, "r")) == false
        let heartbeatInterval = Self.heartbeatInterval
        var meter = LagMeter()
        var lastLagReport = Date()
        let lagInterval = Self.lagReportInterval
        // The server's WAL end, sampled about once a second: the stream's own positions are
        // those of the records it sends, so only the server tells how far behind they are.
        var lastSample = Date.distantPast
        func sampleServer() {
            lastSample = Date()
            if let r = try? conn.query(Self.serverEndSQL), let end = r.string(0, "w").flatMap(LSN.init), let t = r.string(0, "t").flatMap(Double.init) {
                meter.sample(end, at: t, localTime: Date().timeIntervalSince1970)
            }
        }
        meter.caughtUp(start)
        sampleServer()
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
                    meter.server(walEnd)
                    if !inTx && sinceState == 0 { meter.caughtUp(walEnd) }
                    if follow && !inTx && sinceState == 0 && walEnd > current.lsn { idleEnd = walEnd }
                    try confirmDurable()
                    if reply { try report() }
                case .xlogData(let walStart, let serverEnd, _, let payload):
                    lastChange = Date()
                    meter.server(serverEnd)
                    switch try PgOutputDecoder.decode(payload) {
                    case .begin(_, let time, let xid):
                        inTx = true
                        txXid = xid
                        idleEnd = nil
                        commitTime = ReplicationFrame.isoTimestamp(time)
                        commitMicros = time
                        meter.began(commitUnix: ReplicationFrame.unixSeconds(time))
                        skipTx = false
                        for f in current.filters where f.contains(xid: xid) { skipTx = true }
                        // A transaction in a snapshot is skipped only for the streams that snapshot covered.
                        skipFor = skipTx ? Set(current.filters.filter { $0.contains(xid: xid) }.flatMap(\.streams)) : []
                    case .commit(_, _, let end, _):
                        inTx = false
                        meter.applied(end, commitUnix: ReplicationFrame.unixSeconds(commitMicros))
                        if !fills.isEmpty { committedXids.append(txXid) }
                        current.lsn = end
                        position.receive(end)
                        current.passed(end)
                        for id in reloads.sorted() { if let s = live[id] { try reload(s) } }
                        reloads.removeAll()
                        if confirmWhileReading && position.confirm(end) { try report() }
                        // Following, a state goes out soon after each change so the destination commits it promptly.
                        if sinceState >= Int64(config.batchFetchLimit) || (follow && sinceState > 0 && Date().timeIntervalSince(lastState) >= 0.2) {
                            try emitState(current)
                            sinceState = 0
                            lastState = Date()
                        }
                    case .relation(let oid, let ns, let name, _, let cols):
                        // A partition's changes (a publication without publish_via_partition_root)
                        // belong to its partitioned table's stream, partitions made since included.
                        let leaf = StreamID(namespace: ns, name: name)
                        // A table renamed at the source keeps its stream (and destination table).
                        // (By oid: another table made under a stream's old name is not that stream.)
                        var stream = byOID[oid]
                        if let s = stream, s.id != leaf {
                            currentNames[s.id] = PGConnection.quoteIdentifier(ns) + "." + PGConnection.quoteIdentifier(name)
                            if renamedTables.insert(oid).inserted {
                                log(.info, "CDC: table \(s.id) is now called \(leaf) at the source; its changes are still read as stream \(s.id)")
                            }
                        }
                        if stream == nil {
                            let first = partitionRoots[oid] == nil
                            stream = try partitionRoot(oid, conn: conn).flatMap { byID[$0] }
                            if first, let s = stream { log(.info, "CDC: changes of partition \(leaf) are read as stream \(s.id)") }
                        }
                        // A table the slot sends that no stream reads joined the publication.
                        if stream == nil { stream = try adopt(oid, relation: cols) }
                        // A stream's table that was not in the publication has joined it.
                        if let s = stream, unpublished.contains(s.id) { try membership() }
                        if let s = stream { stream = dropped.contains(s.id) ? nil : live[s.id] ?? s }
                        if let s = stream, var tracker = current.schemas[s.id] {
                            let out = tracker.relation(cols)
                            current.schemas[s.id] = tracker
                            // A transaction the stream's snapshot holds: its columns are in the snapshot already.
                            if !skipFor.contains(s.id) { try applySchema(s, out, captured: false, conn: conn, types: &typeCache) }
                        }
                        relations[oid] = try relation(stream, cols, conn: conn, types: &typeCache)
                    case .insert(let rel, let new):
                        if let r = relations[rel], let s = r.stream, let shape = r.shape, !skipFor.contains(s.id) {
                            try emitChange(s, r, shape, Change(kind: .insert, values: new, old: nil, keyOnly: false, lsn: walStart, time: commitTime))
                        }
                    case .update(let rel, let oldKind, let old, let new):
                        if let r = relations[rel], let s = r.stream, let shape = r.shape, !skipFor.contains(s.id) {
                            try emitChange(s, r, shape, Change(kind: .update, values: new, old: old, oldKeyOnly: oldKind == UInt8(ascii: "K"),
                                                               keyOnly: false, lsn: walStart, time: commitTime))
                        }
                    case .delete(let rel, let kind, let old):
                        if let r = relations[rel], let s = r.stream, let shape = r.shape, !skipFor.contains(s.id) {
                            try emitChange(s, r, shape, Change(kind: .delete, values: old, old: nil, keyOnly: kind == UInt8(ascii: "K"), lsn: walStart, time: commitTime))
                        }
                    case .truncate(_, let rels):
                        for rel in rels {
                            if let r = relations[rel], let s = r.stream, !skipFor.contains(s.id) {
                                log(.warning, "CDC: TRUNCATE of \(s.id) at \(walStart): every row of the stream was removed at the source")
                                try sink.truncate(s.id)
                                emittedSinceState = true
                                sinceState += 1
                                // The truncate erased what chunk snapshots that saw it had read: later
                                // changes those snapshots also saw must go out again.
                                current.chunkFilters.removeAll { $0.stream == s.id && $0.snapshot.contains(xid: txXid) }
                            }
                        }
                    case .message(_, let at, let prefix, let content):
                        if prefix == Self.watermarkPrefix, let w = watermark, !inTx, String(decoding: content, as: UTF8.self) == w {
                            // Every change committed before the watermark was emitted: the chunks go out here.
                            position.receive(at)
                            if current.lsn < at { current.lsn = at }
                            current.passed(at)
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
                            current.passed(at)
                            // A stream read again since the marker was written: its load goes on first.
                            if fills.isEmpty || timedOut { done = true } else { markerSent = false }
                        } else if prefix == DDLCapture.prefix && inTx {
                            if try captured(content, byOID: byOID, byID: byID, fills: &fills, state: &current, conn: conn, types: &typeCache) {
                                try membership()
                            }
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
                        current.passed(end)
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
            // Tables joining or leaving the publication, and partitions attached or detached, show
            // no change of their own in the slot (DDL capture reports them at once).
            if !inTx, Date().timeIntervalSince(lastMembership) >= membershipInterval {
                try membership()
                lastMembership = Date()
            }
            if let q = cdc.heartbeatActionQuery, Date().timeIntervalSince(lastHeartbeat) > heartbeatInterval {
                _ = try? conn.query(q)
                lastHeartbeat = Date()
            } else if follow, builtInHeartbeat, !inTx, Date().timeIntervalSince(lastHeartbeat) > heartbeatInterval,
                      Date().timeIntervalSince(lastChange) > heartbeatInterval {
                // A logical message (no table) moves the slot's stream on while published tables are idle.
                do {
                    try Self.writeMessage(conn, prefix: Self.heartbeatPrefix, id: ReplicationFrame.isoTimestamp(ReplicationFrame.postgresMicros(Date())))
                } catch {
                    // The failed statement left the session in an aborted transaction block.
                    _ = try? conn.query("ROLLBACK")
                    builtInHeartbeat = false
                    log(.warning, "CDC: the built-in heartbeat (pg_logical_emit_message) failed (\(error)); set heartbeat_action_query to keep the slot moving while the published tables are idle")
                }
                lastHeartbeat = Date()
            }
            if Date().timeIntervalSince(lastSample) >= 1 { sampleServer() }
            if Date().timeIntervalSince(lastLagReport) >= lagInterval {
                lastLagReport = Date()
                if !inTx && sinceState == 0 && fills.isEmpty { meter.caughtUp(current.lsn) }
                sampleServer()
                let retained = try? conn.query("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8 AS r FROM pg_catalog.pg_replication_slots WHERE slot_name = $1", [cdc.replicationSlot]).int(0, "r")
                let lag = meter.lag(now: Date().timeIntervalSince1970, retained: retained ?? nil)
                logger.info("\(lag.line)")
                try sink.lag(lag)
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
    /// others are loaded in chunks from the slot's start (those in `reload` in chunks that
    /// replace their key range in the destination).
    private func createSlotAndSnapshot(_ all: [Stream], conn: PGConnection, reload: Set<StreamID> = []) throws {
        let whole = all.filter { $0.keyOrder == nil }
        for s in whole { logWhole(s) }
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
        for s in all where s.keyOrder != nil { state.backfills[s.id] = CDCState.Backfill(loadedThrough: nil, reload: reload.contains(s.id)) }
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

    private func logWhole(_ s: Stream) {
        let why = s.discovered.primaryKey.isEmpty ? "has no primary key" : "has a primary key of types whose order Postgate does not compare (only integers and uuids)"
        log(.info, "CDC: \(s.id) \(why), so its initial load is read in one snapshot (one transaction) rather than in chunks between its changes")
    }

    /// One key-range chunk for one connection; its snapshot is recorded once read.
    final class Chunk {
        let stream: Stream
        let after: [String]?
        let through: [String]?
        var shape: RowShape
        var sql: String
        /// The table (quoted), and its columns (name, type oid) as the plan has them.
        let table: String
        /// The stream's columns where the slot has got to (`signature`): a chunk reads only a table
        /// that has them, as it goes out there.
        let expected: [String]
        let publication: String?
        var postponed = false
        /// A reload chunk: the key columns of the range it replaces in the destination.
        var replaces: RowShape?
        var snapshot: CDCState.SnapshotFilter?
        var rows: Int64 = 0

        init(stream: Stream, after: [String]?, through: [String]?, shape: RowShape, sql: String, table: String,
             expected: [String], publication: String?) {
            self.stream = stream
            self.after = after
            self.through = through
            self.shape = shape
            self.sql = sql
            self.table = table
            self.expected = expected
            self.publication = publication
        }
    }

    /// When the initial load stops for this run (`initial_load_timeout_hours` after its start).
    private lazy var loadDeadline = Date().addingTimeInterval(cdc.initialLoadTimeoutHours * 3600)
    /// Connections reading chunks; the first is the reader's own.
    private var chunkConnections: [PGConnection] = []
    /// Rows loaded per stream in this run.
    private var loadedRows: [StreamID: Int64] = [:]

    /// The key of a tuple as text, or nil when a key column is not in it as text.
    static func key(_ values: [TupleValue], _ indexes: [Int]) -> [String]? {
        var key: [String] = []
        key.reserveCapacity(indexes.count)
        for i in indexes {
            guard i < values.count, case .text(let t) = values[i] else { return nil }
            key.append(String(decoding: t, as: UTF8.self))
        }
        return key
    }

    /// Whether a change to `key` of `s` by transaction `xid` goes out. Not while the key is beyond
    /// what the stream's chunked load has read (a later chunk reads the row as it is then), nor
    /// when a chunk read the key's range in a snapshot that saw the transaction.
    func keyGoesOut(_ s: Stream, _ key: [String]?, xid: UInt32, state: CDCState, delete: Bool = false) -> Bool {
        guard let order = s.keyOrder, let key else { return true }
        if let fill = state.backfills[s.id] {
            // While a stream is read again, the destination may hold a row no chunk will see.
            guard let through = fill.loadedThrough, !order.less(through, key) else { return delete && fill.reload }
        }
        for f in state.chunkFilters where f.stream == s.id && f.snapshot.contains(xid: xid) && order.contains(key, after: f.after, through: f.through) {
            return false
        }
        return true
    }

    /// True when changes of `s` need their keys looked at (its load or a chunk filter is open).
    static func guarded(_ s: Stream, _ state: CDCState) -> Bool {
        state.backfills[s.id] != nil || state.chunkFilters.contains { $0.stream == s.id }
    }

    /// What of a change goes out while its stream is guarded: all of it, nothing, or (for a key
    /// change whose new key is not to go out) the delete of its old key.
    func filtered(_ s: Stream, _ r: Relation, _ change: Change, xid: UInt32, state: CDCState) -> Change? {
        guard let idx = r.keyIndexes else { return change }
        switch change.kind {
        case .insert, .delete:
            return keyGoesOut(s, Self.key(change.values, idx), xid: xid, state: state, delete: change.kind == .delete) ? change : nil
        case .update:
            let new = Self.key(change.values, idx)
            let old = change.old.flatMap { Self.key($0, idx) } ?? new
            let newOut = keyGoesOut(s, new, xid: xid, state: state)
            if old == new { return newOut ? change : nil }
            let oldOut = keyGoesOut(s, old, xid: xid, state: state, delete: true)
            if newOut { return change }
            guard oldOut, let oldValues = change.old else { return nil }
            return Change(kind: .delete, values: oldValues, old: nil, keyOnly: change.oldKeyOnly, lsn: change.lsn, time: change.time)
        }
    }

    /// The primary key as SQL: the column list and a literal row of `key`.
    private static func keySQL(_ s: Stream) -> String {
        let cols = s.keyColumns.map { PGConnection.quoteIdentifier($0.name) }
        return cols.count == 1 ? cols[0] : "(" + cols.joined(separator: ", ") + ")"
    }

    private static func keyLiteral(_ s: Stream, _ key: [String]) -> String {
        let lits = zip(s.keyColumns, key).map { "\(PGConnection.quoteLiteral($1))::\($0.type.declared)" }
        return lits.count == 1 ? lits[0] : "(" + lits.joined(separator: ", ") + ")"
    }

    /// The key `batch_fetch_limit` rows after `after` in key order (nil: fewer rows are left).
    private func boundary(_ s: Stream, after: [String]?, conn: PGConnection, table: String) throws -> [String]? {
        // The columns are qualified by the table's alias, so ORDER BY compares values, not the
        // text the select list makes of them.
        let cols = s.keyColumns.map { "_postgate_src." + PGConnection.quoteIdentifier($0.name) }
        let key = cols.count == 1 ? cols[0] : "(" + cols.joined(separator: ", ") + ")"
        let where_ = after.map { " WHERE \(key) > \(Self.keyLiteral(s, $0))" } ?? ""
        let select = cols.map { "\($0)::text" }.joined(separator: ", ")
        let r = try conn.query("SELECT \(select) FROM \(table) AS _postgate_src\(where_) ORDER BY \(cols.joined(separator: ", ")) OFFSET \(config.batchFetchLimit - 1) LIMIT 1")
        guard r.rowCount == 1 else { return nil }
        return try (0..<s.keyColumns.count).map { i in
            guard let v = r.string(0, i) else { throw SnapshotReader.ReadError(message: "CDC: \(s.id): a primary key value is null") }
            return v
        }
    }

    /// Reads the next key-range chunks (one per connection) and hands them out at the watermark
    /// just received: every change committed before it went out already (or was held back, for
    /// keys no chunk had read), and every change after it follows the chunks. Each chunk is read
    /// in a transaction of its own whose snapshot sees every transaction committed before the
    /// watermark; changes after the watermark that the snapshot saw are filtered for the chunk's
    /// key range (`CDCState.ChunkFilter`). The state after the chunks records them, so a kill
    /// repeats at most the chunks of this watermark.
    private func readChunks(_ fills: inout [Stream], state current: inout CDCState, committed: [UInt32], conn: PGConnection) throws {
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
        let stamp = RowShape.CDCStamp(lsn: current.lsn, time: try Self.now(conn))
        let reader = SnapshotReader(conn: conn, config: config, sink: sink, logger: logger)
        var chunks: [Chunk] = []
        // Streams take turns, so a small table's load is not held up behind a large one.
        var cursors: [(Stream, plan: SnapshotReader.Plan, table: String, after: [String]?)] = []
        // A table whose columns changed since the position the stream has reached waits until the
        // change comes through (a chunk goes out at the watermark, before the change, so it must
        // read the columns the destination has there).
        let catalog = try Self.catalogColumns(fills.map(\.discovered.oid), publication: publishedColumns, conn: conn)
        var ready: [Stream] = []
        for s in fills {
            let now = Self.signature(catalog[s.discovered.oid] ?? [])
            let known = current.schemas[s.id].map { Self.signature($0.columns) }
            if known == nil || known == now {
                schemaWait[s.id] = nil
                ready.append(live[s.id] ?? s)
                continue
            }
            let since = schemaWait[s.id] ?? Date()
            schemaWait[s.id] = since
            if Date().timeIntervalSince(since) > 60 {
                log(.warning, "CDC: \(s.id)'s columns changed at the source and no change of the table has shown the new ones for 60 s; its load goes on with the columns as they are now (install sql/ddl-capture.sql so the change is seen at once)")
                schemaWait[s.id] = nil
                if var tracker = current.schemas[s.id] {
                    let cols = (catalog[s.discovered.oid] ?? []).map {
                        DDLCapture.Column(attnum: $0.attnum ?? 0, name: $0.name, typeOID: $0.typeOID, typeModifier: $0.typeModifier)
                    }
                    let out = tracker.ddl(cols, rewrite: false)
                    current.schemas[s.id] = tracker
                    var cache: [UInt32: PostgresType] = [:]
                    try applySchema(s, out, captured: false, conn: conn, types: &cache)
                }
                ready.append(live[s.id] ?? s)
            }
        }
        if ready.isEmpty { Thread.sleep(forTimeInterval: 0.05) }
        for s in ready.prefix(chunkConnections.count) {
            guard let fill = current.backfills[s.id] else { continue }
            cursors.append((s, try reader.makePlan(s.configured, s.discovered, tracking: nil, stamp: stamp), currentNames[s.id] ?? reader.qualified(s.discovered), fill.loadedThrough))
        }
        var open = Array(cursors.indices)
        while chunks.count < chunkConnections.count, !open.isEmpty {
            for i in open where chunks.count < chunkConnections.count {
                let (s, plan, table, after) = cursors[i]
                let through = try boundary(s, after: after, conn: conn, table: table)
                var conditions: [String] = []
                if let after { conditions.append("\(Self.keySQL(s)) > \(Self.keyLiteral(s, after))") }
                if let through { conditions.append("\(Self.keySQL(s)) <= \(Self.keyLiteral(s, through))") }
                let whereSQL = conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND ")
                let sql = "COPY (SELECT \(plan.selectList) FROM \(table)\(whereSQL)) TO STDOUT"
                let expected = Self.signature(current.schemas[s.id]?.columns ?? [])
                chunks.append(Chunk(stream: s, after: after, through: through, shape: plan.shape, sql: sql, table: table, expected: expected, publication: publishedColumns))
                cursors[i].after = through
                if through == nil { open.removeAll { $0 == i } }
            }
        }
        // Chunk rows are events since the last state: a failure from here on rolls them back.
        if !chunks.isEmpty { emittedSinceState = true }
        // A reload chunk replaces its key range: rows deleted at the source since they were synced
        // go, also those whose delete the chunk's snapshot saw (and so filters).
        for c in chunks where current.backfills[c.stream.id]?.reload == true {
            c.replaces = RowShape(stream: c.stream.id, columns: c.stream.keyColumns.map { RowShape.Column(name: $0.name, encoding: ValueEncoding($0.type), type: $0.type, isKey: true) })
        }
        // (No chunk when every stream waits for a schema change to come through.)
        if !chunks.isEmpty {
            let runner = ParallelItems(items: chunks, sink: sink)
            try runner.run(connections: Array(chunkConnections.prefix(chunks.count))) { chunk, worker in
                worker.handed = { chunk.rows += $0 }
                try Self.readChunk(chunk, worker, committed: committed)
                try worker.locked {}
            }
        }
        let waiting = Set(chunks.filter(\.postponed).map(\.stream.id))
        for c in chunks where !waiting.contains(c.stream.id) {
            current.chunkFilters.append(CDCState.ChunkFilter(stream: c.stream.id, after: c.after, through: c.through, snapshot: c.snapshot!))
            loadedRows[c.stream.id, default: 0] += c.rows
            if let through = c.through {
                current.backfills[c.stream.id] = CDCState.Backfill(loadedThrough: through, reload: current.backfills[c.stream.id]?.reload ?? false)
            } else {
                current.backfills[c.stream.id] = nil
                current.snapshotted.insert(c.stream.id)
                log(.info, "CDC: initial load of \(c.stream.id) complete (\(loadedRows[c.stream.id] ?? 0) rows in this run)")
            }
        }
        // The streams that had no turn go first next time.
        let used = Set(cursors.map { $0.0.id })
        fills = fills.filter { !used.contains($0.id) } + fills.filter { used.contains($0.id) }
        fills.removeAll { current.backfills[$0.id] == nil }
        try emitState(current)
    }

    /// Reads one chunk in a short transaction whose snapshot sees every transaction in `committed`
    /// (those whose commits came through the slot before the watermark).
    private static func readChunk(_ chunk: Chunk, _ worker: ParallelItems<Chunk>.Worker, committed: [UInt32]) throws {
        let conn = worker.conn
        var attempts = 0
        while true {
            try conn.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            // Locked before the snapshot is taken: a concurrent ALTER TABLE that rewrites the
            // table commits first (a snapshot older than a rewrite sees the table empty), and
            // none can change its columns until the chunk is read.
            try conn.query("LOCK TABLE \(chunk.table) IN ACCESS SHARE MODE")
            let r = try conn.query("SELECT pg_current_snapshot()::text AS s, pg_current_wal_insert_lsn()::text AS l")
            guard let text = r.string(0, "s"), let lsn = r.string(0, "l").flatMap(LSN.init),
                  let filter = snapshotFilter(text, lsn: lsn, streams: [chunk.stream.id]) else {
                throw SnapshotReader.ReadError(message: "CDC: could not read a chunk's snapshot")
            }
            if committed.allSatisfy(filter.contains(xid:)) {
                chunk.snapshot = filter
                // An ALTER TABLE committed since the columns were compared: this chunk waits for it
                // to come through the slot.
                let now = try catalogColumns([chunk.stream.discovered.oid], publication: chunk.publication, conn: conn)[chunk.stream.discovered.oid] ?? []
                if !chunk.expected.isEmpty && signature(now) != chunk.expected {
                    chunk.postponed = true
                    try conn.query("ROLLBACK")
                    return
                }
                break
            }
            // A commit already in the WAL is not visible yet (it is being completed): try again.
            try conn.query("ROLLBACK")
            attempts += 1
            guard attempts < 2000 else {
                throw SnapshotReader.ReadError(message: "CDC: a committed transaction did not become visible to a new snapshot within 10 s")
            }
            Thread.sleep(forTimeInterval: 0.005)
        }
        do {
            // Its key range goes from the destination just before its rows (a chunk postponed
            // above leaves the range as it was).
            if let keys = chunk.replaces {
                try worker.locked { try worker.runner.sink.deleteRange(keys, after: chunk.after, through: chunk.through) }
            }
            try conn.copyOut(chunk.sql) { row in try worker.row(chunk.shape, row) }
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
        guard let s = stream else { return Relation(stream: nil, columns: cols, shape: nil, keyIndexes: nil) }
        let discovered = Dictionary(s.discovered.columns.map { ($0.name, $0.type) }, uniquingKeysWith: { a, _ in a })
        let oids = discoveredTypes[s.id] ?? [:]
        // The discovered type holds while the column keeps its type; a column added or retyped
        // since is typed as discovery types it.
        func known(_ c: PgOutputMessage.Column) -> PostgresType? { oids[c.name] == c.typeOID ? discovered[c.name] : nil }
        let selected = s.configured.selectedColumns.map { Set($0) }
        let missing = Set(cols.filter { known($0) == nil && types[$0.typeOID] == nil }.map(\.typeOID))
        if !missing.isEmpty {
            for (oid, t) in try Discovery.types(conn, oids: Array(missing)) { types[oid] = t }
        }
        let columns = cols.map { c -> RowShape.Column in
            let type = known(c) ?? types[c.typeOID]
            // A column the catalog did not list is emitted too.
            let emitted = selected == nil || selected!.contains(c.name) || discovered[c.name] == nil
            return RowShape.Column(name: c.name, encoding: type.map(ValueEncoding.init) ?? .string, type: type, emitted: emitted, isKey: c.isKey)
        }
        let positions = Dictionary(cols.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        let keyIndexes = s.keyColumns.compactMap { positions[$0.name] }
        return Relation(stream: s, columns: cols, shape: RowShape(stream: s.id, columns: columns),
                        keyIndexes: keyIndexes.count == s.keyColumns.count && !keyIndexes.isEmpty ? keyIndexes : nil)
    }

    /// Partitioned tables of partitions seen in Relation messages, by the partition's oid.
    /// Streams that joined while reading (tables added to the publication).
    private var adopted: [Stream] = []
    /// Tables seen joining the publication that are not read (or whose adoption was decided).
    private var declined: Set<UInt32> = []
    /// Tables of CDC streams that are not in the publication (read again once they join it).
    private var unpublished: Set<StreamID> = []

    /// What moved between a stream's saved leaf partitions and its leaves now (leaf → made as a
    /// partition), or nil when no rows can have joined or left it: a partition made as one
    /// (CREATE TABLE ... PARTITION OF) brings its rows as changes.
    static func partitionsMoved(saved: [UInt32], now: [UInt32: Bool]) -> String? {
        let before = Set(saved)
        let gone = before.filter { now[$0] == nil }.count
        let attached = now.filter { !before.contains($0.key) && !$0.value }.count
        guard gone + attached > 0 else { return nil }
        return "\(attached) partition(s) attached and \(gone) detached or dropped at the source"
    }

    /// The leaf partitions of each partitioned table. A leaf counts as made as a partition when
    /// its row in pg_inherits comes from the transaction that made its table (its row type's).
    static func leafPartitions(_ oids: [UInt32], conn: PGConnection) throws -> [UInt32: [UInt32: Bool]] {
        guard !oids.isEmpty else { return [:] }
        let r = try conn.query("""
            SELECT p.oid::int8 AS root, l.relid::int8 AS leaf,
                   EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
                           JOIN pg_catalog.pg_type ty ON ty.oid = c.reltype
                           WHERE i.inhrelid = l.relid AND i.xmin::text = ty.xmin::text) AS made
            FROM unnest($1::oid[]) AS p(oid), pg_catalog.pg_partition_tree(p.oid) l
            WHERE l.isleaf AND l.relid <> p.oid
            """, ["{" + oids.map(String.init).joined(separator: ",") + "}"])
        var out: [UInt32: [UInt32: Bool]] = Dictionary(uniqueKeysWithValues: oids.map { ($0, [:]) })
        for i in 0..<r.rowCount {
            guard let root = r.int(i, "root"), let leaf = r.int(i, "leaf") else { continue }
            out[UInt32(root), default: [:]][UInt32(leaf)] = r.bool(i, "made") ?? false
        }
        return out
    }

    private var partitionRoots: [UInt32: StreamID?] = [:]

    /// The partitioned table at the top of relation `oid`'s partition tree (nil for a table that
    /// is not a partition).
    private func partitionRoot(_ oid: UInt32, conn: PGConnection) throws -> StreamID? {
        if let known = partitionRoots[oid] { return known }
        let r = try conn.query("""
            SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE c.oid = pg_catalog.pg_partition_root($1::oid) AND c.oid <> $1::oid
            """, [String(oid)])
        let root = r.rowCount == 1 ? r.string(0, "nspname").flatMap { ns in r.string(0, "relname").map { StreamID(namespace: ns, name: $0) } } : nil
        partitionRoots[oid] = .some(root)
        return root
    }

    /// Each table's live columns (the published ones: generated columns are not), by oid.
    /// With `publication` (PostgreSQL 15+), only the columns its column list publishes.
    static func catalogColumns(_ oids: [UInt32], publication: String?, conn: PGConnection) throws -> [UInt32: [SchemaTracker.Column]] {
        guard !oids.isEmpty else { return [:] }
        let listed = publication == nil ? "" : """
             AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables pt
                             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace
                             WHERE pt.pubname = $2 AND pt.schemaname = ns.nspname AND pt.tablename = c.relname AND NOT (a.attname = ANY(pt.attnames)))
            """
        let r = try conn.query("""
            SELECT a.attrelid::int8 AS rel, a.attnum::int4 AS n, a.attname, a.atttypid::int8 AS t, a.atttypmod AS m
            FROM pg_catalog.pg_attribute a
            WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''\(listed)
            ORDER BY a.attrelid, a.attnum
            """, ["{" + oids.map(String.init).joined(separator: ",") + "}"] + (publication.map { [$0] } ?? []))
        var out: [UInt32: [SchemaTracker.Column]] = [:]
        for i in 0..<r.rowCount {
            guard let rel = r.int(i, "rel"), let n = r.int(i, "n"), let name = r.string(i, "attname"), let t = r.int(i, "t"), let m = r.int(i, "m") else { continue }
            out[UInt32(rel), default: []].append(SchemaTracker.Column(attnum: Int(n), name: name, typeOID: UInt32(t), typeModifier: Int32(m)))
        }
        return out
    }

    /// A column list compared as a set (a partition may order its columns otherwise).
    static func signature(_ cols: [SchemaTracker.Column]) -> [String] { cols.map { "\($0.name)\u{0}\($0.typeOID)" }.sorted() }

    /// The publication whose column lists limit what CDC sees (PostgreSQL 15+; nil before).
    private var publishedColumns: String?

    /// Type oids of each stream's columns at discovery (a column keeps its discovered type while its oid is the same).
    private var discoveredTypes: [StreamID: [String: UInt32]] = [:]
    /// Streams whose tables were read again or renamed, dropped, or rewritten in this run.
    private var renamedTables: Set<UInt32> = []
    private var dropped: Set<StreamID> = []
    private var droppedAtState: Set<StreamID> = []
    /// Streams whose table was renamed at the source: its name now (quoted), for chunk reads.
    private var currentNames: [StreamID: String] = [:]
    /// Since when a stream's load waits for a schema change to come through the slot.
    private var schemaWait: [StreamID: Date] = [:]
    /// Streams to read again once the current transaction commits (their table was rewritten).
    private var reloads: Set<StreamID> = []
    /// Why a stream in `reloads` is read again, when not because its table was rewritten.
    private var rereadWhy: [StreamID: String] = [:]
    /// The streams as their tables are now: columns as the catalog lists them since the last
    /// schema change, and selected columns following renames and drops.
    private var live: [StreamID: Stream] = [:]

    /// Follows a schema change in the stream's selection and takes its columns from the catalog
    /// again (what a chunk reads, and the types of the columns kept).
    private func refresh(_ s: Stream, after changes: [SchemaChange], conn: PGConnection) throws {
        var configured = s.configured
        if var sel = configured.selectedColumns {
            for c in changes {
                switch c {
                case .renameColumn(let from, let to): sel = sel.map { $0 == from ? to : $0 }
                case .dropColumn(let name): sel.removeAll { $0 == name }
                // A column the catalog did not list is emitted too.
                case .addColumn(let name, _, _): sel.append(name)
                default: break
                }
            }
            configured.selectedColumns = sel
        }
        var discovered = s.discovered
        if let now = try Discovery.discover(conn, schemas: [s.discovered.schema], publication: cdc.publication).first(where: { $0.oid == s.discovered.oid }) {
            discovered.columns = now.columns
            discovered.primaryKey = now.primaryKey
        }
        let cols = try Self.catalogColumns([s.discovered.oid], publication: publishedColumns, conn: conn)[s.discovered.oid] ?? []
        discoveredTypes[s.id] = Dictionary(cols.map { ($0.name, $0.typeOID) }, uniquingKeysWith: { a, _ in a })
        live[s.id] = Stream(configured: configured, discovered: discovered)
    }

    /// Hands a stream's schema changes to the sink, in order, and schedules a reload when rows
    /// already read may hold other values. Without DDL capture, a column added with a default
    /// takes what rows already there hold from the catalog (`attmissingval`); a default without
    /// it means the table was rewritten, so the stream is read again.
    private func applySchema(_ s: Stream, _ out: SchemaTracker.Outcome, captured: Bool, conn: PGConnection, types: inout [UInt32: PostgresType]) throws {
        var reload = out.reload
        for var change in out.changes {
            var typeOID: UInt32?
            switch change {
            case .addColumn(let name, let oid, let existing):
                typeOID = oid
                // (A captured column list says what rows already there hold, but for a partitioned
                // table, which keeps no attmissingval, so its default shows as a reload; a Relation
                // message does not say: the catalog is asked, as it is now.)
                if existing == nil {
                    let r = try conn.query("""
                        SELECT a.atthasmissing AS has, (a.attmissingval::text::text[])[1] AS v, a.atthasdef AS def
                        FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1::oid AND a.attname = $2 AND NOT a.attisdropped
                        """, [String(s.discovered.oid), name])
                    if r.rowCount == 1, r.bool(0, "has") == true {
                        change = .addColumn(name: name, typeOID: oid, existing: r.string(0, "v"))
                    } else if r.rowCount == 1 ? r.bool(0, "def") == true : !captured {
                        // A default that left no attmissingval, or (not captured) the column was
                        // renamed or dropped since, so what rows hold in it cannot be told: read
                        // them again.
                        reload = true
                    }
                }
            case .alterType(_, let oid):
                typeOID = oid
            default:
                break
            }
            var type: PostgresType?
            if let oid = typeOID {
                if types[oid] == nil { for (o, t) in try Discovery.types(conn, oids: [oid]) { types[o] = t } }
                type = types[oid]
            }
            log(.info, "CDC: \(s.id): \(change)\(captured ? "" : " (seen in a Relation message; install sql/ddl-capture.sql to tell renames from drops and adds exactly)")")
            emittedSinceState = true
            try sink.schemaChange(s.id, change, type: type)
        }
        if !out.changes.isEmpty { try refresh(s, after: out.changes, conn: conn) }
        if reload { reloads.insert(s.id) }
    }

    /// The table under a stream's name is not the one synced (dropped and created again, or
    /// renamed away, while nothing read it): the destination's columns are brought to the new
    /// table's (by name) and its rows replaced by a new load, range by range where the
    /// destination can and the key columns were there already, else emptied first.
    private func replaceTable(_ s: Stream, was: UInt32, catalog: [SchemaTracker.Column], state current: inout CDCState, conn: PGConnection) throws {
        log(.warning, "CDC: \(s.id) is another table than the one synced (oid \(was), now \(s.discovered.oid): dropped and created again, or renamed away, while nothing read it); its rows in the destination are replaced by a new load")
        var keysKnown = false
        if let saved = current.schemas[s.id] {
            keysKnown = Set(saved.names).isSuperset(of: s.discovered.primaryKey)
            var tracker = SchemaTracker(columns: saved.columns.map { SchemaTracker.Column(attnum: nil, name: $0.name, typeOID: $0.typeOID, typeModifier: $0.typeModifier) })
            let out = tracker.ddl(catalog.map { DDLCapture.Column(attnum: $0.attnum ?? 0, name: $0.name, typeOID: $0.typeOID, typeModifier: $0.typeModifier) }, rewrite: false)
            current.schemas[s.id] = tracker
            var cache: [UInt32: PostgresType] = [:]
            try applySchema(s, SchemaTracker.Outcome(changes: out.changes, reload: false), captured: true, conn: conn, types: &cache)
            // (It is loaded anew below: no reload on top.)
            reloads.remove(s.id)
        }
        current.chunkFilters.removeAll { $0.stream == s.id }
        current.snapshotted.remove(s.id)
        current.partitions[s.id] = nil
        if s.keyOrder != nil && keysKnown && sink.replacesKeyRanges {
            current.backfills[s.id] = CDCState.Backfill(loadedThrough: nil, reload: true)
        } else {
            try sink.truncate(s.id)
            current.backfills[s.id] = s.keyOrder == nil ? nil : CDCState.Backfill(loadedThrough: nil)
        }
    }

    /// A captured DDL message, in order with the changes of its transaction. True when what the
    /// publication holds may have changed (a publication altered, a table made, a partition
    /// attached, detached or dropped).
    private func captured(_ content: [UInt8], byOID: [UInt32: Stream], byID: [StreamID: Stream], fills: inout [Stream],
                          state current: inout CDCState, conn: PGConnection, types: inout [UInt32: PostgresType]) throws -> Bool {
        let message: DDLCapture.Message
        do { message = try DDLCapture.parse(content) } catch {
            log(.warning, "CDC: \(error); it is ignored")
            return false
        }
        switch message {
        case .rewrite(let oid):
            // A partitioned table's rewrite names each partition.
            if let s = try byOID[oid] ?? partitionRoot(oid, conn: conn).flatMap({ byID[$0] }), !dropped.contains(s.id) { reloads.insert(s.id) }
            return false
        case .columns(let oid, _, _, var cols):
            // A table made, or a partition attached or detached (an ALTER of its partitioned table).
            guard let found = byOID[oid] else { return true }
            guard !dropped.contains(found.id), let s = live[found.id], var tracker = current.schemas[s.id] else { return false }
            // The capture lists every column; a publication's column list (PostgreSQL 15) limits
            // what the stream has, as in its Relation messages.
            if let publication = publishedColumns, let listed = try Discovery.columnLists(conn, publication: publication, oids: [oid])[oid] {
                cols.removeAll { listed[$0.attnum] == nil }
            }
            let out = tracker.ddl(cols, rewrite: false)
            current.schemas[s.id] = tracker
            try applySchema(s, out, captured: true, conn: conn, types: &types)
            return s.discovered.kind == .partitionedTable
        case .dropped(let oid, _, _):
            // (A dropped partition takes its rows out of its partitioned table's stream.)
            guard let s = byOID[oid] else { return true }
            guard dropped.insert(s.id).inserted else { return false }
            log(.warning, "CDC: \(s.id): table dropped at the source; its destination table goes too, and a table created again under its name is read from the next run")
            emittedSinceState = true
            try sink.schemaChange(s.id, .tableDropped, type: nil)
            current.backfills[s.id] = nil
            current.chunkFilters.removeAll { $0.stream == s.id }
            current.snapshotted.remove(s.id)
            current.schemas[s.id] = nil
            current.partitions[s.id] = nil
            current.tables[s.id] = nil
            fills.removeAll { $0.id == s.id }
            reloads.remove(s.id)
            return false
        case .publication:
            return true
        }
    }

    private func emit(_ shape: RowShape, _ change: Change) throws {
        emittedSinceState = true
        try sink.change(shape, change)
    }

    func emitState(_ state: CDCState) throws {
        try sink.checkpoint(.global(state))
        lastEmitted = state
        droppedAtState = dropped
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
    case slotMissing(slot: String)
    case slotGone(why: String, createSlot: Bool)
    case slotGoneNeedsCreate(why: String)
    /// The server refused to stream from the slot: it was invalidated while in use.
    case slotInvalidated(slot: String, detail: String)
    /// The slot's changes come from before the publication existed.
    case publicationAfterSlot(publication: String, slot: String)

    public var description: String {
        switch self {
        case .slotMissing(let slot):
            return "replication slot \"\(slot)\" does not exist; create it with SELECT pg_create_logical_replication_slot(\(PGConnection.quoteLiteral(slot)), 'pgoutput'); or set replication_method.create_slot (postgate check explains every CDC prerequisite)"
        case .slotGone(let why, let createSlot):
            return "CDC: \(why). Nothing was read and the destination is unchanged. To load every stream again into a new slot, set replication_method.invalid_cdc_cursor_position_behavior to \"Re-sync data\"\(createSlot ? "" : " and replication_method.create_slot to true"), or recreate the slot yourself and run again without the saved state"
        case .slotGoneNeedsCreate(let why):
            return "CDC: \(why). Re-syncing needs a new slot: set replication_method.create_slot to true (or drop and create the slot yourself, then run again without the saved state)"
        case .slotInvalidated(let slot, let detail):
            return "CDC: the server can no longer stream from replication slot \"\(slot)\" (\(detail)): it was invalidated while in use, usually because it fell more than max_slot_wal_keep_size behind. Everything applied was committed. Run again: with invalid_cdc_cursor_position_behavior \"Re-sync data\" and create_slot, the slot is recreated and every stream loaded again; raise max_slot_wal_keep_size (or -1) so that it does not happen again"
        case .publicationAfterSlot(let publication, let slot):
            return "CDC: publication \"\(publication)\" was created after the changes replication slot \"\(slot)\" still holds: the slot reads each change with the catalog as it was then, when the publication did not exist, so it cannot read them. Create the slot again after the publication (SELECT pg_drop_replication_slot(\(PGConnection.quoteLiteral(slot))); then run with replication_method.create_slot, or create it yourself) and load the streams again (run without the saved state)"
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
        case .aheadOfServer, .slotAheadOfServer, .slotMissing, .slotGone, .slotGoneNeedsCreate, .publicationAfterSlot: return "config_error"
        case .serverLost, .initialLoadTimeout, .slotInvalidated: return "transient_error"
        }
    }
}
