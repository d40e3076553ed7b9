import Foundation
import Testing
@testable import PostgateCore

/// `postgate check` against the lab: success and each failure step.
@Suite struct CheckCommandTests {
    func check(_ config: JSONObject) throws -> (status: String, message: String, result: CLIResult) {
        let path = try CLI.writeConfig(config)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let r = try CLI.run(["check", "--config", path])
        #expect(r.status == 0, "check exits 0 whatever the status; stderr: \(r.stderr)")
        #expect(r.stdoutLines.count == 1, "stdout holds exactly one message")
        let msg = try #require(r.messages.first)
        #expect(msg["type"] == "CONNECTION_STATUS")
        return (msg["connectionStatus"]?["status"]?.stringValue ?? "", msg["connectionStatus"]?["message"]?.stringValue ?? "", r)
    }

    @Test func succeedsWithVerifyFull() throws {
        let lab = try Lab.load()
        let (status, message, _) = try check(lab.readerConfig())
        #expect(status == "SUCCEEDED", "\(message)")
        #expect(message.contains("TLSv1.3") && message.contains("verify-full"))
        #expect(message.contains("Schema \"public\""))
    }

    @Test func succeedsWithoutTLSWhenDisabled() throws {
        let lab = try Lab.load()
        let (status, message, _) = try check(lab.readerConfig(sslMode: "disable"))
        #expect(status == "SUCCEEDED", "\(message)")
        #expect(message.contains("without TLS"))
    }

    @Test func wrongPassword() throws {
        let lab = try Lab.load()
        var c = lab.readerConfig()
        c["password"] = "definitely-not-it"
        let (status, message, r) = try check(c)
        #expect(status == "FAILED")
        #expect(message.contains("authentication failed") && message.contains("`username / password`"), "\(message)")
        #expect(r.stderr.contains("check FAILED"))
    }

    @Test func unreachablePort() throws {
        let lab = try Lab.load()
        var c = lab.readerConfig()
        c["port"] = 1
        let (status, message, _) = try check(c)
        #expect(status == "FAILED")
        #expect(message.hasPrefix("TCP connection failed") && message.contains("`host / port`"), "\(message)")
    }

    @Test func unresolvableHost() throws {
        let lab = try Lab.load()
        var c = lab.readerConfig()
        c["host"] = "no-such-host.invalid"
        let (status, message, _) = try check(c)
        #expect(status == "FAILED")
        #expect(message.hasPrefix("name resolution failed") && message.contains("`host`"), "\(message)")
    }

    @Test func missingDatabase() throws {
        let lab = try Lab.load()
        var c = lab.readerConfig()
        c["database"] = "no_such_db"
        let (status, message, _) = try check(c)
        #expect(status == "FAILED")
        #expect(message.hasPrefix("database failed") && message.contains("no_such_db") && message.contains("`database`"), "\(message)")
    }

    @Test func wrongCAFailsAtTLS() throws {
        let lab = try Lab.load()
        var c = lab.readerConfig(sslMode: "verify-ca")
        c["ssl_mode"] = ["mode": "verify-ca", "ca_certificate": .string(lab.file("OTHER_CA_CERT"))]
        let (status, message, _) = try check(c)
        #expect(status == "FAILED")
        #expect(message.hasPrefix("TLS failed") && message.contains("`ssl_mode`"), "\(message)")
    }

    @Test func verifyFullRejectsAHostNameTheCertificateDoesNotName() throws {
        let lab = try Lab.load()
        var c = lab.readerConfig()
        c["host"] = .string(lab["PG_UNNAMED_HOST"])
        let (status, message, _) = try check(c)
        #expect(status == "FAILED")
        #expect(message.hasPrefix("TLS failed") && message.contains("does not match host name"), "\(message)")
    }

    @Test func unreadableSchema() throws {
        let lab = try Lab.load()
        let (status, message, _) = try check(lab.readerConfig(schemas: ["public", "restricted"]))
        #expect(status == "FAILED")
        #expect(message.contains("no USAGE privilege on schema \"restricted\""), "\(message)")
        #expect(message.contains("GRANT USAGE ON SCHEMA \"restricted\" TO \"postgate_reader\""))
    }

    @Test func missingSchema() throws {
        let lab = try Lab.load()
        let (status, message, _) = try check(lab.readerConfig(schemas: ["nowhere"]))
        #expect(status == "FAILED")
        #expect(message.contains("schema \"nowhere\" does not exist") && message.contains("`schemas`"))
    }

    @Test func cdcProblemsComeWithTheSQLThatFixesThem() throws {
        let lab = try Lab.load()
        var c = lab.readerConfig()
        c["replication_method"] = ["method": "CDC", "replication_slot": "no_slot_here", "publication": "no_pub_here"]
        let (status, message, _) = try check(c)
        #expect(status == "FAILED")
        #expect(message.contains("lacks the REPLICATION attribute") && message.contains("ALTER ROLE \"postgate_reader\" WITH REPLICATION;"), "\(message)")
        #expect(message.contains("SELECT pg_create_logical_replication_slot('no_slot_here', 'pgoutput');"))
        #expect(message.contains("CREATE PUBLICATION \"no_pub_here\""))
        #expect(!message.contains("wal_level is"), "the lab runs wal_level=logical")
    }

    @Test func cdcReadyConfigSucceedsAndReportsCoverage() throws {
        let lab = try Lab.load()
        let admin = try lab.adminConnection()
        let tag = "chk\(UInt32.random(in: 0...UInt32.max))"
        try admin.query("CREATE SCHEMA \(tag)")
        try admin.query("CREATE TABLE \(tag).a (id int PRIMARY KEY); CREATE TABLE \(tag).b (v text)")
        try admin.query("GRANT USAGE ON SCHEMA \(tag) TO postgate_repl; GRANT SELECT ON ALL TABLES IN SCHEMA \(tag) TO postgate_repl")
        try admin.query("CREATE PUBLICATION \(tag)_pub FOR TABLE \(tag).a")
        try admin.query("SELECT pg_create_logical_replication_slot('\(tag)_slot', 'pgoutput')")
        defer {
            _ = try? admin.query("SELECT pg_drop_replication_slot('\(tag)_slot')")
            _ = try? admin.query("DROP PUBLICATION \(tag)_pub")
            _ = try? admin.query("DROP SCHEMA \(tag) CASCADE")
        }
        var c = lab.readerConfig(schemas: [tag])
        c["username"] = .string(lab["PG_REPL_USER"])
        c["password"] = .string(lab["PG_REPL_PASSWORD"])
        c["replication_method"] = ["method": "CDC", "replication_slot": .string("\(tag)_slot"), "publication": .string("\(tag)_pub")]
        let (status, message, _) = try check(c)
        #expect(status == "SUCCEEDED", "\(message)")
        #expect(message.contains("covers 1 of 2 readable tables"))
        #expect(message.contains("ALTER PUBLICATION \"\(tag)_pub\" ADD TABLE \"\(tag)\".\"b\";"))
        #expect(message.contains("REPLICA IDENTITY FULL"))
    }
}
