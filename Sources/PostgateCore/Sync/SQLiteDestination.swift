import Foundation
import Logging

/// Applies the stream to a SQLite file: WAL journal with synchronous=FULL, so a committed state
/// and the rows it covers survive a crash together. Values are bound by type to prepared
/// statements (see `DestinationTypes`); one transaction per checkpoint.
final class SQLiteDriver: TableDriver {
    let db: SQLiteConnection
    let path: String
    var statements: [String: SQLiteStatement] = [:]
    /// Staging tables whose present keys are being listed (in `temp._postgate_keys`).
    var keysMade: Set<TableRef> = []
    let naming = NamingRules(foldsCase: true, hasSchemas: false, maxBytes: nil)
    static let stateTable = "_postgate_state"
    static let tablesTable = "_postgate_tables"
    static let keysTable = "temp._postgate_keys"

    var label: String { "sqlite:\(path)" }

    init(path: String) throws {
        self.path = path
        do {
            db = try SQLiteConnection(path: path)
            try db.execute("PRAGMA journal_mode = WAL")
            try db.execute("PRAGMA synchronous = FULL")
            try db.execute("CREATE TABLE IF NOT EXISTS \(Self.stateTable) (key TEXT PRIMARY KEY, message TEXT NOT NULL)")
            try db.execute("CREATE TABLE IF NOT EXISTS \(Self.tablesTable) (namespace TEXT NOT NULL, name TEXT NOT NULL, assignment TEXT NOT NULL, PRIMARY KEY (namespace, name))")
        } catch {
            throw SyncError.destination("cannot open SQLite database \(path): \(error.message)")
        }
    }

    func fail(_ what: String, _ e: SQLiteError) -> SyncError {
        // The file opened, so a failure now is local I/O (disk full, file removed) or unexpected.
        .destinationFailed("SQLite \(path): \(what): \(e.message)", .system)
    }

    func run(_ what: @autoclosure () -> String, _ body: () throws -> Void) throws {
        do { try body() } catch let e as SQLiteError { throw fail(what(), e) }
    }

    static func q(_ name: String) -> String { PGConnection.quoteIdentifier(name) }

    func statement(_ key: String, _ sql: () -> String) throws(SQLiteError) -> SQLiteStatement {
        if let st = statements[key] { return st }
        let st = try db.prepare(sql())
        statements[key] = st
        return st
    }

    func readBookkeeping() throws -> (states: [JSONValue], assignments: [TableAssignment]) {
        var states: [JSONValue] = []
        var assignments: [TableAssignment] = []
        try run("reading saved state") {
            for row in try db.rows("SELECT message FROM \(Self.stateTable) ORDER BY key") {
                guard let text = row[0], let v = try? JSONParser.parse(text) else {
                    throw SQLiteError(code: 0, message: "saved state in \(Self.stateTable) is not valid JSON; delete that table's rows to sync from scratch")
                }
                states.append(v)
            }
            for row in try db.rows("SELECT assignment FROM \(Self.tablesTable) ORDER BY rowid") {
                guard let text = row[0], let v = try? JSONParser.parse(text), let a = TableAssignment(json: v) else {
                    throw SQLiteError(code: 0, message: "a row of \(Self.tablesTable) is not a table assignment; delete the destination to sync from scratch")
                }
                assignments.append(a)
            }
        }
        return (states, assignments)
    }

    func begin() throws { try run("starting a transaction") { try db.execute("BEGIN IMMEDIATE") } }

    func commit(states: [(key: String, message: JSONValue)], assignments: [TableAssignment]) throws {
        try run("committing") {
            let put = try statement("state") { "INSERT OR REPLACE INTO \(Self.stateTable) (key, message) VALUES (?1, ?2)" }
            let del = try statement("state-del") { "DELETE FROM \(Self.stateTable) WHERE key = ?1" }
            for (k, m) in states {
                if m == .null {
                    del.bindText(1, k)
                    try del.run()
                } else {
                    put.bindText(1, k)
                    put.bindText(2, m.jsonText)
                    try put.run()
                }
            }
            let tab = try statement("tables") { "INSERT OR REPLACE INTO \(Self.tablesTable) (namespace, name, assignment) VALUES (?1, ?2, ?3)" }
            for a in assignments {
                tab.bindText(1, a.stream.namespace)
                tab.bindText(2, a.stream.name)
                tab.bindText(3, a.json.jsonText)
                try tab.run()
            }
            try db.execute("COMMIT")
        }
    }

