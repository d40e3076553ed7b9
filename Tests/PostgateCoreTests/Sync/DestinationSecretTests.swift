import Foundation
import Testing
@testable import PostgateCore

/// `--destination` strings holding passwords with `@ : / % ? #`, spaces, quotes and backslashes:
/// correct ones connect in every form, and no message of a failing one holds any fragment of the
/// password (issue #12, item 6).
@Suite struct DestinationSecretTests {
    /// Four letters rarely seen together in any output, so a 3-character fragment in the output
    /// can only come from the password.
    static func token() -> String { String((0..<4).map { _ in "QXZJKVWY".randomElement()! }) }

    /// A password with every character that URIs and conninfo strings treat specially.
    static func awkwardPassword() -> String {
        ["@", ":", "/", "%", "?", "#", " ", "'", "\"", "\\", "@"].reduce(token()) { $0 + $1 + token() }
    }

    static func percentEncoded(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"))!
    }

    /// `'...'` for a conninfo value: backslash and single quote escaped.
    static func conninfoQuoted(_ s: String) -> String {
        "'" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
    }

    /// Every substring of `secret` of `length` characters.
    static func fragments(_ secret: String, length: Int = 3) -> [String] {
        let c = Array(secret)
        return c.count < length ? [] : (0...(c.count - length)).map { String(c[$0..<($0 + length)]) }
    }

    static func expectNoFragment(of secret: String, in r: CLIResult, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        for text in [secret, percentEncoded(secret)] {
            for f in fragments(text) where !f.allSatisfy({ "%0123456789ABCDEF".contains($0) }) {
                #expect(!r.stdout.contains(f), "\(what): stdout holds a password fragment", sourceLocation: sourceLocation)
                #expect(!r.stderr.contains(f), "\(what): stderr holds a password fragment", sourceLocation: sourceLocation)
            }
        }
    }

    /// A login role with an awkward password owning a database of its own, dropped afterwards.
    final class AwkwardRole {
        let lab: Lab
        let user: String
        let database: String
        let password = DestinationSecretTests.awkwardPassword()

        init(_ lab: Lab) throws {
            self.lab = lab
            let n = UInt32.random(in: 0...UInt32.max)
            user = "pgt_dest_\(n)"
            database = "pgt_dest_\(n)"
            let admin = try lab.adminConnection()
            try admin.query("CREATE ROLE \(user) LOGIN PASSWORD \(PGConnection.quoteLiteral(password))")
            try admin.query("CREATE DATABASE \(database) OWNER \(user)")
        }

        deinit {
            if let admin = try? lab.adminConnection() {
                _ = try? admin.query("DROP DATABASE IF EXISTS \(database) WITH (FORCE)")
                _ = try? admin.query("DROP ROLE IF EXISTS \(user)")
            }
        }

        /// A URI with `userinfo` (already encoded as the test wants it) and, with `query`, the lab's
        /// TLS settings as query parameters (without, libpq's default sslmode, prefer).
        func uri(scheme: String, userinfo: String, port: String? = nil, query: Bool = true) -> String {
            "\(scheme)://\(userinfo)@\(lab["PG_HOST"]):\(port ?? lab["PG_PORT"])/\(database)"
                + (query ? "?sslmode=verify-full&sslrootcert=\(DestinationSecretTests.percentEncoded(lab["CA_CERT"]))" : "")
        }

        func conninfo(password: String) -> String {
            "postgres:host=\(lab["PG_HOST"]) port=\(lab["PG_PORT"]) dbname=\(database) user=\(user) password=\(password) sslmode=verify-full sslrootcert=\(lab["CA_CERT"])"
        }
    }

    func sync(_ f: Fixture, _ cfg: String, _ destination: String, secrets: [String]) throws -> CLIResult {
        try CLI.run(["sync", "--config", cfg, "--destination", destination], secrets: secrets)
    }

