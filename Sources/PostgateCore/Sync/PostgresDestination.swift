import Foundation
import Logging

/// Applies the stream to a PostgreSQL database through libpq: COPY for bulk loads, batched
/// upserts (COPY into a temporary table, then one INSERT ... ON CONFLICT) and deletes by key.
/// Each stream lands in a table of the same schema and name; state lives in `_postgate.state`.
public final class PostgresDestination: SyncDestination {
    let conn: PGConnection
    let logger: Logger
    var inTransaction = false
    /// Per stream, built once: the table's columns (growing when the source adds one) and names.
    final class Target {
        var columns: [SyncStream.Column]
        var columnNames: [String]
        var names: Set<String>
        let qualified: String
        let staging: String
        init(_ s: SyncStream) {
            columns = s.columns
            columnNames = s.columns.map(\.name)
            names = Set(columnNames)
            qualified = "\(PostgresDestination.q(s.namespace)).\(PostgresDestination.q(s.name))"
            staging = "\(PostgresDestination.q(s.namespace)).\(PostgresDestination.q(s.name + DestinationNaming.stagingSuffix))"
        }
        func add(_ c: SyncStream.Column) {
            columns.append(c)
            columnNames.append(c.name)
            names.insert(c.name)
        }
    }
    var targets: [StreamID: Target] = [:]

    func target(_ s: SyncStream) -> Target {
        if let t = targets[s.id] { return t }
        let t = Target(s)
        targets[s.id] = t
        return t
    }
    /// Rows waiting to be copied, per target: full-refresh loads and appends.
    var copyRows: [String: (table: String, columns: [String], data: [UInt8])] = [:]
    /// Upserts waiting, per stream: the newest row per key wins within a batch.
    var upserts: [StreamID: (stream: SyncStream, rows: [String: [String?]], order: [String])] = [:]
    var batchTables: [StreamID: String] = [:]
    /// Outcomes of batched upserts not yet reported (applied at flush).
    public private(set) var flushedOutcomes: [StreamID: (inserted: Int, updated: Int, unchanged: Int)] = [:]

    public let label: String

    /// Connects with the parsed destination's keywords; libpq never parses the user's text.
    public init(connInfo: PostgresConnInfo, logger: Logger) throws {
        self.logger = logger
        label = connInfo.description
        do {
            conn = try PGConnection(parameters: connInfo.libpqParameters, logger: logger)
            try conn.query("SET client_min_messages = warning")
            try conn.query("CREATE SCHEMA IF NOT EXISTS _postgate")
            try conn.query("CREATE TABLE IF NOT EXISTS _postgate.state (key text PRIMARY KEY, message jsonb NOT NULL)")
        } catch let e {
            throw SyncError.destination("PostgreSQL destination: \(e.description)", e)
        }
    }

    static func q(_ s: String) -> String { PGConnection.quoteIdentifier(s) }

    func table(_ s: SyncStream, staging: Bool = false) -> String {
        staging ? target(s).staging : target(s).qualified
    }

    func exec(_ what: String, _ sql: String, _ params: [String?] = []) throws -> PGResult {
        do { return try conn.query(sql, params) } catch let e {
            throw SyncError.destination("PostgreSQL destination: \(what): \(e.description)", e)
        }
    }

    func begin() throws {
        if !inTransaction {
            _ = try exec("BEGIN", "BEGIN")
            inTransaction = true
        }
    }

    public func committedState() throws -> [JSONValue] {
        let r = try exec("reading saved state", "SELECT message::text AS m FROM _postgate.state ORDER BY key")
        return try (0..<r.rowCount).map { i in
            do { return try JSONParser.parse(r.string(i, "m") ?? "null") } catch {
                throw SyncError.destination("saved state in _postgate.state is not valid JSON; delete its rows to sync from scratch")
            }
        }
    }

    static let keptTypes: Set<String> = ["int2", "int4", "int8", "float4", "float8", "numeric", "bool", "date", "time", "timetz",
                                         "timestamp", "timestamptz", "uuid", "inet", "cidr", "macaddr", "macaddr8", "interval", "bytea",
                                         "json", "jsonb", "text", "varchar", "bpchar"]

