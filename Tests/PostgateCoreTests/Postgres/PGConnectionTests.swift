import Foundation
import Logging
import Testing
@testable import PostgateCore

/// Collects log messages so a test can see what reached the logger.
final class CapturingLogHandler: LogHandler, @unchecked Sendable {
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]
    private let lock = NSLock()
    private var _messages: [String] = []
    var messages: [String] { lock.withLock { _messages } }
    subscript(metadataKey key: String) -> Logger.Metadata.Value? { get { nil } set {} }
    func log(event: LogEvent) { lock.withLock { _messages.append("\(event.message)") } }
}

@Suite struct PGConnectionTests {
    func connect(logger: Logger = Logger(label: "test")) throws -> (ConnectionFactory, PGConnection) {
        let lab = try Lab.load()
        let config = try PostgateConfig.parse(.object(lab.readerConfig())).config
        let factory = try ConnectionFactory(config: config, logger: logger)
        return (factory, try factory.connect())
    }

    @Test func sessionIsSetUpForStableOutput() throws {
        let (_, conn) = try connect()
        let r = try conn.query("SELECT current_setting('TimeZone') AS tz, current_setting('DateStyle') AS ds, current_setting('extra_float_digits') AS efd, current_setting('application_name') AS app, current_setting('client_encoding') AS enc")
        #expect(r.string(0, "tz") == "UTC")
        #expect(r.string(0, "ds")?.hasPrefix("ISO") == true)
        #expect(r.string(0, "efd") == "3")
        #expect(r.string(0, "app") == "postgate")
        #expect(r.string(0, "enc") == "UTF8")
        #expect(conn.usesTLS)
    }

    @Test func serverErrorsCarrySQLSTATE() throws {
        let (_, conn) = try connect()
        do {
            try conn.query("SELECT 1/0")
            Issue.record("division by zero succeeded")
        } catch {
            #expect(error.sqlState == "22012")
            #expect(error.kind == .server)
            #expect(error.description.contains("division by zero"))
        }
        // The connection stays usable after a failed statement.
        #expect(try conn.query("SELECT $1::int + 1", ["41"]).string(0, 0) == "42")
    }

    @Test func noticesGoToTheLogger() throws {
        let handler = CapturingLogHandler()
        let logger = Logger(label: "test") { _ in handler }
        let (_, conn) = try connect(logger: logger)
        try conn.query("DO $$ BEGIN RAISE NOTICE 'postgate-notice-%', 42; END $$")
        #expect(handler.messages.contains { $0.contains("postgate-notice-42") })
    }

    @Test func inlineTLSMaterialIsPrivateAndRemoved() throws {
        let lab = try Lab.load()
        var obj = lab.readerConfig()
        obj["username"] = .string(lab["PG_CERT_USER"])
        obj["password"] = nil
        obj["ssl_mode"] = [
            "mode": "verify-full", "ca_certificate": .string(lab.file("CA_CERT")),
            "client_certificate": .string(lab.file("CLIENT_CERT")), "client_key": .string(lab.file("CLIENT_KEY")),
            "client_key_password": .string(lab["CLIENT_KEY_PASSWORD"]),
        ]
        let config = try PostgateConfig.parse(.object(obj)).config
        let factory = try ConnectionFactory(config: config, logger: Logger(label: "test"))
        let paths = factory.parameters().filter { ["sslrootcert", "sslcert", "sslkey"].contains($0.0) }.map(\.1)
        #expect(paths.count == 3)
        let dir = URL(fileURLWithPath: paths[0]).deletingLastPathComponent().path
        let dirMode = try FileManager.default.attributesOfItem(atPath: dir)[.posixPermissions] as? Int
        #expect(dirMode == 0o700)
        for p in paths {
            let mode = try FileManager.default.attributesOfItem(atPath: p)[.posixPermissions] as? Int
            #expect(mode == 0o600)
        }
        let conn = try factory.connect()
        #expect(try conn.query("SELECT current_user").string(0, 0) == lab["PG_CERT_USER"])
        factory.close()
        #expect(!FileManager.default.fileExists(atPath: dir))
    }

    @Test func quoting() {
        #expect(PGConnection.quoteIdentifier(#"we"ird"#) == #""we""ird""#)
        #expect(PGConnection.quoteLiteral("it's") == "'it''s'")
        #expect(Discovery.textArrayLiteral(["a", #"b"c"#, #"d\e"#]) == #"{"a","b\"c","d\\e"}"#)
    }
}
