/// A change to a CDC stream's columns or table, in the order the source made it.
public enum SchemaChange: Sendable, Equatable, CustomStringConvertible {
    /// A column added. `existing` is what rows already in the table hold in it (its default's
    /// value as text, from `pg_attribute.attmissingval`); nil when they hold NULL.
    case addColumn(name: String, typeOID: UInt32, existing: String?)
    case dropColumn(name: String)
    case renameColumn(from: String, to: String)
    /// A column's type changed (`ALTER COLUMN ... TYPE`).
    case alterType(name: String, typeOID: UInt32)
    /// The table was dropped at the source.
    case tableDropped

    public var description: String {
        switch self {
        case .addColumn(let n, _, let e): return "column \(n) added\(e == nil ? "" : " (rows already there hold its default)")"
        case .dropColumn(let n): return "column \(n) dropped"
        case .renameColumn(let a, let b): return "column \(a) renamed to \(b)"
        case .alterType(let n, _): return "column \(n) changed type"
        case .tableDropped: return "table dropped"
        }
    }
}

/// The columns of one CDC stream as the source has them, and what each later description of
/// them (a Relation message, or a captured DDL's column list) changed. A pure state machine:
/// it returns the changes, in order, and whether the rows already read must be read again.
///
/// A DDL capture message lists columns by `attnum`, so a rename is told exactly from a drop and
/// an add. A Relation message lists only names and types in attnum order; there a column that
/// disappears while one of the same type appears at the same position is taken for a rename,
/// anything else for drops and adds (and when columns went and came at once, the rows are read
/// again, since some may have been renames).
struct SchemaTracker: Sendable, Equatable {
    struct Column: Sendable, Equatable {
        /// nil when only a Relation message described it.
        var attnum: Int?
        var name: String
        var typeOID: UInt32
        var typeModifier: Int32
    }

    /// What one description changed.
    struct Outcome: Equatable {
        var changes: [SchemaChange] = []
        /// Rows already read may hold other values now (a table rewrite, a type change whose
        /// values may print differently): the stream is read again.
        var reload = false
    }

    private(set) var columns: [Column]

    init(columns: [Column]) { self.columns = columns }

    var names: [String] { columns.map(\.name) }

    /// A type change that never changes how a value prints: integer widening, and character
    /// types whose length limit changed (no table rewrite for those, or the same text).
    static func printsTheSame(from a: UInt32, to b: UInt32) -> Bool {
        let int2: UInt32 = 21, int4: UInt32 = 23, int8: UInt32 = 20, text: UInt32 = 25, varchar: UInt32 = 1043
        if a == b { return a == varchar || a == text || a == int2 || a == int4 || a == int8 }
        switch (a, b) {
        case (int2, int4), (int2, int8), (int4, int8), (varchar, text), (text, varchar): return true
        default: return false
        }
    }

    /// Applies a Relation message's columns (in attnum order, without dropped or generated ones).
    mutating func relation(_ cols: [PgOutputMessage.Column]) -> Outcome {
        var out = Outcome()
        let now = Set(cols.map(\.name))
        let before = Set(names)
        let removed = columns.enumerated().filter { !now.contains($0.element.name) }
        let added = cols.enumerated().filter { !before.contains($0.element.name) }
        var renamed: (from: String, to: String)?
        if removed.count == 1, added.count == 1, removed[0].offset == added[0].offset,
           removed[0].element.typeOID == added[0].element.typeOID {
            renamed = (removed[0].element.name, added[0].element.name)
        }
        if let r = renamed {
            out.changes.append(.renameColumn(from: r.from, to: r.to))
        } else {
            for (_, c) in removed { out.changes.append(.dropColumn(name: c.name)) }
            // Columns gone and others come at once, and not one rename: some may be renames whose
            // values the rows already read hold, which a drop and an add would lose.
            if !removed.isEmpty && !added.isEmpty { out.reload = true }
        }
        let old = Dictionary(columns.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for c in cols {
            if let r = renamed, c.name == r.to { continue }
            if let o = old[c.name] {
                if o.typeOID != c.typeOID || o.typeModifier != c.typeModifier {
                    out.changes.append(.alterType(name: c.name, typeOID: c.typeOID))
                    if !Self.printsTheSame(from: o.typeOID, to: c.typeOID) { out.reload = true }
                }
            } else {
                out.changes.append(.addColumn(name: c.name, typeOID: c.typeOID, existing: nil))
            }
        }
        let attnums = Dictionary(columns.map { ($0.name, $0.attnum) }, uniquingKeysWith: { a, _ in a })
        columns = cols.map { c in
            let attnum = renamed.flatMap { c.name == $0.to ? attnums[$0.from] ?? nil : nil } ?? attnums[c.name] ?? nil
            return Column(attnum: attnum, name: c.name, typeOID: c.typeOID, typeModifier: c.typeModifier)
        }
        return out
    }

    /// Applies a captured DDL's column list (every live column with its attnum). Columns added
    /// carry what existing rows hold (`missing`); `rewrite` is set when the command rewrote the
    /// table, so values already read may differ (a volatile default, a type change with USING).
    mutating func ddl(_ after: [DDLCapture.Column], rewrite: Bool) -> Outcome {
        var out = Outcome()
        out.reload = rewrite
        let byAttnum = Dictionary(after.map { ($0.attnum, $0) }, uniquingKeysWith: { a, _ in a })
        let afterNames = Dictionary(after.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var matched: Set<Int> = []
        for c in columns {
            // A column known only by name is matched by name.
            guard let n = c.attnum ?? afterNames[c.name]?.attnum, let a = byAttnum[n] else {
                out.changes.append(.dropColumn(name: c.name))
                continue
            }
            matched.insert(n)
            if a.name != c.name { out.changes.append(.renameColumn(from: c.name, to: a.name)) }
            if a.typeOID != c.typeOID || a.typeModifier != c.typeModifier {
                out.changes.append(.alterType(name: a.name, typeOID: a.typeOID))
                // Without a rewrite values may still print differently (timestamp to timestamptz).
                if !Self.printsTheSame(from: c.typeOID, to: a.typeOID) { out.reload = true }
            }
        }
        for a in after where !matched.contains(a.attnum) {
            out.changes.append(.addColumn(name: a.name, typeOID: a.typeOID, existing: a.missing))
        }
        columns = after.map { Column(attnum: $0.attnum, name: $0.name, typeOID: $0.typeOID, typeModifier: $0.typeModifier) }
        return out
    }
}
