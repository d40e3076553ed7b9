import Foundation
import Testing
@testable import PostgateCore

/// Inline TLS material never outlives the run that wrote it: every failure class of `check`, error
/// exits, a reader that closes the pipe early, SIGINT and SIGTERM; and a run removes what a killed
/// run of its own kind left behind (issue #12, item 5).
@Suite struct PrivateFilesCleanupTests {
    /// A fresh TMPDIR for the runs of one test, removed afterwards.
    final class TempDir {
        let path: String
        init() throws {
            path = FileManager.default.temporaryDirectory.appendingPathComponent("pf-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        deinit { try? FileManager.default.removeItem(atPath: path) }
        var entries: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted() }
        var environment: [String: String] { ["TMPDIR": path] }
    }

    /// `config` with the lab CA, client certificate and encrypted client key inline.
    static func withInlineMaterial(_ config: JSONObject, _ lab: Lab, ca: String = "CA_CERT") -> JSONObject {
        var c = config
        c["ssl_mode"] = [
            "mode": "verify-full", "ca_certificate": .string(lab.file(ca)),
            "client_certificate": .string(lab.file("CLIENT_CERT")), "client_key": .string(lab.file("CLIENT_KEY")),
            "client_key_password": .string(lab["CLIENT_KEY_PASSWORD"]),
        ]
        return c
    }

    @Test(arguments: ["wrong password", "missing database", "wrong CA", "host name mismatch", "host key pin mismatch"])
    func failedCheckAndDiscoverLeaveNoMaterial(_ failure: String) throws {
        let lab = try Lab.load()
        var c = Self.withInlineMaterial(lab.readerConfig(), lab)
        var expected = ""
        switch failure {
        case "wrong password":
            c["password"] = .string(TestSecrets.extra[1])
            expected = "password authentication failed"
        case "missing database":
            c["database"] = "no_such_database_pf"
            expected = "does not exist"
        case "wrong CA":
            c = Self.withInlineMaterial(lab.readerConfig(), lab, ca: "OTHER_CA_CERT")
            expected = "TLS failed"
        case "host name mismatch":
            c["host"] = .string(lab["PG_UNNAMED_HOST"])
            expected = "does not match host name"
        default:
            c = Self.withInlineMaterial(lab.tunnelConfig(.ed25519), lab)
            if case .object(var t)? = c["tunnel_method"] {
                t["tunnel_host_key"] = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                c["tunnel_method"] = .object(t)
            }
            expected = "does not match the pinned one"
        }
        let tmp = try TempDir()
        let cfg = try CLI.writeConfig(c)
        defer { try? FileManager.default.removeItem(atPath: cfg) }
        let check = try CLI.run(["check", "--config", cfg], environment: tmp.environment)
        let status = check.messages.first { $0["type"] == "CONNECTION_STATUS" }?["connectionStatus"]
        #expect(status?["status"]?.stringValue == "FAILED", "\(failure): \(check.stdout)")
        #expect(status?["message"]?.stringValue?.contains(expected) == true, "\(failure): \(check.stdout)")
        #expect(tmp.entries.isEmpty, "after a failed check (\(failure)): \(tmp.entries)")
        let discover = try CLI.run(["discover", "--config", cfg], environment: tmp.environment)
        #expect(discover.status != 0, "\(failure): discover fails")
        #expect(tmp.entries.isEmpty, "after a failed discover (\(failure)): \(tmp.entries)")
    }

    /// A table large enough that a read is still running when the test acts on it.
    final class BigRead {
        let f: Fixture
        let args: [String]
        init(_ prefix: String) throws {
            f = try Fixture(prefix)
            try f.sql("CREATE TABLE \(f.q(f.schema)).t (id int, pad text); INSERT INTO \(f.q(f.schema)).t SELECT g, repeat('p', 300) FROM generate_series(1, 300000) g")
            try f.admin.query("GRANT USAGE ON SCHEMA \(f.q(f.schema)) TO postgate_cert; GRANT SELECT ON ALL TABLES IN SCHEMA \(f.q(f.schema)) TO postgate_cert")
            var c = PrivateFilesCleanupTests.withInlineMaterial(f.lab.readerConfig(schemas: [f.schema]), f.lab)
            c["username"] = .string(f.lab["PG_CERT_USER"])
            c["password"] = nil
            args = ["read", "--config", try CLI.writeConfig(c),
                    "--catalog", try CLI.writeTemp(f.catalog([("t", "full_refresh", nil)]).jsonText, suffix: ".json")]
        }

