import Foundation
import Logging

/// Applies the stream to a PostgreSQL database through libpq. Full refreshes stream the source's
/// COPY text into `COPY ... FROM STDIN`; merges are collapsed per key and applied in batches
/// (COPY into a temporary table, then one DELETE and one INSERT ... ON CONFLICT); state and table
/// assignments live in schema `_postgate`, where no stream lands.
final class PostgresDriver: TableDriver {
    let conn: PGConnection
    let logger: Logger
    let label: String
    let naming = NamingRules(foldsCase: false, hasSchemas: true, maxBytes: 63)

    /// Rows waiting to be copied into one table (full-refresh loads and appends).
    var copyTarget: String?
    var copyData = ByteBuffer(capacity: 1 << 16)
    /// Merges waiting for one table, the newest operation per key.
    var batch: Batch?
    /// Temporary tables made in this session, by purpose, table and columns.
    var temps: [String: String] = [:]
    /// Numbers temporary tables, never reused within the session.
    var tempSequence = 0
    var schemas: Set<String> = []
    /// The temporary table of the keys listed for a staging table being reconciled.
    var keyTables: [TableRef: String] = [:]

    final class Batch {
        let table: TableRef
        let fields: [DestColumn]
        let key: [Int]
        var upserts: [[UInt8]: [UInt8]] = [:]
        var deletes: [[UInt8]: [UInt8]] = [:]
        var bytes = 0
        init(table: TableRef, fields: [DestColumn], key: [Int]) {
            self.table = table
            self.fields = fields
            self.key = key
        }
        func matches(_ t: TableRef, _ f: [DestColumn], _ k: [Int]) -> Bool {
            table == t && key == k && fields.count == f.count && zip(fields, f).allSatisfy { $0.name == $1.name }
        }
    }

    init(connInfo: PostgresConnInfo, logger: Logger) throws {
        self.logger = logger
        label = connInfo.description
        do {
            conn = try PGConnection(parameters: connInfo.libpqParameters, logger: logger)
            try conn.query("SET client_min_messages = warning")
            try conn.query("CREATE SCHEMA IF NOT EXISTS _postgate")
            try conn.query("CREATE TABLE IF NOT EXISTS _postgate.state (key text PRIMARY KEY, message jsonb NOT NULL)")
            try conn.query("CREATE TABLE IF NOT EXISTS _postgate.tables (namespace text NOT NULL, name text NOT NULL, assignment jsonb NOT NULL, PRIMARY KEY (namespace, name))")
        } catch let e {
            throw SyncError.destination("PostgreSQL destination: \(e.description)", e)
        }
    }

    deinit { copyData.deallocate() }

    static func q(_ s: String) -> String { PGConnection.quoteIdentifier(s) }

    @discardableResult
    func exec(_ what: @autoclosure () -> String, _ sql: String, _ params: [String?] = []) throws -> PGResult {
        do { return try conn.query(sql, params) } catch let e {
            throw SyncError.destination("PostgreSQL destination: \(what()): \(e.description)", e)
        }
    }

    func copyIn(_ what: @autoclosure () -> String, _ sql: String, _ data: UnsafeRawBufferPointer) throws {
        do { _ = try conn.copyIn(sql, data: data) } catch let e as PostgresError {
            throw SyncError.destination("PostgreSQL destination: \(what()): \(e.description)", e)
        }
    }

    func readBookkeeping() throws -> (states: [JSONValue], assignments: [TableAssignment]) {
        let r = try exec("reading saved state", "SELECT message::text AS m FROM _postgate.state ORDER BY key")
        let states = try (0..<r.rowCount).map { i in
            do { return try JSONParser.parse(r.string(i, "m") ?? "null") } catch {
                throw SyncError.destination("saved state in _postgate.state is not valid JSON; delete its rows to sync from scratch")
            }
        }
        let t = try exec("reading table assignments", "SELECT assignment::text AS a FROM _postgate.tables ORDER BY namespace, name")
        let assignments = try (0..<t.rowCount).map { i in
            guard let v = try? JSONParser.parse(t.string(i, "a") ?? ""), let a = TableAssignment(json: v) else {
                throw SyncError.destination("a row of _postgate.tables is not a table assignment; delete its rows (and the synced tables) to sync from scratch")
            }
            return a
        }
        return (states, assignments)
    }

