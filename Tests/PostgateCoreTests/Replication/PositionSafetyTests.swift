import Foundation
import GRDB
import Testing
@testable import PostgateCore

/// The slot is never confirmed past what the server wrote, what this run received, or (under
/// `sync`) what the destination committed; an idle follow releases WAL and lets the server stop.
@Suite struct PositionSafetyTests {
    @Test func aStateAheadOfTheServerIsRefusedAndTheSlotIsLeftAlone() throws {
        let c = try CDCFixture("cdc_ahead", tables: "CREATE TABLE a (id int PRIMARY KEY, v text)")
        let s = c.f.q(c.f.schema)
        try c.f.admin.query("INSERT INTO \(s).a VALUES (1, 'one')")
        let (r1, first) = try c.read(["a"])
        #expect(r1.status == 0, "\(r1.stderr)")
        let before = try #require(try c.confirmedLSN())

        // The same state with its position moved far past anything the server wrote.
        let forged = first.stdoutTranscript.replacingOccurrences(
            of: #""lsn":"[0-9A-F]+/[0-9A-F]+""#, with: #""lsn":"FF/0""#, options: .regularExpression)
        let cfg = try CLI.writeConfig(c.config())
        let cat = try CLI.writeTemp(c.catalog(["a"]).jsonText, suffix: ".json")
        let stateFile = try CLI.writeTemp(forged, suffix: ".json")
        let r2 = try CLI.run(["read", "--config", cfg, "--catalog", cat, "--state", stateFile])
        #expect(r2.status != 0, "a state ahead of the server is refused")
        #expect(r2.stderr.contains(stateFile) && r2.stderr.contains("FF/0"), "names the state file and the saved position: \(r2.stderr)")
        #expect(r2.stderr.contains("ahead of the server's WAL"), "\(r2.stderr)")
        let after = try #require(try c.confirmedLSN())
        #expect(after == before, "the slot stays at \(before), not \(after)")

        // Nothing was skipped: a change made now is read from the real state.
        try c.f.admin.query("INSERT INTO \(s).a VALUES (2, 'two')")
        let (r3, third) = try c.read(["a"], state: first)
        #expect(r3.status == 0, "\(r3.stderr)")
        #expect(third.ids("a") == [2])
    }

    @Test func syncConfirmsOnlyWhatTheDestinationCommittedWhateverLsnCommitBehaviourSays() throws {
        let c = try CDCFixture("sync_whilereading", tables: "CREATE TABLE a (id int PRIMARY KEY, v text)")
        let f = c.f
        let s = f.q(f.schema)
        let dest = try TestDestination(.sqlite, lab: f.lab)
        var config = c.config(["replication_method": ["lsn_commit_behaviour": "While reading Data"]])
        config["batch_fetch_limit"] = 500
        let first = try f.sync(config, dest)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stderr.contains("is ignored by sync"), "the setting is said to be ignored")

        let bg = try BackgroundSync(config: try CLI.writeConfig(config), destination: dest.url, extra: ["--follow"])
        let writerConn = try f.lab.adminConnection()
        nonisolated(unsafe) let w = writerConn
        let writer = Thread {
            for i in 0..<60 {
                _ = try? w.query("INSERT INTO \(s).a SELECT g, 'v' || g FROM generate_series(\(i * 1000 + 1), \((i + 1) * 1000)) g")
                _ = try? w.query("UPDATE \(s).a SET v = 'u\(i)' WHERE id % 13 = \(i % 13)")
            }
        }
        writer.start()
        let before = try dest.savedLSN()
        #expect(try eventually(60) { (try dest.savedLSN()).map { $0 != before } ?? false })
        usleep(300_000)
        kill(bg.process.processIdentifier, SIGKILL)
        _ = bg.waitExit()
        #expect(bg.process.terminationReason == .uncaughtSignal, "killed while running")
        let confirmed = try #require(try c.confirmedLSN())
        let saved = try #require(try dest.savedLSN())
        #expect(confirmed <= saved, "the slot (\(confirmed)) is never ahead of the destination (\(saved))")
        while writer.isExecuting { usleep(50_000) }
        while !writer.isFinished { usleep(50_000) }

        let r = try f.sync(config, dest)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try dest.rows(schema: f.schema, table: "a", hasBig: false) == f.sourceRows("a", hasBig: false))
    }
}

