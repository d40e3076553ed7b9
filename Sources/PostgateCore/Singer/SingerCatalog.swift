/// One stream as Singer mode reads it: the Singer stream id and replication settings, and the
/// configured stream the one pipeline reads.
public struct SingerStream: Sendable {
    /// Singer's replication methods.
    public enum Method: String, Sendable {
        case fullTable = "FULL_TABLE", incremental = "INCREMENTAL", logBased = "LOG_BASED"
    }

    /// `schema-table`, as in SCHEMA, RECORD and STATE messages.
    public var tapStreamID: String
    public var configured: ConfiguredStream
    public var method: Method
    /// The cursor column of an INCREMENTAL stream (nil under xmin, whose cursor is the source's).
    public var replicationKey: String?
}

/// Singer catalogs (`--discover` output, `--catalog` / `--properties` input): streams with JSON
/// schemas and breadcrumb metadata, as Meltano writes them back with its `select:` and
/// `metadata:` settings applied.
public enum SingerCatalog {
    /// The Singer stream id of a relation.
    public static func tapStreamID(_ id: StreamID) -> String { "\(id.namespace)-\(id.name)" }

    /// The method and key a stream is read with when the catalog sets none: CDC's log for
    /// tables under CDC, the source's xmin cursor under Xmin, an evident last-modified column
    /// under Standard, else full table.
    static func defaults(_ ds: DiscoveredStream, _ method: ReplicationMethod) -> (SingerStream.Method, String?) {
        let tableLike = ds.kind == .table || ds.kind == .partitionedTable
        switch method {
        case .cdc: return tableLike ? (.logBased, nil) : (.fullTable, nil)
        case .xmin: return tableLike ? (.incremental, nil) : (.fullTable, nil)
        case .standard: return ds.evidentCursor.map { (.incremental, $0.name) } ?? (.fullTable, nil)
        }
    }

    /// A column's schema with null allowed (Singer targets validate records against it; any value
    /// may be null, even where the column is NOT NULL, such as infinity dates), except for keys
    /// that are NOT NULL.
    static func propertySchema(_ schema: JSONValue, nullable: Bool) -> JSONValue {
        guard nullable, case .object(var o) = schema, case .string(let t)? = o["type"] else { return schema }
        o["type"] = ["null", .string(t)]
        return .object(o)
    }

    /// The Singer catalog of the discovered relations, for the config's replication method.
    public static func catalog(_ streams: [DiscoveredStream], method: ReplicationMethod) -> JSONValue {
        .object(JSONObject([("streams", .array(streams.map { entry($0, method: method) }))]))
    }

    static func entry(_ ds: DiscoveredStream, method: ReplicationMethod) -> JSONValue {
        let id = tapStreamID(ds.id)
        let keys = Set(ds.primaryKey)
        var properties = JSONObject()
        var fieldMetadata: [JSONValue] = []
        for c in ds.columns {
            properties[c.name] = propertySchema(c.kind.jsonSchema, nullable: !(keys.contains(c.name) && c.notNull))
            fieldMetadata.append(["breadcrumb": ["properties", .string(c.name)], "metadata": .object(JSONObject([
                ("inclusion", keys.contains(c.name) ? "automatic" : "available"),
                ("selected-by-default", true),
                ("sql-datatype", .string(c.type.declared)),
            ]))])
        }
        let (defaultMethod, defaultKey) = defaults(ds, method)
        if defaultMethod == .logBased {
            for (name, schema) in CDCFields.singer.schemas {
                properties[name] = propertySchema(schema, nullable: true)
                fieldMetadata.append(["breadcrumb": ["properties", .string(name)], "metadata": ["inclusion": "automatic", "selected-by-default": true]])
            }
        }
        var md = JSONObject([
            ("inclusion", "available"),
            ("selected-by-default", true),
            ("schema-name", .string(ds.schema)),
            ("table-name", .string(ds.name)),
            ("table-key-properties", .array(ds.primaryKey.map { .string($0) })),
            ("is-view", .bool(ds.kind == .view || ds.kind == .materializedView)),
            ("replication-method", .string(defaultMethod.rawValue)),
        ])
        if let defaultKey { md["replication-key"] = .string(defaultKey) }
        if case .standard = method {
            let orderable = ds.columns.filter { [.timestampWithTimeZone, .timestampWithoutTimeZone, .date, .integer, .number, .string].contains($0.kind) }
            let first = ds.evidentCursor.map { [$0.name] } ?? []
            md["valid-replication-keys"] = .array((first + orderable.map(\.name).filter { !first.contains($0) }).map { .string($0) })
        }
        if ds.estimatedRows >= 0 { md["row-count"] = .number(String(ds.estimatedRows)) }
        return .object(JSONObject([
            ("tap_stream_id", .string(id)),
            ("stream", .string(id)),
            ("table_name", .string(ds.name)),
            ("schema", ["type": "object", "properties": .object(properties)]),
            ("key_properties", .array(ds.primaryKey.map { .string($0) })),
            ("metadata", .array([["breadcrumb": [], "metadata": .object(md)]] + fieldMetadata)),
        ]))
    }