        /// Starts the read with stdout on a pipe; stderr goes to a file.
        func start(_ tmp: TempDir) throws -> (Process, Pipe) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: CLI.binary)
            p.arguments = args
            var env = ProcessInfo.processInfo.environment
            env["TMPDIR"] = tmp.path
            p.environment = env
            let out = Pipe()
            p.standardOutput = out
            p.standardError = FileHandle.nullDevice
            p.standardInput = FileHandle.nullDevice
            try p.run()
            return (p, out)
        }
    }

    /// `postgate read | head -1`: the reader goes away after one line.
    @Test func readIntoAPipeClosedEarly() throws {
        let r = try BigRead("pf_pipe")
        let tmp = try TempDir()
        let (p, out) = try r.start(tmp)
        let watchdog = Watchdog(p, seconds: 60, "read into a closed pipe")
        defer { watchdog.cancel() }
        var first = Data()
        while !first.contains(0x0a) {
            let d = out.fileHandleForReading.availableData
            if d.isEmpty { break }
            first.append(d)
        }
        #expect(first.contains(0x0a), "a first line arrives")
        #expect(!tmp.entries.isEmpty, "the material exists while the read runs")
        try out.fileHandleForReading.close()
        p.waitUntilExit()
        #expect(!(p.terminationReason == .exit && p.terminationStatus == 0), "a read whose output is lost does not succeed")
        #expect(tmp.entries.isEmpty, "after the reader closed the pipe: \(tmp.entries)")
    }

    @Test(arguments: [SIGINT, SIGTERM])
    func signalDuringARead(_ sig: Int32) throws {
        let r = try BigRead("pf_sig")
        let tmp = try TempDir()
        let (p, out) = try r.start(tmp)
        let watchdog = Watchdog(p, seconds: 60, "read stopped by signal \(sig)")
        defer { watchdog.cancel() }
        var seen = 0
        while seen < 64 * 1024 {
            let d = out.fileHandleForReading.availableData
            if d.isEmpty { break }
            seen += d.count
        }
        #expect(!tmp.entries.isEmpty, "the material exists while the read runs")
        kill(p.processIdentifier, sig)
        while !out.fileHandleForReading.availableData.isEmpty {}
        p.waitUntilExit()
        #expect(p.terminationReason == .uncaughtSignal && p.terminationStatus == sig, "ends by the signal")
        #expect(tmp.entries.isEmpty, "after signal \(sig): \(tmp.entries)")
    }

    /// A process id that no process has now.
    static func deadPID() throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/true")
        try p.run()
        p.waitUntilExit()
        return p.processIdentifier
    }

    /// A directory a killed run left: the directory of a process that is gone is removed; one of a
    /// live process, or one that is not exactly of Postgate's kind, is kept.
    @Test func aRunSweepsDirectoriesOfDeadRuns() throws {
        let tmp = try TempDir()
        let fm = FileManager.default
        func make(_ name: String, mode: Int = 0o700, file: Bool = true) throws {
            let dir = tmp.path + "/" + name
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: false, attributes: [.posixPermissions: mode])
            if file { _ = fm.createFile(atPath: dir + "/client.key", contents: Data("key material".utf8), attributes: [.posixPermissions: 0o600]) }
        }
        let dead = try Self.deadPID()
        try make("postgate-\(dead)-Ab12Cd")
        try make("postgate-\(dead)-Zz99Yy", file: false)
        try make("postgate-\(getpid())-Ef34Gh")
        try make("postgate-\(dead)-Ij56Kl", mode: 0o755)
        try make("postgate-\(dead)-short")
        try make("postgate-Mn78Op")
        try make("other-\(dead)-Qr90St")
        _ = try CLI.run(["spec"], environment: tmp.environment)
        #expect(tmp.entries == ["other-\(dead)-Qr90St", "postgate-\(dead)-Ij56Kl", "postgate-\(dead)-short",
                                "postgate-\(getpid())-Ef34Gh", "postgate-Mn78Op"].sorted(), "\(tmp.entries)")
    }
}