/// CDC against a server of the test's own, which it can stop and restart.
final class PrivateCDC {
    let server: PrivateServer
    let admin: PGConnection
    let schema = "app"
    let slot = "slot_\(UInt32.random(in: 0...UInt32.max))"
    let publication = "pub_app"

    init() throws {
        server = try PrivateServer()
        admin = try server.connection()
        try admin.query("CREATE SCHEMA app; CREATE TABLE app.a (id int PRIMARY KEY, v text); CREATE SCHEMA other; CREATE TABLE other.big (id int, pad text)")
        try admin.query("CREATE PUBLICATION pub_app FOR TABLES IN SCHEMA app")
        try admin.query("SELECT pg_create_logical_replication_slot('\(slot)', 'pgoutput')")
    }

    /// A private directory for the test's destination, removed with the fixture.
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("postgate-follow-\(UUID().uuidString)").path

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    func reconnect() throws -> PGConnection { try server.connection() }

    /// Starts `sync --follow` of this server into `destination` (a path in `dir` is expected).
    func follow(_ destination: String) throws -> BackgroundSync {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return try BackgroundSync(config: try CLI.writeConfig(config), destination: destination, extra: ["--follow"])
    }

    var config: JSONObject { server.cdcConfig(schema: schema, slot: slot, publication: publication) }

    func slotLSNs(_ conn: PGConnection) throws -> (confirmed: LSN, retained: Int64) {
        let r = try conn.query("SELECT confirmed_flush_lsn::text AS c, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8 AS r FROM pg_replication_slots WHERE slot_name = $1", [slot])
        return (try #require(r.string(0, "c").flatMap(LSN.init)), try #require(r.string(0, "r").flatMap { Int64($0) }))
    }

    func sourceRows(_ conn: PGConnection) throws -> [String] {
        let r = try conn.query("SELECT id, v FROM app.a ORDER BY id")
        return (0..<r.rowCount).map { "\(r.string($0, "id")!)|\(r.string($0, "v") ?? "NULL")" }
    }

    static func destRows(_ path: String) -> [String] {
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        return (try? DatabaseQueue(path: path).read { db in
            try Row.fetchAll(db, sql: "SELECT id, v FROM app__a ORDER BY id").map { "\($0["id"] as Int64)|\(($0["v"] as String?) ?? "NULL")" }
        }) ?? []
    }

    static func savedLSN(_ path: String) -> LSN? {
        guard FileManager.default.fileExists(atPath: path),
              let text = try? DatabaseQueue(path: path).read({ db in try String.fetchOne(db, sql: "SELECT message FROM _postgate_state WHERE key = 'global'") }),
              let m = try? JSONParser.parse(text) else { return nil }
        return m["state"]?["global"]?["shared_state"]?["lsn"]?.stringValue.flatMap(LSN.init)
    }
}

@Suite(.serialized) struct FollowServerTests {
    @Test func anIdleFollowReleasesWALWrittenToUnpublishedTables() throws {
        let p = try PrivateCDC()
        try p.admin.query("INSERT INTO app.a VALUES (1, 'one')")
        let db = p.dir + "/d.db"
        let bg = try p.follow("sqlite:" + db)
        #expect(eventually(30) { PrivateCDC.destRows(db) == ["1|one"] })

        // 256 MB and more of WAL for a table the publication does not hold.
        for _ in 0..<4 {
            try p.admin.query("INSERT INTO other.big SELECT g, repeat('x', 1000) FROM generate_series(1, 70000) g")
        }
        let written = try p.admin.query("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8 AS w").string(0, "w").flatMap { Int64($0) } ?? 0
        #expect(written > 256 << 20, "wrote \(written >> 20) MB of WAL in all")
        var retained: Int64 = .max
        let released = try eventually(60) {
            try p.admin.query("CHECKPOINT")
            retained = try p.slotLSNs(p.admin).retained
            return retained < 64 << 20
        }
        #expect(released, "the slot retains \(retained >> 20) MB")

        // A change after the idle stretch still arrives.
        try p.admin.query("INSERT INTO app.a VALUES (2, 'two')")
        #expect(eventually(10) { PrivateCDC.destRows(db) == ["1|one", "2|two"] })
        kill(bg.process.processIdentifier, SIGTERM)
        #expect(bg.waitExit() == 0, "\(bg.stderrText)")
        let (confirmed, _) = try p.slotLSNs(p.admin)
        #expect(PrivateCDC.savedLSN(db) == confirmed, "confirmed exactly what was committed")
    }

