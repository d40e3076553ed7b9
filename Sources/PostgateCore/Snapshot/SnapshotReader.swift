import Foundation
import Logging

/// Reads streams by full refresh, cursor incremental or xmin incremental, in bounded,
/// checkpointed chunks, handing rows, checkpoints and stream statuses to a `ReadSink`.
public final class SnapshotReader {
    let conn: PGConnection
    let config: PostgateConfig
    let sink: ReadSink
    let logger: Logger

    /// Errors about what the catalog asks for.
    public struct ReadError: Error, UserFacingError, CustomStringConvertible {
        public var message: String
        public init(message: String) { self.message = message }
        public var description: String { message }
        public var userMessage: String { message }
        public var failureType: String { "config_error" }
    }

    /// Where saved states come from, for messages (e.g. `state file s.json`).
    public var stateOrigin = "the saved state"

    public init(conn: PGConnection, config: PostgateConfig, sink: ReadSink, logger: Logger) {
        self.conn = conn
        self.config = config
        self.sink = sink
        self.logger = logger
    }

    /// Facts about the relation, read inside the stream's snapshot.
    struct RelationInfo {
        var filenode: UInt64
        var pages: UInt32
        var bytes: Int64
        var rows: Int64
        var snapshotXmin: StreamState.Xmin
    }

    /// A relation that page-range items scan: the stream's own, or one leaf partition.
    struct ScanRelation {
        let oid: UInt32
        /// Its qualified name in SQL.
        let sql: String
        let pages: UInt32
    }

    /// One stream's read as planned inside the shared snapshot. Its mutable parts change only
    /// under the sink's lock.
    final class StreamRead {
        let configured: ConfiguredStream
        let discovered: DiscoveredStream
        let plan: Plan
        let relations: [ScanRelation]
        /// Pages read per relation oid.
        var progress: [UInt32: PageProgress]
        /// True when the relations are the leaves of a partitioned table.
        let leafPlanned: Bool
        let info: RelationInfo
        let incremental: StreamState.Incremental?
        let xminLowerBound: UInt32?
        /// The state once every item is done (nil: the last item's own state completes it).
        let completion: StreamState?
        /// Items not finished yet.
        var outstanding = 0
        /// Records handed to the sink since the stream's previous state.
        var records: Int64 = 0

        init(configured: ConfiguredStream, discovered: DiscoveredStream, plan: Plan, relations: [ScanRelation], progress: [UInt32: PageProgress],
             leafPlanned: Bool, info: RelationInfo, incremental: StreamState.Incremental?, xminLowerBound: UInt32?, completion: StreamState?) {
            self.configured = configured
            self.discovered = discovered
            self.plan = plan
            self.relations = relations
            self.progress = progress
            self.leafPlanned = leafPlanned
            self.info = info
            self.incremental = incremental
            self.xminLowerBound = xminLowerBound
            self.completion = completion
        }

        var id: StreamID { discovered.id }

        /// The state recording the pages read so far.
        var loadState: StreamState {
            .load(StreamState.Load(progress: leafPlanned ? PageProgress() : progress[discovered.oid] ?? PageProgress(),
                                   partitions: leafPlanned ? progress : nil, relationFilenode: info.filenode, incremental: incremental,
                                   xminLowerBound: xminLowerBound, snapshotXmin: info.snapshotXmin.raw))
        }
    }

    /// One piece of work for one connection.
    struct WorkItem {
        enum Kind {
            /// Rows of a page range of one relation.
            case pages(ScanRelation, Range<UInt32>)
            /// Rows past a cursor position in cursor order, checkpointed as they go.
            case ordered(DiscoveredStream.Column, StreamState.Cursor, initial: Bool)
            /// A view, in one piece.
            case whole
        }
        let stream: StreamRead
        let kind: Kind
    }

    /// How many connections read at once (`max_db_connections`).
    var connections: Int { config.maxDBConnections }

