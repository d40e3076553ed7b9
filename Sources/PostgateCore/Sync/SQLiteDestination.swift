import Foundation
import GRDB
import Logging

/// Applies the stream to a SQLite file (through GRDB). WAL journal with synchronous=FULL: a
/// committed state and the rows it covers survive a crash together.
public final class SQLiteDestination: SyncDestination {
    let queue: DatabaseQueue
    let path: String
    let logger: Logger
    /// Each stream's table as it is now (grows when the source adds columns).
    var tables: [StreamID: Table] = [:]
    var inTransaction = false

    /// One stream's table: its columns and prepared statements, reused for every row.
    final class Table {
        var columns: [SyncStream.Column]
        var names: Set<String>
        var byName: [String: SyncStream.Column]
        var statements: [String: Statement] = [:]
        /// The quoted table name and the key columns, used by every merge.
        let quoted: String
        var keyColumns: [SyncStream.Column]
        init(_ s: SyncStream) {
            columns = s.columns
            quoted = SQLiteDestination.q(DestinationNaming.table(s))
            keyColumns = []
            names = Set(columns.map(\.name))
            byName = Dictionary(columns.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            keyColumns = s.primaryKey.map { [byName] k in byName[k] ?? SyncStream.Column(name: k, kind: .text) }
        }
        func add(_ c: SyncStream.Column) {
            columns.append(c)
            names.insert(c.name)
            byName[c.name] = c
            statements = [:]
        }
        /// A statement prepared once per table shape.
        func statement(_ db: Database, _ key: String, _ sql: () -> String) throws -> Statement {
            if let st = statements[key] { return st }
            let st = try db.makeStatement(sql: sql())
            statements[key] = st
            return st
        }
    }

    func table(_ s: SyncStream) -> Table {
        if let t = tables[s.id] { return t }
        let t = Table(s)
        tables[s.id] = t
        return t
    }

    public var label: String { "sqlite:\(path)" }

    public init(path: String, logger: Logger) throws {
        self.path = path
        self.logger = logger
        var config = Configuration()
        // A transaction stays open from the first write after a commit until the next state.
        config.allowsUnsafeTransactions = true
        config.busyMode = .timeout(10)
        do {
            queue = try DatabaseQueue(path: path, configuration: config)
            try queue.inDatabase { db in
                try db.execute(sql: "PRAGMA journal_mode = WAL")
                try db.execute(sql: "PRAGMA synchronous = FULL")
                try db.execute(sql: "CREATE TABLE IF NOT EXISTS \(Self.q(DestinationNaming.stateTable)) (key TEXT PRIMARY KEY, message TEXT NOT NULL)")
            }
        } catch {
            throw SyncError.destination("cannot open SQLite database \(path): \(Self.reason(error))")
        }
    }

    /// SQLite quotes identifiers as PostgreSQL does.
    static func q(_ name: String) -> String { PGConnection.quoteIdentifier(name) }

    static func reason(_ error: Error) -> String {
        if let e = error as? DatabaseError { return e.message ?? "\(e.resultCode)" }
        return "\(error)"
    }

    func run<T>(_ what: @autoclosure () -> String, _ body: (Database) throws -> T) throws -> T {
        do {
            return try queue.inDatabase { db in try body(db) }
        } catch let e as SyncError {
            throw e
        } catch {
            // The file opened, so a failure now is local I/O (disk full, file removed) or unexpected.
            throw SyncError.destinationFailed("SQLite \(path): \(what()): \(Self.reason(error))", .system)
        }
    }

    func begin(_ db: Database) throws {
        if !inTransaction {
            try db.execute(sql: "BEGIN IMMEDIATE")
            inTransaction = true
        }
    }

    public func committedState() throws -> [JSONValue] {
        try run("reading saved state") { db in
            try String.fetchAll(db, sql: "SELECT message FROM \(Self.q(DestinationNaming.stateTable)) ORDER BY key").map { text in
                do { return try JSONParser.parse(text) } catch {
                    throw SyncError.destination("SQLite \(path): saved state in \(DestinationNaming.stateTable) is not valid JSON (\(error)); delete that table's rows to sync from scratch")
                }
            }
        }
    }

    static func declaredType(_ k: ColumnKind) -> String {
        switch k {
        case .integer: return "INTEGER"
        case .real: return "REAL"
        case .numeric: return "NUMERIC"
        case .boolean: return "BOOLEAN"
        case .bytes: return "BLOB"
        case .text, .json, .date, .time, .timestamp, .timestamptz: return "TEXT"
        }
    }

    func createSQL(_ table: String, _ s: SyncStream) -> String {
        var parts = s.columns.map { "\(Self.q($0.name)) \(Self.declaredType($0.kind))" }
        if !s.primaryKey.isEmpty { parts.append("PRIMARY KEY (\(s.primaryKey.map(Self.q).joined(separator: ", ")))") }
        return "CREATE TABLE \(Self.q(table)) (\(parts.joined(separator: ", ")))"
    }