    func begin() throws { try exec("BEGIN", "BEGIN") }

    /// Sends everything waiting (copies and merges).
    func flush() throws {
        try flushCopy()
        try flushBatch()
    }

    /// Outcomes per table since the last `takeOutcomes`.
    var outcomes: [TableRef: Outcomes] = [:]

    func takeOutcomes() -> [TableRef: Outcomes] {
        defer { outcomes = [:] }
        return outcomes
    }

    func commit(states: [(key: String, message: JSONValue)], assignments: [TableAssignment]) throws {
        try flush()
        for (k, m) in states {
            if m == .null {
                try exec("saving state", "DELETE FROM _postgate.state WHERE key = $1", [k])
            } else {
                try exec("saving state", "INSERT INTO _postgate.state (key, message) VALUES ($1, $2::jsonb) ON CONFLICT (key) DO UPDATE SET message = excluded.message", [k, m.jsonText])
            }
        }
        for a in assignments {
            try exec("saving table assignments", "INSERT INTO _postgate.tables (namespace, name, assignment) VALUES ($1, $2, $3::jsonb) ON CONFLICT (namespace, name) DO UPDATE SET assignment = excluded.assignment",
                     [a.stream.namespace, a.stream.name, a.json.jsonText])
        }
        try exec("committing", "COMMIT")
    }

    func rollback() {
        copyTarget = nil
        copyData.removeAll()
        batch = nil
        outcomes = [:]
        _ = try? conn.query("ROLLBACK")
        // Temporary tables made in the abandoned transaction are gone.
        temps = [:]
        keyTables = [:]
        schemas = []
    }

    func columns(of t: TableRef) throws -> [String]? {
        try flush()
        let r = try exec("inspecting \(t.name)", "SELECT a.attname AS n FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", [t.quoted])
        let names = (0..<r.rowCount).compactMap { r.string($0, "n") }
        return names.isEmpty ? nil : names
    }

    static func type(_ c: DestColumn) -> String { DestinationTypes.postgres(c.encoding, c.type) }

    /// Types without an equality operator, or whose `=` is not sameness (box, circle and path
    /// compare areas or point counts): compared by their text.
    static let comparedAsText: Set<String> = ["json", "xml", "point", "line", "lseg", "box", "path", "polygon", "circle"]

    /// `expr` in a form that compares by value.
    static func comparable(_ expr: String, _ c: DestColumn) -> String {
        let t = type(c)
        let base = t.hasSuffix("[]") ? String(t.dropLast(2)) : t
        return comparedAsText.contains(base) ? "(\(expr))::text" : expr
    }

    func create(_ t: TableRef, columns: [DestColumn], key: [String]) throws {
        try flush()
        if let s = t.schema, !schemas.contains(s) {
            try exec("creating schema \(s)", "CREATE SCHEMA IF NOT EXISTS \(Self.q(s))")
            schemas.insert(s)
        }
        var parts = columns.map { "\(Self.q($0.name)) \(Self.type($0))" }
        if !key.isEmpty { parts.append("PRIMARY KEY (\(key.map(Self.q).joined(separator: ", ")))") }
        try exec("creating \(t.name)", "CREATE TABLE \(t.quoted) (\(parts.joined(separator: ", ")))")
    }

    /// A full refresh COPYs into a table without its primary key and adds the key at the end.
    var defersKeys: Bool { true }

