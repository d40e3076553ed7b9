import Foundation
import Testing
@testable import PostgateCore

/// TLS modes and inline TLS material against the lab.
@Suite struct TLSModeTests {
    func check(_ c: JSONObject, environment: [String: String] = [:]) throws -> (status: String, message: String, result: CLIResult) {
        let r = try CLI.run(["check", "--config", try CLI.writeConfig(c)], environment: environment)
        let msg = r.messages.first { $0["type"] == "CONNECTION_STATUS" }
        return (msg?["connectionStatus"]?["status"]?.stringValue ?? "", msg?["connectionStatus"]?["message"]?.stringValue ?? r.stdout, r)
    }

    func ssl(_ lab: Lab, _ mode: String, ca: String = "CA_CERT", cert: Bool = false, key: String? = nil, password: String? = nil) -> JSONValue {
        var o: JSONObject = ["mode": .string(mode), "ca_certificate": .string(lab.file(ca))]
        if cert {
            o["client_certificate"] = .string(lab.file("CLIENT_CERT"))
            o["client_key"] = .string(key ?? lab.file("CLIENT_KEY"))
            o["client_key_password"] = .string(password ?? lab["CLIENT_KEY_PASSWORD"])
        }
        return .object(o)
    }

    @Test func verifyCA() throws {
        let lab = try Lab.load()
        var c = lab.readerConfig()
        c["ssl_mode"] = ssl(lab, "verify-ca")
        var r = try check(c)
        #expect(r.status == "SUCCEEDED" && r.message.contains("sslmode=verify-ca") && r.message.contains("Server certificate: CN=db.postgate.test"), "\(r.message)")
        // verify-ca checks the chain, not the name: the unnamed address passes.
        c["host"] = .string(lab["PG_UNNAMED_HOST"])
        r = try check(c)
        #expect(r.status == "SUCCEEDED", "\(r.message)")
        c["ssl_mode"] = ssl(lab, "verify-ca", ca: "OTHER_CA_CERT")
        r = try check(c)
        #expect(r.status == "FAILED" && r.message.hasPrefix("TLS failed") && r.message.contains("not signed by the CA"), "\(r.message)")
    }

    @Test func verifyFullChecksTheNameDirectlyAndThroughTheTunnel() throws {
        let lab = try Lab.load()
        var direct = lab.readerConfig()
        var r = try check(direct)
        #expect(r.status == "SUCCEEDED" && r.message.contains("sslmode=verify-full"))
        direct["host"] = .string(lab["PG_UNNAMED_HOST"])
        r = try check(direct)
        #expect(r.status == "FAILED" && r.message.contains("does not match host name"), "\(r.message)")
        // Through the tunnel the bastion resolves the name; "localhost" reaches the same server
        // but is not in its certificate.
        var tunneled = lab.tunnelConfig(.ed25519)
        r = try check(tunneled)
        #expect(r.status == "SUCCEEDED" && r.message.contains("sslmode=verify-full"), "\(r.message)")
        tunneled["host"] = "localhost"
        r = try check(tunneled)
        #expect(r.status == "FAILED" && r.message.contains("does not match host name \"localhost\""), "\(r.message)")
    }

    @Test func clientCertificateWithAnEncryptedKey() throws {
        let lab = try Lab.load()
        var c = lab.readerConfig()
        c["username"] = .string(lab["PG_CERT_USER"])
        c["password"] = nil
        c["ssl_mode"] = ssl(lab, "verify-full", cert: true)
        var r = try check(c)
        #expect(r.status == "SUCCEEDED" && r.message.contains("as \"postgate_cert\""), "\(r.message)")
        // Problems with the material are reported before connecting, naming the setting.
        c["ssl_mode"] = ssl(lab, "verify-full", cert: true, password: TestSecrets.extra[1])
        r = try check(c)
        #expect(r.status == "FAILED" && r.message.contains("`ssl_mode.client_key_password`"), "\(r.message)")
        let strayKey = "-----BEGIN " + "PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgkOv1Ytb9H1lnH5cT\n-----END " + "PRIVATE KEY-----\n"
        c["ssl_mode"] = ssl(lab, "verify-full", cert: true, key: strayKey)
        r = try check(c)
        #expect(r.status == "FAILED" && r.message.contains("`ssl_mode.client_key`"), "\(r.message)")
        var badCA = lab.readerConfig()
        badCA["ssl_mode"] = ["mode": "verify-full", "ca_certificate": "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"]
        r = try check(badCA)
        #expect(r.status == "FAILED" && r.message.contains("`ssl_mode.ca_certificate`"), "\(r.message)")
    }

