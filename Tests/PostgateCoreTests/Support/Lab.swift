import Foundation
import Logging
@testable import PostgateCore

/// Facts about the running test lab (`scripts/lab up`), read from its env file.
/// A test that needs the lab and cannot find it fails with an explanation; it never skips.
struct Lab: Sendable {
    let values: [String: String]

    struct NotRunning: Error, CustomStringConvertible {
        let path: String
        var description: String { "the test lab is not up (no \(path)); run `scripts/lab up` as root, or use scripts/test" }
    }

    static let envPath = ProcessInfo.processInfo.environment["POSTGATE_LAB_ENV"] ?? "/var/lib/postgate-lab/lab.env"

    static func load() throws -> Lab {
        guard let text = try? String(contentsOfFile: envPath, encoding: .utf8) else { throw NotRunning(path: envPath) }
        var values: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            var v = line[line.index(after: eq)...]
            if v.hasPrefix("'") && v.hasSuffix("'") && v.count >= 2 { v = v.dropFirst().dropLast() }
            values[String(line[..<eq])] = String(v)
        }
        return Lab(values: values)
    }

    subscript(_ key: String) -> String {
        guard let v = values[key] else { fatalError("lab.env has no \(key); is the lab script older than the tests?") }
        return v
    }

    func file(_ key: String) -> String { (try? String(contentsOfFile: self[key], encoding: .utf8)) ?? "" }

    var port: Int { Int(self["PG_PORT"])! }

    /// Every secret of the lab, for scanning output.
    var secrets: [String] {
        var s = ["PG_ADMIN_PASSWORD", "PG_READER_PASSWORD", "PG_REPL_PASSWORD", "CLIENT_KEY_PASSWORD", "SSH_PASSWORD", "SSH_KEY_PASSPHRASE"]
            .map { self[$0] }
        // Distinctive lines from the inside of each private key.
        for key in ["CLIENT_KEY", "SSH_KEY_RSA_PEM", "SSH_KEY_RSA_OPENSSH", "SSH_KEY_ED25519", "SSH_KEY_ED25519_ENC"] {
            let lines = file(key).split(separator: "\n").filter { !$0.hasPrefix("-----") && $0.count > 20 }
            s.append(contentsOf: lines.prefix(3).map(String.init))
        }
        return s + TestSecrets.extra
    }

    /// A config for the reader role, verify-full against the lab CA, as a JSON object.
    func readerConfig(schemas: [String] = ["public"], sslMode: String = "verify-full") -> JSONObject {
        var ssl = JSONObject([("mode", .string(sslMode))])
        if sslMode.hasPrefix("verify") { ssl["ca_certificate"] = .string(file("CA_CERT")) }
        return JSONObject([
            ("host", .string(self["PG_HOST"])), ("port", .number(self["PG_PORT"])),
            ("database", .string(self["PG_DATABASE"])), ("username", .string(self["PG_READER_USER"])),
            ("password", .string(self["PG_READER_PASSWORD"])), ("schemas", .array(schemas.map { .string($0) })),
            ("ssl_mode", .object(ssl)),
        ])
    }

    enum TunnelAuth: String, CaseIterable, Sendable {
        case rsaPEM, rsaOpenSSH, ed25519, ed25519Encrypted, password
    }

    /// A reader config that reaches the database only through the bastion, by its in-namespace name.
    func tunnelConfig(_ auth: TunnelAuth, user: String? = nil, schemas: [String] = ["public"]) -> JSONObject {
        var c = readerConfig(schemas: schemas)
        c["host"] = .string(self["PG_TUNNEL_HOST"])
        c["port"] = .number(self["PG_TUNNEL_PORT"])
        var t: JSONObject = ["tunnel_host": .string(self["SSH_HOST"]), "tunnel_port": .number(self["SSH_PORT"])]
        switch auth {
        case .password:
            t["tunnel_method"] = "SSH_PASSWORD_AUTH"
            t["tunnel_user"] = .string(user ?? self["SSH_PASSWORD_USER"])
            t["tunnel_user_password"] = .string(self["SSH_PASSWORD"])
        default:
            let file = ["rsaPEM": "SSH_KEY_RSA_PEM", "rsaOpenSSH": "SSH_KEY_RSA_OPENSSH", "ed25519": "SSH_KEY_ED25519", "ed25519Encrypted": "SSH_KEY_ED25519_ENC"][auth.rawValue]!
            t["tunnel_method"] = "SSH_KEY_AUTH"
            t["tunnel_user"] = .string(user ?? self["SSH_KEY_USER"])
            t["ssh_key"] = .string(self.file(file))
            if auth == .ed25519Encrypted { t["ssh_key_passphrase"] = .string(self["SSH_KEY_PASSPHRASE"]) }
        }
        c["tunnel_method"] = .object(t)
        return c
    }

    /// The repository root (for scripts/lab).
    static var repoRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// Runs `scripts/lab ARGS` and waits for it.
    static func script(_ args: [String]) throws {
        let p = Process()
        p.executableURL = repoRoot.appendingPathComponent("scripts/lab")
        p.arguments = args
        try p.run()
        p.waitUntilExit()
    }

    /// A superuser connection for fixtures.
    func adminConnection() throws -> PGConnection {
        try PGConnection(parameters: [
            ("host", self["PG_HOST"]), ("port", self["PG_PORT"]), ("dbname", self["PG_DATABASE"]),
            ("user", self["PG_ADMIN_USER"]), ("password", self["PG_ADMIN_PASSWORD"]),
            ("sslmode", "verify-full"), ("sslrootcert", self["CA_CERT"]),
        ], logger: Logger(label: "test.admin"))
    }
}

/// Secrets made up by tests (e.g. fake Entra secrets) that must never show in output either.
enum TestSecrets {
    static let extra = ["entra-secret-4f1c9b2e77d0", "ssh-password-9a8b7c6d5e4f"]
}
