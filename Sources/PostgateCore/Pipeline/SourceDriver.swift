import Logging

/// The one snapshot-then-CDC driver, used by `read` and `sync`: reads the non-CDC streams (in one
/// snapshot shared by up to `max_db_connections` connections, in checkpointed page-range items),
/// then the CDC streams (initial loads in chunks between their changes), into a sink.
public final class SourceDriver {
    /// One stream to read.
    public struct Stream {
        public var configured: ConfiguredStream
        public var discovered: DiscoveredStream
        public var state: StreamState?
        /// Read by change data capture.
        public var cdc: Bool

        public init(configured: ConfiguredStream, discovered: DiscoveredStream, state: StreamState?, cdc: Bool) {
            self.configured = configured
            self.discovered = discovered
            self.state = state
            self.cdc = cdc
        }
    }

    let config: PostgateConfig
    let factory: ConnectionFactory
    let logger: Logger
    /// Names where saved states come from, for errors.
    public var stateOrigin = "the saved state"
    /// Set by `sync`: the destination owns durability (see `CDCReader.commitFeedback`).
    public var commitFeedback: CDCCommitFeedback?
    public var follow = false
    public var stopRequested: @Sendable () -> Bool = { false }

    public init(config: PostgateConfig, factory: ConnectionFactory, logger: Logger) {
        self.config = config
        self.factory = factory
        self.logger = logger
    }

    /// Matches a configured catalog with what discovery found, refusing streams that cannot be read as asked.
    public static func resolve(_ catalog: [ConfiguredStream], discovered: [DiscoveredStream], config: PostgateConfig,
                               states: SavedState) throws -> [Stream] {
        let byName = Dictionary(discovered.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        return try catalog.map { cs in
            guard let ds = byName[cs.id] else {
                throw SnapshotReader.ReadError(message: "stream \(cs.id) is not a readable table, view or materialized view (it may have been dropped, or SELECT was revoked); run discover again")
            }
            var cdc = false
            if case .cdc = config.replication, cs.syncMode == .incremental {
                guard ds.kind == .table || ds.kind == .partitionedTable else {
                    throw SnapshotReader.ReadError(message: "stream \(cs.id) is a \(ds.kind.label); CDC captures tables only, so configure it as full_refresh")
                }
                cdc = true
            }
            return Stream(configured: cs, discovered: ds, state: states.streams[cs.id], cdc: cdc)
        }
    }

    /// Reads every stream into `sink`.
    public func run(conn: PGConnection, streams: [Stream], cdcState: CDCState?, sink: ReadSink) throws {
        let reader = SnapshotReader(conn: conn, config: config, sink: sink, logger: logger)
        reader.stateOrigin = stateOrigin
        try reader.read(streams.filter { !$0.cdc }.map { ($0.configured, $0.discovered, $0.state) }, factory: factory)
        let changes = streams.filter(\.cdc)
        if case .cdc(let settings) = config.replication, !changes.isEmpty {
            let cdc = CDCReader(factory: factory, config: config, cdc: settings, sink: sink, logger: logger)
            cdc.stateOrigin = stateOrigin
            cdc.commitFeedback = commitFeedback
            cdc.follow = follow
            cdc.stopRequested = stopRequested
            try cdc.run(changes.map { ($0.configured, $0.discovered) }, state: cdcState)
        }
        try sink.flush()
    }

    /// `read`: the configured catalog, resumed from `states`, into the sink `makeSink` makes for
    /// the resolved streams (by default Airbyte messages on stdout).
    public static func read(config: PostgateConfig, catalog: [ConfiguredStream], states: SavedState, stateOrigin: String?, logger: Logger,
                            makeSink: ([Stream]) throws -> ReadSink = { _ in AirbyteSink(out: OutputSink()) }) throws {
        let factory = try ConnectionFactory(config: config, logger: logger)
        defer { factory.close() }
        do {
            let conn = try factory.connect()
            let discovered = try Discovery.discover(conn, schemas: ConfiguredCatalog.schemas(catalog, configured: config.schemas), publication: config.replication.publication)
            let named = try ConfiguredCatalog.resolveNamespaces(catalog, discovered: discovered)
            let streams = try resolve(named, discovered: discovered, config: config, states: states)
            let driver = SourceDriver(config: config, factory: factory, logger: logger)
            if let stateOrigin { driver.stateOrigin = stateOrigin }
            try driver.run(conn: conn, streams: streams, cdcState: states.cdc, sink: try makeSink(streams))
        } catch {
            throw factory.translate(error)
        }
    }
}
