import Foundation
import Logging

/// What applying rows did, per stream.
public struct Outcomes: Sendable, Equatable {
    public var inserted = 0, updated = 0, unchanged = 0, deleted = 0, appended = 0
    public init() {}
    mutating func add(_ o: Outcomes) {
        inserted += o.inserted; updated += o.updated; unchanged += o.unchanged; deleted += o.deleted; appended += o.appended
    }
}

/// A destination column: its name there, and the source column's encoding and type.
public struct DestColumn: Sendable {
    public var name: String
    public var encoding: ValueEncoding
    public var type: PostgresType?
}

/// A table in a table destination.
public struct TableRef: Sendable, Hashable {
    public var schema: String?
    public var name: String
    public var quoted: String {
        (schema.map { PGConnection.quoteIdentifier($0) + "." } ?? "") + PGConnection.quoteIdentifier(name)
    }
}

/// Where `sync` applies the stream. Writes happen in an open transaction that `commit` ends
/// together with the state that covers them, so state and data are durable together.
public protocol SyncDestination: AnyObject {
    /// A human name for logs (no secrets).
    var label: String { get }
    /// The committed state: one Airbyte STATE message per stream and one GLOBAL (CDC) message.
    func committedState() throws -> [JSONValue]
    /// Assigns tables to new streams, creates missing tables and adds columns the source gained.
    func prepare(_ streams: [SyncStream]) throws
    /// A stream that joined while syncing: its table is made in the open transaction (committed
    /// with the next state, gone with a rollback).
    func addStream(_ s: SyncStream) throws
    /// True when an interrupted full refresh of `s` left rows staged that a resumed read can add to.
    func hasStaging(_ s: SyncStream) throws -> Bool
    /// Starts (or, with `resume`, continues) loading a full refresh into a staging area.
    func startFullRefresh(_ s: SyncStream, resume: Bool) throws
    /// Adds rows (COPY text of `layout`'s shape) to a full refresh in progress; `merge` when the
    /// load resumed (a row may repeat, the newest copy wins).
    func load(_ s: SyncStream, _ layout: FieldLayout, copyText: [UInt8], count: Int, merge: Bool) throws
    /// Makes a finished full refresh the stream's table (in the open transaction).
    func finishFullRefresh(_ s: SyncStream) throws
    /// Applies incremental or CDC rows: upserts by primary key, deletes, or appends without one.
    func merge(_ s: SyncStream, _ rows: FieldRows) throws
    /// The keys (COPY text of `layout`'s key shape) of every source row of a resumed full refresh.
    func presentKeys(_ s: SyncStream, _ layout: FieldLayout, copyText: [UInt8]) throws
    /// Removes staged rows whose key was not listed by `presentKeys`; returns how many.
    func prunePresentKeys(_ s: SyncStream) throws -> Int
    /// Removes every row of the stream (a TRUNCATE at the source); returns how many.
    func truncate(_ s: SyncStream) throws -> Int
    /// Removes the rows whose key (the columns of `keys`) is in (`after`, `through`].
    func deleteRange(_ s: SyncStream, _ keys: RowShape, after: [String]?, through: [String]?) throws
    /// True when `deleteRange` removes rows (tables do; logs of records cannot take rows back).
    var replacesKeyRanges: Bool { get }
    /// Applies a change to the stream's columns or table made at the source (in the open
    /// transaction, in order with the rows). `s` has the stream's key as renamed by `change`.
    func schemaChange(_ s: SyncStream, _ change: SchemaChange, type: PostgresType?) throws
    /// Stores the given STATE messages (a `null` message removes its key) and commits everything
    /// applied since the last commit.
    func commit(states: [(key: String, message: JSONValue)]) throws
    /// Outcomes of what was committed since the last call, per stream.
    func takeOutcomes() -> [StreamID: Outcomes]
    /// Abandons uncommitted work.
    func rollback()
}