    func hasKey(_ t: TableRef) throws -> Bool {
        try flush()
        return try exec("inspecting \(t.name)", "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = to_regclass($1) AND indisprimary) AS k", [t.quoted]).bool(0, "k") == true
    }

    func addKey(_ t: TableRef, _ key: [String]) throws {
        try flush()
        try exec("adding the primary key of \(t.name)", "ALTER TABLE \(t.quoted) ADD PRIMARY KEY (\(key.map(Self.q).joined(separator: ", ")))")
    }

    func addColumn(_ t: TableRef, _ c: DestColumn) throws {
        try flush()
        try exec("adding column \(c.name)", "ALTER TABLE \(t.quoted) ADD COLUMN IF NOT EXISTS \(Self.q(c.name)) \(Self.type(c))")
    }

    func dropColumn(_ t: TableRef, _ name: String) throws {
        try flush()
        forgetTemps(t)
        try exec("dropping column \(name)", "ALTER TABLE \(t.quoted) DROP COLUMN IF EXISTS \(Self.q(name))")
    }

    func renameColumn(_ t: TableRef, _ from: String, to: String) throws {
        try flush()
        forgetTemps(t)
        try exec("renaming column \(from)", "ALTER TABLE \(t.quoted) RENAME COLUMN \(Self.q(from)) TO \(Self.q(to))")
    }

    /// Converts through text (as the source printed the values); where that fails, the values
    /// become NULL until the stream's reload writes them (a key column must convert).
    func alterColumnType(_ t: TableRef, _ c: DestColumn, isKey: Bool) throws {
        try flush()
        forgetTemps(t)
        let type = Self.type(c)
        let old = try exec("inspecting \(t.name)", "SELECT format_type(atttypid, atttypmod) AS t FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped",
                           [t.quoted, c.name]).string(0, "t")
        guard let old, old != type else { return }
        let alter = "ALTER TABLE \(t.quoted) ALTER COLUMN \(Self.q(c.name)) TYPE \(type) USING "
        try exec("changing the type of column \(c.name)", "SAVEPOINT _postgate_retype")
        do {
            try conn.query(alter + "\(Self.q(c.name))::text::\(type)")
            try exec("changing the type of column \(c.name)", "RELEASE SAVEPOINT _postgate_retype")
        } catch let e as PostgresError where !isKey {
            logger.info("\(t.name): column \(c.name)'s values do not convert to \(type) (\(e.message)); they are NULL until the stream is read again")
            try exec("changing the type of column \(c.name)", "ROLLBACK TO SAVEPOINT _postgate_retype")
            try exec("changing the type of column \(c.name)", alter + "NULL::\(type)")
        }
    }

    func fill(_ t: TableRef, _ c: DestColumn, value: FieldRows) throws {
        try flush()
        let v = value.withArena { params(value, 0, [0], $0) }
        try exec("setting column \(c.name)", "UPDATE \(t.quoted) SET \(Self.q(c.name)) = $1::\(Self.type(c))", v)
    }

    func deleteRange(_ t: TableRef, keys: [DestColumn], bounds: FieldRows, lower: Int?, upper: Int?) throws -> Int {
        try flush()
        let names = "(" + keys.map { Self.q($0.name) }.joined(separator: ", ") + ")"
        func marks(_ from: Int) -> String { "(" + keys.enumerated().map { "$\(from + $0.offset)::\(Self.type($0.element))" }.joined(separator: ", ") + ")" }
        var conds: [String] = []
        if lower != nil { conds.append("\(names) > \(marks(1))") }
        if upper != nil { conds.append("\(names) <= \(marks(lower == nil ? 1 : keys.count + 1))") }
        let values = bounds.withArena { arena in [lower, upper].compactMap { $0 }.flatMap { params(bounds, $0, Array(keys.indices), arena) } }
        let n = try exec("replacing a key range of \(t.name)", "DELETE FROM \(t.quoted)\(conds.isEmpty ? "" : " WHERE " + conds.joined(separator: " AND "))", values).affectedRows
        outcomes[t, default: Outcomes()].deleted += n
        return n
    }