    @Test func requireEncryptsWithoutVerifyingAndDisableDoesNot() throws {
        let lab = try Lab.load()
        var c = lab.readerConfig(sslMode: "require")
        var r = try check(c)
        #expect(r.status == "SUCCEEDED" && r.message.contains("sslmode=require") && r.message.contains("not verified"), "\(r.message)")
        c = lab.readerConfig(sslMode: "prefer")
        r = try check(c)
        #expect(r.status == "SUCCEEDED" && r.message.contains("over TLS"), "\(r.message)")
        c = lab.readerConfig(sslMode: "disable")
        r = try check(c)
        #expect(r.status == "SUCCEEDED" && r.message.contains("without TLS"), "\(r.message)")
    }

    /// Inline material goes to a private directory that is gone after success, failure and SIGTERM.
    @Test func inlineMaterialIsRemovedOnEveryExitPath() throws {
        let lab = try Lab.load()
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("tls-tmp-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        func leftovers() -> [String] { (try? FileManager.default.contentsOfDirectory(atPath: tmp)) ?? [] }
        var c = lab.readerConfig()
        c["username"] = .string(lab["PG_CERT_USER"])
        c["password"] = nil
        c["ssl_mode"] = ssl(lab, "verify-full", cert: true)
        _ = try check(c, environment: ["TMPDIR": tmp])
        #expect(leftovers().isEmpty, "after success: \(leftovers())")
        var failing = c
        failing["database"] = "no_such_database"
        let r = try CLI.run(["discover", "--config", try CLI.writeConfig(failing)], environment: ["TMPDIR": tmp])
        #expect(r.status != 0)
        #expect(leftovers().isEmpty, "after an error exit: \(leftovers())")

        // SIGTERM in the middle of a read.
        let f = try Fixture("tlssig")
        try f.sql("CREATE TABLE \(f.q(f.schema)).t (id int, pad text); INSERT INTO \(f.q(f.schema)).t SELECT g, repeat('p', 300) FROM generate_series(1, 1000000) g")
        try f.admin.query("GRANT USAGE ON SCHEMA \(f.q(f.schema)) TO postgate_cert; GRANT SELECT ON ALL TABLES IN SCHEMA \(f.q(f.schema)) TO postgate_cert")
        var rc = c
        rc["schemas"] = [.string(f.schema)]
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLI.binary)
        p.arguments = ["read", "--config", try CLI.writeConfig(rc), "--catalog", try CLI.writeTemp(f.catalog([("t", "full_refresh", nil)]).jsonText, suffix: ".json")]
        var env = ProcessInfo.processInfo.environment
        env["TMPDIR"] = tmp
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        var seen = 0
        while seen < 64 * 1024 {
            let d = out.fileHandleForReading.availableData
            if d.isEmpty { break }
            seen += d.count
        }
        #expect(!leftovers().isEmpty, "the key material exists while the read runs")
        kill(p.processIdentifier, SIGTERM)
        while !out.fileHandleForReading.availableData.isEmpty {}
        p.waitUntilExit()
        #expect(p.terminationReason == .uncaughtSignal)
        #expect(leftovers().isEmpty, "after SIGTERM: \(leftovers())")
    }
}