/// The SQL a table destination needs, per database. Every call happens inside the transaction
/// the core opened, except `readBookkeeping`.
protocol TableDriver: AnyObject {
    var label: String { get }
    var naming: NamingRules { get }
    /// Saved STATE messages and table assignments.
    func readBookkeeping() throws -> (states: [JSONValue], assignments: [TableAssignment])
    func begin() throws
    /// Saves states and assignments, then commits.
    func commit(states: [(key: String, message: JSONValue)], assignments: [TableAssignment]) throws
    func rollback()
    func columns(of t: TableRef) throws -> [String]?
    func create(_ t: TableRef, columns: [DestColumn], key: [String]) throws
    /// True when a full refresh loads faster into a staging table without its key, the key being
    /// added once (an index built by sort) before the table is used.
    var defersKeys: Bool { get }
    func hasKey(_ t: TableRef) throws -> Bool
    func addKey(_ t: TableRef, _ key: [String]) throws
    func addColumn(_ t: TableRef, _ c: DestColumn) throws
    func dropColumn(_ t: TableRef, _ name: String) throws
    func renameColumn(_ t: TableRef, _ from: String, to: String) throws
    /// Gives column `c` its new type; values that do not convert become NULL (the stream is read
    /// again when they may differ). `isKey`: the column is in the primary key.
    func alterColumnType(_ t: TableRef, _ c: DestColumn, isKey: Bool) throws
    /// Sets column `c` of every row to field 0 of `value` (a column added with a default).
    func fill(_ t: TableRef, _ c: DestColumn, value: FieldRows) throws
    /// Deletes rows whose `keys` are above the bounds' row `lower` and at most row `upper` (row indexes in `bounds`).
    func deleteRange(_ t: TableRef, keys: [DestColumn], bounds: FieldRows, lower: Int?, upper: Int?) throws -> Int
    func drop(_ t: TableRef) throws
    /// Drops `t` and renames `staging` to it.
    func replace(_ t: TableRef, with staging: TableRef) throws
    /// Inserts rows, COPY text of `layout`'s shape, mapped onto `fields`.
    func load(_ t: TableRef, fields: [DestColumn], layout: FieldLayout, copyText: [UInt8]) throws
    /// Applies rows in order; `key` holds the field indices of the primary key (empty without one).
    func apply(_ t: TableRef, fields: [DestColumn], key: [Int], rows: FieldRows) throws
    /// What `apply` and `deleteAll` did per table since the last call (called after a commit).
    func takeOutcomes() -> [TableRef: Outcomes]
    func deleteAll(_ t: TableRef) throws -> Int
    func addPresentKeys(_ t: TableRef, fields: [DestColumn], rows: FieldRows) throws
    func prune(_ t: TableRef, keyColumns: [String]) throws -> Int
}

/// The destination core shared by SQLite and PostgreSQL: table assignment, staging, widening,
/// keys and outcome counts over a `TableDriver`.
final class TableDestination: SyncDestination {
    var replacesKeyRanges: Bool { true }
    let driver: TableDriver
    let logger: Logger
    var states: [JSONValue]
    var assignments: [StreamID: TableAssignment] = [:]
    var committedAssignments: [StreamID: TableAssignment] = [:]
    /// Assignments changed in the open transaction (saved with the next commit).
    var changed: Set<StreamID> = []
    var inTransaction = false
    /// Per stream: its table's columns as they are now.
    var tables: [StreamID: Target] = [:]
    var committedOutcomes: [StreamID: Outcomes] = [:]
    /// Field mapping per (stream, layout).
    var bindings: [ObjectIdentifier: Binding] = [:]

    final class Target {
        var table: TableRef
        var staging: TableRef
        /// Destination column names present, folded.
        var present: Set<String>
        init(table: TableRef, staging: TableRef, present: Set<String>) {
            self.table = table
            self.staging = staging
            self.present = present
        }
    }