    func rollback() {
        try? db.execute("ROLLBACK")
        statements = [:]
        keysMade = []
        outcomes = [:]
    }

    func columns(of t: TableRef) throws -> [String]? {
        var names: [String] = []
        try run("inspecting \(t.name)") {
            names = try db.rows("SELECT name FROM pragma_table_info(?1)", [t.name]).compactMap { $0[0] }
        }
        return names.isEmpty ? nil : names
    }

    func create(_ t: TableRef, columns: [DestColumn], key: [String]) throws {
        var parts = columns.map { "\(Self.q($0.name)) \(DestinationTypes.sqlite($0.encoding, $0.type))" }
        if !key.isEmpty { parts.append("PRIMARY KEY (\(key.map(Self.q).joined(separator: ", ")))") }
        try run("creating \(t.name)") { try db.execute("CREATE TABLE \(t.quoted) (\(parts.joined(separator: ", ")))") }
    }

    /// SQLite keeps an integer key as the rowid: rows loaded in key order append.
    var defersKeys: Bool { false }
    func hasKey(_ t: TableRef) throws -> Bool { true }
    func addKey(_ t: TableRef, _ key: [String]) throws {}

    func addColumn(_ t: TableRef, _ c: DestColumn) throws {
        statements = [:]
        try run("adding column \(c.name) to \(t.name)") {
            try db.execute("ALTER TABLE \(t.quoted) ADD COLUMN \(Self.q(c.name)) \(DestinationTypes.sqlite(c.encoding, c.type))")
        }
    }

    func dropColumn(_ t: TableRef, _ name: String) throws {
        statements = [:]
        try run("dropping column \(name) of \(t.name)") { try db.execute("ALTER TABLE \(t.quoted) DROP COLUMN \(Self.q(name))") }
    }

    func renameColumn(_ t: TableRef, _ from: String, to: String) throws {
        statements = [:]
        try run("renaming column \(from) of \(t.name)") { try db.execute("ALTER TABLE \(t.quoted) RENAME COLUMN \(Self.q(from)) TO \(Self.q(to))") }
    }

    /// SQLite types only give affinity: a column whose affinity changes is made again (a new
    /// column takes the values, the old one goes), except a key column, which keeps its type.
    func alterColumnType(_ t: TableRef, _ c: DestColumn, isKey: Bool) throws {
        let type = DestinationTypes.sqlite(c.encoding, c.type)
        var old: String?
        try run("inspecting \(t.name)") {
            old = try db.rows("SELECT type FROM pragma_table_info(?1) WHERE name = ?2 COLLATE NOCASE", [t.name, c.name]).first?[0] ?? nil
        }
        guard let old, old.uppercased() != type.uppercased(), !isKey else { return }
        statements = [:]
        let tmp = Self.q("_postgate_retype")
        try run("changing the type of column \(c.name) of \(t.name)") {
            try db.execute("ALTER TABLE \(t.quoted) ADD COLUMN \(tmp) \(type)")
            try db.execute("UPDATE \(t.quoted) SET \(tmp) = \(Self.q(c.name))")
            try db.execute("ALTER TABLE \(t.quoted) DROP COLUMN \(Self.q(c.name))")
            try db.execute("ALTER TABLE \(t.quoted) RENAME COLUMN \(tmp) TO \(Self.q(c.name))")
        }
    }

    func fill(_ t: TableRef, _ c: DestColumn, value: FieldRows) throws {
        statements = [:]
        let kind = DestinationTypes.sqliteValue(c.encoding, c.type)
        try run("setting column \(c.name) of \(t.name)") {
            let st = try db.prepare("UPDATE \(t.quoted) SET \(Self.q(c.name)) = ?1")
            value.withArena { arena in bind(st, 1, kind, value, 0, 0, arena) }
            try st.run()
        }
    }