    @Test func correctAwkwardPasswordsConnectInEveryForm() throws {
        let f = try Fixture("dest_pw")
        try f.sql("CREATE TABLE \(f.q(f.schema)).t (id int PRIMARY KEY, v text); INSERT INTO \(f.q(f.schema)).t VALUES (1, 'one')")
        let cfg = try CLI.writeConfig(f.config())
        let role = try AwkwardRole(f.lab)
        let pw = role.password
        let encoded = Self.percentEncoded(pw)
        // Raw except `%`, which alone is ambiguous in a URI; the user name and password end at the last `@`.
        let raw = pw.replacingOccurrences(of: "%", with: "%25")
        let forms: [(String, String)] = [
            ("encoded URI", role.uri(scheme: "postgres", userinfo: "\(role.user):\(encoded)")),
            ("encoded URI, postgresql", role.uri(scheme: "postgresql", userinfo: "\(role.user):\(encoded)")),
            ("raw URI", role.uri(scheme: "postgres", userinfo: "\(role.user):\(raw)")),
            ("raw URI, POSTGRES", role.uri(scheme: "POSTGRES", userinfo: "\(role.user):\(raw)")),
            ("encoded URI, Postgres", role.uri(scheme: "Postgres", userinfo: "\(role.user):\(encoded)")),
            ("URI after postgres:", "postgres:" + role.uri(scheme: "postgresql", userinfo: "\(role.user):\(encoded)")),
            ("conninfo", role.conninfo(password: Self.conninfoQuoted(pw))),
            ("raw URI, no query", role.uri(scheme: "postgres", userinfo: "\(role.user):\(raw)", query: false)),
            ("raw URI, PostgreSQL, no query", role.uri(scheme: "PostgreSQL", userinfo: "\(role.user):\(raw)", query: false)),
            ("encoded URI, no query", role.uri(scheme: "postgresql", userinfo: "\(role.user):\(encoded)", query: false)),
        ]
        for (what, destination) in forms {
            let r = try sync(f, cfg, destination, secrets: [pw, encoded, raw])
            #expect(r.status == 0, "\(what): \(r.stderr)")
            Self.expectNoFragment(of: pw, in: r, what)
        }
    }

    @Test func wrongOrMalformedAwkwardPasswordsLeaveNoFragment() throws {
        let f = try Fixture("dest_bad")
        try f.sql("CREATE TABLE \(f.q(f.schema)).t (id int PRIMARY KEY)")
        let cfg = try CLI.writeConfig(f.config())
        let role = try AwkwardRole(f.lab)
        let wrong = Self.awkwardPassword()
        let encoded = Self.percentEncoded(wrong)
        let cases: [(String, String, String?)] = [
            ("raw URI", role.uri(scheme: "postgres", userinfo: "\(role.user):\(wrong)"), nil),
            ("raw URI, POSTGRES", role.uri(scheme: "POSTGRES", userinfo: "\(role.user):\(wrong)"), nil),
            ("raw URI, Postgres", role.uri(scheme: "Postgres", userinfo: "\(role.user):\(wrong)"), nil),
            ("raw URI, Postgresql after postgres:", "postgres:" + role.uri(scheme: "Postgresql", userinfo: "\(role.user):\(wrong)"), nil),
            ("encoded URI", role.uri(scheme: "postgres", userinfo: "\(role.user):\(encoded)"), "password authentication failed"),
            ("encoded URI, POSTGRESQL", role.uri(scheme: "POSTGRESQL", userinfo: "\(role.user):\(encoded)"), "password authentication failed"),
            ("bad port", role.uri(scheme: "postgres", userinfo: "\(role.user):\(encoded)", port: "5x432"), "port"),
            ("conninfo", role.conninfo(password: Self.conninfoQuoted(wrong)), "password authentication failed"),
            ("conninfo, unquoted", role.conninfo(password: wrong), nil),
            ("conninfo, unbalanced quote", role.conninfo(password: "'" + wrong), nil),
            ("no scheme", "host=\(f.lab["PG_HOST"]) password=\(wrong)", nil),
            ("raw URI, no query", role.uri(scheme: "postgres", userinfo: "\(role.user):\(wrong)", query: false), nil),
            ("raw URI, POSTGRES, no query", role.uri(scheme: "POSTGRES", userinfo: "\(role.user):\(wrong)", query: false), nil),
            ("raw URI, Postgresql, no query", role.uri(scheme: "Postgresql", userinfo: "\(role.user):\(wrong)", query: false), nil),
            ("encoded URI, Postgres, no query", role.uri(scheme: "Postgres", userinfo: "\(role.user):\(encoded)", query: false), "password authentication failed"),
        ]
        // Only an unencoded `@`: libpq took what follows it for the host and printed it.
        let at = Self.token() + "@" + Self.token()
        for (what, destination, expected, secret) in cases.map({ ($0.0, $0.1, $0.2, wrong) })
            + [("raw @ only, no query", role.uri(scheme: "postgres", userinfo: "\(role.user):\(at)", query: false), nil, at)] {
            let r = try sync(f, cfg, destination, secrets: [secret, Self.percentEncoded(secret)])
            #expect(r.status != 0, "\(what)")
            #expect(r.stderr.contains("destination"), "\(what): \(r.stderr)")
            if let expected { #expect(r.stderr.contains(expected), "\(what): \(r.stderr)") }
            Self.expectNoFragment(of: secret, in: r, what)
        }
    }
}