    func existingColumns(_ db: Database, _ table: String) throws -> [String]? {
        let names = try String.fetchAll(db, sql: "SELECT name FROM pragma_table_info(?)", arguments: [table])
        return names.isEmpty ? nil : names
    }

    public func prepare(_ streams: [SyncStream]) throws {
        try run("creating tables") { db in
            for s in streams {
                let table = DestinationNaming.table(s)
                tables[s.id] = Table(s)
                if s.mode == .fullRefresh { continue }
                if let have = try existingColumns(db, table) {
                    for c in s.columns where !have.contains(c.name) {
                        try db.execute(sql: "ALTER TABLE \(Self.q(table)) ADD COLUMN \(Self.q(c.name)) \(Self.declaredType(c.kind))")
                        logger.info("\(table): added column \(c.name) (new at the source)")
                    }
                } else {
                    try db.execute(sql: createSQL(table, s))
                }
            }
        }
    }

    /// True when a full refresh of `s` was interrupted with rows already staged.
    public func hasStaging(_ s: SyncStream) throws -> Bool {
        try run("looking for a staged load") { db in try existingColumns(db, DestinationNaming.table(s) + DestinationNaming.stagingSuffix) != nil }
    }

    public func startFullRefresh(_ s: SyncStream, resume: Bool) throws {
        let staging = DestinationNaming.table(s) + DestinationNaming.stagingSuffix
        try run("starting a full refresh") { db in
            try begin(db)
            table(s).statements = [:]
            if resume, try existingColumns(db, staging) != nil { return }
            try db.execute(sql: "DROP TABLE IF EXISTS \(Self.q(staging))")
            try db.execute(sql: createSQL(staging, s))
        }
    }

    public func load(_ s: SyncStream, _ r: SyncRecord) throws {
        let t = table(s)
        try run("loading \(s.id)") { db in
            try begin(db)
            let st = try t.statement(db, "load") {
                // A resumed chunk may repeat rows: with a key, the newest copy wins.
                let verb = s.primaryKey.isEmpty ? "INSERT" : "INSERT OR REPLACE"
                let staging = DestinationNaming.table(s) + DestinationNaming.stagingSuffix
                return "\(verb) INTO \(Self.q(staging)) (\(t.columns.map { Self.q($0.name) }.joined(separator: ", "))) VALUES (\(Array(repeating: "?", count: t.columns.count).joined(separator: ", ")))"
            }
            try st.execute(arguments: try Self.arguments(r, t.columns))
        }
    }

    static func arguments(_ r: SyncRecord, _ cols: [SyncStream.Column]) throws -> StatementArguments {
        var values: [DatabaseValue] = []
        values.reserveCapacity(cols.count)
        for c in cols { values.append(try value(r.data[c.name], c)) }
        return StatementArguments(values)
    }

    public func finishFullRefresh(_ s: SyncStream) throws {
        let table = DestinationNaming.table(s)
        try run("replacing \(table)") { db in
            try begin(db)
            try db.execute(sql: "DROP TABLE IF EXISTS \(Self.q(table))")
            try db.execute(sql: "ALTER TABLE \(Self.q(table + DestinationNaming.stagingSuffix)) RENAME TO \(Self.q(table))")
        }
    }

    /// Adds columns a record carries that the table does not have yet (a column added at the source mid-stream).
    func widen(_ db: Database, _ s: SyncStream, _ r: SyncRecord) throws -> Table {
        let t = table(s)
        var have: [String]?
        for (k, v) in r.data.entries where !t.names.contains(k) && k != "_ab_cdc_deleted_at" {
            let kind = ColumnKind(inferredFrom: v)
            let table = DestinationNaming.table(s)
            // The table may have the column already (added before a rollback emptied this cache).
            if have == nil { have = try existingColumns(db, table) ?? [] }
            if !have!.contains(k) {
                try db.execute(sql: "ALTER TABLE \(Self.q(table)) ADD COLUMN \(Self.q(k)) \(Self.declaredType(kind))")
                logger.info("\(table): added column \(k) (new at the source)")
            }
            t.add(SyncStream.Column(name: k, kind: kind, sourceType: nil))
        }
        return t
    }

