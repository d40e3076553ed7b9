/// How `sync` moves one stream.
public enum SyncMode: Sendable, Equatable, CustomStringConvertible {
    case fullRefresh
    case cursor(String)
    case xmin
    case cdc

    public var description: String {
        switch self {
        case .fullRefresh: return "full refresh"
        case .cursor(let c): return "cursor incremental on \(c)"
        case .xmin: return "xmin incremental"
        case .cdc: return "CDC"
        }
    }

    /// True when records are merged into the existing table (by primary key when there is one).
}

/// One stream as `sync` moves it: what is read, how, and the table it lands in.
public struct SyncStream: Sendable {
    /// A source column: its name, type and value encoding (the destination type map's input).
    public struct Column: Sendable, Equatable {
        public var name: String
        public var type: PostgresType?
        public var encoding: ValueEncoding
    }

    public var configured: ConfiguredStream
    public var discovered: DiscoveredStream
    public var mode: SyncMode
    public var columns: [Column]
    public var primaryKey: [String]
    /// Why this mode was chosen (for the plan printed at the start).
    public var reason: String

    public var namespace: String { discovered.schema }
    public var name: String { discovered.name }
    public var id: StreamID { discovered.id }
    /// Columns CDC adds to each row.
    static let cdcColumns: [Column] = [
        Column(name: "_ab_cdc_lsn", type: PostgresType(name: "int8", kind: "b", category: "N", declared: "bigint"), encoding: .integer),
        // Already ISO 8601 UTC text.
        Column(name: "_ab_cdc_updated_at", type: PostgresType(name: "timestamptz", kind: "b", category: "D", declared: "timestamp with time zone"), encoding: .plain),
    ]
}

/// Chooses each stream's mode: from the catalog when one is given, otherwise the best the
/// config allows (CDC when configured; else incremental where a cursor or xmin fits; else full refresh).
public enum SyncPlan {
    /// Column names that make a good cursor when no catalog names one, most telling first.

    public static func make(config: PostgateConfig, discovered: [DiscoveredStream], catalog: [ConfiguredStream]?) throws -> [SyncStream] {
        if let catalog {
            let byName = Dictionary(discovered.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
            return try catalog.map { cs in
                guard let ds = byName[cs.id] else {
                    throw SyncError.plan("stream \(cs.id) in the catalog is not a readable table, view or materialized view (dropped, or SELECT revoked?); run discover again")
                }
                return try fromCatalog(cs, ds, config: config)
            }
        }
        return discovered.map { auto($0, config: config) }
    }

    static func fromCatalog(_ cs: ConfiguredStream, _ ds: DiscoveredStream, config: PostgateConfig) throws -> SyncStream {
        _ = try cs.checkedColumns(of: ds)
        var mode = SyncMode.fullRefresh
        if cs.syncMode == .incremental {
            switch config.replication {
            case .cdc:
                guard ds.kind == .table || ds.kind == .partitionedTable else {
                    throw SyncError.plan("stream \(cs.id) is a \(ds.kind.label); CDC captures tables only, so configure it as full_refresh")
                }
                mode = .cdc
            case .xmin: mode = .xmin
            case .standard:
                guard let field = cs.cursorField.first else {
                    throw SyncError.plan("stream \(cs.id): incremental with replication_method Standard needs a cursor_field in the catalog")
                }
                mode = .cursor(field)
            }
        }
        let pk = cs.primaryKey.compactMap(\.first).isEmpty ? ds.primaryKey : cs.primaryKey.compactMap(\.first)
        return stream(cs, ds, mode: mode, primaryKey: pk, reason: "from the catalog")
    }

    static func auto(_ ds: DiscoveredStream, config: PostgateConfig) -> SyncStream {
        let isTable = ds.kind == .table || ds.kind == .partitionedTable
        var mode = SyncMode.fullRefresh
        var reason: String
        switch config.replication {
        case .cdc:
            if !isTable {
                reason = "a \(ds.kind.label); CDC captures tables only"
            } else if ds.primaryKey.isEmpty {
                reason = "no primary key, so changes cannot be matched to rows"
            } else {
                mode = .cdc
                reason = "replication_method is CDC"
            }
        case .xmin:
            if ds.kind == .view {
                reason = "a view has no xmin"
            } else {
                mode = .xmin
                reason = "replication_method is Xmin"
            }
        case .standard:
            if let c = ds.evidentCursor {
                mode = .cursor(c.name)
                reason = "column \(c.name) looks like a last-modified time"
            } else {
                reason = "no column looks like a cursor (e.g. updated_at); give a catalog to choose one"
            }
        }
        let cs = ConfiguredStream(
            namespace: ds.schema, name: ds.name, selectedColumns: nil,
            syncMode: mode == .fullRefresh ? .fullRefresh : .incremental,
            destinationSyncMode: mode == .fullRefresh ? "overwrite" : "append_dedup",
            cursorField: { if case .cursor(let c) = mode { return [c] } else { return [] } }(),
            primaryKey: ds.primaryKey.map { [$0] })
        return stream(cs, ds, mode: mode, primaryKey: ds.primaryKey, reason: reason)
    }

    static func stream(_ cs: ConfiguredStream, _ ds: DiscoveredStream, mode: SyncMode, primaryKey: [String], reason: String) -> SyncStream {
        let selected = cs.selectedColumns.map(Set.init)
        var columns = ds.columns.filter { selected?.contains($0.name) ?? true }.map {
            SyncStream.Column(name: $0.name, type: $0.type, encoding: SnapshotReader.selectExpression($0).1)
        }
        if mode == .cdc { columns += SyncStream.cdcColumns }
        return SyncStream(configured: cs, discovered: ds, mode: mode, columns: columns, primaryKey: primaryKey, reason: reason)
    }

}

/// Why a sync could not start or finish; every case names what to change.
public enum SyncError: Error, UserFacingError, CustomStringConvertible {
    case plan(String)
    /// The destination cannot be used as given (bad `--destination`, cannot open or log in).
    case destination(String)
    /// The destination failed while syncing: `transient` when its server or connection went away,
    /// otherwise a local I/O failure or an unexpected error (`system`).
    case destinationFailed(String, FailureType)
    case stopped(String)

    /// A PostgreSQL destination's error, typed by what went wrong.
    static func destination(_ message: String, _ e: PostgresError) -> SyncError {
        let type = e.failure
        return type == .config ? .destination(message) : .destinationFailed(message, type)
    }

    public var description: String {
        switch self {
        case .plan(let m): return m
        case .destination(let m), .destinationFailed(let m, _): return "destination: \(m)"
        case .stopped(let m): return m
        }
    }

    public var userMessage: String { description }
    public var failureType: String {
        switch self {
        case .plan, .destination: return FailureType.config.rawValue
        case .destinationFailed(_, let type): return type.rawValue
        case .stopped: return FailureType.system.rawValue
        }
    }
}
