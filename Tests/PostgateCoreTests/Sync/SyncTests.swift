import Foundation
import GRDB
import Logging
import Testing
@testable import PostgateCore

/// A destination for one test, and how to read back what landed in it.
final class TestDestination {
    enum Kind: String, CaseIterable, Sendable { case sqlite, postgres, jsonl }

    let kind: Kind
    let lab: Lab
    let url: String
    let path: String
    let database: String?

    init(_ kind: Kind, lab: Lab) throws {
        self.kind = kind
        self.lab = lab
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("postgate-sync-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        switch kind {
        case .sqlite:
            path = dir + "/dest.db"
            url = "sqlite:" + path
            database = nil
        case .jsonl:
            path = dir + "/out"
            url = "jsonl:" + path
            database = nil
        case .postgres:
            let db = "dest_\(UInt32.random(in: 0...UInt32.max))"
            try lab.adminConnection().query("CREATE DATABASE \(db)")
            database = db
            path = dir
            url = "postgres:host=\(lab["PG_HOST"]) port=\(lab["PG_PORT"]) dbname=\(db) user=\(lab["PG_ADMIN_USER"]) password=\(lab["PG_ADMIN_PASSWORD"]) sslmode=verify-full sslrootcert=\(lab["CA_CERT"])"
        }
    }

    deinit {
        if let database { _ = try? lab.adminConnection().query("DROP DATABASE IF EXISTS \(database) WITH (FORCE)") }
        try? FileManager.default.removeItem(atPath: kind == .postgres ? path : URL(fileURLWithPath: path).deletingLastPathComponent().path)
    }

    func pg() throws -> PGConnection {
        try PGConnection(parameters: [
            ("host", lab["PG_HOST"]), ("port", lab["PG_PORT"]), ("dbname", database!), ("user", lab["PG_ADMIN_USER"]),
            ("password", lab["PG_ADMIN_PASSWORD"]), ("sslmode", "verify-full"), ("sslrootcert", lab["CA_CERT"]),
        ], logger: Logger(label: "test.dest"))
    }

    /// A committed STATE message by key (`global`, `stream:schema.name`), read without disturbing a
    /// sync that may be running.
    func savedState(_ key: String) throws -> JSONValue? {
        switch kind {
        case .sqlite:
            guard FileManager.default.fileExists(atPath: path) else { return nil }
            // A sync that is starting may have created the file but not yet its state table, or hold
            // a lock while it switches the journal to WAL: that is "no state yet", not an error.
            var config = Configuration()
            config.busyMode = .timeout(5)
            let text = try DatabaseQueue(path: path, configuration: config).read { db -> String? in
                guard try db.tableExists("_postgate_state") else { return nil }
                return try String.fetchOne(db, sql: "SELECT message FROM _postgate_state WHERE key = ?", arguments: [key])
            }
            return try text.map { try JSONParser.parse($0) }
        case .postgres:
            let c = try pg()
            guard try c.query("SELECT to_regclass('_postgate.state') IS NOT NULL AS e").bool(0, "e") == true else { return nil }
            let r = try c.query("SELECT message::text AS m FROM _postgate.state WHERE key = $1", [key])
            return try r.string(0, "m").map { try JSONParser.parse($0) }
        case .jsonl:
            guard let data = FileManager.default.contents(atPath: path + "/_postgate_state.json") else { return nil }
            return try JSONParser.parse([UInt8](data))["states"]?[key]
        }
    }

    /// JSONL: the lines of a stream's file (to see that nothing was written twice).
    func lines(schema: String, table: String) -> [Substring] {
        ((try? String(contentsOfFile: path + "/\(schema)__\(table).jsonl", encoding: .utf8)) ?? "").split(separator: "\n")
    }

    func savedLSN() throws -> LSN? {
        try savedState("global")?["state"]?["global"]?["shared_state"]?["lsn"]?.stringValue.flatMap(LSN.init)
    }