    /// Reads the streams, resuming each from its state where that allows: all of them in one
    /// snapshot, exported to up to `max_db_connections` connections that share the work items.
    public func read(_ streams: [(ConfiguredStream, DiscoveredStream, StreamState?)], factory: ConnectionFactory?) throws {
        guard !streams.isEmpty else { return }
        for (_, ds, _) in streams { try sink.status(ds.id, .started) }
        var done: Set<StreamID> = []
        var extra: [PGConnection] = []
        try conn.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        do {
            let snapshotID = factory != nil && connections > 1 ? try conn.query("SELECT pg_export_snapshot() AS s").string(0, "s") : nil
            var items: [WorkItem] = []
            for (cs, ds, state) in streams {
                let info = try relationInfo(ds)
                try sink.estimate(ds.id, rows: info.rows, bytes: info.bytes)
                try sink.status(ds.id, .running)
                items += try plan(cs, ds, info: info, state: state)
            }
            if let factory, let snapshotID {
                extra = openReaders(factory, snapshot: snapshotID, count: min(connections, items.count) - 1)
            }
            let runner = ParallelItems(items: items, sink: sink)
            let shared = UncheckedBox(self)
            try runner.run(connections: [conn] + extra) { item, worker in
                try shared.value.execute(item, worker) { done.insert($0) }
            }
            for c in extra { try c.query("COMMIT") }
            try conn.query("COMMIT")
        } catch {
            _ = try? conn.query("ROLLBACK")
            for (_, ds, _) in streams where !done.contains(ds.id) { try? sink.status(ds.id, .incomplete) }
            throw error
        }
    }

    /// Connections importing `snapshot`; fewer when the server refuses more (logged).
    private func openReaders(_ factory: ConnectionFactory, snapshot: String, count: Int) -> [PGConnection] {
        var opened: [PGConnection] = []
        for _ in 0..<max(0, count) {
            do {
                let c = try factory.connect()
                try c.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                try c.query("SET TRANSACTION SNAPSHOT \(PGConnection.quoteLiteral(snapshot))")
                opened.append(c)
            } catch {
                log(.warning, "could not open reading connection \(opened.count + 2) of \(count + 1) (\(error)); reading with \(opened.count + 1) (setting max_db_connections)")
                break
            }
        }
        return opened
    }

    /// Plans one stream's items (running a resumed load's reconciliation first).
    private func plan(_ cs: ConfiguredStream, _ ds: DiscoveredStream, info: RelationInfo, state: StreamState?) throws -> [WorkItem] {
        let hasCtid = ds.kind != .view
        let label = ds.id

        // A load in progress resumes only on the same physical relation.
        var state = state
        if case .load(let l)? = state, l.relationFilenode != info.filenode {
            log(.warning, "\(label): the table was rewritten since the last checkpoint (relation file \(l.relationFilenode) is now \(info.filenode), e.g. by VACUUM FULL or CLUSTER); its load restarts from the beginning")
            state = .load(StreamState.Load(nextPage: 0, relationFilenode: info.filenode, incremental: l.incremental, xminLowerBound: l.xminLowerBound))
        }

        switch cs.syncMode {
        case .fullRefresh:
            var resumed: StreamState.Load?
            if case .load(let l)? = state, l.incremental == nil, l.xminLowerBound == nil { resumed = l }
            guard hasCtid else { return [WorkItem(stream: try single(cs, ds, info: info, completion: .fullRefreshComplete), kind: .whole)] }
            var scan = try pages(cs, ds, info: info, resumed: resumed, incremental: nil, xminLowerBound: nil, completion: .fullRefreshComplete)
            if resumed != nil, sink.reconcilesResumedLoads {
                if !scan.fresh, !(try reconcile(scan.stream, saved: resumed?.snapshotXmin)) {
                    scan = try pages(cs, ds, info: info, resumed: nil, incremental: nil, xminLowerBound: nil, completion: .fullRefreshComplete)
                }
                if scan.fresh { try sink.restartLoad(ds.id) }
            }
            return scan.items

        case .incremental:
            switch config.replication {
            case .cdc:
                throw ConnectionSetupError.notSupportedYet(setting: "replication_method", what: "reading incremental streams by CDC")
            case .xmin:
                guard hasCtid else {
                    throw ReadError(message: "stream \(label) is a view; xmin incremental works on tables only. Configure it as full_refresh or use a cursor (replication_method Standard).")
                }
                return try planXmin(cs, ds, info: info, state: state)
            case .standard:
                return try planCursor(cs, ds, info: info, state: state, hasCtid: hasCtid)
            }
        }
    }

