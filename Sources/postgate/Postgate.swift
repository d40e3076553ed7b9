import ArgumentParser
import Foundation
import Logging
import PostgateCore

@main
struct Postgate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "postgate",
        abstract: "PostgreSQL source connector speaking the Airbyte protocol, with SSH tunnels and verified TLS.",
        subcommands: [Spec.self, Check.self, Discover.self, Read.self, Sync.self, Tunnel.self])

    /// Parses and runs a command; any failure becomes an Airbyte TRACE error on stdout (not in
    /// Singer mode, whose stdout carries Singer messages only), a human line on stderr and a
    /// non-zero exit.
    static func main() {
        CLI.bootstrapLogging()
        CLI.installCleanup()
        let arguments = Array(CommandLine.arguments.dropFirst())
        let singer = SingerMode.isInvocation(arguments)
        do {
            var command: ParsableCommand = singer ? try SingerMode.parseAsRoot(arguments) : try parseAsRoot()
            defer { TunnelManager.shared.shutdown() }
            try command.run()
        } catch {
            CLI.cleanUp()
            let code = singer ? SingerMode.exitCode(for: error) : exitCode(for: error)
            if code == .success || error is ExitCode { singer ? SingerMode.exit(withError: error) : exit(withError: error) }
            if let e = error as? UserFacingError {
                CLI.fail(message: e.userMessage, failureType: FailureType.of(e), trace: !singer)
            }
            if code == .validationFailure {
                // Usage errors: report them in both forms, then let ArgumentParser print usage (exit 64).
                if singer { SingerMode.exit(withError: error) }
                CLI.emitTrace(message: fullMessage(for: error), failureType: FailureType.config.rawValue)
                exit(withError: error)
            }
            // An error nobody classified is a bug.
            CLI.fail(message: "unexpected error: \(fullMessage(for: error))", failureType: .system, trace: !singer)
        }
    }
}

/// Singer tap mode, chosen when the arguments start with a Singer flag rather than a command:
/// `postgate --config C --discover`, `postgate --config C --catalog K [--state S]`.
struct SingerMode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "postgate",
        abstract: "Run as a Singer tap (as Meltano calls one): --discover prints a Singer catalog; --catalog or --properties reads the selected streams as SCHEMA, RECORD, STATE and ACTIVATE_VERSION messages.")

    static let flags: Set<String> = ["--config", "--discover", "--catalog", "--properties", "--state", "--about"]

    static func isInvocation(_ arguments: [String]) -> Bool {
        guard let first = arguments.first else { return false }
        return flags.contains(String(first.split(separator: "=", maxSplits: 1).first ?? ""))
    }

    @Option(name: .long, help: "Path to the connector config JSON file (the same settings as `read`).")
    var config: String?

    @Flag(name: .long, help: "Print the Singer catalog of the configured schemas.")
    var discover = false

    @Option(name: .long, help: "A Singer catalog choosing streams, columns and replication methods.")
    var catalog: String?

    @Option(name: .long, help: "The same, under its older name.")
    var properties: String?

    @Option(name: .long, help: "Singer state to resume from (the last STATE message's value).")
    var state: String?

    @Flag(name: .long, help: "Print the tap's name and capabilities.")
    var about = false

    func validate() throws {
        if about { return }
        guard config != nil else { throw ValidationError("--config is required (the connector config JSON file)") }
        let modes = (discover ? 1 : 0) + (catalog != nil ? 1 : 0) + (properties != nil ? 1 : 0)
        guard modes == 1 else { throw ValidationError("give exactly one of --discover, --catalog or --properties") }
    }

    func run() throws {
        if about {
            let out = OutputSink()
            try out.emit(SingerTap.about)
            try out.flush()
            return
        }
        let logger = Logger(label: "postgate.singer")
        let config = try ConfigOption(config: self.config ?? "").load(logger: logger)
        if discover { return try SingerTap.discover(config: config, logger: logger) }
        let file = catalog ?? properties ?? ""
        let saved = try state.map { try SingerState.parse(try InputFile.bytes($0), file: $0, duplicate: { logger.debug("\($0)") }) } ?? SingerState()
        try SingerTap.read(config: config, catalog: try InputFile.json(file, logger: logger), catalogFile: file, state: saved, stateFile: state, logger: logger)
    }
}

struct ConfigOption: ParsableArguments {
    @Option(name: .long, help: "Path to the connector config JSON file.")
    var config: String

    init() {}
    init(config: String) { self.config = config }

    func load(logger: Logger) throws -> PostgateConfig {
        let loaded = try PostgateConfig.load(file: config)
        for w in loaded.warnings { logger.warning("\(w)") }
        return loaded.config
    }
}

struct Spec: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the connector specification (Airbyte SPEC message).")

    func run() throws {
        let out = OutputSink()
        try out.emit(AirbyteMessage.spec(ConnectorSpec.connectionSpecification))
        try out.flush()
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check that the configured database can be reached and read (Airbyte CONNECTION_STATUS message).")

    @OptionGroup var options: ConfigOption

    func run() throws {
        let logger = Logger(label: "postgate.check")
        let config = try options.load(logger: logger)
        let report = ConnectionCheck(config: config, logger: logger).run()
        let out = OutputSink()
        try out.emit(AirbyteMessage.connectionStatus(succeeded: report.succeeded, message: report.message))
        try out.flush()
        if !report.succeeded {
            FileHandle.standardError.write(Data("postgate: check FAILED\n\(report.message)\n".utf8))
        }
    }
}