    static func declaredType(_ c: SyncStream.Column) -> String {
        if let t = c.sourceType, keptTypes.contains(t), c.kind != .json || t == "json" || t == "jsonb" {
            switch t {
            case "varchar", "bpchar": return "text"
            case "int2", "int4": return "integer"
            case "int8": return "bigint"
            default: return t
            }
        }
        switch c.kind {
        case .integer: return "bigint"
        case .real: return "double precision"
        case .numeric: return "numeric"
        case .boolean: return "boolean"
        case .json: return "jsonb"
        case .bytes: return "bytea"
        case .date: return "date"
        case .time: return "time"
        case .timestamp: return "timestamp"
        case .timestamptz: return "timestamptz"
        case .text: return "text"
        }
    }

    func createSQL(_ name: String, _ s: SyncStream) -> String {
        var parts = s.columns.map { "\(Self.q($0.name)) \(Self.declaredType($0))" }
        if !s.primaryKey.isEmpty { parts.append("PRIMARY KEY (\(s.primaryKey.map(Self.q).joined(separator: ", ")))") }
        return "CREATE TABLE \(name) (\(parts.joined(separator: ", ")))"
    }

    func existingColumns(_ s: SyncStream, staging: Bool = false) throws -> [String]? {
        let r = try exec("inspecting \(s.id)", "SELECT a.attname AS n FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                         [table(s, staging: staging)])
        let names = (0..<r.rowCount).compactMap { r.string($0, "n") }
        return names.isEmpty ? nil : names
    }

    public func prepare(_ streams: [SyncStream]) throws {
        try begin()
        for s in streams {
            targets[s.id] = Target(s)
            _ = try exec("creating schema \(s.namespace)", "CREATE SCHEMA IF NOT EXISTS \(Self.q(s.namespace))")
            if s.mode == .fullRefresh { continue }
            if let have = try existingColumns(s) {
                for c in s.columns where !have.contains(c.name) {
                    _ = try exec("adding a column", "ALTER TABLE \(table(s)) ADD COLUMN \(Self.q(c.name)) \(Self.declaredType(c))")
                }
            } else {
                _ = try exec("creating \(s.id)", createSQL(table(s), s))
            }
        }
        try commitTransaction()
    }

    public func hasStaging(_ s: SyncStream) throws -> Bool { try existingColumns(s, staging: true) != nil }

    public func startFullRefresh(_ s: SyncStream, resume: Bool) throws {
        try begin()
        if resume, try existingColumns(s, staging: true) != nil { return }
        _ = try exec("starting a full refresh", "DROP TABLE IF EXISTS \(table(s, staging: true))")
        _ = try exec("starting a full refresh", createSQL(table(s, staging: true), s))
    }

    /// A value in PostgreSQL's text input form (nil for NULL).
    static func text(_ v: JSONValue?) -> String? {
        switch v {
        case nil, .null?: return nil
        case .bool(let b)?: return b ? "true" : "false"
        case .number(let n)?: return n
        case .string(let s)?: return s
        case let other?: return other.jsonText
        }
    }

    static func appendCopyField(_ v: String?, to out: inout [UInt8]) {
        guard let v else { out.append(contentsOf: Array("\\N".utf8)); return }
        for b in v.utf8 {
            switch b {
            case 0x5c: out.append(0x5c); out.append(0x5c)
            case 0x0a: out.append(0x5c); out.append(UInt8(ascii: "n"))
            case 0x0d: out.append(0x5c); out.append(UInt8(ascii: "r"))
            case 0x09: out.append(0x5c); out.append(UInt8(ascii: "t"))
            default: out.append(b)
            }
        }
    }

    func queueCopy(_ target: String, columns: [String], values: [String?]) throws {
        var entry = copyRows[target] ?? (target, columns, [])
        if entry.columns != columns {
            try flushCopy(target)
            entry = (target, columns, [])
        }
        for (i, v) in values.enumerated() {
            if i > 0 { entry.data.append(0x09) }
            Self.appendCopyField(v, to: &entry.data)
        }
        entry.data.append(0x0a)
        copyRows[target] = entry
        if entry.data.count >= 4 << 20 { try flushCopy(target) }
    }

    func flushCopy(_ target: String) throws {
        guard let e = copyRows[target], !e.data.isEmpty else { return }
        copyRows[target] = nil
        do {
            _ = try e.data.withUnsafeBytes { try conn.copyIn("COPY \(e.table) (\(e.columns.map(Self.q).joined(separator: ", "))) FROM STDIN", data: $0) }
        } catch let err as PostgresError {
            throw SyncError.destination("PostgreSQL destination: loading \(e.table): \(err.description)", err)
        }
    }

    public func load(_ s: SyncStream, _ r: SyncRecord) throws {
        try begin()
        let t = target(s)
        try queueCopy(t.staging, columns: t.columnNames, values: t.columns.map { Self.text(r.data[$0.name]) })
    }

    public func finishFullRefresh(_ s: SyncStream) throws {
        try flushCopy(table(s, staging: true))
        _ = try exec("replacing \(s.id)", "DROP TABLE IF EXISTS \(table(s))")
        _ = try exec("replacing \(s.id)", "ALTER TABLE \(table(s, staging: true)) RENAME TO \(Self.q(s.name))")
    }

    func widen(_ s: SyncStream, _ r: SyncRecord) throws -> [SyncStream.Column] {
        let t = target(s)
        guard r.data.entries.contains(where: { !t.names.contains($0.key) && $0.key != "_ab_cdc_deleted_at" }) else { return t.columns }
        let added = r.data.entries.filter { !t.names.contains($0.key) && $0.key != "_ab_cdc_deleted_at" }
        try flush(s)
        for (k, v) in added {
            let kind = ColumnKind(inferredFrom: v)
            let c = SyncStream.Column(name: k, kind: kind, sourceType: nil)
            // IF NOT EXISTS: the table may have it already (added before a rollback emptied this cache).
            _ = try exec("adding column \(k)", "ALTER TABLE \(table(s)) ADD COLUMN IF NOT EXISTS \(Self.q(k)) \(Self.declaredType(c))")
            logger.info("\(s.id): added column \(k) (new at the source)")
            t.add(c)
        }
        batchTables[s.id] = nil
        return t.columns
    }

    /// Applies what is batched for one stream.
    func flush(_ s: SyncStream) throws {
        try flushCopy(table(s))
        guard let batch = upserts[s.id], !batch.rows.isEmpty else { return }
        upserts[s.id] = nil
        let cols = target(s).columns
        let tmp: String
        if let t = batchTables[s.id] {
            tmp = t
            _ = try exec("batching", "TRUNCATE \(tmp)")
        } else {
            tmp = Self.q("_postgate_batch_\(batchTables.count)_\(UInt32.random(in: 0...UInt32.max))")
            _ = try exec("batching", "CREATE TEMP TABLE \(tmp) (LIKE \(table(s)))")
            batchTables[s.id] = tmp
        }
        var data: [UInt8] = []
        for k in batch.order {
            guard let values = batch.rows[k] else { continue }
            for (i, v) in values.enumerated() {
                if i > 0 { data.append(0x09) }
                Self.appendCopyField(v, to: &data)
            }
            data.append(0x0a)
        }
        let names = cols.map { Self.q($0.name) }.joined(separator: ", ")
        do {
            _ = try data.withUnsafeBytes { try conn.copyIn("COPY \(tmp) (\(names)) FROM STDIN", data: $0) }
        } catch let err as PostgresError {
            throw SyncError.destination("PostgreSQL destination: batching \(s.id): \(err.description)", err)
        }
        let updatable = cols.filter { !s.primaryKey.contains($0.name) }
        let compared = updatable.filter { !$0.name.hasPrefix("_ab_cdc_") }
        var sql = "INSERT INTO \(table(s)) AS t (\(names)) SELECT \(names) FROM \(tmp) ON CONFLICT (\(s.primaryKey.map(Self.q).joined(separator: ", "))) "
        if updatable.isEmpty {
            sql += "DO NOTHING"
        } else {
            sql += "DO UPDATE SET " + updatable.map { "\(Self.q($0.name)) = excluded.\(Self.q($0.name))" }.joined(separator: ", ")
            if !compared.isEmpty {
                sql += " WHERE (" + compared.map { "t.\(Self.q($0.name))" }.joined(separator: ", ") + ", NULL) IS DISTINCT FROM ("
                    + compared.map { "excluded.\(Self.q($0.name))" }.joined(separator: ", ") + ", NULL)"
            }
        }
        sql += " RETURNING (xmax = 0) AS inserted"
        let r = try exec("merging \(s.id)", sql)
        var o = flushedOutcomes[s.id] ?? (0, 0, 0)
        var ins = 0
        for i in 0..<r.rowCount where r.bool(i, "inserted") == true { ins += 1 }
        o.inserted += ins
        o.updated += r.rowCount - ins
        o.unchanged += batch.rows.count - r.rowCount
        flushedOutcomes[s.id] = o
    }

    /// Takes (and clears) the outcomes of batched upserts applied so far.
    public func takeBatchedOutcomes() -> [StreamID: (inserted: Int, updated: Int, unchanged: Int)] {
        defer { flushedOutcomes = [:] }
        return flushedOutcomes
    }

    public func merge(_ s: SyncStream, _ r: SyncRecord) throws -> ApplyOutcome {
        try begin()
        let cols = try widen(s, r)
        if s.primaryKey.isEmpty {
            if r.deleted {
                try flush(s)
                let present = cols.filter { r.data[$0.name] != nil && !$0.name.hasPrefix("_ab_cdc_") }
                guard !present.isEmpty else { return .unchanged }
                let cond = present.enumerated().map { "\(Self.q($1.name)) IS NOT DISTINCT FROM $\($0 + 1)::\(Self.declaredType($1))" }.joined(separator: " AND ")
                let res = try exec("deleting from \(s.id)", "DELETE FROM \(table(s)) WHERE ctid = (SELECT ctid FROM \(table(s)) WHERE \(cond) LIMIT 1)", present.map { Self.text(r.data[$0.name]) })
                return res.affectedRows > 0 ? .deleted : .unchanged
            }
            try queueCopy(table(s), columns: target(s).columnNames, values: cols.map { Self.text(r.data[$0.name]) })
            return .appended
        }
        let keyValues = s.primaryKey.map { Self.text(r.data[$0]) }
        if r.deleted {
            try flush(s)
            let cond = s.primaryKey.enumerated().map { "\(Self.q($1)) = $\($0 + 1)" }.joined(separator: " AND ")
            let res = try exec("deleting from \(s.id)", "DELETE FROM \(table(s)) WHERE \(cond)", keyValues)
            return res.affectedRows > 0 ? .deleted : .unchanged
        }
        if r.omitted.isEmpty {
            let key = keyValues.map { $0 ?? "\u{0}" }.joined(separator: "\u{1}")
            var batch = upserts[s.id] ?? (s, [:], [])
            if batch.rows[key] == nil { batch.order.append(key) }
            batch.rows[key] = cols.map { Self.text(r.data[$0.name]) }
            upserts[s.id] = batch
            if batch.rows.count >= 20_000 { try flush(s) }
            return .batched
        }
        // A partial row (unchanged TOAST columns left out): update only what it carries.
        try flush(s)
        let present = cols.filter { r.data[$0.name] != nil && !r.omitted.contains($0.name) }
        let names = present.map { Self.q($0.name) }.joined(separator: ", ")
        let marks = present.enumerated().map { "$\($0.offset + 1)::\(Self.declaredType($0.element))" }.joined(separator: ", ")
        let updatable = present.filter { !s.primaryKey.contains($0.name) }
        var sql = "INSERT INTO \(table(s)) AS t (\(names)) VALUES (\(marks)) ON CONFLICT (\(s.primaryKey.map(Self.q).joined(separator: ", "))) "
        sql += updatable.isEmpty ? "DO NOTHING" : "DO UPDATE SET " + updatable.map { "\(Self.q($0.name)) = excluded.\(Self.q($0.name))" }.joined(separator: ", ")
        sql += " RETURNING (xmax = 0) AS inserted"
        let res = try exec("updating \(s.id)", sql, present.map { Self.text(r.data[$0.name]) })
        if res.rowCount == 0 { return .unchanged }
        return res.bool(0, "inserted") == true ? .inserted : .updated
    }

    public func truncate(_ s: SyncStream) throws -> Int {
        try begin()
        try flush(s)
        return try exec("truncating \(s.id)", "DELETE FROM \(table(s))").affectedRows
    }

    func flushAll() throws {
        for target in Array(copyRows.keys) { try flushCopy(target) }
        for (_, b) in upserts { try flush(b.stream) }
    }

    public func commit(states: [(key: String, message: JSONValue)]) throws {
        try begin()
        try flushAll()
        for (k, m) in states {
            if m == .null {
                _ = try exec("saving state", "DELETE FROM _postgate.state WHERE key = $1", [k])
            } else {
                _ = try exec("saving state", "INSERT INTO _postgate.state (key, message) VALUES ($1, $2::jsonb) ON CONFLICT (key) DO UPDATE SET message = excluded.message", [k, m.jsonText])
            }
        }
        try commitTransaction()
    }

    func commitTransaction() throws {
        guard inTransaction else { return }
        _ = try exec("committing", "COMMIT")
        inTransaction = false
    }

    public func rollback() {
        copyRows = [:]
        upserts = [:]
        if inTransaction { _ = try? conn.query("ROLLBACK") }
        inTransaction = false
        // Temporary batch tables created in the abandoned transaction are gone; table shapes are
        // learnt again from what is committed.
        batchTables = [:]
        targets = [:]
    }
}