    /// A stream read as one item.
    private func single(_ cs: ConfiguredStream, _ ds: DiscoveredStream, info: RelationInfo, completion: StreamState?, tracking: String? = nil) throws -> StreamRead {
        let s = StreamRead(configured: cs, discovered: ds, plan: try makePlan(cs, ds, tracking: tracking), relations: [], progress: [:], leafPlanned: false,
                           info: info, incremental: nil, xminLowerBound: nil, completion: completion)
        s.outstanding = 1
        return s
    }

    // MARK: xmin

    private func planXmin(_ cs: ConfiguredStream, _ ds: DiscoveredStream, info: RelationInfo, state: StreamState?) throws -> [WorkItem] {
        let label = ds.id
        let now = StreamState.Xmin(raw: info.snapshotXmin.raw)
        switch state {
        case .load(let l)? where l.incremental.flatMap({ if case .xmin = $0 { return true } else { return nil } }) == true:
            return try pages(cs, ds, info: info, resumed: l, incremental: l.incremental, xminLowerBound: l.xminLowerBound, completion: .incremental(l.incremental!)).items
        case .incremental(.xmin(let prev))?:
            if prev.epoch != now.epoch {
                log(.warning, "\(label): the transaction id counter wrapped around since the last sync (xid epoch \(prev.epoch) → \(now.epoch)); xmin values no longer order changes, so this stream is read again in full")
                return try pages(cs, ds, info: info, resumed: nil, incremental: .xmin(now), xminLowerBound: nil, completion: .incremental(.xmin(now))).items
            }
            return try pages(cs, ds, info: info, resumed: nil, incremental: .xmin(now), xminLowerBound: prev.xid, completion: .incremental(.xmin(now))).items
        default:
            if state != nil { log(.info, "\(label): the saved state is not an xmin state; reading the stream in full") }
            return try pages(cs, ds, info: info, resumed: nil, incremental: .xmin(now), xminLowerBound: nil, completion: .incremental(.xmin(now))).items
        }
    }

    // MARK: cursor

    private func planCursor(_ cs: ConfiguredStream, _ ds: DiscoveredStream, info: RelationInfo, state: StreamState?, hasCtid: Bool) throws -> [WorkItem] {
        let label = ds.id
        guard let field = cs.cursorField.first ?? ds.evidentCursor?.name else {
            // Clients that configure every stream as incremental (PyAirbyte) still get the rows.
            log(.warning, "\(label) is incremental but has no cursor_field and no column that looks like one (such as updated_at); it is read in full, as full_refresh. Name a cursor_field to read only what changed")
            var full = cs
            full.syncMode = .fullRefresh
            return try plan(full, ds, info: info, state: state.flatMap { if case .load(let l) = $0, l.incremental == nil { return $0 } else { return nil } })
        }
        if cs.cursorField.isEmpty { log(.info, "\(label): no cursor_field in the catalog; using \"\(field)\", its default_cursor_field") }
        guard let column = ds.columns.first(where: { $0.name == field }) else {
            throw ReadError(message: "stream \(label): cursor column \"\(field)\" does not exist in the relation")
        }
        switch state {
        case .load(let l)?:
            if case .cursor(let c)? = l.incremental, c.field == field {
                return try pages(cs, ds, info: info, resumed: l, incremental: l.incremental, xminLowerBound: nil, completion: .incremental(.cursor(c))).items
            }
        case .incremental(.cursor(let c))?:
            if c.field == field {
                try checkSavedCursor(c, ds, column: column)
                return [WorkItem(stream: try single(cs, ds, info: info, completion: nil, tracking: column.name), kind: .ordered(column, c, initial: false))]
            }
            log(.warning, "\(label): the cursor changed from \"\(c.field)\" to \"\(field)\"; reading the stream in full")
        default:
            break
        }
        // First sync of the stream.
        if hasCtid {
            let max = try cursorMax(ds, column: column)
            return try pages(cs, ds, info: info, resumed: nil, incremental: .cursor(max), xminLowerBound: nil, completion: .incremental(.cursor(max))).items
        }
        return [WorkItem(stream: try single(cs, ds, info: info, completion: nil, tracking: column.name),
                         kind: .ordered(column, StreamState.Cursor(field: field, value: nil, recordCount: 0), initial: true))]
    }