    func drop(_ t: TableRef) throws {
        try flush()
        forgetTemps(t)
        try exec("dropping \(t.name)", "DROP TABLE IF EXISTS \(t.quoted)")
    }

    func replace(_ t: TableRef, with staging: TableRef) throws {
        try flush()
        try exec("replacing \(t.name)", "DROP TABLE IF EXISTS \(t.quoted)")
        try exec("replacing \(t.name)", "ALTER TABLE \(staging.quoted) RENAME TO \(Self.q(t.name))")
    }

    func deleteAll(_ t: TableRef) throws -> Int {
        try flush()
        let n = try exec("truncating \(t.name)", "DELETE FROM \(t.quoted)").affectedRows
        outcomes[t, default: Outcomes()].deleted += n
        return n
    }

    // MARK: copies

    func copyStatement(_ t: TableRef, _ fields: [DestColumn]) -> String {
        "COPY \(t.quoted) (\(fields.map { Self.q($0.name) }.joined(separator: ", "))) FROM STDIN"
    }

    func beginCopy(_ sql: String) throws {
        if copyTarget != sql {
            try flushCopy()
            try flushBatch()
            copyTarget = sql
        }
    }

    func flushCopy() throws {
        guard let sql = copyTarget, copyData.count > 0 else { copyTarget = nil; return }
        copyTarget = nil
        try copyIn("loading rows", sql, copyData.bytes)
        copyData.removeAll()
    }

    func load(_ t: TableRef, fields: [DestColumn], layout: FieldLayout, copyText: [UInt8]) throws {
        try beginCopy(copyStatement(t, fields))
        let shape = layout.shape
        if shape.allEmitted && shape.cdcStamp == nil {
            // The source's COPY text is this COPY's input as it stands.
            copyText.withUnsafeBytes { copyData.append($0) }
        } else if shape.allEmitted, let stamp = shape.cdcStamp {
            var tail = ByteBuffer(capacity: 64)
            defer { tail.deallocate() }
            tail.append(0x09)
            tail.append(Array(String(stamp.lsn.value).utf8))
            tail.append(0x09)
            tail.append(Array(stamp.time.utf8))
            tail.append(0x0a)
            try CopyText.forEachRow(copyText) { row in
                copyData.append(UnsafeRawBufferPointer(rebasing: row[0..<(row.count - 1)]))
                copyData.append(tail.bytes)
            }
        } else {
            var rows = FieldRows(layout: layout)
            try CopyText.forEachRow(copyText) { try rows.appendCopyRow($0) }
            let all = Array(fields.indices)
            rows.withArena { arena in
                for r in 0..<rows.count { Self.appendCopyLine(rows, r, all, arena, to: &copyData) }
            }
        }
        if copyData.count >= 8 << 20 { try flushCopy() }
    }

    static func appendCopyLine(_ rows: FieldRows, _ r: Int, _ fields: [Int], _ arena: UnsafeRawBufferPointer, to out: inout ByteBuffer) {
        for (j, f) in fields.enumerated() {
            if j > 0 { out.append(0x09) }
            if let v = rows.field(r, f, arena) { CopyText.appendEscaped(v, to: &out) } else { out.append(0x5c); out.append(UInt8(ascii: "N")) }
        }
        out.append(0x0a)
    }

    // MARK: merges

