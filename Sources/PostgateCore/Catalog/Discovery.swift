/// A relation Postgate can read: table, view, materialized view or partitioned table.
public struct DiscoveredStream: Sendable {
    public enum Kind: String, Sendable {
        case table = "r", partitionedTable = "p", view = "v", materializedView = "m"

        public var label: String {
            switch self {
            case .table: return "table"
            case .partitionedTable: return "partitioned table"
            case .view: return "view"
            case .materializedView: return "materialized view"
            }
        }
    }

    public struct Column: Sendable {
        public var name: String
        public var type: PostgresType
        public var notNull: Bool
        public var kind: JSONKind { JSONKind(type) }
    }

    public var oid: UInt32
    public var schema: String
    public var name: String
    public var kind: Kind
    public var columns: [Column]
    public var primaryKey: [String]
    /// Row estimate from `pg_class.reltuples` (-1 when never analyzed).
    public var estimatedRows: Int64

    public var id: StreamID { StreamID(namespace: schema, name: name) }
}

/// Reads the catalog of the selected schemas.
public enum Discovery {
    /// Relations of the given schemas that the user may SELECT from, with columns and primary keys.
    /// With `publication` (CDC), a table that publication lists with a column list (PostgreSQL 15;
    /// a partitioned table's only when published via its root) has only those columns, in every
    /// mode, and no primary key when the list leaves a key column out.
    public static func discover(_ conn: PGConnection, schemas: [String], publication: String? = nil) throws(PostgresError) -> [DiscoveredStream] {
        let schemaArray = textArrayLiteral(schemas)
        let rels = try conn.query("""
            SELECT c.oid::int8 AS oid, n.nspname, c.relname, c.relkind::text AS relkind, c.reltuples::int8 AS reltuples
            FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r','p','v','m') AND NOT c.relispartition
              AND has_table_privilege(c.oid, 'SELECT')
            ORDER BY n.nspname, c.relname
            """, [schemaArray])
        var streams: [DiscoveredStream] = []
        var index: [UInt32: Int] = [:]
        for r in 0..<rels.rowCount {
            guard let oid = rels.int(r, "oid").map({ UInt32($0) }), let kind = DiscoveredStream.Kind(rawValue: rels.string(r, "relkind") ?? "") else { continue }
            index[oid] = streams.count
            streams.append(DiscoveredStream(
                oid: oid, schema: rels.string(r, "nspname") ?? "", name: rels.string(r, "relname") ?? "",
                kind: kind, columns: [], primaryKey: [], estimatedRows: rels.int(r, "reltuples") ?? -1))
        }
        guard !streams.isEmpty else { return [] }
        let oids = "{" + streams.map { String($0.oid) }.joined(separator: ",") + "}"

        let cols = try conn.query("""
            SELECT a.attrelid::int8 AS relid, a.attname, a.attnotnull,
                   format_type(a.atttypid, a.atttypmod) AS declared,
                   bt.typname, bt.typtype::text AS typtype, bt.typcategory::text AS typcategory,
                   et.typname AS elem_name, et.typtype::text AS elem_typtype, et.typcategory::text AS elem_category,
                   format_type(et.oid, NULL) AS elem_declared
            FROM pg_catalog.pg_attribute a
            JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
            JOIN pg_catalog.pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
            LEFT JOIN pg_catalog.pg_type et0 ON bt.typcategory = 'A' AND et0.oid = bt.typelem
            LEFT JOIN pg_catalog.pg_type et ON et.oid = CASE WHEN et0.typtype = 'd' THEN et0.typbasetype ELSE et0.oid END
            WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attrelid, a.attnum
            """, [oids])
        for r in 0..<cols.rowCount {
            guard let relid = cols.int(r, "relid").map({ UInt32($0) }), let i = index[relid] else { continue }
            let type = type(cols, r, declared: "declared")
            streams[i].columns.append(.init(name: cols.string(r, "attname") ?? "", type: type, notNull: cols.bool(r, "attnotnull") ?? false))
        }

        let pks = try conn.query("""
            SELECT i.indrelid::int8 AS relid, a.attname
            FROM pg_catalog.pg_index i
            CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
            JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indisprimary AND i.indrelid = ANY($1::oid[])
            ORDER BY i.indrelid, k.ord
            """, [oids])
        for r in 0..<pks.rowCount {
            guard let relid = pks.int(r, "relid").map({ UInt32($0) }), let i = index[relid], let name = pks.string(r, "attname") else { continue }
            streams[i].primaryKey.append(name)
        }
        if let publication {
            for (relid, listed) in try columnLists(conn, publication: publication, oids: streams.map(\.oid)) {
                guard let i = index[relid] else { continue }
                let keep = Set(listed.values)
                streams[i].columns.removeAll { !keep.contains($0.name) }
                // A key the list leaves a column of out is no key of the stream (its changes
                // would not carry it).
                if !streams[i].primaryKey.allSatisfy(keep.contains) { streams[i].primaryKey = [] }
            }
        }
        return streams
    }