    /// Refuses a saved cursor value the column's type cannot take (state edited, or the column's
    /// type changed), naming the state, stream, field and value, instead of failing in SQL.
    private func checkSavedCursor(_ c: StreamState.Cursor, _ ds: DiscoveredStream, column: DiscoveredStream.Column) throws {
        guard let value = c.value else { return }
        do {
            try conn.query("SELECT $1::\(column.type.declared)", [value])
        } catch {
            guard error.sqlState?.hasPrefix("22") == true else { throw error }
            throw ReadError(message: "\(stateOrigin): stream \(ds.schema).\(ds.name): the saved value \(PGConnection.quoteLiteral(value)) of cursor field \"\(c.field)\" does not match the column's type \(column.type.declared) (\(error.message)). The state belongs to another column type or was edited; reset this stream's state (remove its entry, so the stream is read in full again)")
        }
    }

    /// The largest cursor value and how many rows hold it, in the current snapshot.
    private func cursorMax(_ ds: DiscoveredStream, column: DiscoveredStream.Column) throws -> StreamState.Cursor {
        let c = PGConnection.quoteIdentifier(column.name)
        let r = try conn.query("SELECT \(c)::text AS v, count(*) AS n FROM \(qualified(ds)) WHERE \(c) = (SELECT max(\(c)) FROM \(qualified(ds))) GROUP BY \(c)")
        if r.rowCount == 0 { return StreamState.Cursor(field: column.name, value: nil, recordCount: 0) }
        return StreamState.Cursor(field: column.name, value: r.string(0, "v"), recordCount: r.int(0, "n") ?? 0)
    }

    /// Reads rows past a cursor position in cursor order on `worker`'s connection, checkpointing as it goes.
    private func readOrdered(_ s: StreamRead, column: DiscoveredStream.Column, from: StreamState.Cursor, initial: Bool, worker: ParallelItems<WorkItem>.Worker) throws {
        let ds = s.discovered
        let conn = worker.conn
        let c = PGConnection.quoteIdentifier(column.name)
        let typeName = column.type.declared
        var condition = "\(c) IS NOT NULL"
        var order = "\(c)"
        if initial {
            condition = "true"
            order = "\(c) NULLS FIRST"
        } else if let v = from.value {
            let literal = "\(PGConnection.quoteLiteral(v))::\(typeName)"
            // Ties with the saved value: if all of them were emitted, start after them; else re-read them.
            let n = try conn.query("SELECT count(*) FROM \(qualified(ds)) WHERE \(c) = \(literal)").string(0, 0).flatMap { Int64($0) } ?? 0
            condition = n == from.recordCount ? "\(c) > \(literal)" : "\(c) >= \(literal)"
            if n != from.recordCount {
                try worker.locked { log(.info, "\(ds.id): \(n) rows now hold the saved cursor value (\(from.recordCount) were emitted); re-reading those rows so none is lost") }
            }
        }
        let plan = s.plan
        let sql = "COPY (SELECT \(plan.selectList) FROM \(qualified(ds)) WHERE \(condition) ORDER BY \(order)) TO STDOUT"
        var current = from
        var sawRows = false
        var sinceState: Int64 = 0
        var rows: Int64 = 0
        var lastCheck = Date()
        let interval = Double(config.checkpointTargetIntervalSeconds)
        let tracked = plan.tracked!
        var last: [UInt8]?
        try conn.copyOut(sql) { row in
            try worker.row(plan.shape, row)
            sinceState += 1
            rows += 1
            if let v = try CopyText.field(row, tracked) {
                if !sawRows || last.map({ !CopyText.equal($0, v) }) ?? true {
                    let text = CopyText.unescaped(v)
                    last = Array(v)
                    current = StreamState.Cursor(field: column.name, value: String(decoding: text, as: UTF8.self), recordCount: 1)
                } else {
                    current.recordCount += 1
                }
            } else {
                last = nil
            }
            sawRows = true
            if sinceState >= Int64(config.batchFetchLimit) || (rows & 1023 == 0 && Date().timeIntervalSince(lastCheck) >= interval) {
                if current.value != nil {
                    let state = current
                    try worker.locked { try emitState(s, .incremental(.cursor(state))) }
                    sinceState = 0
                    lastCheck = Date()
                }
            }
        }
        let state = current
        try worker.locked { try emitState(s, .incremental(.cursor(state))) }
    }