    func apply(_ t: TableRef, fields: [DestColumn], key: [Int], rows: FieldRows) throws {
        var o = Outcomes()
        defer { outcomes[t, default: Outcomes()].add(o) }
        if key.isEmpty {
            for r in 0..<rows.count {
                if rows.ops[r] == .upsert {
                    try beginCopy(copyStatement(t, fields))
                    rows.withArena { Self.appendCopyLine(rows, r, Array(0..<fields.count), $0, to: &copyData) }
                    o.appended += 1
                } else {
                    o.add(try deleteOne(t, fields, rows, r))
                }
            }
            return
        }
        try flushCopy()
        if let b = batch, !b.matches(t, fields, key) { try flushBatch() }
        var b = batch ?? Batch(table: t, fields: fields, key: key)
        batch = b
        var line = ByteBuffer(capacity: 256)
        defer { line.deallocate() }
        let all = Array(fields.indices)
        try rows.withArena { arena in
            var taken = -1
            for r in 0..<rows.count where r != taken {
                let k = Self.keyBytes(rows, r, key, arena)
                if rows.ops[r] == .rekey && r + 1 < rows.count {
                    // Move the row to its new key, keeping what the new version omits.
                    try flushBatch()
                    let carried = fields.indices.filter { !rows.isAbsent(r + 1, $0) }
                    let set = carried.enumerated().map { "\(Self.q(fields[$1].name)) = $\($0 + 1)::\(Self.type(fields[$1]))" }.joined(separator: ", ")
                    let cond = key.enumerated().map { "\(Self.q(fields[$1].name)) = $\(carried.count + $0 + 1)::\(Self.type(fields[$1]))" }.joined(separator: " AND ")
                    let n = try exec("moving a row of \(t.name) to its new key", "UPDATE \(t.quoted) SET \(set) WHERE \(cond)",
                                     params(rows, r + 1, carried, arena) + params(rows, r, key, arena)).affectedRows
                    b = Batch(table: t, fields: fields, key: key)
                    batch = b
                    if n > 0 {
                        o.updated += 1
                        taken = r + 1
                    }
                } else if rows.ops[r] != .upsert {
                    line.removeAll()
                    Self.appendCopyLine(rows, r, key, arena, to: &line)
                    b.upserts[k] = nil
                    b.deletes[k] = Array(line.bytes)
                    b.bytes += line.count
                } else if rows.omitsAny(r) {
                    // A row without its unchanged TOAST values updates only what it carries.
                    try flushBatch()
                    o.add(try partial(t, fields, key, rows, r, arena))
                    b = Batch(table: t, fields: fields, key: key)
                    batch = b
                } else {
                    line.removeAll()
                    Self.appendCopyLine(rows, r, all, arena, to: &line)
                    b.upserts[k] = Array(line.bytes)
                    b.bytes += line.count
                }
            }
        }
        if b.bytes >= 2 << 20 || b.upserts.count + b.deletes.count >= 10_000 { try flushBatch() }
    }

    static func keyBytes(_ rows: FieldRows, _ r: Int, _ key: [Int], _ arena: UnsafeRawBufferPointer) -> [UInt8] {
        var k: [UInt8] = []
        for f in key {
            if let v = rows.field(r, f, arena) {
                withUnsafeBytes(of: UInt32(v.count)) { k.append(contentsOf: $0) }
                k.append(contentsOf: v)
            } else {
                k.append(contentsOf: [0xff, 0xff, 0xff, 0xff])
            }
        }
        return k
    }

    /// Temporary tables copy their table's column types when made: after `t`'s columns change they are made again.
    func forgetTemps(_ t: TableRef) {
        let tag = "\u{0}" + t.quoted + "\u{0}"
        temps = temps.filter { !$0.key.contains(tag) }
    }

    func temp(_ purpose: String, _ t: TableRef, _ columns: String) throws -> String {
        let id = purpose + "\u{0}" + t.quoted + "\u{0}" + columns
        if let name = temps[id] {
            try exec("batching", "TRUNCATE \(name)")
            return name
        }
        tempSequence += 1
        let name = Self.q("_postgate_\(purpose)_\(tempSequence)")
        try exec("batching", "DROP TABLE IF EXISTS pg_temp.\(name)")
        try exec("batching", "CREATE TEMP TABLE \(name) AS SELECT \(columns) FROM \(t.quoted) WITH NO DATA")
        temps[id] = name
        return name
    }