    /// Rows of a stream as `id|v|length(big)` sorted by id (`big` -1 when null or absent).
    func rows(schema: String, table: String, hasBig: Bool = true) throws -> [String] {
        let big = hasBig ? "coalesce(length(big), -1)" : "-1"
        switch kind {
        case .sqlite:
            let q = try DatabaseQueue(path: path)
            return try q.read { db in
                try Row.fetchAll(db, sql: "SELECT id, v, \(big) AS b FROM \"\(schema)__\(table)\" ORDER BY id").map { r in
                    "\(r["id"] as Int64)|\((r["v"] as String?) ?? "NULL")|\(r["b"] as Int64)"
                }
            }
        case .postgres:
            let c = try pg()
            let r = try c.query("SELECT id, coalesce(v, 'NULL') AS v, \(big) AS b FROM \(PGConnection.quoteIdentifier(schema)).\(table) ORDER BY id")
            return (0..<r.rowCount).map { "\(r.string($0, "id")!)|\(r.string($0, "v")!)|\(r.string($0, "b")!)" }
        case .jsonl:
            let file = path + "/\(schema)__\(table).jsonl"
            let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
            var byID: [Int64: JSONObject] = [:]
            for line in text.split(separator: "\n") {
                guard case .object(let o) = try JSONParser.parse(String(line)) else { continue }
                if o["_postgate_truncate"] != nil { byID = [:]; continue }
                guard let id = o["id"]?.int64Value else { continue }
                if let d = o["_ab_cdc_deleted_at"], d != .null { byID[id] = nil; continue }
                if o["_postgate_unchanged"] != nil, var old = byID[id] {
                    for (k, v) in o.entries { old[k] = v }
                    byID[id] = old
                } else {
                    byID[id] = o
                }
            }
            return byID.keys.sorted().map { id in
                let o = byID[id]!
                let b = hasBig ? (o["big"]?.stringValue.map { $0.count } ?? -1) : -1
                return "\(id)|\(o["v"]?.stringValue ?? "NULL")|\(b)"
            }
        }
    }
}

extension CDCFixture {
    /// The slot's confirmed position.
    func confirmedLSN() throws -> LSN? {
        try f.admin.query("SELECT confirmed_flush_lsn::text AS l FROM pg_replication_slots WHERE slot_name = $1", [slot]).string(0, "l").flatMap(LSN.init)
    }
}

extension Fixture {
    /// The source rows in the form `TestDestination.rows` gives.
    func sourceRows(_ table: String, hasBig: Bool = true) throws -> [String] {
        let big = hasBig ? "coalesce(length(big), -1)" : "-1"
        let r = try admin.query("SELECT id, coalesce(v, 'NULL') AS v, \(big) AS b FROM \(q(schema)).\(table) ORDER BY id")
        return (0..<r.rowCount).map { "\(r.string($0, "id")!)|\(r.string($0, "v")!)|\(r.string($0, "b")!)" }
    }

    /// Runs `sync` into `dest` and returns its result.
    func sync(_ config: JSONObject, _ dest: TestDestination, extra: [String] = []) throws -> CLIResult {
        let cfg = try CLI.writeConfig(config)
        return try CLI.run(["sync", "--config", cfg, "--destination", dest.url] + extra)
    }
}

extension Fixture {
    /// Makes table `big` (200,000 rows), starts a full-refresh sync of it into `dest` in chunks of
    /// 2,000 rows, and SIGKILLs it once a checkpoint at page `atPage` or later is committed.
    func killedFullRefresh(into dest: TestDestination, atPage: Int, tableOptions: String = "") throws {
        let s = q(schema)
        try sql("CREATE TABLE \(s).big (id int PRIMARY KEY, v text) \(tableOptions); INSERT INTO \(s).big SELECT g, 'row ' || g || repeat('x', 100) FROM generate_series(1, 200000) g")
        try admin.query("VACUUM ANALYZE \(s).big")
        let bg = try BackgroundSync(config: try CLI.writeConfig(config(["batch_fetch_limit": 2000])), destination: dest.url)
        let staged = try eventually(60) {
            guard let st = try dest.savedState("stream:\(schema).big")?["state"]?["stream"]?["stream_state"], st["state_type"] == "ctid",
                  let page = st["ctid"]?.stringValue, let n = Int(page.dropFirst().split(separator: ",")[0]) else { return false }
            return n >= atPage
        }
        #expect(staged, "a chunk at page \(atPage) or later was committed before the kill")
        kill(bg.process.processIdentifier, SIGKILL)
        _ = bg.waitExit()
    }
}