    @Test func aFastStopWhileFollowingIsQuickAndTheFollowReconnectsAfterTheRestart() throws {
        let p = try PrivateCDC()
        try p.admin.query("INSERT INTO app.a VALUES (1, 'one')")
        let db = p.dir + "/d.db"
        let bg = try p.follow("sqlite:" + db)
        #expect(eventually(30) { PrivateCDC.destRows(db) == ["1|one"] })
        try p.admin.query("INSERT INTO app.a SELECT g, 'v' || g FROM generate_series(2, 2000) g")
        #expect(eventually(30) { PrivateCDC.destRows(db).count == 2000 })

        // WAL past the last published change: the walsender has more to account for at shutdown.
        try p.admin.query("INSERT INTO other.big SELECT g, repeat('x', 1000) FROM generate_series(1, 20000) g")
        usleep(500_000)
        let took = try p.server.stop(mode: "fast", timeout: 30)
        #expect(took < 5, "pg_ctl stop -m fast took \(took) s while a follow was attached")
        #expect(bg.process.isRunning, "the follow waits for the server instead of exiting")
        try p.server.start()
        let admin = try p.reconnect()
        try admin.query("INSERT INTO app.a VALUES (5000, 'after'); UPDATE app.a SET v = 'changed' WHERE id = 1; DELETE FROM app.a WHERE id = 2")
        #expect(eventually(60) { PrivateCDC.destRows(db).contains("5000|after") && PrivateCDC.destRows(db).contains("1|changed") },
                "changes after the restart are applied by the same process")
        kill(bg.process.processIdentifier, SIGTERM)
        #expect(bg.waitExit() == 0, "\(bg.stderrText)")
        #expect(bg.stderrText.contains("reconnect"), "the loss and the reconnect are logged")
        #expect(PrivateCDC.destRows(db) == (try p.sourceRows(admin)))
        let (confirmed, _) = try p.slotLSNs(admin)
        #expect(PrivateCDC.savedLSN(db) == confirmed)
    }
}

@Suite(.serialized) struct FollowCrashTests {
    /// A server that crashes while transactions stream (immediate stop) is reconnected to; what the
    /// destination got after its last state is rolled back and read again, so no change lands twice.
    @Test func aCrashMidStreamIsRolledBackAndNothingLandsTwice() throws {
        let p = try PrivateCDC()
        let out = p.dir + "/out"
        let bg = try p.follow("jsonl:" + out)
        func lines() -> [Substring] {
            ((try? String(contentsOfFile: out + "/app__a.jsonl", encoding: .utf8)) ?? "").split(separator: "\n")
        }
        #expect(eventually(30) { FileManager.default.fileExists(atPath: out + "/_postgate_state.json") })
        // Large transactions, so the crash is likely to fall inside one being streamed.
        for k in 0..<6 {
            try p.admin.query("INSERT INTO app.a SELECT g, 'v' || g FROM generate_series(\(k * 20000 + 1), \((k + 1) * 20000)) g")
        }
        #expect(eventually(60) { lines().count > 20000 }, "changes are flowing before the crash")
        try p.server.stop(mode: "immediate", timeout: 30)
        try p.server.start()
        let admin = try p.reconnect()
        try admin.query("INSERT INTO app.a SELECT g, 'after' FROM generate_series(200001, 200100) g")
        let expected = try admin.query("SELECT count(*) AS n FROM app.a").string(0, "n").flatMap { Int($0) } ?? -1
        #expect(eventually(120) { lines().count >= expected }, "every change arrives after the restart")
        kill(bg.process.processIdentifier, SIGTERM)
        #expect(bg.waitExit() == 0, "\(bg.stderrText)")
        let all = lines()
        #expect(Set(all).count == all.count, "no change written twice")
        let ids = Set(all.compactMap { try? JSONParser.parse(String($0))["id"]?.int64Value })
        #expect(ids.count == expected, "every row of the source is there once: \(ids.count) of \(expected)")
        #expect(bg.stderrText.contains("reconnect"))
        if !bg.stderrText.contains("rolled back") { print("note: the crash fell between states; no rollback was needed this time") }
    }
}