    /// Applies the waiting merges: deletes first, then upserts (a key has one of the two).
    func flushBatch() throws {
        guard let b = batch else { return }
        batch = nil
        var o = Outcomes()
        defer { outcomes[b.table, default: Outcomes()].add(o) }
        let names = b.fields.map { Self.q($0.name) }
        let keyNames = b.key.map { names[$0] }
        if !b.deletes.isEmpty {
            let tmp = try temp("del", b.table, keyNames.joined(separator: ", "))
            var data = ByteBuffer(capacity: b.deletes.count * 16)
            defer { data.deallocate() }
            for (_, line) in b.deletes { data.append(line) }
            try copyIn("deleting from \(b.table.name)", "COPY \(tmp) (\(keyNames.joined(separator: ", "))) FROM STDIN", data.bytes)
            let n = try exec("deleting from \(b.table.name)", "DELETE FROM \(b.table.quoted) AS t USING \(tmp) d WHERE " + keyNames.map { "t.\($0) = d.\($0)" }.joined(separator: " AND ")).affectedRows
            o.deleted += n
            o.unchanged += b.deletes.count - n
        }
        if !b.upserts.isEmpty {
            let list = names.joined(separator: ", ")
            let tmp = try temp("up", b.table, list)
            var data = ByteBuffer(capacity: b.bytes)
            defer { data.deallocate() }
            for (_, line) in b.upserts { data.append(line) }
            try copyIn("merging into \(b.table.name)", "COPY \(tmp) (\(list)) FROM STDIN", data.bytes)
            let isKey = Set(b.key)
            let updatable = b.fields.indices.filter { !isKey.contains($0) }
            let compared = updatable.filter { !b.fields[$0].name.hasPrefix("_ab_cdc_") }
            var sql = "INSERT INTO \(b.table.quoted) AS t (\(list)) SELECT \(list) FROM \(tmp) ON CONFLICT (\(keyNames.joined(separator: ", "))) "
            if updatable.isEmpty {
                sql += "DO NOTHING"
            } else {
                sql += "DO UPDATE SET " + updatable.map { "\(names[$0]) = excluded.\(names[$0])" }.joined(separator: ", ")
                if !compared.isEmpty {
                    sql += " WHERE (" + compared.map { Self.comparable("t.\(names[$0])", b.fields[$0]) }.joined(separator: ", ") + ", NULL) IS DISTINCT FROM ("
                        + compared.map { Self.comparable("excluded.\(names[$0])", b.fields[$0]) }.joined(separator: ", ") + ", NULL)"
                }
            }
            sql += " RETURNING (xmax = 0) AS inserted"
            let r = try exec("merging into \(b.table.name)", sql)
            var ins = 0
            for i in 0..<r.rowCount where r.bool(i, "inserted") == true { ins += 1 }
            o.inserted += ins
            o.updated += r.rowCount - ins
            o.unchanged += b.upserts.count - r.rowCount
        }
    }

    func params(_ rows: FieldRows, _ r: Int, _ fields: [Int], _ arena: UnsafeRawBufferPointer) -> [String?] {
        fields.map { f in rows.field(r, f, arena).map { String(decoding: $0, as: UTF8.self) } }
    }