    struct Binding {
        var fields: [DestColumn]
        var key: [Int]
    }

    var label: String { driver.label }

    init(driver: TableDriver, logger: Logger) throws {
        self.driver = driver
        self.logger = logger
        let saved = try driver.readBookkeeping()
        states = saved.states
        for a in saved.assignments { assignments[a.stream] = a }
        committedAssignments = assignments
    }

    func committedState() throws -> [JSONValue] { states }

    func begin() throws {
        if !inTransaction {
            try driver.begin()
            inTransaction = true
        }
    }

    /// The mapping key of a layout field: stamp columns are kept apart from source columns.
    static func sourceKey(_ layout: FieldLayout, _ i: Int) -> String {
        if case .column = layout.sources[i] { return layout.columns[i].name }
        return "\u{1}" + layout.columns[i].name
    }

    static func sourceKeys(_ s: SyncStream) -> [String] {
        s.columns.map { c in SyncStream.cdcColumns.contains(c) && s.mode == .cdc ? "\u{1}" + c.name : c.name }
    }

    func assignment(_ s: SyncStream) -> TableAssignment {
        if let a = assignments[s.id] { return a }
        let keys = Self.sourceKeys(s)
        var a = driver.naming.assign(s.id, existing: Array(assignments.values), sequence: assignments.count + 1)
        // CDC's own columns keep their names; a source column with one of them gets a suffix.
        let stamps = keys.filter { $0.hasPrefix("\u{1}") }
        a.columns = stamps.map { ($0, String($0.dropFirst())) }
        driver.naming.addColumns(keys.filter { !$0.hasPrefix("\u{1}") }, to: &a)
        assignments[s.id] = a
        changed.insert(s.id)
        return a
    }

    func target(_ s: SyncStream) -> Target {
        if let t = tables[s.id] { return t }
        let a = assignment(s)
        let t = Target(table: TableRef(schema: a.schema, name: a.table), staging: TableRef(schema: a.schema, name: a.staging), present: [])
        tables[s.id] = t
        return t
    }

    func columns(_ s: SyncStream) -> [DestColumn] {
        let a = assignment(s)
        return zip(s.columns, Self.sourceKeys(s)).map { c, k in DestColumn(name: a.column(k) ?? c.name, encoding: c.encoding, type: c.type) }
    }

    func keyNames(_ s: SyncStream) -> [String] {
        let a = assignment(s)
        return s.primaryKey.map { a.column($0) ?? $0 }
    }

    func prepare(_ streams: [SyncStream]) throws {
        try begin()
        for s in streams { try prepareTable(s) }
        try commit(states: [])
    }

    func addStream(_ s: SyncStream) throws {
        try begin()
        bindings = [:]
        try prepareTable(s)
    }

    /// Makes an incremental stream's table, or takes the columns it has.
    private func prepareTable(_ s: SyncStream) throws {
        let t = target(s)
        if s.mode == .fullRefresh { return }
        let cols = columns(s)
        if let have = try driver.columns(of: t.table) {
            t.present = Set(have.map(driver.naming.fold))
            // CDC brings its columns' changes in order with the rows (a column the catalog
            // has now may be one renamed after the position it resumes from).
            if s.mode == .cdc { return }
            for c in cols where !t.present.contains(driver.naming.fold(c.name)) {
                try driver.addColumn(t.table, c)
                t.present.insert(driver.naming.fold(c.name))
                logger.info("\(s.id): added column \(c.name) (new at the source)")
            }
        } else {
            try driver.create(t.table, columns: cols, key: keyNames(s))
            t.present = Set(cols.map { driver.naming.fold($0.name) })
        }
    }

    func hasStaging(_ s: SyncStream) throws -> Bool {
        guard assignments[s.id] != nil else { return false }
        return try driver.columns(of: target(s).staging) != nil
    }

