import Foundation
import Logging
import Testing
@testable import PostgateCore

/// A fake Entra token endpoint (Tests/Fixtures/fake-entra.py) over HTTPS with the lab's CA, whose
/// every issued token becomes the password of a fresh database role.
final class FakeEntra {
    let lab: Lab
    let process = Process()
    let dir: String
    let port: Int
    let role: String
    let tenant = "tenant-\(UInt16.random(in: 0...UInt16.max))"
    let clientID = "client-\(UInt16.random(in: 0...UInt16.max))"
    let secret = TestSecrets.extra[0]
    var tokensFile: String { "\(dir)/tokens" }

    init(lifetime: Int = 3600, clientCertPath: String? = nil) throws {
        lab = try Lab.load()
        role = "entra_\(UInt32.random(in: 0...UInt32.max))"
        let admin = try lab.adminConnection()
        try admin.query("CREATE ROLE \(role) LOGIN PASSWORD 'not-yet-\(UUID().uuidString)'")
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("fake-entra-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", Lab.repoRoot.appendingPathComponent("Tests/Fixtures/fake-entra.py").path]
        var env = ProcessInfo.processInfo.environment
        env["PORT_FILE"] = "\(dir)/port"
        env["CERT"] = "\(lab["POSTGATE_LAB_DIR"])/certs/server.crt"
        env["KEY"] = "\(lab["POSTGATE_LAB_DIR"])/certs/server.key"
        env["TENANT"] = tenant
        env["CLIENT_ID"] = clientID
        env["CLIENT_SECRET"] = secret
        env["TOKEN_LIFETIME"] = String(lifetime)
        env["ROLE"] = role
        env["ADMIN_CONNINFO"] = "host=\(lab["PG_HOST"]) port=\(lab["PG_PORT"]) dbname=\(lab["PG_DATABASE"]) user=\(lab["PG_ADMIN_USER"]) sslmode=verify-full sslrootcert=\(lab["CA_CERT"])"
        env["ADMIN_PASSWORD"] = lab["PG_ADMIN_PASSWORD"]
        env["TOKENS_FILE"] = "\(dir)/tokens"
        if let clientCertPath { env["CLIENT_CERT"] = clientCertPath }
        process.environment = env
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        var p: Int?
        for _ in 0..<100 {
            if let text = try? String(contentsOfFile: "\(dir)/port", encoding: .utf8), let v = Int(text) { p = v; break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        guard let p else { throw Lab.NotRunning(path: "fake Entra endpoint did not start") }
        port = p
    }

    deinit {
        // SIGKILL: the test process's blocked signals are inherited, so SIGTERM may never arrive.
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: dir)
        _ = try? lab.adminConnection().query("DROP ROLE IF EXISTS \(role)")
    }

    var authority: String { "https://127.0.0.1:\(port)" }

    var tokens: [String] {
        ((try? String(contentsOfFile: tokensFile, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    func config(secret: String? = nil, tenant: String? = nil, client: String? = nil, authority: String? = nil) -> JSONObject {
        var c = lab.readerConfig()
        c["username"] = .string(role)
        c["password"] = .string(secret ?? self.secret)
        c["entra_service_principal_auth"] = true
        c["entra_tenant_id"] = .string(tenant ?? self.tenant)
        c["entra_client_id"] = .string(client ?? self.clientID)
        c["entra_authority_host"] = .string(authority ?? self.authority)
        return c
    }

    /// Runs check with the lab CA trusted through SSL_CERT_FILE; asserts no token leaked.
    func check(_ c: JSONObject, trustLabCA: Bool = true) throws -> (status: String, message: String) {
        let r = try CLI.run(["check", "--config", try CLI.writeConfig(c)], environment: trustLabCA ? ["SSL_CERT_FILE": lab["CA_CERT"]] : ["SSL_CERT_FILE": ""])
        for t in tokens {
            #expect(!r.stdout.contains(t) && !r.stderr.contains(t), "an access token appeared in the output")
        }
        let msg = r.messages.first { $0["type"] == "CONNECTION_STATUS" }
        return (msg?["connectionStatus"]?["status"]?.stringValue ?? "", msg?["connectionStatus"]?["message"]?.stringValue ?? r.stdout + r.stderr)
    }
}

@Suite struct EntraTests {
    /// The in-process HTTP client reads SSL_CERT_FILE once; point it at the lab CA first.
    static let trustLabCA: Void = {
        if let lab = try? Lab.load() { setenv("SSL_CERT_FILE", lab["CA_CERT"], 1) }
    }()

    @Test func secretCredentialAndItsFailures() throws {
        let e = try FakeEntra()
        var r = try e.check(e.config())
        #expect(r.status == "SUCCEEDED", "\(r.message)")
        #expect(r.message.contains("as \"\(e.role)\""))
        #expect(e.tokens.count == 1)

        r = try e.check(e.config(secret: TestSecrets.extra[1]))
        #expect(r.status == "FAILED" && r.message.contains("`password`") && r.message.contains("AADSTS7000215"), "\(r.message)")
        r = try e.check(e.config(tenant: "no-such-tenant"))
        #expect(r.status == "FAILED" && r.message.contains("`entra_tenant_id`"), "\(r.message)")
        r = try e.check(e.config(client: "no-such-client"))
        #expect(r.status == "FAILED" && r.message.contains("`entra_client_id`"), "\(r.message)")
        r = try e.check(e.config(authority: "https://127.0.0.1:1"))
        #expect(r.status == "FAILED" && r.message.contains("cannot reach the token endpoint") && r.message.contains("`entra_authority_host`"), "\(r.message)")
        r = try e.check(e.config(), trustLabCA: false)
        #expect(r.status == "FAILED" && r.message.contains("TLS") && r.message.contains("SSL_CERT_FILE"), "an untrusted endpoint is refused: \(r.message)")
    }

    @Test func connectionsKeepWorkingAcrossTokenRotation() throws {
        _ = Self.trustLabCA
        let e = try FakeEntra(lifetime: 3)
        let config = try PostgateConfig.parse(.object(e.config())).config
        let factory = try ConnectionFactory(config: config, logger: Logger(label: "test"))
        var open: [PGConnection] = []
        let start = Date()
        var n = 0
        while Date().timeIntervalSince(start) < 8 {
            let c = try factory.connect()
            #expect(try c.query("SELECT current_user").string(0, 0) == e.role)
            open.append(c)
            n += 1
            Thread.sleep(forTimeInterval: 0.4)
        }
        #expect(n >= 15)
        // Tokens live 3 s and are renewed at 80 % of that: about one new token every 2.4 s.
        #expect(e.tokens.count >= 3 && e.tokens.count <= 6, "\(e.tokens.count) tokens for \(n) connections")
        // Connections opened earlier are still usable, and the first token no longer logs in.
        for c in open { #expect(try c.query("SELECT 1").string(0, 0) == "1") }
        let first = try #require(e.tokens.first)
        #expect(throws: PostgresError.self) {
            try PGConnection(parameters: factory.parameters(password: Secret(first)), logger: Logger(label: "test"))
        }
    }

    @Test func certificateCredentialSignsAClientAssertion() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("entra-cert-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let openssl = Process()
        openssl.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        openssl.arguments = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(dir)/app.key", "-out", "\(dir)/app.crt",
                             "-days", "2", "-subj", "/CN=postgate-test-app"]
        openssl.standardError = FileHandle.nullDevice
        try openssl.run()
        openssl.waitUntilExit()
        let e = try FakeEntra(clientCertPath: "\(dir)/app.crt")
        var c = e.config()
        c["password"] = nil
        c["entra_client_certificate"] = .string(try String(contentsOfFile: "\(dir)/app.crt", encoding: .utf8))
        c["entra_client_key"] = .string(try String(contentsOfFile: "\(dir)/app.key", encoding: .utf8))
        let r = try e.check(c)
        #expect(r.status == "SUCCEEDED", "\(r.message)")
        // A key from another certificate is refused before any request.
        c["entra_client_key"] = .string(e.lab.file("CLIENT_KEY"))
        let bad = try CLI.run(["check", "--config", try CLI.writeConfig(c)], environment: ["SSL_CERT_FILE": e.lab["CA_CERT"]])
        #expect(bad.stdout.contains("entra_client_key"), "\(bad.stdout)")
    }
}