    func deleteRange(_ t: TableRef, keys: [DestColumn], bounds: FieldRows, lower: Int?, upper: Int?) throws -> Int {
        let names = "(" + keys.map { Self.q($0.name) }.joined(separator: ", ") + ")"
        var conds: [String] = []
        if lower != nil { conds.append("\(names) > (\(Self.marks(keys.count)))") }
        if upper != nil { conds.append("\(names) <= (\(Self.marks(keys.count, from: lower == nil ? 1 : keys.count + 1)))") }
        let kinds = keys.map { DestinationTypes.sqliteValue($0.encoding, $0.type) }
        var n = 0
        try run("replacing a key range of \(t.name)") {
            let st = try db.prepare("DELETE FROM \(t.quoted)\(conds.isEmpty ? "" : " WHERE " + conds.joined(separator: " AND "))")
            bounds.withArena { arena in
                var p: Int32 = 1
                for r in [lower, upper].compactMap({ $0 }) {
                    for f in keys.indices { bind(st, p, kinds[f], bounds, r, f, arena); p += 1 }
                }
            }
            try st.run()
            n = db.changes
        }
        outcomes[t, default: Outcomes()].deleted += n
        return n
    }

    func drop(_ t: TableRef) throws {
        statements = [:]
        try run("dropping \(t.name)") { try db.execute("DROP TABLE IF EXISTS \(t.quoted)") }
    }

    func replace(_ t: TableRef, with staging: TableRef) throws {
        statements = [:]
        try run("replacing \(t.name)") {
            try db.execute("DROP TABLE IF EXISTS \(t.quoted)")
            try db.execute("ALTER TABLE \(staging.quoted) RENAME TO \(Self.q(t.name))")
        }
    }

    func deleteAll(_ t: TableRef) throws -> Int {
        var n = 0
        try run("truncating \(t.name)") {
            try db.execute("DELETE FROM \(t.quoted)")
            n = db.changes
        }
        outcomes[t, default: Outcomes()].deleted += n
        return n
    }

    func load(_ t: TableRef, fields: [DestColumn], layout: FieldLayout, copyText: [UInt8]) throws {
        var rows = FieldRows(layout: layout)
        try CopyText.forEachRow(copyText) { try rows.appendCopyRow($0) }
        try run("loading \(t.name)") {
            let st = try statement("load\u{0}\(t.quoted)\u{0}\(fields.map(\.name).joined(separator: "\u{0}"))") {
                "INSERT INTO \(t.quoted) (\(fields.map { Self.q($0.name) }.joined(separator: ", "))) VALUES (\(Self.marks(fields.count)))"
            }
            let kinds = fields.map { DestinationTypes.sqliteValue($0.encoding, $0.type) }
            try rows.withArena { arena throws(SQLiteError) in
                for r in 0..<rows.count {
                    for f in 0..<fields.count { bind(st, Int32(f + 1), kinds[f], rows, r, f, arena) }
                    try st.run()
                }
            }
        }
    }

    static func marks(_ n: Int, from: Int = 1) -> String { (from..<(from + n)).map { "?\($0)" }.joined(separator: ", ") }

    /// Binds field `f` of row `r` as its destination type.
    /// Reused for values converted before binding (times, arrays); SQLite copies them.
    var scratch = ByteBuffer(capacity: 256)

    deinit { scratch.deallocate() }

    @inline(__always)
    func bind(_ st: SQLiteStatement, _ i: Int32, _ kind: DestinationTypes.SQLiteValue, _ rows: FieldRows, _ r: Int, _ f: Int,
              _ arena: UnsafeRawBufferPointer) {
        guard let v = rows.field(r, f, arena) else { st.bindNull(i); return }
        switch kind {
        case .text, .exactText:
            st.bindTextNoCopy(i, v)
        case .integer:
            if let n = ValueText.int64(v) { st.bindInt(i, n) } else { st.bindTextNoCopy(i, v) }
        case .real:
            if let d = ValueText.double(v) { st.bindDouble(i, d) } else { st.bindNull(i) }
        case .boolean:
            st.bindInt(i, v.count > 0 && v[0] == UInt8(ascii: "t") ? 1 : 0)
        case .blob:
            if let blob = ValueText.hexBytes(v) { blob.withUnsafeBytes { st.bindBlob(i, $0) } } else { st.bindTextNoCopy(i, v) }
        case .isoTime where ValueText.isInfinity(v):
            // A table keeps infinity as the source printed it (Airbyte records carry null).
            st.bindTextNoCopy(i, v)
        case .isoTime(let e), .json(let e):
            scratch.removeAll()
            _ = e.append(v, to: &scratch)
            var out = scratch.bytes
            // Times come back as JSON strings: their text is what is stored.
            if case .isoTime = kind, out.count >= 2, out[0] == 0x22 { out = UnsafeRawBufferPointer(rebasing: out[1..<(out.count - 1)]) }
            if out.count == 4 && out[0] == UInt8(ascii: "n") && out[1] == UInt8(ascii: "u") { st.bindNull(i) } else { st.bindText(i, out) }
        }
    }