    // MARK: chunks

    /// A stream's page-range items and whether it starts from nothing.
    struct PageScan {
        var stream: StreamRead
        var items: [WorkItem]
        var fresh: Bool
    }

    /// Plans a read of the relation (or of each leaf partition) in page ranges of about
    /// `batch_fetch_limit` rows, skipping the pages `resumed` records as read.
    private func pages(_ cs: ConfiguredStream, _ ds: DiscoveredStream, info: RelationInfo, resumed: StreamState.Load?,
                       incremental: StreamState.Incremental?, xminLowerBound: UInt32?, completion: StreamState) throws -> PageScan {
        let (relations, leafPlanned) = try scanRelations(ds, info: info)
        var progress: [UInt32: PageProgress] = [:]
        var fresh = true
        if let l = resumed, !l.isFresh {
            let saved = l.partitions ?? [ds.oid: l.progress]
            if Set(saved.keys).isSubset(of: relations.map(\.oid)) && (l.partitions != nil) == leafPlanned {
                progress = saved
                fresh = false
            } else {
                log(.info, "\(ds.id): the partitions changed since the last checkpoint; the load restarts from the beginning")
            }
        }
        let stream = StreamRead(configured: cs, discovered: ds, plan: try makePlan(cs, ds, tracking: nil), relations: relations, progress: progress,
                                leafPlanned: leafPlanned, info: info, incremental: incremental, xminLowerBound: xminLowerBound, completion: completion)
        let items = Self.pageItems(relations, progress: progress, chunkPages: chunkPages(info)).map { WorkItem(stream: stream, kind: .pages($0.0, $0.1)) }
        stream.outstanding = items.count
        if !fresh { log(.info, "\(ds.id): resuming the interrupted load; \(items.count) page ranges are left to read") }
        return PageScan(stream: stream, items: items, fresh: fresh)
    }

    /// Pages per item: about `batch_fetch_limit` rows at the relation's rows per page.
    func chunkPages(_ info: RelationInfo) -> UInt32 {
        let rowsPerPage = info.pages > 0 && info.rows > 0 ? max(1, Double(info.rows) / Double(info.pages)) : 60
        return UInt32(clamping: max(1, Int((Double(config.batchFetchLimit) / rowsPerPage).rounded(.up))))
    }

    /// The page ranges still to read, cut into items of `chunkPages`; the last range of each
    /// relation is open-ended, so pages added since planning are read too.
    static func pageItems(_ relations: [ScanRelation], progress: [UInt32: PageProgress], chunkPages: UInt32) -> [(ScanRelation, Range<UInt32>)] {
        var items: [(ScanRelation, Range<UInt32>)] = []
        for rel in relations {
            for gap in (progress[rel.oid] ?? PageProgress()).remaining() {
                var lo = gap.lowerBound
                while true {
                    let (next, overflow) = lo.addingReportingOverflow(chunkPages)
                    let openEnd = gap.upperBound == PageProgress.end
                    if overflow || next >= gap.upperBound || (openEnd && next >= rel.pages) {
                        items.append((rel, lo..<gap.upperBound))
                        break
                    }
                    items.append((rel, lo..<next))
                    lo = next
                }
            }
        }
        return items
    }