struct Discover: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the readable streams and their schemas (Airbyte CATALOG message).")

    @OptionGroup var options: ConfigOption

    func run() throws {
        let logger = Logger(label: "postgate.discover")
        let config = try options.load(logger: logger)
        let factory = try ConnectionFactory(config: config, logger: logger)
        defer { factory.close() }
        let conn = try factory.connect()
        let streams: [DiscoveredStream]
        do { streams = try Discovery.discover(conn, schemas: config.schemas, publication: config.replication.publication) } catch { throw factory.translate(error) }
        if streams.isEmpty {
            logger.warning("no readable tables, views or materialized views in schemas \(config.schemas)")
        }
        let out = OutputSink()
        try out.emit(AirbyteMessage.catalog(streams: streams.map { $0.airbyteStream(method: config.replication) }))
        try out.flush()
    }
}

struct Read: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read the configured streams as Airbyte RECORD, STATE and TRACE messages.")

    @OptionGroup var options: ConfigOption

    @Option(name: .long, help: "Path to the ConfiguredAirbyteCatalog JSON file.")
    var catalog: String

    @Option(name: .long, help: "Path to saved state: a JSON array of STATE messages (or a previous read's output).")
    var state: String?

    func run() throws {
        let logger = Logger(label: "postgate.read")
        let config = try options.load(logger: logger)
        let streams = try ConfiguredCatalog.parse(try InputFile.json(catalog, logger: logger), file: catalog)
        let saved = try state.map { try SavedState.parse(try InputFile.bytes($0), file: $0, duplicate: { logger.debug("\($0)") }) } ?? SavedState()
        try SourceDriver.read(config: config, catalog: streams, states: saved, stateOrigin: state.map { "state file \($0)" }, logger: logger)
    }
}

/// Reading the catalog and state files named on the command line.
enum InputFile {
    static func bytes(_ path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError.unreadable(file: path, reason: "no such file or not readable")
        }
        return [UInt8](data)
    }

    /// A catalog written by another client; a key given twice takes its last value (logged).
    static func json(_ path: String, logger: Logger) throws -> JSONValue {
        do {
            return try JSONParser.parse(try bytes(path), duplicateKeys: .lastWins { key, offset in
                logger.debug("\(path): key \"\(key)\" appears twice in one object (byte \(offset)); the last one is used")
            })
        } catch let e as JSONSyntaxError {
            throw ConfigError.syntax(file: path, e)
        }
    }
}

struct Tunnel: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Open the configured SSH tunnel, print the local address to use, and hold it until SIGINT or SIGTERM.")

    @OptionGroup var options: ConfigOption

    func run() throws {
        let logger = Logger(label: "postgate.tunnel")
        let config = try options.load(logger: logger)
        guard let settings = config.tunnel else {
            throw ConfigError.invalid(path: "tunnel_method.tunnel_method", reason: "is NO_TUNNEL; set SSH_KEY_AUTH or SSH_PASSWORD_AUTH to open a tunnel")
        }
        let t = try TunnelManager.shared.tunnel(for: settings, targetHost: config.host, targetPort: config.port, logger: logger)
        try FileHandle.standardOutput.write(contentsOf: Data("""
            Forwarding 127.0.0.1:\(t.localPort) to \(config.host):\(config.port) through \(t.bastion)
            bastion host key: \(t.hostKey.type) \(t.hostKey.fingerprint)\(settings.hostKey == nil ? " (not pinned)" : " (pinned)")
            connect with: host=\(config.host) hostaddr=127.0.0.1 port=\(t.localPort)
            Press Ctrl-C to close the tunnel.

            """.utf8))
        let stop = DispatchSemaphore(value: 0)
        var sources: [DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let src = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            src.setEventHandler { stop.signal() }
            src.resume()
            sources.append(src)
        }
        // Also end if the tunnel dies.
        while stop.wait(timeout: .now() + 1) == .timedOut {
            if !t.isAlive { throw t.failure ?? TunnelError.lost(bastion: t.bastion, reason: "closed") }
        }
        TunnelManager.shared.shutdown()
        FileHandle.standardError.write(Data("postgate: tunnel closed\n".utf8))
    }
}

struct Sync: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply the source's streams to a destination (SQLite, PostgreSQL or JSON Lines), inserting, updating and deleting as the source changed.",
        discussion: """
            Without --catalog every discovered stream is synced in the best mode the config allows: CDC when \
            replication_method is CDC, else incremental where a cursor or xmin fits, else full refresh. State is \
            kept in the destination and committed with the data it covers, so a sync that is killed and run \
            again converges without losing or duplicating rows.
            """)

    @OptionGroup var options: ConfigOption

    @Option(name: .long, help: "Where to apply the streams: sqlite:PATH (default sqlite:postgate.db), postgres:CONNINFO or jsonl:DIR.")
    var destination: String = "sqlite:postgate.db"

    @Option(name: .long, help: "A ConfiguredAirbyteCatalog choosing streams and modes (default: every discovered stream, best mode).")
    var catalog: String?

    @Option(name: .customLong("state-file"), help: "Also write the committed state here after each commit (a JSON array usable as `read --state`).")
    var stateFile: String?

    @Flag(name: .long, help: "Keep streaming CDC changes until SIGINT/SIGTERM, then commit, confirm and exit.")
    var follow = false

    func run() throws {
        let logger = Logger(label: "postgate.sync")
        let config = try options.load(logger: logger)
        let streams = try catalog.map { try ConfiguredCatalog.parse(try InputFile.json($0, logger: logger), file: $0) }
        let engine = SyncEngine(config: config, options: SyncOptions(destination: destination, catalog: streams, stateFile: stateFile, follow: follow), logger: logger)
        let progress = try engine.run()
        FileHandle.standardError.write(Data((progress.summary() + "\n").utf8))
    }
}