    /// Outcomes per table since the last `takeOutcomes`.
    var outcomes: [TableRef: Outcomes] = [:]

    func takeOutcomes() -> [TableRef: Outcomes] {
        defer { outcomes = [:] }
        return outcomes
    }

    func apply(_ t: TableRef, fields: [DestColumn], key: [Int], rows: FieldRows) throws {
        var o = Outcomes()
        defer { outcomes[t, default: Outcomes()].add(o) }
        let kinds = fields.map { DestinationTypes.sqliteValue($0.encoding, $0.type) }
        let names = fields.map { Self.q($0.name) }
        let isKey = Set(key)
        let compared = fields.indices.filter { !isKey.contains($0) && !fields[$0].name.hasPrefix("_ab_cdc_") }
        let all = Array(fields.indices)
        try run("applying changes to \(t.name)") {
            try rows.withArena { arena throws(SQLiteError) in
                var taken = -1
                for r in 0..<rows.count where r != taken {
                    if rows.ops[r] == .rekey, !key.isEmpty, r + 1 < rows.count {
                        // Move the row to its new key, keeping what the new version omits.
                        let carried = fields.indices.filter { !rows.isAbsent(r + 1, $0) }
                        let st = try statement("rekey\u{0}\(t.quoted)\u{0}\(names.joined(separator: ","))\u{0}\(carried.map(String.init).joined(separator: ","))") {
                            let set = carried.enumerated().map { "\(names[$1]) = ?\($0 + 1)" }.joined(separator: ", ")
                            let cond = key.enumerated().map { "\(names[$1]) IS ?\(carried.count + $0 + 1)" }.joined(separator: " AND ")
                            return "UPDATE OR REPLACE \(t.quoted) SET \(set) WHERE \(cond)"
                        }
                        for (j, f) in carried.enumerated() { bind(st, Int32(j + 1), kinds[f], rows, r + 1, f, arena) }
                        for (j, f) in key.enumerated() { bind(st, Int32(carried.count + j + 1), kinds[f], rows, r, f, arena) }
                        try st.run()
                        if db.changes > 0 {
                            o.updated += 1
                            taken = r + 1
                        }
                        continue
                    }
                    // Fields the row carries (unchanged TOAST values keep the destination's).
                    var present = all
                    var mask = ""
                    if rows.omitsAny(r) {
                        present = fields.indices.filter { !rows.isAbsent(r, $0) }
                        mask = present.map(String.init).joined(separator: ",")
                    }
                    switch rows.ops[r] {
                    case .delete, .rekey:
                        if key.isEmpty {
                            let cond = present.filter { !fields[$0].name.hasPrefix("_ab_cdc_") }
                            guard !cond.isEmpty else { o.unchanged += 1; continue }
                            let st = try statement("delrow\u{0}\(t.quoted)\u{0}\(cond.map { names[$0] }.joined(separator: ","))") {
                                "DELETE FROM \(t.quoted) WHERE rowid = (SELECT rowid FROM \(t.quoted) WHERE \(cond.enumerated().map { "\(names[$1]) IS ?\($0 + 1)" }.joined(separator: " AND ")) LIMIT 1)"
                            }
                            for (j, f) in cond.enumerated() { bind(st, Int32(j + 1), kinds[f], rows, r, f, arena) }
                            try st.run()
                        } else {
                            let st = try statement("del\u{0}\(t.quoted)\u{0}\(key.map { names[$0] }.joined(separator: ","))") {
                                "DELETE FROM \(t.quoted) WHERE \(key.enumerated().map { "\(names[$1]) IS ?\($0 + 1)" }.joined(separator: " AND "))"
                            }
                            for (j, f) in key.enumerated() { bind(st, Int32(j + 1), kinds[f], rows, r, f, arena) }
                            try st.run()
                        }
                        if db.changes > 0 { o.deleted += 1 } else { o.unchanged += 1 }
                    case .upsert:
                        let shape = "\(t.quoted)\u{0}\(names.joined(separator: ","))\u{0}\(mask)"
                        let cols = present.map { names[$0] }.joined(separator: ", ")
                        if key.isEmpty {
                            let st = try statement("append\u{0}" + shape) { "INSERT INTO \(t.quoted) (\(cols)) VALUES (\(Self.marks(present.count)))" }
                            for (j, f) in present.enumerated() { bind(st, Int32(j + 1), kinds[f], rows, r, f, arena) }
                            try st.run()
                            o.appended += 1
                            continue
                        }
                        // A new key is inserted; an existing one is updated only where a value differs.
                        let ins = try statement("ins\u{0}" + shape) { "INSERT OR IGNORE INTO \(t.quoted) (\(cols)) VALUES (\(Self.marks(present.count)))" }
                        for (j, f) in present.enumerated() { bind(ins, Int32(j + 1), kinds[f], rows, r, f, arena) }
                        try ins.run()
                        if db.changes > 0 { o.inserted += 1; continue }
                        let updatable = present.filter { !isKey.contains($0) }
                        let cmp = compared.filter { present.contains($0) }
                        guard !updatable.isEmpty else { o.unchanged += 1; continue }
                        let upd = try statement("upd\u{0}" + shape) {
                            let set = updatable.map { "\(names[$0]) = ?\(present.firstIndex(of: $0)! + 1)" }.joined(separator: ", ")
                            let whereKey = key.map { "\(names[$0]) IS ?\(present.firstIndex(of: $0)! + 1)" }.joined(separator: " AND ")
                            let differs = cmp.isEmpty ? "" : " AND (" + cmp.map { "\(names[$0]) IS NOT ?\(present.firstIndex(of: $0)! + 1)" }.joined(separator: " OR ") + ")"
                            return "UPDATE \(t.quoted) SET \(set) WHERE \(whereKey)\(differs)"
                        }
                        for (j, f) in present.enumerated() { bind(upd, Int32(j + 1), kinds[f], rows, r, f, arena) }
                        try upd.run()
                        if db.changes > 0 { o.updated += 1 } else { o.unchanged += 1 }
                    }
                }
            }
        }
    }