    /// The relations page ranges are read from: each leaf of a partitioned table (when the
    /// role may read every leaf directly), else the relation itself.
    func scanRelations(_ ds: DiscoveredStream, info: RelationInfo) throws -> ([ScanRelation], Bool) {
        if ds.kind == .partitionedTable {
            let r = try conn.query("""
                SELECT c.oid::int8 AS oid, n.nspname, c.relname, pg_relation_size(c.oid) / current_setting('block_size')::int8 AS pages,
                       has_table_privilege(c.oid, 'SELECT') AS readable
                FROM pg_partition_tree($1) t JOIN pg_catalog.pg_class c ON c.oid = t.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE t.isleaf ORDER BY c.oid
                """, [String(ds.oid)])
            let leaves = (0..<r.rowCount).map { i in
                ScanRelation(oid: UInt32(r.int(i, "oid") ?? 0),
                             sql: PGConnection.quoteIdentifier(r.string(i, "nspname") ?? "") + "." + PGConnection.quoteIdentifier(r.string(i, "relname") ?? ""),
                             pages: UInt32(clamping: r.int(i, "pages") ?? 0))
            }
            if (0..<r.rowCount).allSatisfy({ r.string($0, "readable") == "t" }) { return (leaves, true) }
        }
        return ([ScanRelation(oid: ds.oid, sql: qualified(ds), pages: info.pages)], false)
    }

    /// The COPY of one page range of `rel` for `plan`.
    func pageSQL(_ plan: Plan, _ rel: ScanRelation, _ range: Range<UInt32>, xminLowerBound: UInt32?) -> String {
        var conditions = ["ctid >= '(\(range.lowerBound),0)'::tid"]
        if range.upperBound != PageProgress.end { conditions.append("ctid < '(\(range.upperBound),0)'::tid") }
        if let lb = xminLowerBound { conditions.append("xmin::text::int8 >= \(lb)") }
        return "COPY (SELECT \(plan.selectList) FROM \(rel.sql) WHERE \(conditions.joined(separator: " AND "))) TO STDOUT"
    }

    /// Runs one item on `worker`'s connection; `completed` is told (under the sink's lock) when
    /// the item finished its stream.
    private func execute(_ item: WorkItem, _ worker: ParallelItems<WorkItem>.Worker, completed: (StreamID) -> Void) throws {
        let s = item.stream
        worker.handed = { s.records += $0 }
        switch item.kind {
        case .pages(let rel, let range):
            let shape = s.plan.shape
            try worker.conn.copyOut(pageSQL(s.plan, rel, range, xminLowerBound: s.xminLowerBound)) { row in
                try worker.row(shape, row)
            }
            try worker.locked {
                s.progress[rel.oid, default: PageProgress()].add(range)
                s.outstanding -= 1
                try finishItem(s, completed: completed)
            }
        case .ordered(let column, let from, let initial):
            try readOrdered(s, column: column, from: from, initial: initial, worker: worker)
            try worker.locked {
                s.outstanding -= 1
                try finishItem(s, completed: completed)
            }
        case .whole:
            let shape = s.plan.shape
            try worker.conn.copyOut("COPY (SELECT \(s.plan.selectList) FROM \(qualified(s.discovered))) TO STDOUT") { row in
                try worker.row(shape, row)
            }
            try worker.locked {
                s.outstanding -= 1
                try finishItem(s, completed: completed)
            }
        }
    }

    /// After an item of `s`: its state (the completion once no item is left) and status.
    private func finishItem(_ s: StreamRead, completed: (StreamID) -> Void) throws {
        if s.outstanding > 0 {
            try emitState(s, s.loadState)
            return
        }
        if let c = s.completion { try emitState(s, c) }
        try sink.status(s.id, .complete)
        completed(s.id)
    }

