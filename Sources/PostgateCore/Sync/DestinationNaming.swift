/// Where one stream lands in a destination. Chosen once, when the stream is first synced, and
/// kept in the destination's bookkeeping, so names never change and never collide: identity is the
/// stream's (namespace, name), never a joined string.
public struct TableAssignment: Sendable, Equatable {
    public var stream: StreamID
    /// The destination schema (PostgreSQL); nil where there are no schemas.
    public var schema: String?
    public var table: String
    /// The staging table (or file) of a full refresh in progress.
    public var staging: String
    /// Source column → destination column.
    public var columns: [(source: String, name: String)]

    public static func == (a: TableAssignment, b: TableAssignment) -> Bool {
        a.stream == b.stream && a.schema == b.schema && a.table == b.table && a.staging == b.staging
            && a.columns.map(\.source) == b.columns.map(\.source) && a.columns.map(\.name) == b.columns.map(\.name)
    }

    public func column(_ source: String) -> String? { columns.first { $0.source == source }?.name }

    var json: JSONValue {
        var o = JSONObject([("namespace", .string(stream.namespace)), ("name", .string(stream.name)),
                            ("table", .string(table)), ("staging", .string(staging))])
        if let schema { o["schema"] = .string(schema) }
        o["columns"] = .array(columns.map { .array([.string($0.source), .string($0.name)]) })
        return .object(o)
    }

    init(stream: StreamID, schema: String?, table: String, staging: String, columns: [(source: String, name: String)]) {
        self.stream = stream
        self.schema = schema
        self.table = table
        self.staging = staging
        self.columns = columns
    }

    init?(json v: JSONValue) {
        guard let ns = v["namespace"]?.stringValue, let name = v["name"]?.stringValue, let table = v["table"]?.stringValue,
              let staging = v["staging"]?.stringValue else { return nil }
        stream = StreamID(namespace: ns, name: name)
        schema = v["schema"]?.stringValue
        self.table = table
        self.staging = staging
        columns = (v["columns"]?.arrayValue ?? []).compactMap { pair in
            guard let a = pair.arrayValue, a.count == 2, let s = a[0].stringValue, let n = a[1].stringValue else { return nil }
            return (s, n)
        }
    }
}

/// The naming rules of one kind of destination.
///
/// A stream's table is its name in `public` and `schema__name` elsewhere (SQLite, JSONL), or the
/// same schema and name (PostgreSQL). A name the destination would see as equal to one already
/// taken (SQLite and JSONL compare names without ASCII case) gets the first free `_2`, `_3`, …
/// suffix; names starting with `_postgate` are the destination's own, so a stream's gets a `_`
/// in front. Columns follow the same rule within their table.
struct NamingRules: Sendable {
    /// Names compared without ASCII case (SQLite identifiers, file names).
    var foldsCase: Bool
    /// Schemas exist (PostgreSQL): streams keep their schema.
    var hasSchemas: Bool
    /// Longest name in bytes (PostgreSQL: 63), or nil.
    var maxBytes: Int?
    /// Makes a name usable (file names: no `/`, no leading `.`).
    var sanitize: @Sendable (String) -> String = { $0 }

    static let reservedPrefix = "_postgate"

    func fold(_ s: String) -> String {
        foldsCase ? String(decoding: s.utf8.map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }, as: UTF8.self) : s
    }

    func fit(_ s: String, suffix: String) -> String {
        guard let max = maxBytes, s.utf8.count + suffix.utf8.count > max else { return s + suffix }
        var out = ""
        for ch in s {
            if out.utf8.count + String(ch).utf8.count + suffix.utf8.count > max { break }
            out.append(ch)
        }
        return out + suffix
    }

    /// The first free form of `base` among `taken` (folded names).
    func free(_ base: String, _ taken: Set<String>) -> String {
        var name = sanitize(base)
        if fold(name).hasPrefix(Self.reservedPrefix) { name = "_" + name }
        var candidate = fit(name, suffix: "")
        var n = 2
        while taken.contains(fold(candidate)) {
            candidate = fit(name, suffix: "_\(n)")
            n += 1
        }
        return candidate
    }

    func readableTable(_ id: StreamID) -> String {
        hasSchemas || id.namespace == "public" ? id.name : "\(id.namespace)__\(id.name)"
    }

    /// Assigns names to a new stream given what is taken already.
    func assign(_ id: StreamID, existing: [TableAssignment], sequence: Int) -> TableAssignment {
        let schema = hasSchemas ? free(id.namespace, []) : nil
        let taken = Set(existing.filter { $0.schema == schema }.map { fold($0.table) })
        let table = free(readableTable(id), taken)
        return TableAssignment(stream: id, schema: schema, table: table, staging: "\(Self.reservedPrefix)_stage_\(sequence)", columns: [])
    }

    /// Adds destination names for source columns the assignment does not have yet.
    func addColumns(_ columns: [String], to a: inout TableAssignment) {
        var taken = Set(a.columns.map { fold($0.name) })
        for c in columns where a.column(c) == nil {
            var name = c
            var n = 2
            while taken.contains(fold(name)) {
                name = fit(c, suffix: "_\(n)")
                n += 1
            }
            taken.insert(fold(name))
            a.columns.append((c, name))
        }
    }
}