    func partial(_ t: TableRef, _ fields: [DestColumn], _ key: [Int], _ rows: FieldRows, _ r: Int, _ arena: UnsafeRawBufferPointer) throws -> Outcomes {
        let present = fields.indices.filter { !rows.isAbsent(r, $0) }
        let names = present.map { Self.q(fields[$0].name) }
        let marks = present.enumerated().map { "$\($0.offset + 1)::\(Self.type(fields[$0.element]))" }.joined(separator: ", ")
        let isKey = Set(key)
        let updatable = present.filter { !isKey.contains($0) }
        var sql = "INSERT INTO \(t.quoted) AS t (\(names.joined(separator: ", "))) VALUES (\(marks)) ON CONFLICT (\(key.map { Self.q(fields[$0].name) }.joined(separator: ", "))) "
        sql += updatable.isEmpty ? "DO NOTHING" : "DO UPDATE SET " + updatable.map { "\(Self.q(fields[$0].name)) = excluded.\(Self.q(fields[$0].name))" }.joined(separator: ", ")
        sql += " RETURNING (xmax = 0) AS inserted"
        let res = try exec("updating \(t.name)", sql, params(rows, r, present, arena))
        var o = Outcomes()
        if res.rowCount == 0 { o.unchanged += 1 } else if res.bool(0, "inserted") == true { o.inserted += 1 } else { o.updated += 1 }
        return o
    }

    /// Without a key: removes one row equal to the old row CDC sent.
    func deleteOne(_ t: TableRef, _ fields: [DestColumn], _ rows: FieldRows, _ r: Int) throws -> Outcomes {
        try flushCopy()
        let present = fields.indices.filter { !rows.isAbsent(r, $0) && !fields[$0].name.hasPrefix("_ab_cdc_") }
        var o = Outcomes()
        guard !present.isEmpty else { o.unchanged += 1; return o }
        let cond = present.enumerated().map {
            Self.comparable(Self.q(fields[$0.element].name), fields[$0.element]) + " IS NOT DISTINCT FROM "
                + Self.comparable("$\($0.offset + 1)::\(Self.type(fields[$0.element]))", fields[$0.element])
        }.joined(separator: " AND ")
        let values = rows.withArena { params(rows, r, present, $0) }
        let n = try exec("deleting from \(t.name)", "DELETE FROM \(t.quoted) WHERE ctid = (SELECT ctid FROM \(t.quoted) WHERE \(cond) LIMIT 1)", values).affectedRows
        if n > 0 { o.deleted += 1 } else { o.unchanged += 1 }
        return o
    }

    // MARK: reconciliation

    func addPresentKeys(_ t: TableRef, fields: [DestColumn], rows: FieldRows) throws {
        try flush()
        let list = fields.map { Self.q($0.name) }.joined(separator: ", ")
        let tmp: String
        if let name = keyTables[t] { tmp = name } else {
            tmp = try temp("keys", t, list)
            keyTables[t] = tmp
        }
        var data = ByteBuffer(capacity: rows.count * 16 + 16)
        defer { data.deallocate() }
        rows.withArena { arena in
            for r in 0..<rows.count { Self.appendCopyLine(rows, r, Array(0..<fields.count), arena, to: &data) }
        }
        try copyIn("listing present keys", "COPY \(tmp) (\(list)) FROM STDIN", data.bytes)
    }

    func prune(_ t: TableRef, keyColumns: [String]) throws -> Int {
        try flush()
        // No key listed: every row is gone at the source.
        guard let tmp = keyTables.removeValue(forKey: t) else {
            return try exec("removing rows deleted at the source", "DELETE FROM \(t.quoted)").affectedRows
        }
        temps = temps.filter { $0.value != tmp }
        let match = keyColumns.map { "k.\(Self.q($0)) = s.\(Self.q($0))" }.joined(separator: " AND ")
        let n = try exec("removing rows deleted at the source", "DELETE FROM \(t.quoted) AS s WHERE NOT EXISTS (SELECT 1 FROM \(tmp) k WHERE \(match))").affectedRows
        try exec("removing rows deleted at the source", "DROP TABLE \(tmp)")
        return n
    }
}

/// Opens the PostgreSQL destination.
enum PostgresDestination {
    static func open(connInfo: PostgresConnInfo, logger: Logger) throws -> SyncDestination {
        try TableDestination(driver: PostgresDriver(connInfo: connInfo, logger: logger), logger: logger)
    }
}
