import Logging

/// Singer mode: the tap interface Meltano and Singer runners call (`--config`, `--discover`,
/// `--catalog` / `--properties`, `--state`), over the same discovery and read pipeline as `read`.
public enum SingerTap {
    /// What `--about` prints.
    public static let about: JSONValue = [
        "name": "tap-postgate",
        "description": "PostgreSQL source (full table, incremental by cursor or xmin, and LOG_BASED change data capture), with SSH tunnels and verified TLS",
        "capabilities": ["catalog", "discover", "properties", "state"],
        "supported_python_versions": [],
    ]

    /// Prints the Singer catalog of the configured schemas.
    public static func discover(config: PostgateConfig, logger: Logger) throws {
        let factory = try ConnectionFactory(config: config, logger: logger)
        defer { factory.close() }
        let streams: [DiscoveredStream]
        do { streams = try Discovery.discover(try factory.connect(), schemas: config.schemas, publication: config.replication.publication) } catch { throw factory.translate(error) }
        if streams.isEmpty { logger.warning("no readable tables, views or materialized views in schemas \(config.schemas)") }
        let out = OutputSink()
        try out.emit(SingerCatalog.catalog(streams, method: config.replication))
        try out.flush()
    }

    /// Reads the catalog's selected streams from `state` as Singer messages on stdout.
    public static func read(config: PostgateConfig, catalog: JSONValue, catalogFile: String, state: SingerState, stateFile: String?, logger: Logger) throws {
        let streams = try SingerCatalog.parse(catalog, file: catalogFile, method: config.replication)
        if streams.isEmpty { logger.warning("\(catalogFile): no stream is selected; nothing to read") }
        let saved = try state.saved(for: streams, file: stateFile ?? "state", note: { logger.warning("\($0)") })
        let now = AirbyteMessage.nowMillis
        let byID = Dictionary(streams.map { ($0.configured.id, $0) }, uniquingKeysWith: { a, _ in a })
        try SourceDriver.read(config: config, catalog: streams.map(\.configured), states: saved,
                              stateOrigin: stateFile.map { "state file \($0)" }, logger: logger) { resolved in
            let plans = try resolved.compactMap { r -> SingerSink.Plan? in
                guard let s = byID[r.configured.id] else { return nil }
                let columns = try r.configured.checkedColumns(of: r.discovered) ?? r.discovered.columns
                return SingerSink.Plan(singer: s, columns: columns, version: SingerSink.version(for: s, state: state, now: now))
            }
            return SingerSink(out: OutputSink(), plans: plans, state: state)
        }
    }
}