    func addPresentKeys(_ t: TableRef, fields: [DestColumn], rows: FieldRows) throws {
        let kinds = fields.map { DestinationTypes.sqliteValue($0.encoding, $0.type) }
        try run("listing present keys") {
            if !keysMade.contains(t) {
                keysMade.insert(t)
                statements["keys"] = nil
                try db.execute("DROP TABLE IF EXISTS \(Self.keysTable)")
                try db.execute("CREATE TABLE \(Self.keysTable) (\(fields.map { Self.q($0.name) }.joined(separator: ", ")), PRIMARY KEY (\(fields.map { Self.q($0.name) }.joined(separator: ", "))))")
            }
            let st = try statement("keys") { "INSERT OR IGNORE INTO \(Self.keysTable) VALUES (\(Self.marks(fields.count)))" }
            try rows.withArena { arena throws(SQLiteError) in
                for r in 0..<rows.count {
                    for f in 0..<fields.count { bind(st, Int32(f + 1), kinds[f], rows, r, f, arena) }
                    try st.run()
                }
            }
        }
    }

    func prune(_ t: TableRef, keyColumns: [String]) throws -> Int {
        var n = 0
        try run("removing rows deleted at the source from \(t.name)") {
            // No key listed: every row is gone at the source.
            guard keysMade.remove(t) != nil else {
                try db.execute("DELETE FROM \(t.quoted)")
                n = db.changes
                return
            }
            let match = keyColumns.map { "k.\(Self.q($0)) = \(t.quoted).\(Self.q($0))" }.joined(separator: " AND ")
            try db.execute("DELETE FROM \(t.quoted) WHERE NOT EXISTS (SELECT 1 FROM \(Self.keysTable) k WHERE \(match))")
            n = db.changes
            statements["keys"] = nil
            try db.execute("DROP TABLE \(Self.keysTable)")
        }
        return n
    }
}

/// Opens the SQLite destination.
enum SQLiteDestination {
    static func open(path: String, logger: Logger) throws -> SyncDestination {
        try TableDestination(driver: SQLiteDriver(path: path), logger: logger)
    }
}