    func startFullRefresh(_ s: SyncStream, resume: Bool) throws {
        try begin()
        let t = target(s)
        let cols = columns(s)
        bindings = [:]
        if resume, let have = try driver.columns(of: t.staging) {
            t.present = Set(have.map(driver.naming.fold))
            // A resumed load merges by key.
            try ensureKey(s, t.staging)
            return
        }
        try driver.drop(t.staging)
        try driver.create(t.staging, columns: cols, key: driver.defersKeys ? [] : keyNames(s))
        t.present = Set(cols.map { driver.naming.fold($0.name) })
    }

    /// The destination fields of a layout, adding columns the table lacks (new at the source).
    func binding(_ s: SyncStream, _ layout: FieldLayout, table: TableRef, widen: Bool) throws -> Binding {
        if let b = bindings[ObjectIdentifier(layout)] { return b }
        var a = assignment(s)
        let keys = layout.columns.indices.map { Self.sourceKey(layout, $0) }
        if keys.contains(where: { a.column($0) == nil }) {
            driver.naming.addColumns(keys.filter { a.column($0) == nil }, to: &a)
            assignments[s.id] = a
            changed.insert(s.id)
        }
        let t = target(s)
        var fields: [DestColumn] = []
        for (i, c) in layout.columns.enumerated() {
            let d = DestColumn(name: a.column(keys[i])!, encoding: c.encoding, type: c.type)
            if widen && !t.present.contains(driver.naming.fold(d.name)) {
                if try !(driver.columns(of: table) ?? []).map(driver.naming.fold).contains(driver.naming.fold(d.name)) {
                    try driver.addColumn(table, d)
                    logger.info("\(s.id): added column \(d.name) (new at the source)")
                }
                t.present.insert(driver.naming.fold(d.name))
            }
            fields.append(d)
        }
        let pk = s.primaryKey.map { a.column($0) ?? $0 }
        let key = pk.compactMap { k in fields.firstIndex { $0.name == k } }
        let b = Binding(fields: fields, key: key.count == pk.count ? key : [])
        bindings[ObjectIdentifier(layout)] = b
        return b
    }

    func load(_ s: SyncStream, _ layout: FieldLayout, copyText: [UInt8], count: Int, merge: Bool) throws {
        try begin()
        let t = target(s)
        let b = try binding(s, layout, table: t.staging, widen: true)
        if merge {
            var rows = FieldRows(layout: layout)
            try CopyText.forEachRow(copyText) { try rows.appendCopyRow($0) }
            try driver.apply(t.staging, fields: b.fields, key: b.key, rows: rows)
        } else {
            try driver.load(t.staging, fields: b.fields, layout: layout, copyText: copyText)
        }
    }

    func finishFullRefresh(_ s: SyncStream) throws {
        try begin()
        let t = target(s)
        try ensureKey(s, t.staging)
        try driver.replace(t.table, with: t.staging)
        bindings = [:]
    }

    /// Adds a deferred primary key to a staging table that lacks it.
    func ensureKey(_ s: SyncStream, _ t: TableRef) throws {
        let key = keyNames(s)
        guard driver.defersKeys, !key.isEmpty, try !driver.hasKey(t) else { return }
        try driver.addKey(t, key)
    }

    func merge(_ s: SyncStream, _ rows: FieldRows) throws {
        try begin()
        let t = target(s)
        let b = try binding(s, rows.layout, table: t.table, widen: true)
        try driver.apply(t.table, fields: b.fields, key: b.key, rows: rows)
    }

    func presentKeys(_ s: SyncStream, _ layout: FieldLayout, copyText: [UInt8]) throws {
        try begin()
        let t = target(s)
        let b = try binding(s, layout, table: t.staging, widen: false)
        var rows = FieldRows(layout: layout)
        try CopyText.forEachRow(copyText) { try rows.appendCopyRow($0) }
        try driver.addPresentKeys(t.staging, fields: b.fields, rows: rows)
    }