extension CLIResult {
    /// The summary line of one stream: (inserted, updated, deleted).
    func applied(_ stream: String) -> (Int, Int, Int)? {
        guard let line = stderr.split(separator: "\n").first(where: { $0.contains("  \(stream) [") && $0.contains("inserted") }) else { return nil }
        func n(_ word: String) -> Int {
            guard let r = line.range(of: " \(word)") else { return -1 }
            return Int(line[..<r.lowerBound].split(separator: " ").last ?? "") ?? -1
        }
        return (n("inserted,"), n("updated,"), n("deleted,"))
    }
}

/// Starts `postgate sync` in the background.
final class BackgroundSync: @unchecked Sendable {
    let process = Process()
    let errPipe = Pipe()
    nonisolated(unsafe) var stderrText = ""
    let done = DispatchGroup()

    init(config: String, destination: String, extra: [String] = [], environment: [String: String] = [:]) throws {
        process.executableURL = URL(fileURLWithPath: CLI.binary)
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new } }
        process.arguments = ["sync", "--config", config, "--destination", destination] + extra
        process.standardOutput = FileHandle.nullDevice
        process.standardError = errPipe
        process.standardInput = FileHandle.nullDevice
        try process.run()
        done.enter()
        DispatchQueue.global().async { [self] in
            stderrText = String(decoding: errPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            done.leave()
        }
    }

    /// Waits for the process to end; after `timeout` seconds it is killed and the hang recorded as a failure.
    func waitExit(timeout: Double = 120) -> Int32 {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            Issue.record("postgate sync did not exit within \(Int(timeout)) s; killed")
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
        done.wait()
        // A SIGKILLed run leaves its inline key material; remove it as the next run would.
        PrivateFilesRegistry.sweepStale()
        return process.terminationStatus
    }
}

/// Polls `condition` every 50 ms for up to `seconds`.
func eventually(_ seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
    let end = Date().addingTimeInterval(seconds)
    while Date() < end {
        if try condition() { return true }
        usleep(50_000)
    }
    return try condition()
}

@Suite(.serialized) struct SyncTests {
    static let tables = """
        CREATE TABLE a (id int PRIMARY KEY, v text, big text);
        ALTER TABLE a ALTER COLUMN big SET STORAGE EXTERNAL;
        CREATE TABLE b (id int PRIMARY KEY, v text);
        """

    /// A value too large to stay inline, stored out of line uncompressed: an update that does not
    /// touch it leaves it out of the change (pgoutput's unchanged TOAST).
    static let bigValue = "repeat(md5(random()::text), 400)"

    @Test(arguments: TestDestination.Kind.allCases)
    func cdcSyncConvergesWithInsertsUpdatesDeletesToastAndTruncate(kind: TestDestination.Kind) throws {
        let c = try CDCFixture("sync_cdc_\(kind.rawValue)", tables: Self.tables)
        let f = c.f
        let s = f.q(f.schema)
        let dest = try TestDestination(kind, lab: f.lab)
        try f.admin.query("INSERT INTO \(s).a SELECT g, 'a' || g, CASE WHEN g % 2 = 0 THEN \(Self.bigValue) END FROM generate_series(1, 50) g; INSERT INTO \(s).b SELECT g, 'b' || g FROM generate_series(1, 5) g")

        let r1 = try f.sync(c.config(), dest)
        #expect(r1.status == 0, "\(r1.stderr)")
        #expect(r1.stderr.contains("plan: \(f.schema).a → CDC"), "the chosen mode is said")
        #expect(try dest.rows(schema: f.schema, table: "a") == f.sourceRows("a"))
        #expect(try dest.rows(schema: f.schema, table: "b", hasBig: false) == f.sourceRows("b", hasBig: false))

        // Changes of every kind, including an update that leaves a TOASTed value out.
        try f.admin.query("INSERT INTO \(s).a VALUES (51, 'new', \(Self.bigValue))")
        try f.admin.query("UPDATE \(s).a SET v = 'toast-kept' WHERE id = 2")
        try f.admin.query("BEGIN; UPDATE \(s).a SET v = 'upd' WHERE id = 3; DELETE FROM \(s).a WHERE id = 5; DELETE FROM \(s).a WHERE id = 4; COMMIT")
        try f.admin.query("TRUNCATE \(s).b")
        try f.admin.query("INSERT INTO \(s).b VALUES (100, 'after truncate')")
        let r2 = try f.sync(c.config(), dest)
        #expect(r2.status == 0, "\(r2.stderr)")
        #expect(try dest.rows(schema: f.schema, table: "a") == f.sourceRows("a"))
        #expect(try dest.rows(schema: f.schema, table: "a").contains { $0.hasPrefix("2|toast-kept|12800") }, "the unchanged TOAST value is kept")
        #expect(try dest.rows(schema: f.schema, table: "b", hasBig: false) == ["100|after truncate|-1"])
        if kind != .jsonl {
            let a = try #require(r2.applied("\(f.schema).a"))
            #expect(a.0 == 1 && a.1 == 2 && a.2 == 2, "1 insert, 2 updates, 2 deletes: \(r2.stderr)")
        }

        // Nothing changed: nothing is applied.
        let r3 = try f.sync(c.config(), dest)
        #expect(r3.status == 0, "\(r3.stderr)")
        #expect(r3.applied("\(f.schema).a").map { $0 == (0, 0, 0) } == true, "\(r3.stderr)")
        #expect(try dest.rows(schema: f.schema, table: "a") == f.sourceRows("a"))

        // The slot was confirmed up to the position the destination committed, not beyond.
        let confirmed = try #require(try c.confirmedLSN())
        let saved = try #require(try dest.savedLSN())
        #expect(confirmed <= saved && confirmed.value > 0, "slot confirmed \(confirmed), destination committed \(saved)")
    }