    /// A state for `s`, with the records handed over since its previous one.
    func emitState(_ s: StreamRead, _ state: StreamState) throws {
        try sink.checkpoint(.stream(s.id, state, records: s.records))
        s.records = 0
    }

    /// A resumed full refresh, for a sink that can apply it: rows of the already-read pages that
    /// changed since the interrupted read's snapshot are read again, and the keys of every row are
    /// listed, so rows updated or deleted there since are caught. False when the saved snapshot
    /// is too old to compare with (the load then restarts).
    private func reconcile(_ s: StreamRead, saved: UInt64?) throws -> Bool {
        let ds = s.discovered
        guard !ds.primaryKey.isEmpty, let saved, s.info.snapshotXmin.raw >= saved, s.info.snapshotXmin.raw - saved < 1 << 30 else {
            log(.info, "\(ds.id): the interrupted load cannot be compared with the table as it is now; it restarts from the beginning")
            return false
        }
        var rows: Int64 = 0
        for rel in s.relations {
            guard let p = s.progress[rel.oid] else { continue }
            var copied: [String] = []
            if p.below > 0 { copied.append("ctid < '(\(p.below),0)'::tid") }
            for r in p.ranges {
                copied.append(r.upperBound == PageProgress.end ? "ctid >= '(\(r.lowerBound),0)'::tid"
                                                              : "(ctid >= '(\(r.lowerBound),0)'::tid AND ctid < '(\(r.upperBound),0)'::tid)")
            }
            guard !copied.isEmpty else { continue }
            // age() compares transaction ids across wraparound; frozen rows have the largest age.
            try conn.copyOut("COPY (SELECT \(s.plan.selectList) FROM \(rel.sql) WHERE (\(copied.joined(separator: " OR "))) AND age(xmin) <= age('\(UInt32(truncatingIfNeeded: saved))'::xid)) TO STDOUT") { row in
                try sink.row(s.plan.shape, copyText: row)
                rows += 1
            }
        }
        let keyColumns = ds.primaryKey.compactMap { k in ds.columns.first { $0.name == k } }
        let keyShape = RowShape(stream: ds.id, columns: keyColumns.map { RowShape.Column(name: $0.name, encoding: ValueEncoding($0.type), type: $0.type, isKey: true) })
        try conn.copyOut("COPY (SELECT \(keyColumns.map { PGConnection.quoteIdentifier($0.name) }.joined(separator: ", ")) FROM \(qualified(ds))) TO STDOUT") { row in
            try sink.presentKeys(keyShape, copyText: row)
        }
        try sink.presentKeysEnd(ds.id)
        s.records += rows
        log(.info, "\(ds.id): \(rows) rows of the pages already read changed since the interrupted read and were read again, and rows deleted since are removed")
        return true
    }

    // MARK: plumbing

    struct Plan {
        var selectList: String
        var shape: RowShape
        /// Index of the cursor column in each row, when one is followed.
        var tracked: Int?
        var rows: Int64 = 0
    }

