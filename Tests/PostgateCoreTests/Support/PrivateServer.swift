import Foundation
import Logging
import Testing
@testable import PostgateCore

/// A PostgreSQL 15 server of one test's own (initdb into a temporary directory, loopback only,
/// `wal_level=logical`), for tests that stop or restart the server: the shared lab server must
/// keep running for the tests beside them. Runs as the lab's system user (initdb refuses root).
final class PrivateServer: @unchecked Sendable {
    static let bin = "/usr/lib/postgresql/15/bin"
    let dir: String
    let port: Int
    let password = "pw-\(UUID().uuidString.prefix(12))"
    let user = "postgate_admin"

    init() throws {
        let lab = try Lab.load()
        let owner = lab.values["LAB_USER"] ?? "postgate-lab"
        dir = "/tmp/postgate-test-pg-\(UUID().uuidString.prefix(8))"
        // Below Linux's ephemeral range (32768-60999): a port there can be held by any client
        // socket's local end, and the server (or its restart) then cannot bind it.
        port = Int.random(in: 23_000...25_999)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let pw = dir + "/pw"
        try Data("\(password)\n".utf8).write(to: URL(fileURLWithPath: pw))
        try Self.sh("chown -R \(owner) \(dir) && chmod 700 \(dir)")
        try Self.sh("runuser -u \(owner) -- \(Self.bin)/initdb -D \(dir)/data -U \(user) --pwfile=\(pw) --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >\(dir)/initdb.log 2>&1")
        guard FileManager.default.fileExists(atPath: dir + "/data/PG_VERSION") else {
            let log = (try? String(contentsOfFile: dir + "/initdb.log", encoding: .utf8)) ?? "no log"
            throw PrivateServerError(message: "initdb made no cluster in \(dir): \(log.suffix(400))")
        }
        let conf = """
            listen_addresses = '127.0.0.1'
            port = \(port)
            unix_socket_directories = '\(dir)'
            wal_level = logical
            max_wal_senders = 8
            max_replication_slots = 8
            fsync = off
            synchronous_commit = off
            full_page_writes = off
            lc_messages = 'C'
            max_wal_size = 1GB
            logging_collector = off

            """
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/data/postgresql.conf"))
        handle.seekToEndOfFile()
        handle.write(Data(conf.utf8))
        try handle.close()
        try start()
    }

    deinit {
        _ = try? Self.sh("runuser -u \((try? Lab.load().values["LAB_USER"]) ?? "postgate-lab") -- \(Self.bin)/pg_ctl -D \(dir)/data -m immediate -w stop >/dev/null 2>&1; rm -rf \(dir)")
    }

    private var owner: String { (try? Lab.load().values["LAB_USER"]) ?? "postgate-lab" }

    func start() throws {
        do {
            try Self.sh("runuser -u \(owner) -- \(Self.bin)/pg_ctl -D \(dir)/data -l \(dir)/log -w -t 60 start >/dev/null")
        } catch {
            let log = (try? String(contentsOfFile: dir + "/log", encoding: .utf8)) ?? "no log"
            throw PrivateServerError(message: "\(error); the server's log ends: \(log.suffix(600))")
        }
    }

    /// Stops the server in `mode` (fast, immediate); returns how long pg_ctl took.
    @discardableResult
    func stop(mode: String = "fast", timeout: Int = 60) throws -> Double {
        let t0 = Date()
        try Self.sh("runuser -u \(owner) -- \(Self.bin)/pg_ctl -D \(dir)/data -m \(mode) -w -t \(timeout) stop >/dev/null")
        return Date().timeIntervalSince(t0)
    }

    func connection(database: String = "postgres") throws -> PGConnection {
        try PGConnection(parameters: [
            ("host", "127.0.0.1"), ("port", String(port)), ("dbname", database), ("user", user),
            ("password", password), ("sslmode", "disable"),
        ], logger: Logger(label: "test.private"))
    }

    /// A connector config for this server (no TLS: loopback only), CDC on `slot`/`publication`.
    func cdcConfig(schema: String, slot: String, publication: String) -> JSONObject {
        [
            "host": "127.0.0.1", "port": .number(String(port)), "database": "postgres",
            "username": .string(user), "password": .string(password), "schemas": [.string(schema)],
            "ssl_mode": ["mode": "disable"],
            "replication_method": ["method": "CDC", "replication_slot": .string(slot), "publication": .string(publication), "initial_waiting_seconds": 20],
        ]
    }

    /// Runs `command` with /bin/sh and waits for it (posix_spawn and waitpid: the server it may
    /// start keeps running as a daemon).
    @discardableResult
    static func sh(_ command: String) throws -> Int32 {
        var pid: pid_t = 0
        let args = ["/bin/sh", "-c", command]
        var argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        let rc = posix_spawn(&pid, "/bin/sh", nil, nil, &argv, environ)
        guard rc == 0 else { throw PrivateServerError(message: "cannot start /bin/sh: \(rc)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            // ECHILD: something else in the process reaped it; callers check what it made.
            if errno != EINTR { break }
        }
        let code = (status >> 8) & 0xff
        guard status & 0x7f == 0, code == 0 else {
            throw PrivateServerError(message: "`\(command.prefix(120))` exited with status \(status)")
        }
        return code
    }
}

struct PrivateServerError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