    @Test(arguments: TestDestination.Kind.allCases)
    func fullRefreshAndIncrementalConverge(kind: TestDestination.Kind) throws {
        let f = try Fixture("sync_inc_\(kind.rawValue)")
        let s = f.q(f.schema)
        try f.sql("""
            CREATE TABLE \(s).cur (id int PRIMARY KEY, v text, updated_at timestamptz NOT NULL DEFAULT now());
            CREATE TABLE \(s).plain (id int PRIMARY KEY, v text);
            INSERT INTO \(s).cur (id, v, updated_at) SELECT g, 'c' || g, '2026-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, 300) g;
            INSERT INTO \(s).plain SELECT g, 'p' || g FROM generate_series(1, 300) g;
            """)
        let dest = try TestDestination(kind, lab: f.lab)
        let cfg = f.config(["batch_fetch_limit": 50])
        let r1 = try f.sync(cfg, dest)
        #expect(r1.status == 0, "\(r1.stderr)")
        #expect(r1.stderr.contains("\(f.schema).cur → cursor incremental on updated_at"), "\(r1.stderr)")
        #expect(r1.stderr.contains("\(f.schema).plain → full refresh"))
        #expect(try dest.rows(schema: f.schema, table: "cur", hasBig: false) == f.sourceRows("cur", hasBig: false))
        #expect(try dest.rows(schema: f.schema, table: "plain", hasBig: false) == f.sourceRows("plain", hasBig: false))

        try f.admin.query("INSERT INTO \(s).cur (id, v, updated_at) VALUES (301, 'new', '2027-01-01'); UPDATE \(s).cur SET v = 'changed', updated_at = '2027-01-02' WHERE id = 7")
        try f.admin.query("DELETE FROM \(s).plain WHERE id <= 100; UPDATE \(s).plain SET v = 'x' WHERE id = 200")
        let r2 = try f.sync(cfg, dest)
        #expect(r2.status == 0, "\(r2.stderr)")
        #expect(try dest.rows(schema: f.schema, table: "cur", hasBig: false) == f.sourceRows("cur", hasBig: false))
        #expect(try dest.rows(schema: f.schema, table: "plain", hasBig: false) == f.sourceRows("plain", hasBig: false), "a full refresh replaces the table")
        if kind != .jsonl {
            #expect(r2.applied("\(f.schema).cur").map { $0.0 == 1 && $0.1 == 1 } == true, "\(r2.stderr)")
            // The cursor's last value is read again (ties); an identical row is not applied.
            let r3 = try f.sync(cfg, dest)
            #expect(r3.applied("\(f.schema).cur").map { $0 == (0, 0, 0) } == true, "\(r3.stderr)")
        }

        // Xmin: sees an update that does not touch any cursor column.
        let xdest = try TestDestination(kind, lab: f.lab)
        let xcfg = f.config(["replication_method": ["method": "Xmin"]])
        #expect(try f.sync(xcfg, xdest).status == 0)
        try f.admin.query("UPDATE \(s).plain SET v = 'xmin-seen' WHERE id = 150")
        let rx = try f.sync(xcfg, xdest)
        #expect(rx.stderr.contains("\(f.schema).plain → xmin incremental"))
        #expect(try xdest.rows(schema: f.schema, table: "plain", hasBig: false).contains("150|xmin-seen|-1"))
    }

