import Foundation
import Testing
@testable import PostgateCore

/// Each failure is reported with the Airbyte failure type it belongs to and that type's exit
/// status (issue #12, item 12): config_error 1, transient_error 2, system_error 3, usage 64.
@Suite struct FailureTypeTests {
    @Test func exitStatusesAreDistinct() {
        #expect(FailureType.allCases.map(\.exitCode) == [1, 2, 3])
        struct Unclassified: Error {}
        #expect(FailureType.of(Unclassified()) == .system)
    }

    @Test func postgresErrorsAreTypedBySQLState() {
        func type(_ kind: PostgresError.Kind, _ state: String?) -> FailureType {
            PostgresError(kind: kind, sqlState: state, message: "m").failure
        }
        #expect(type(.connection, nil) == .config)        // wrong host, port or TLS setting
        #expect(type(.connection, "3D000") == .config)    // no such database
        #expect(type(.connection, "28P01") == .config)    // wrong password
        #expect(type(.connection, "57P03") == .transient) // the server is starting up
        #expect(type(.connection, "53300") == .transient) // too many connections
        #expect(type(.client, nil) == .transient)         // the connection broke
        #expect(type(.client, "57P01") == .transient)     // terminated by an administrator
        #expect(type(.server, "42501") == .config)        // permission denied
        #expect(type(.server, "40001") == .transient)     // serialization failure
        #expect(type(.server, "XX000") == .system)        // internal error
        #expect(type(.server, "22P02") == .system)        // unexpected data
    }

    @Test func aPgOutputDecodeFailureIsASystemError() throws {
        do {
            _ = try PgOutputDecoder.decode([UInt8(ascii: "I"), 0, 0])
            Issue.record("a truncated insert message decoded")
        } catch {
            #expect(FailureType.of(error) == .system)
            #expect((error as UserFacingError).userMessage.contains("malformed pgoutput message"))
        }
    }

    @Test func destinationFailuresMidRunAreNotConfigErrors() {
        let lost = SyncError.destination("x", PostgresError(kind: .client, message: "server closed the connection unexpectedly"))
        #expect(FailureType.of(lost) == .transient)
        let login = SyncError.destination("x", PostgresError(kind: .connection, sqlState: "28P01", message: "password authentication failed"))
        #expect(FailureType.of(login) == .config)
        #expect(FailureType.of(SyncError.destinationFailed("disk full", .system)) == .system)
    }

    @Test func usageErrorsExit64AsConfigErrors() throws {
        let r = try CLI.run(["read", "--no-such-option"])
        #expect(r.status == 64)
        #expect(r.messages.first?["trace"]?["error"]?["failure_type"] == "config_error")
    }

    @Test func configErrorsExit1() throws {
        let r = try CLI.run(["check", "--config", "/nonexistent/postgate.json"])
        #expect(r.status == 1)
        #expect(r.messages.first?["trace"]?["error"]?["failure_type"] == "config_error")
    }

    /// stdout closed by the consumer: a local I/O failure, reported on stderr, never a death by SIGPIPE.
    @Test func aClosedStdoutIsASystemError() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLI.binary)
        p.arguments = ["spec"]
        let out = Pipe()
        let err = Pipe()
        try out.fileHandleForReading.close()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationReason == .exit && p.terminationStatus == 3, "status \(p.terminationStatus) (\(p.terminationReason == .exit ? "exit" : "signal"))")
        #expect(stderr.contains("cannot write output") && stderr.contains("Broken pipe"), "\(stderr)")
    }

    /// A view slow enough (about `seconds` s) to act on a run while it reads.
    func slowView(_ f: Fixture, rows: Int, seconds: Double) throws {
        let s = f.q(f.schema)
        try f.sql("""
            CREATE FUNCTION \(s).slow(n int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(\(seconds / Double(rows))); RETURN n; END $$;
            CREATE VIEW \(s).slow_v AS SELECT \(s).slow(g) AS id FROM generate_series(1, \(rows)) g;
            """)
    }

    /// Terminates the backends `filter` (a WHERE on pg_stat_activity) selects, once there is one.
    func terminate(_ f: Fixture, where filter: String) throws -> Bool {
        try eventually(20) {
            let r = try f.admin.query("SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND \(filter)")
            return (r.int(0, "n") ?? 0) > 0
        }
    }

    /// The source connection killed mid-read: transient, resume from the last STATE.
    @Test func aSourceConnectionLostMidReadIsTransient() throws {
        let f = try Fixture("err_lost")
        try slowView(f, rows: 400, seconds: 8)
        let cfg = try CLI.writeConfig(f.config())
        let cat = try CLI.writeTemp(f.catalog([("slow_v", "full_refresh", nil)]).jsonText, suffix: ".json")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLI.binary)
        p.arguments = ["read", "--config", cfg, "--catalog", cat]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        #expect(try terminate(f, where: "usename = 'postgate_reader' AND query LIKE '%\(f.schema)%slow_v%'"))
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        let trace = ReadOutput(text: text).lines.first { $0["trace"]?["type"] == "ERROR" }?["trace"]?["error"]
        #expect(p.terminationStatus == 2 && trace?["failure_type"] == "transient_error", "status \(p.terminationStatus): \(text.suffix(600))")
    }

    /// The PostgreSQL destination's connection killed mid-sync: transient, not the destination's settings.
    @Test func aDestinationConnectionLostMidSyncIsTransient() throws {
        let f = try Fixture("err_dest")
        try slowView(f, rows: 200, seconds: 4)
        let dest = try TestDestination(.postgres, lab: f.lab)
        let cat = try CLI.writeTemp(f.catalog([("slow_v", "full_refresh", nil)]).jsonText, suffix: ".json")
        let sync = try BackgroundSync(config: try CLI.writeConfig(f.config()), destination: dest.url, extra: ["--catalog", cat])
        #expect(try terminate(f, where: "datname = '\(dest.database!)'"))
        let status = sync.waitExit()
        #expect(status == 2 && sync.stderrText.contains("PostgreSQL destination"), "status \(status): \(sync.stderrText.suffix(600))")
    }

    /// A destination file that cannot be written once the sync runs: local I/O, a system error.
    @Test func aDestinationWriteFailureIsASystemError() throws {
        let f = try Fixture("err_io")
        try f.sql("CREATE TABLE \(f.q(f.schema)).t (id int PRIMARY KEY); INSERT INTO \(f.q(f.schema)).t VALUES (1)")
        let dest = try TestDestination(.jsonl, lab: f.lab)
        // A directory where the stream's file belongs.
        try FileManager.default.createDirectory(atPath: dest.path + "/\(f.schema)__t.jsonl", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dest.path + "/\(f.schema)__t.jsonl.loading", withIntermediateDirectories: true)
        let r = try CLI.run(["sync", "--config", try CLI.writeConfig(f.config()), "--destination", dest.url])
        #expect(r.status == 3 && ActionableErrorTests.traceError(r)?.type == "system_error", "status \(r.status): \(r.stderr)")
        // Whereas a destination that cannot be opened at all is the setting's fault.
        let bad = try CLI.run(["sync", "--config", try CLI.writeConfig(f.config()), "--destination", "sqlite:/nonexistent-dir/x.db"])
        #expect(bad.status == 1 && ActionableErrorTests.traceError(bad)?.type == "config_error", "\(bad.stderr)")
    }
}