    func prunePresentKeys(_ s: SyncStream) throws -> Int {
        try begin()
        return try driver.prune(target(s).staging, keyColumns: keyNames(s))
    }

    func truncate(_ s: SyncStream) throws -> Int {
        try begin()
        return try driver.deleteAll(target(s).table)
    }

    func deleteRange(_ s: SyncStream, _ keys: RowShape, after: [String]?, through: [String]?) throws {
        try begin()
        let t = target(s)
        guard try driver.columns(of: t.table) != nil else { return }
        let a = assignment(s)
        let cols = keys.columns.map { DestColumn(name: a.column($0.name) ?? $0.name, encoding: $0.encoding, type: $0.type) }
        // The bounds as rows of the key's shape, so values bind through the one type map.
        var rows = FieldRows(layout: FieldLayout(keys, cdc: false, primaryKey: []))
        var line = ByteBuffer(capacity: 256)
        defer { line.deallocate() }
        for bound in [after, through].compactMap({ $0 }) {
            line.removeAll()
            for (i, v) in bound.enumerated() {
                if i > 0 { line.append(0x09) }
                Array(v.utf8).withUnsafeBytes { CopyText.appendEscaped($0, to: &line) }
            }
            line.append(0x0a)
            try rows.appendCopyRow(line.bytes)
        }
        _ = try driver.deleteRange(t.table, keys: cols, bounds: rows, lower: after == nil ? nil : 0, upper: through == nil ? nil : (after == nil ? 0 : 1))
    }

    func schemaChange(_ s: SyncStream, _ change: SchemaChange, type: PostgresType?) throws {
        try begin()
        let t = target(s)
        var a = assignment(s)
        bindings = [:]
        let fold = driver.naming.fold
        guard let have = try driver.columns(of: t.table) else { return }
        t.present = Set(have.map(fold))
        func column(_ name: String, _ type: PostgresType?) -> DestColumn {
            DestColumn(name: a.column(name) ?? name, encoding: type.map(ValueEncoding.init) ?? .string, type: type)
        }
        switch change {
        case .addColumn(let name, _, let existing):
            if a.column(name) == nil { driver.naming.addColumns([name], to: &a) }
            let c = column(name, type)
            guard !t.present.contains(fold(c.name)) else { break }
            try driver.addColumn(t.table, c)
            t.present.insert(fold(c.name))
            if let existing {
                // Rows already there hold the column's default: the value, through the one type map.
                let shape = RowShape(stream: s.id, columns: [RowShape.Column(name: name, encoding: c.encoding, type: type)])
                var rows = FieldRows(layout: FieldLayout(shape, cdc: false, primaryKey: []))
                var line = ByteBuffer(capacity: existing.utf8.count + 8)
                defer { line.deallocate() }
                Array(existing.utf8).withUnsafeBytes { CopyText.appendEscaped($0, to: &line) }
                line.append(0x0a)
                try rows.appendCopyRow(line.bytes)
                try driver.fill(t.table, c, value: rows)
            }
            logger.info("\(s.id): added column \(c.name)\(existing == nil ? "" : " with the default rows already there hold")")
        case .dropColumn(let name):
            guard let d = a.column(name) else { break }
            if s.primaryKey.contains(name) {
                logger.warning("\(s.id): column \(name) was dropped at the source but is in the destination's primary key, so it is kept")
                break
            }
            if t.present.contains(fold(d)) { try driver.dropColumn(t.table, d) }
            a.columns.removeAll { $0.source == name }
            t.present.remove(fold(d))
            logger.info("\(s.id): dropped column \(d)")
        case .renameColumn(let from, let to):
            guard let d = a.column(from) else { break }
            // A column the destination still has under the new name is stale (dropped at the source before).
            if let stale = a.column(to) {
                if t.present.contains(fold(stale)) { try driver.dropColumn(t.table, stale) }
                t.present.remove(fold(stale))
                a.columns.removeAll { $0.source == to }
            }
            let taken = Set(a.columns.filter { $0.source != from }.map { fold($0.name) }).union(t.present.subtracting([fold(d)]))
            let name = driver.naming.free(to, taken)
            if fold(name) != fold(d) || name != d {
                if t.present.contains(fold(d)) { try driver.renameColumn(t.table, d, to: name) }
                t.present.remove(fold(d))
                t.present.insert(fold(name))
            }
            a.columns = a.columns.map { $0.source == from ? (to, name) : $0 }
            logger.info("\(s.id): renamed column \(d) to \(name)")
        case .alterType(let name, _):
            guard let d = a.column(name), t.present.contains(fold(d)) else { break }
            try driver.alterColumnType(t.table, DestColumn(name: d, encoding: type.map(ValueEncoding.init) ?? .string, type: type), isKey: s.primaryKey.contains(name))
            logger.info("\(s.id): column \(d) takes its new type")
        case .tableDropped:
            try driver.drop(t.table)
            t.present = []
            logger.info("\(s.id): dropped table \(t.table.name) (dropped at the source)")
        }
        assignments[s.id] = a
        changed.insert(s.id)
    }