    /// The columns (attnum to name) a publication's column list takes from each of `oids` that it
    /// lists with one (PostgreSQL 15+; a partitioned table's only when published via its root,
    /// as pgoutput applies it). Tables it takes whole are absent.
    static func columnLists(_ conn: PGConnection, publication: String, oids: [UInt32]) throws(PostgresError) -> [UInt32: [Int: String]] {
        guard conn.serverVersion >= 150_000, !oids.isEmpty else { return [:] }
        let r = try conn.query("""
            SELECT pr.prrelid::int8 AS relid, a.attnum::int4 AS n, a.attname
            FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
            JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid
            JOIN pg_catalog.pg_attribute a ON a.attrelid = pr.prrelid AND a.attnum = ANY(pr.prattrs::int2[])
            WHERE p.pubname = $1 AND pr.prattrs IS NOT NULL AND pr.prrelid = ANY($2::oid[])
              AND (p.pubviaroot OR c.relkind <> 'p')
            """, [publication, "{" + oids.map(String.init).joined(separator: ",") + "}"])
        var out: [UInt32: [Int: String]] = [:]
        for i in 0..<r.rowCount {
            guard let relid = r.int(i, "relid"), let n = r.int(i, "n"), let name = r.string(i, "attname") else { continue }
            out[UInt32(relid), default: [:]][Int(n)] = name
        }
        return out
    }

    /// Types by oid, resolved as `discover` resolves column types (domains to their base type,
    /// arrays with their element), for columns that appear after discovery (CDC).
    public static func types(_ conn: PGConnection, oids: [UInt32]) throws(PostgresError) -> [UInt32: PostgresType] {
        let r = try conn.query("""
            SELECT t.oid::int8 AS oid, format_type(t.oid, NULL) AS declared,
                   bt.typname, bt.typtype::text AS typtype, bt.typcategory::text AS typcategory,
                   et.typname AS elem_name, et.typtype::text AS elem_typtype, et.typcategory::text AS elem_category,
                   format_type(et.oid, NULL) AS elem_declared
            FROM pg_catalog.pg_type t
            JOIN pg_catalog.pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
            LEFT JOIN pg_catalog.pg_type et0 ON bt.typcategory = 'A' AND et0.oid = bt.typelem
            LEFT JOIN pg_catalog.pg_type et ON et.oid = CASE WHEN et0.typtype = 'd' THEN et0.typbasetype ELSE et0.oid END
            WHERE t.oid = ANY($1::oid[])
            """, ["{" + oids.map(String.init).joined(separator: ",") + "}"])
        var out: [UInt32: PostgresType] = [:]
        for i in 0..<r.rowCount {
            guard let oid = r.int(i, "oid").map({ UInt32($0) }) else { continue }
            out[oid] = type(r, i, declared: "declared")
        }
        return out
    }

    /// One resolved type from a row of the type columns above.
    static func type(_ r: PGResult, _ i: Int, declared: String) -> PostgresType {
        var element: PostgresType?
        if let en = r.string(i, "elem_name") {
            element = PostgresType(
                name: en, kind: r.string(i, "elem_typtype")?.first ?? "b",
                category: r.string(i, "elem_category")?.first ?? "U", declared: r.string(i, "elem_declared") ?? en)
        }
        return PostgresType(
            name: r.string(i, "typname") ?? "", kind: r.string(i, "typtype")?.first ?? "b",
            category: r.string(i, "typcategory")?.first ?? "U", element: element,
            declared: r.string(i, declared) ?? "")
    }

    /// A Postgres text-array literal of the given strings, every element quoted.
    public static func textArrayLiteral(_ items: [String]) -> String {
        "{" + items.map { s in
            var q = "\""
            for c in s {
                if c == "\"" || c == "\\" { q.append("\\") }
                q.append(c)
            }
            return q + "\""
        }.joined(separator: ",") + "}"
    }
}

extension DiscoveredStream {
    /// Column names that say "last modified", in order of preference.
    static let cursorNames = ["updated_at", "modified_at", "last_modified", "last_modified_at", "updated", "modified", "changed_at", "last_updated"]

    /// The column a cursor-based incremental read uses when the catalog names none: one whose name
    /// says it is a last-modified time and whose type orders (a timestamp, date or integer); nil
    /// when no column is evident.
    public var evidentCursor: Column? {
        let candidates = columns.filter { [.timestampWithTimeZone, .timestampWithoutTimeZone, .date, .integer].contains($0.kind) }
        return Self.cursorNames.lazy.compactMap { n in candidates.first { $0.name.lowercased() == n } }.first
    }

    /// The Airbyte stream object for a catalog, for the given replication method.
    public func airbyteStream(method: ReplicationMethod) -> JSONValue {
        var properties = JSONObject()
        for c in columns { properties[c.name] = c.kind.jsonSchema }
        let isTableLike = kind == .table || kind == .partitionedTable
        var syncModes: [JSONValue] = ["full_refresh"]
        var sourceDefinedCursor = false
        var defaultCursor: [JSONValue] = []
        switch method {
        case .standard:
            syncModes.append("incremental")
            if let c = evidentCursor { defaultCursor = [.string(c.name)] }
        case .xmin:
            if isTableLike {
                syncModes.append("incremental")
                sourceDefinedCursor = true
            }
        case .cdc:
            if isTableLike {
                syncModes.append("incremental")
                sourceDefinedCursor = true
                defaultCursor = [.string(CDCFields.airbyte.lsn)]
                for (name, schema) in CDCFields.airbyte.schemas { properties[name] = schema }
            }
        }
        var stream = JSONObject([
            ("name", .string(name)),
            ("namespace", .string(schema)),
            ("json_schema", ["type": "object", "properties": .object(properties)]),
            ("supported_sync_modes", .array(syncModes)),
            ("source_defined_cursor", .bool(sourceDefinedCursor)),
        ])
        if !defaultCursor.isEmpty { stream["default_cursor_field"] = .array(defaultCursor) }
        stream["source_defined_primary_key"] = .array(primaryKey.map { .array([.string($0)]) })
        stream["is_resumable"] = .bool(kind == .table || kind == .materializedView || !primaryKey.isEmpty)
        return .object(stream)
    }
}
