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

    /// Reads one stream, resuming from `state` where it allows.
    public func read(_ cs: ConfiguredStream, _ ds: DiscoveredStream, state: StreamState?) throws {
        try sink.status(ds.id, .started)
        try conn.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        do {
            let info = try relationInfo(ds)
            try sink.estimate(ds.id, rows: info.rows, bytes: info.bytes)
            try sink.status(ds.id, .running)
            try run(cs, ds, info: info, state: state)
            try conn.query("COMMIT")
        } catch {
            _ = try? conn.query("ROLLBACK")
            try? sink.status(ds.id, .incomplete)
            throw error
        }
        try sink.status(ds.id, .complete)
    }

    private func run(_ cs: ConfiguredStream, _ ds: DiscoveredStream, info: RelationInfo, state: StreamState?) throws {
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
            var start: UInt32 = 0
            var resumed: StreamState.Load?
            if case .load(let l)? = state, l.incremental == nil, l.xminLowerBound == nil { start = l.nextPage; resumed = l }
            if hasCtid {
                if let l = resumed, sink.reconcilesResumedLoads {
                    if start > 0 { start = try reconcile(cs, ds, info: info, resumed: l) }
                    if start == 0 { try sink.restartLoad(ds.id) }
                }
                try readChunks(cs, ds, info: info, from: start, incremental: nil, xminLowerBound: nil, completion: .fullRefreshComplete)
            } else {
                try readWhole(cs, ds)
            }

        case .incremental:
            switch config.replication {
            case .cdc:
                throw ConnectionSetupError.notSupportedYet(setting: "replication_method", what: "reading incremental streams by CDC")
            case .xmin:
                guard hasCtid else {
                    throw ReadError(message: "stream \(label) is a view; xmin incremental works on tables only. Configure it as full_refresh or use a cursor (replication_method Standard).")
                }
                try readXmin(cs, ds, info: info, state: state)
            case .standard:
                try readCursor(cs, ds, info: info, state: state, hasCtid: hasCtid)
            }
        }
    }

    // MARK: xmin

    private func readXmin(_ cs: ConfiguredStream, _ ds: DiscoveredStream, info: RelationInfo, state: StreamState?) throws {
        let label = ds.id
        let now = StreamState.Xmin(raw: info.snapshotXmin.raw)
        switch state {
        case .load(let l)? where l.incremental.flatMap({ if case .xmin = $0 { return true } else { return nil } }) == true:
            try readChunks(cs, ds, info: info, from: l.nextPage, incremental: l.incremental, xminLowerBound: l.xminLowerBound,
                           completion: .incremental(l.incremental!))
        case .incremental(.xmin(let prev))?:
            if prev.epoch != now.epoch {
                log(.warning, "\(label): the transaction id counter wrapped around since the last sync (xid epoch \(prev.epoch) → \(now.epoch)); xmin values no longer order changes, so this stream is read again in full")
                try readChunks(cs, ds, info: info, from: 0, incremental: .xmin(now), xminLowerBound: nil, completion: .incremental(.xmin(now)))
            } else {
                try readChunks(cs, ds, info: info, from: 0, incremental: .xmin(now), xminLowerBound: prev.xid, completion: .incremental(.xmin(now)))
            }
        default:
            if state != nil { log(.info, "\(label): the saved state is not an xmin state; reading the stream in full") }
            try readChunks(cs, ds, info: info, from: 0, incremental: .xmin(now), xminLowerBound: nil, completion: .incremental(.xmin(now)))
        }
    }

    // MARK: cursor

    private func readCursor(_ cs: ConfiguredStream, _ ds: DiscoveredStream, info: RelationInfo, state: StreamState?, hasCtid: Bool) throws {
        let label = ds.id
        guard let field = cs.cursorField.first else {
            throw ReadError(message: "stream \(label) is incremental but has no cursor_field; name the column that grows with each change (such as updated_at)")
        }
        guard let column = ds.columns.first(where: { $0.name == field }) else {
            throw ReadError(message: "stream \(label): cursor column \"\(field)\" does not exist in the relation")
        }
        switch state {
        case .load(let l)?:
            if case .cursor(let c)? = l.incremental, c.field == field {
                try readChunks(cs, ds, info: info, from: l.nextPage, incremental: l.incremental, xminLowerBound: nil, completion: .incremental(.cursor(c)))
                return
            }
        case .incremental(.cursor(let c))?:
            if c.field == field {
                try checkSavedCursor(c, ds, column: column)
                try readOrdered(cs, ds, column: column, from: c)
                return
            }
            log(.warning, "\(label): the cursor changed from \"\(c.field)\" to \"\(field)\"; reading the stream in full")
        default:
            break
        }
        // First sync of the stream.
        if hasCtid {
            let max = try cursorMax(ds, column: column)
            try readChunks(cs, ds, info: info, from: 0, incremental: .cursor(max), xminLowerBound: nil, completion: .incremental(.cursor(max)))
        } else {
            try readOrdered(cs, ds, column: column, from: StreamState.Cursor(field: field, value: nil, recordCount: 0), initial: true)
        }
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

    /// Reads rows past a cursor position in cursor order, checkpointing as it goes.
    private func readOrdered(_ cs: ConfiguredStream, _ ds: DiscoveredStream, column: DiscoveredStream.Column, from: StreamState.Cursor, initial: Bool = false) throws {
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
                log(.info, "\(ds.id): \(n) rows now hold the saved cursor value (\(from.recordCount) were emitted); re-reading those rows so none is lost")
            }
        }
        var plan = try makePlan(cs, ds, tracking: column.name)
        let sql = "COPY (SELECT \(plan.selectList) FROM \(qualified(ds)) WHERE \(condition) ORDER BY \(order)) TO STDOUT"
        var current = from
        var sawRows = false
        var sinceState: Int64 = 0
        var lastCheck = Date()
        let interval = Double(config.checkpointTargetIntervalSeconds)
        let tracked = plan.tracked!
        var last: [UInt8]?
        try conn.copyOut(sql) { row in
            try sink.row(plan.shape, copyText: row)
            sinceState += 1
            plan.rows += 1
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
            if sinceState >= Int64(config.batchFetchLimit) || (plan.rows & 1023 == 0 && Date().timeIntervalSince(lastCheck) >= interval) {
                if current.value != nil {
                    try emitState(ds, .incremental(.cursor(current)), count: sinceState)
                    sinceState = 0
                    lastCheck = Date()
                }
            }
        }
        try emitState(ds, .incremental(.cursor(current)), count: sinceState)
    }

    // MARK: chunks

    /// Reads the relation in ctid page ranges inside the current snapshot, emitting a STATE after each chunk.
    private func readChunks(_ cs: ConfiguredStream, _ ds: DiscoveredStream, info: RelationInfo, from start: UInt32,
                            incremental: StreamState.Incremental?, xminLowerBound: UInt32?, completion: StreamState) throws {
        var plan = try makePlan(cs, ds, tracking: nil)
        var pending = reconciledRows
        reconciledRows = 0
        let rowsPerPage = info.pages > 0 && info.rows > 0 ? max(1, Double(info.rows) / Double(info.pages)) : 60
        let chunkPages = UInt32(clamping: max(1, Int((Double(config.batchFetchLimit) / rowsPerPage).rounded(.up))))
        var page = start
        if start > 0 { log(.info, "\(ds.id): resuming at page \(start) of \(info.pages)") }
        while true {
            let upper = page &+ chunkPages
            let last = upper >= info.pages || upper < page
            var conditions = ["ctid >= '(\(page),0)'::tid"]
            if !last { conditions.append("ctid < '(\(upper),0)'::tid") }
            if let lb = xminLowerBound { conditions.append("xmin::text::int8 >= \(lb)") }
            let sql = "COPY (SELECT \(plan.selectList) FROM \(qualified(ds)) WHERE \(conditions.joined(separator: " AND "))) TO STDOUT"
            var chunkRows: Int64 = pending
            pending = 0
            try conn.copyOut(sql) { row in
                try sink.row(plan.shape, copyText: row)
                chunkRows += 1
            }
            plan.rows += chunkRows
            if last {
                try emitState(ds, completion, count: chunkRows)
                break
            }
            page = upper
            try emitState(ds, .load(StreamState.Load(nextPage: page, relationFilenode: info.filenode, incremental: incremental, xminLowerBound: xminLowerBound,
                                                     snapshotXmin: info.snapshotXmin.raw)), count: chunkRows)
        }
    }

    /// Reads a view in one COPY (views have no physical position to resume from).
    private func readWhole(_ cs: ConfiguredStream, _ ds: DiscoveredStream) throws {
        try emitState(ds, .fullRefreshComplete, count: try copyAll(cs, ds, stamp: nil))
    }

    // MARK: plumbing

    struct Plan {
        var selectList: String
        var shape: RowShape
        /// Index of the cursor column in each row, when one is followed.
        var tracked: Int?
        var rows: Int64 = 0
    }

    /// Rows re-read by a resumed load's reconciliation, counted into its first checkpoint.
    private var reconciledRows: Int64 = 0

    /// Reads a whole relation in one COPY inside the caller's transaction (the CDC snapshot), each
    /// row stamped with `stamp`. Returns the number of rows.
    public func copyAll(_ cs: ConfiguredStream, _ ds: DiscoveredStream, stamp: RowShape.CDCStamp?) throws -> Int64 {
        let plan = try makePlan(cs, ds, tracking: nil, stamp: stamp)
        var rows: Int64 = 0
        try conn.copyOut("COPY (SELECT \(plan.selectList) FROM \(qualified(ds))) TO STDOUT") { row in
            try sink.row(plan.shape, copyText: row)
            rows += 1
        }
        return rows
    }

    /// A resumed full refresh, for a sink that can apply it: rows of the already-copied pages that
    /// changed since the interrupted read's snapshot are read again, and the keys of every row are
    /// listed, so rows updated or deleted there since are caught. Returns the page to go on from
    /// (0 when the saved snapshot is too old to compare with).
    private func reconcile(_ cs: ConfiguredStream, _ ds: DiscoveredStream, info: RelationInfo, resumed l: StreamState.Load) throws -> UInt32 {
        guard !ds.primaryKey.isEmpty, let saved = l.snapshotXmin, info.snapshotXmin.raw >= saved,
              info.snapshotXmin.raw - saved < 1 << 30 else {
            log(.info, "\(ds.id): the interrupted load cannot be compared with the table as it is now; it restarts from the beginning")
            return 0
        }
        let plan = try makePlan(cs, ds, tracking: nil)
        var rows: Int64 = 0
        // age() compares transaction ids across wraparound; frozen rows have the largest age.
        try conn.copyOut("COPY (SELECT \(plan.selectList) FROM \(qualified(ds)) WHERE ctid < '(\(l.nextPage),0)'::tid AND age(xmin) <= age('\(UInt32(truncatingIfNeeded: saved))'::xid)) TO STDOUT") { row in
            try sink.row(plan.shape, copyText: row)
            rows += 1
        }
        let keyColumns = ds.primaryKey.compactMap { k in ds.columns.first { $0.name == k } }
        let keyShape = RowShape(stream: ds.id, columns: keyColumns.map { RowShape.Column(name: $0.name, encoding: ValueEncoding($0.type), type: $0.type, isKey: true) })
        try conn.copyOut("COPY (SELECT \(keyColumns.map { PGConnection.quoteIdentifier($0.name) }.joined(separator: ", ")) FROM \(qualified(ds))) TO STDOUT") { row in
            try sink.presentKeys(keyShape, copyText: row)
        }
        try sink.presentKeysEnd(ds.id)
        reconciledRows = rows
        log(.info, "\(ds.id): resuming at page \(l.nextPage); \(rows) rows of the copied pages changed since the interrupted read and were read again, and rows deleted since are removed")
        return l.nextPage
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

    func emitState(_ ds: DiscoveredStream, _ state: StreamState, count: Int64) throws {
        try sink.checkpoint(.stream(ds.id, state, records: count))
    }

    func log(_ level: Logger.Level, _ message: String) {
        logger.log(level: level, "\(message)")
        sink.log(level, message)
    }
}