    func commit(states newStates: [(key: String, message: JSONValue)]) throws {
        try begin()
        try driver.commit(states: newStates, assignments: changed.compactMap { assignments[$0] })
        inTransaction = false
        changed = []
        var byKey: [String: JSONValue] = [:]
        for m in states { if let k = Self.stateKey(m) { byKey[k] = m } }
        for (k, m) in newStates { byKey[k] = m == .null ? nil : m }
        states = byKey.keys.sorted().map { byKey[$0]! }
        committedAssignments = assignments
        let byTable = Dictionary(tables.flatMap { [($0.value.table, $0.key), ($0.value.staging, $0.key)] }, uniquingKeysWith: { a, _ in a })
        for (t, o) in driver.takeOutcomes() {
            if let id = byTable[t] { committedOutcomes[id, default: Outcomes()].add(o) }
        }
    }

    /// The bookkeeping key of a saved STATE message.
    static func stateKey(_ m: JSONValue) -> String? {
        guard let st = m["state"] else { return nil }
        if st["type"]?.stringValue == "STREAM", let d = st["stream"]?["stream_descriptor"], let name = d["name"]?.stringValue {
            return "stream:" + StreamID(namespace: d["namespace"]?.stringValue ?? "", name: name).description
        }
        return "global"
    }

    func takeOutcomes() -> [StreamID: Outcomes] {
        defer { committedOutcomes = [:] }
        return committedOutcomes
    }

    func rollback() {
        // (Outside a transaction there is nothing to abandon: PostgreSQL would warn.)
        if inTransaction { driver.rollback() }
        inTransaction = false
        bindings = [:]
        tables = [:]
        // Assignments are as committed; what the abandoned transaction assigned is assigned again.
        assignments = committedAssignments
        changed = []
    }
}

extension CopyText {
    /// Calls `body` with each newline-terminated row of `text`.
    static func forEachRow(_ text: [UInt8], _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        try text.withUnsafeBytes { all in
            var start = 0
            let n = all.count
            while start < n {
                guard let nl = memchrIndex(all, 0x0a, from: start) else {
                    try body(UnsafeRawBufferPointer(rebasing: all[start..<n]))
                    return
                }
                try body(UnsafeRawBufferPointer(rebasing: all[start...nl]))
                start = nl + 1
            }
        }
    }

    static func memchrIndex(_ p: UnsafeRawBufferPointer, _ b: UInt8, from: Int) -> Int? {
        guard from < p.count, let base = p.baseAddress else { return nil }
        guard let hit = memchr(base + from, Int32(b), p.count - from) else { return nil }
        return UnsafeRawPointer(hit) - base
    }
}
