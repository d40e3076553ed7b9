import ArgumentParser
import Foundation
import Logging
import PostgateCore

@main
struct Postgate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "postgate",
        abstract: "PostgreSQL source connector speaking the Airbyte protocol, with SSH tunnels and verified TLS.",
        subcommands: [Spec.self, Check.self, Discover.self])

    /// Parses and runs a command; any failure becomes an Airbyte TRACE error on stdout,
    /// a human line on stderr and a non-zero exit.
    static func main() {
        CLI.bootstrapLogging()
        CLI.installSignalCleanup()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            if exitCode(for: error) == .success { exit(withError: error) }
            if let e = error as? UserFacingError {
                CLI.fail(message: e.userMessage, failureType: e.failureType)
            }
            // Usage errors: report them in both forms, then let ArgumentParser print usage.
            CLI.emitTrace(message: fullMessage(for: error), failureType: "config_error")
            exit(withError: error)
        }
    }
}

struct ConfigOption: ParsableArguments {
    @Option(name: .long, help: "Path to the connector config JSON file.")
    var config: String

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
        let streams = try Discovery.discover(conn, schemas: config.schemas)
        if streams.isEmpty {
            logger.warning("no readable tables, views or materialized views in schemas \(config.schemas)")
        }
        let out = OutputSink()
        try out.emit(AirbyteMessage.catalog(streams: streams.map { $0.airbyteStream(method: config.replication) }))
        try out.flush()
    }
}