    /// The selected streams of a catalog. A stream is read when its top-level metadata says
    /// `selected` (or, without it, `selected-by-default`); a column when its metadata does, or its
    /// inclusion is `automatic`. Errors name the JSON path.
    public static func parse(_ json: JSONValue, file: String, method: ReplicationMethod) throws(InputError) -> [SingerStream] {
        guard let streams = json["streams"]?.arrayValue else {
            throw InputError(file: file, path: "streams", reason: "expected an array of streams (a Singer catalog, as `--discover` prints)")
        }
        var out: [SingerStream] = []
        var seen: Set<String> = []
        for (i, entry) in streams.enumerated() {
            let p = "streams[\(i)]"
            guard let id = entry["tap_stream_id"]?.stringValue, !id.isEmpty else {
                throw InputError(file: file, path: "\(p).tap_stream_id", reason: "is required")
            }
            guard seen.insert(id).inserted else {
                throw InputError(file: file, path: "\(p).tap_stream_id", reason: "\"\(id)\" appears twice in the catalog")
            }
            guard let mdList = entry["metadata"]?.arrayValue else {
                throw InputError(file: file, path: "\(p).metadata", reason: "expected the stream's breadcrumb metadata (an array); run --discover again")
            }
            var top: (Int, JSONObject)?
            var fields: [String: JSONObject] = [:]
            for (j, m) in mdList.enumerated() {
                guard let crumb = m["breadcrumb"]?.arrayValue, let md = m["metadata"]?.objectValue else {
                    throw InputError(file: file, path: "\(p).metadata[\(j)]", reason: "expected an object with `breadcrumb` (an array) and `metadata` (an object)")
                }
                if crumb.isEmpty {
                    top = (j, md)
                } else if crumb.count == 2, crumb[0] == "properties", let name = crumb[1].stringValue {
                    fields[name] = md
                }
            }
            guard let (j, md) = top else {
                throw InputError(file: file, path: "\(p).metadata", reason: "has no entry with an empty breadcrumb (the stream's own metadata); run --discover again")
            }
            let mp = "\(p).metadata[\(j)].metadata"
            let selected = md["selected"]?.boolValue ?? entry["schema"]?["selected"]?.boolValue ?? md["selected-by-default"]?.boolValue ?? false
            guard selected else { continue }
            guard let schema = md["schema-name"]?.stringValue, !schema.isEmpty else {
                throw InputError(file: file, path: "\(mp).schema-name", reason: "is required (the table's schema); run --discover again")
            }
            guard let table = md["table-name"]?.stringValue ?? entry["table_name"]?.stringValue, !table.isEmpty else {
                throw InputError(file: file, path: "\(mp).table-name", reason: "is required (the table's name); run --discover again")
            }

            let methodText = md["replication-method"]?.stringValue ?? entry["replication_method"]?.stringValue ?? SingerStream.Method.fullTable.rawValue
            guard let m = SingerStream.Method(rawValue: methodText) else {
                throw InputError(file: file, path: "\(mp).replication-method", reason: "must be FULL_TABLE, INCREMENTAL or LOG_BASED (found \"\(methodText)\")")
            }
            let key = md["replication-key"]?.stringValue ?? entry["replication_key"]?.stringValue
            var mode = ConfiguredStream.SyncMode.fullRefresh
            var cursor: [String] = []
            switch (m, method) {
            case (.fullTable, _): break
            case (.logBased, .cdc): mode = .incremental
            case (.logBased, _):
                throw InputError(file: file, path: "\(mp).replication-method", reason: "is LOG_BASED, which needs `replication_method` CDC in the config (it is \(method.name)); use FULL_TABLE or INCREMENTAL, or configure CDC")
            case (.incremental, .cdc):
                throw InputError(file: file, path: "\(mp).replication-method", reason: "is INCREMENTAL, but the config's `replication_method` is CDC, which reads incremental streams from the log; use LOG_BASED or FULL_TABLE")
            case (.incremental, .xmin): mode = .incremental
            case (.incremental, .standard):
                guard let key, !key.isEmpty else {
                    throw InputError(file: file, path: "\(mp).replication-key", reason: "is required for INCREMENTAL under `replication_method` Standard; name a column of valid-replication-keys")
                }
                mode = .incremental
                cursor = [key]
            }

            // Columns in the schema's order: selected ones and automatic ones, never unsupported ones.
            let cdcNames = Set(CDCFields.singer.all)
            var columns: [String] = []
            for name in entry["schema"]?["properties"]?.objectValue?.keys ?? [] where !cdcNames.contains(name) {
                let f = fields[name]
                let inclusion = f?["inclusion"]?.stringValue
                if inclusion == "unsupported" { continue }
                if inclusion == "automatic" || (f?["selected"]?.boolValue ?? f?["selected-by-default"]?.boolValue ?? true) { columns.append(name) }
            }
            let keys = (md["table-key-properties"] ?? entry["key_properties"])?.arrayValue?.compactMap(\.stringValue) ?? []
            let configured = ConfiguredStream(
                namespace: schema, name: table, selectedColumns: entry["schema"]?["properties"] == nil ? nil : columns,
                syncMode: mode, destinationSyncMode: nil, cursorField: cursor, primaryKey: keys.map { [$0] },
                location: CatalogLocation(file: file, index: i, propertiesPath: "\(p).schema.properties"))
            out.append(SingerStream(tapStreamID: id, configured: configured, method: m, replicationKey: m == .incremental ? key : nil))
        }
        return out
    }
}