    public func merge(_ s: SyncStream, _ r: SyncRecord) throws -> ApplyOutcome {
        return try run("applying a change to \(s.id)") { db in
            try begin(db)
            let t = try widen(db, s, r)
            let table = t.quoted
            let cols = t.columns
            if r.deleted {
                if s.primaryKey.isEmpty {
                    // Without a key, remove one row equal to the old row CDC sent.
                    let present = cols.filter { r.data[$0.name] != nil && !$0.name.hasPrefix("_ab_cdc_") }
                    guard !present.isEmpty else { return .unchanged }
                    let cond = present.map { "\(Self.q($0.name)) IS ?" }.joined(separator: " AND ")
                    let st = try db.cachedStatement(sql: "DELETE FROM \(table) WHERE rowid = (SELECT rowid FROM \(table) WHERE \(cond) LIMIT 1)")
                    try st.execute(arguments: StatementArguments(try present.map { try Self.value(r.data[$0.name], $0) }))
                } else {
                    let st = try t.statement(db, "delete") { "DELETE FROM \(table) WHERE \(s.primaryKey.map { "\(Self.q($0)) IS ?" }.joined(separator: " AND "))" }
                    try st.execute(arguments: try Self.arguments(r, t.keyColumns))
                }
                return db.changesCount > 0 ? .deleted : .unchanged
            }
            // Columns the record carries; TOAST-omitted ones keep the destination's value.
            let present = r.omitted.isEmpty ? cols : cols.filter { !r.omitted.contains($0.name) && r.data[$0.name] != nil }
            let shape = r.omitted.isEmpty ? "full" : "partial:" + present.map(\.name).joined(separator: "\u{1}")
            let args = try Self.arguments(r, present)
            func names() -> String { present.map { Self.q($0.name) }.joined(separator: ", ") }
            func marks() -> String { Array(repeating: "?", count: present.count).joined(separator: ", ") }
            if s.primaryKey.isEmpty {
                try t.statement(db, "append:" + shape) { "INSERT INTO \(table) (\(names())) VALUES (\(marks()))" }.execute(arguments: args)
                return .appended
            }
            let keyColumns = t.keyColumns
            let exists = try Bool.fetchOne(t.statement(db, "exists") {
                "SELECT EXISTS (SELECT 1 FROM \(table) WHERE \(s.primaryKey.map { "\(Self.q($0)) IS ?" }.joined(separator: " AND ")))"
            }, arguments: try Self.arguments(r, keyColumns)) ?? false
            let st = try t.statement(db, "upsert:" + shape) {
                let updatable = present.filter { !s.primaryKey.contains($0.name) }
                let compared = updatable.filter { !$0.name.hasPrefix("_ab_cdc_") }
                var sql = "INSERT INTO \(table) (\(names())) VALUES (\(marks())) ON CONFLICT (\(s.primaryKey.map(Self.q).joined(separator: ", "))) "
                if updatable.isEmpty { return sql + "DO NOTHING" }
                sql += "DO UPDATE SET " + updatable.map { "\(Self.q($0.name)) = excluded.\(Self.q($0.name))" }.joined(separator: ", ")
                if !compared.isEmpty {
                    // A row identical to the stored one is not rewritten (and not counted).
                    sql += " WHERE " + compared.map { "\(table).\(Self.q($0.name)) IS NOT excluded.\(Self.q($0.name))" }.joined(separator: " OR ")
                }
                return sql
            }
            try st.execute(arguments: args)
            if db.changesCount == 0 { return .unchanged }
            return exists ? .updated : .inserted
        }
    }

    public func truncate(_ s: SyncStream) throws -> Int {
        try run("truncating \(s.id)") { db in
            try begin(db)
            try db.execute(sql: "DELETE FROM \(Self.q(DestinationNaming.table(s)))")
            return db.changesCount
        }
    }

    public func commit(states: [(key: String, message: JSONValue)]) throws {
        try run("committing") { db in
            try begin(db)
            let st = try db.cachedStatement(sql: "INSERT OR REPLACE INTO \(Self.q(DestinationNaming.stateTable)) (key, message) VALUES (?, ?)")
            for (k, m) in states {
                if m == .null {
                    try db.execute(sql: "DELETE FROM \(Self.q(DestinationNaming.stateTable)) WHERE key = ?", arguments: [k])
                } else {
                    try st.execute(arguments: [k, m.jsonText])
                }
            }
            try db.execute(sql: "COMMIT")
            inTransaction = false
        }
    }

    public func rollback() {
        // Table shapes are learnt again from what is committed.
        tables = [:]
        guard inTransaction else { return }
        _ = try? queue.inDatabase { db in try db.execute(sql: "ROLLBACK") }
        inTransaction = false
    }

    /// The SQLite value for one JSON value in a column of `c`'s kind.
    static func value(_ v: JSONValue?, _ c: SyncStream.Column) throws -> DatabaseValue {
        guard let v else { return .null }
        switch v {
        case .null: return .null
        case .bool(let b): return (b ? 1 : 0).databaseValue
        case .number(let n):
            switch c.kind {
            case .integer, .boolean:
                if let i = Int64(n) { return i.databaseValue }
                return (Double(n) ?? 0).databaseValue
            case .real:
                return (Double(n) ?? 0).databaseValue
            default:
                if let i = Int64(n) { return i.databaseValue }
                // Exact digits: NUMERIC affinity keeps them as a number when SQLite can do so losslessly.
                return n.databaseValue
            }
        case .string(let s):
            if c.kind == .bytes, s.hasPrefix("\\x"), let d = Self.hexData(s.dropFirst(2)) { return d.databaseValue }
            return s.databaseValue
        case .array, .object:
            return v.jsonText.databaseValue
        }
    }

    static func hexData(_ s: Substring) -> Data? {
        var out = Data(capacity: s.utf8.count / 2)
        var hi: UInt8?
        for b in s.utf8 {
            guard let d = JSONBytes.hexValue(b) else { return nil }
            if let h = hi { out.append(h << 4 | d); hi = nil } else { hi = d }
        }
        return hi == nil ? out : nil
    }
}