    /// The SELECT list and row shape for the configured columns (plus a tracked cursor column).
    func makePlan(_ cs: ConfiguredStream, _ ds: DiscoveredStream, tracking: String?, stamp: RowShape.CDCStamp? = nil) throws -> Plan {
        let byName = Dictionary(ds.columns.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let chosen = try cs.checkedColumns(of: ds) ?? ds.columns
        let keys = Set(ds.primaryKey)
        var columns: [RowShape.Column] = []
        var exprs: [String] = []
        for col in chosen {
            let (expr, enc) = Self.selectExpression(col)
            exprs.append(expr)
            columns.append(RowShape.Column(name: col.name, encoding: enc, type: col.type, isKey: keys.contains(col.name)))
        }
        var trackedIndex: Int?
        if let t = tracking {
            if let i = chosen.firstIndex(where: { $0.name == t }) {
                trackedIndex = i
            } else if let col = byName[t] {
                trackedIndex = columns.count
                exprs.append(PGConnection.quoteIdentifier(col.name))
                columns.append(RowShape.Column(name: col.name, encoding: .string, type: col.type, emitted: false))
            }
        }
        if exprs.isEmpty { throw ReadError(message: "stream \(cs.id): no columns selected") }
        return Plan(selectList: exprs.joined(separator: ", "), shape: RowShape(stream: ds.id, columns: columns, cdcStamp: stamp), tracked: trackedIndex)
    }

    /// money prints in the server's locale; it is read as numeric so the digits are exact and portable.
    static func selectExpression(_ col: DiscoveredStream.Column) -> (String, ValueEncoding) {
        let q = PGConnection.quoteIdentifier(col.name)
        if col.type.name == "money" { return ("\(q)::numeric", .number) }
        if col.type.isArray, col.type.element?.type.name == "money" { return ("\(q)::numeric[]", .array(element: .number, delimiter: UInt8(ascii: ","))) }
        return (q, ValueEncoding(col.type))
    }

    func qualified(_ ds: DiscoveredStream) -> String {
        PGConnection.quoteIdentifier(ds.schema) + "." + PGConnection.quoteIdentifier(ds.name)
    }

    func relationInfo(_ ds: DiscoveredStream) throws -> RelationInfo {
        let r = try conn.query("""
            SELECT c.relfilenode::int8 AS filenode, c.relkind::text AS kind, c.reltuples::int8 AS reltuples,
                   current_setting('block_size')::int8 AS block_size,
                   CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(max(pg_relation_size(t.relid)), 0) FROM pg_partition_tree(c.oid) t WHERE t.isleaf)
                        WHEN c.relkind = 'v' THEN 0 ELSE pg_relation_size(c.oid) END AS max_bytes,
                   CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(sum(pg_relation_size(t.relid)), 0) FROM pg_partition_tree(c.oid) t WHERE t.isleaf)
                        WHEN c.relkind = 'v' THEN 0 ELSE pg_relation_size(c.oid) END AS total_bytes,
                   CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(sum(pc.reltuples::int8) FILTER (WHERE pc.reltuples > 0), 0) FROM pg_partition_tree(c.oid) t JOIN pg_class pc ON pc.oid = t.relid WHERE t.isleaf) END AS part_rows,
                   CASE WHEN c.relkind = 'p' THEN (SELECT string_agg(pc.oid::text || ':' || pc.relfilenode::text, ',' ORDER BY pc.oid) FROM pg_partition_tree(c.oid) t JOIN pg_class pc ON pc.oid = t.relid WHERE t.isleaf) END AS parts,
                   pg_snapshot_xmin(pg_current_snapshot())::text::int8 AS snap_xmin
            FROM pg_catalog.pg_class c WHERE c.oid = $1
            """, [String(ds.oid)])
        guard r.rowCount == 1 else {
            throw ReadError(message: "stream \(ds.id) disappeared while reading (dropped?)")
        }
        let block = max(1, r.int(0, "block_size") ?? 8192)
        var filenode = UInt64(r.int(0, "filenode") ?? 0)
        if let parts = r.string(0, "parts") { filenode = Self.fnv1a(parts) }
        let maxBytes = r.int(0, "max_bytes") ?? 0
        var rows = r.int(0, "part_rows") ?? r.int(0, "reltuples") ?? 0
        if rows < 0 { rows = 0 }
        return RelationInfo(
            filenode: filenode, pages: UInt32(clamping: (maxBytes + block - 1) / block), bytes: r.int(0, "total_bytes") ?? 0,
            rows: rows, snapshotXmin: StreamState.Xmin(raw: UInt64(max(0, r.int(0, "snap_xmin") ?? 0))))
    }

    /// A stable 63-bit fingerprint of a partitioned table's leaf files.
    static func fnv1a(_ s: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h >> 1
    }

    func log(_ level: Logger.Level, _ message: String) {
        logger.log(level: level, "\(message)")
        sink.log(level, message)
    }
}