    @Test(arguments: TestDestination.Kind.allCases)
    func aKilledFullRefreshResumesAndConverges(kind: TestDestination.Kind) throws {
        let f = try Fixture("sync_kill_\(kind.rawValue)")
        let dest = try TestDestination(kind, lab: f.lab)
        try f.killedFullRefresh(into: dest, atPage: 1)

        let r = try f.sync(f.config(["batch_fetch_limit": 2000]), dest)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("resuming the interrupted full refresh"))
        #expect(try dest.rows(schema: f.schema, table: "big", hasBig: false) == f.sourceRows("big", hasBig: false))
        if kind == .jsonl { #expect(dest.lines(schema: f.schema, table: "big").count == 200_000, "no row written twice") }
    }

    @Test(arguments: TestDestination.Kind.allCases)
    func aKilledCDCSyncConvergesAndNeverConfirmsAheadOfTheDestination(kind: TestDestination.Kind) throws {
        let c = try CDCFixture("sync_cdckill_\(kind.rawValue)", tables: "CREATE TABLE a (id int PRIMARY KEY, v text)")
        let f = c.f
        let s = f.q(f.schema)
        let dest = try TestDestination(kind, lab: f.lab)
        var config = c.config()
        config["batch_fetch_limit"] = 1000
        #expect(try f.sync(config, dest).status == 0)
        for i in 0..<40 {
            try f.admin.query("INSERT INTO \(s).a SELECT g, 'v' || g FROM generate_series(\(i * 2500 + 1), \((i + 1) * 2500)) g")
        }
        try f.admin.query("UPDATE \(s).a SET v = 'u' WHERE id % 7 = 0")
        try f.admin.query("DELETE FROM \(s).a WHERE id % 11 = 0")
        let before = try dest.savedLSN()
        let bg = try BackgroundSync(config: try CLI.writeConfig(config), destination: dest.url)
        let moved = try eventually(60) { try dest.savedLSN() != before && (try dest.savedLSN()) != nil }
        #expect(moved)
        kill(bg.process.processIdentifier, SIGKILL)
        _ = bg.waitExit()
        #expect(bg.process.terminationReason == .uncaughtSignal, "the sync was still running when killed")
        let confirmed = try #require(try c.confirmedLSN())
        let saved = try #require(try dest.savedLSN())
        #expect(confirmed <= saved, "the slot (\(confirmed)) is never ahead of the destination (\(saved))")

        let r = try f.sync(config, dest)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try dest.rows(schema: f.schema, table: "a", hasBig: false) == f.sourceRows("a", hasBig: false))
        if kind == .jsonl {
            let lines = dest.lines(schema: f.schema, table: "a")
            #expect(Set(lines).count == lines.count, "no change written twice (the interrupted run's tail was cut off)")
        }
    }

    @Test func followAppliesChangesPromptlyAndStopsCleanlyOnSIGTERM() throws {
        let c = try CDCFixture("sync_follow", tables: "CREATE TABLE a (id int PRIMARY KEY, v text)")
        let f = c.f
        let s = f.q(f.schema)
        try f.admin.query("INSERT INTO \(s).a VALUES (1, 'one')")
        let dest = try TestDestination(.sqlite, lab: f.lab)
        let bg = try BackgroundSync(config: try CLI.writeConfig(c.config()), destination: dest.url, extra: ["--follow"])
        func ids() throws -> [String] {
            guard FileManager.default.fileExists(atPath: dest.path) else { return [] }
            return (try? dest.rows(schema: f.schema, table: "a", hasBig: false)) ?? []
        }
        #expect(try eventually(30) { try ids() == ["1|one|-1"] })
        try f.admin.query("INSERT INTO \(s).a VALUES (2, 'two'); UPDATE \(s).a SET v = 'uno' WHERE id = 1")
        let t0 = Date()
        #expect(try eventually(10) { try ids() == ["1|uno|-1", "2|two|-1"] })
        let latency = Date().timeIntervalSince(t0)
        #expect(latency < 5, "changes applied within \(latency) s")
        try f.admin.query("DELETE FROM \(s).a WHERE id = 2")
        #expect(try eventually(10) { try ids() == ["1|uno|-1"] })
        kill(bg.process.processIdentifier, SIGTERM)
        let status = bg.waitExit()
        #expect(status == 0, "\(bg.stderrText)")
        #expect(bg.stderrText.contains("sync summary"))
        // Everything applied was confirmed to the slot on the way out.
        let confirmed = try #require(try c.confirmedLSN())
        let saved = try #require(try dest.savedLSN())
        #expect(confirmed == saved, "confirmed \(confirmed) = committed \(saved)")
    }

    @Test func aColumnAddedAtTheSourceMidStreamIsAddedToTheTable() throws {
        let c = try CDCFixture("sync_addcol", tables: "CREATE TABLE a (id int PRIMARY KEY, v text)")
        let f = c.f
        let s = f.q(f.schema)
        try f.admin.query("INSERT INTO \(s).a VALUES (1, 'one')")
        let dest = try TestDestination(.sqlite, lab: f.lab)
        #expect(try f.sync(c.config(), dest).status == 0)
        try f.admin.query("ALTER TABLE \(s).a ADD COLUMN score numeric; INSERT INTO \(s).a VALUES (2, 'two', 2.5)")
        let r = try f.sync(c.config(), dest)
        #expect(r.status == 0, "\(r.stderr)")
        let scores = try DatabaseQueue(path: dest.path).read { db in
            try Row.fetchAll(db, sql: "SELECT id, score FROM \"\(f.schema)__a\" ORDER BY id").map { "\($0["id"] as Int64):\(($0["score"] as String?) ?? "NULL")" }
        }
        #expect(scores == ["1:NULL", "2:2.5"])
    }

    @Test func badDestinationsAreExplained() throws {
        let f = try Fixture("sync_bad")
        try f.sql("CREATE TABLE \(f.q(f.schema)).t (id int PRIMARY KEY)")
        let cfg = try CLI.writeConfig(f.config())
        let unknown = try CLI.run(["sync", "--config", cfg, "--destination", "ftp://x"])
        #expect(unknown.status != 0 && unknown.stderr.contains("--destination") && unknown.stderr.contains("sqlite:PATH"))
        let noDir = try CLI.run(["sync", "--config", cfg, "--destination", "sqlite:/nonexistent-dir/x.db"])
        #expect(noDir.status != 0 && noDir.stderr.contains("cannot open SQLite database /nonexistent-dir/x.db"))
        let wrong = "wrong-password-\(UInt32.random(in: 0...UInt32.max))"
        let badPG = try CLI.run(["sync", "--config", cfg, "--destination",
                                 "postgres:host=\(f.lab["PG_HOST"]) port=\(f.lab["PG_PORT"]) dbname=postgres user=postgate_admin password=\(wrong) sslmode=verify-full sslrootcert=\(f.lab["CA_CERT"])"],
                                secrets: [wrong])
        #expect(badPG.status != 0 && badPG.stderr.contains("PostgreSQL destination") && badPG.stderr.contains("password authentication failed"))
        // libpq would quote this malformed password back in its parse error.
        let malformed = "s3cret%zz\(UInt32.random(in: 0...UInt32.max))"
        let badURI = try CLI.run(["sync", "--config", cfg, "--destination", "postgres:postgresql://u:\(malformed)@h/db"], secrets: [malformed])
        #expect(badURI.status != 0 && badURI.stderr.contains("the password has a `%`") && !(badURI.stdout + badURI.stderr).contains("s3cret"))
        #expect(DestinationURL.describe("postgres://u:secret@h/db") == "postgres:user=u password=*** host=h dbname=db")
        #expect(DestinationURL.describe("postgres:host=h password='a b' dbname=x") == "postgres:password=*** dbname=x host=h")
    }
}
