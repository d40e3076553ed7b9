import Foundation
import GRDB
import Synchronization
import Testing
@testable import PostgateCore

/// What a run does with a slot that is gone or invalidated: the pure decision, then against a
/// server of the test's own (invalidating a slot changes `max_slot_wal_keep_size`, which the
/// shared lab's other slots must not feel).
@Suite struct SlotRecoveryDecisionTests {
    static func kind(_ r: SlotRecovery) -> String {
        switch r {
        case .use: return "use"
        case .create: return "create"
        case .recreate(let drop, _): return drop ? "drop+create" : "create-again"
        case .fail(let e): return "fail: \(e.description)"
        }
    }

    @Test func decisions() {
        let at = LSN(0x1000)
        func d(_ slot: SlotRecovery.Slot, _ saved: LSN?, _ b: CDCSettings.InvalidCursorBehaviour, _ create: Bool) -> String {
            Self.kind(SlotRecovery.decide(slot: slot, name: "s", saved: saved, behaviour: b, createSlot: create))
        }
        #expect(d(.usable, at, .failSync, false) == "use")
        #expect(d(.missing, nil, .failSync, true) == "create")
        #expect(d(.missing, nil, .failSync, false).contains("does not exist"))
        #expect(d(.missing, at, .resync, true) == "create-again")
        #expect(d(.missing, at, .failSync, true).contains("is gone"))
        #expect(d(.missing, at, .failSync, true).contains("destination is unchanged"))
        #expect(d(.missing, at, .resync, false).contains("set replication_method.create_slot to true"))
        #expect(d(.lost, at, .failSync, true).contains("max_slot_wal_keep_size"))
        #expect(d(.lost, at, .resync, true) == "drop+create")
        #expect(d(.lost, nil, .failSync, true) == "drop+create", "nothing saved: nothing to lose by starting over")
        #expect(d(.lost, at, .resync, false).contains("create_slot"))
    }
}

@Suite struct SlotInvalidationTests {
    /// A streaming failure is taken for an invalidated slot by its SQLSTATE and the slot's
    /// wal_status, whatever language the server's message is in.
    @Test func toldByStateNotByWords() {
        #expect(CDCReader.slotInvalidated(sqlState: "55000", walStatus: "lost"))
        #expect(CDCReader.slotInvalidated(sqlState: "57P01", walStatus: "lost"), "the walsender holding it is terminated")
        #expect(!CDCReader.slotInvalidated(sqlState: "55000", walStatus: "reserved"))
        #expect(!CDCReader.slotInvalidated(sqlState: "55000", walStatus: nil))
        #expect(!CDCReader.slotInvalidated(sqlState: "55006", walStatus: "lost"))
    }
}

@Suite(.serialized) struct SlotLossTests {
    static func sync(_ p: PrivateCDC, _ db: String, _ extra: JSONObject = [:], top: JSONObject = [:]) throws -> CLIResult {
        var config = p.config
        for (k, v) in top.entries { config[k] = v }
        if case .object(var m)? = config["replication_method"] {
            for (k, v) in extra.entries { m[k] = v }
            config["replication_method"] = .object(m)
        }
        return try CLI.run(["sync", "--config", try CLI.writeConfig(config), "--destination", "sqlite:" + db])
    }

    static let resync: JSONObject = ["invalid_cdc_cursor_position_behavior": "Re-sync data", "create_slot": true]

    /// Changes made while the slot could not keep them (deletes among them) must not be lost: the
    /// re-sync loads every stream again into a new slot and the destination ends equal to the source.
    static func changeWhileUnreadable(_ p: PrivateCDC) throws {
        try p.admin.query("DELETE FROM app.a WHERE id <= 10; UPDATE app.a SET v = 'changed' WHERE id = 11; INSERT INTO app.a VALUES (1001, 'late')")
    }

    /// Lowers max_slot_wal_keep_size to 1MB, makes the changes the slot will not keep, then piles
    /// up WAL for another table (running `during` each round) and checkpoints until the server
    /// invalidates the slot. True once it has.
    static func invalidate(_ p: PrivateCDC, during: (Int) throws -> Void = { _ in }) throws -> Bool {
        try p.admin.query("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        try p.admin.query("SELECT pg_reload_conf()")
        try changeWhileUnreadable(p)
        for i in 0..<12 {
            try during(i)
            try p.admin.query("INSERT INTO other.big SELECT g, repeat('x', 1000) FROM generate_series(1, 20000) g")
            try p.admin.query("SELECT pg_switch_wal()")
            try p.admin.query("CHECKPOINT")
            if try p.admin.query("SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1", [p.slot]).string(0, "wal_status") == "lost" { return true }
        }
        return false
    }

    @Test func anInvalidatedSlotFailsOrIsRecreatedAndEverythingReloaded() throws {
        let p = try PrivateCDC()
        try FileManager.default.createDirectory(atPath: p.dir, withIntermediateDirectories: true)
        try p.admin.query("INSERT INTO app.a SELECT g, 'v' || g FROM generate_series(1, 500) g")
        let db = p.dir + "/d.db"
        let first = try Self.sync(p, db)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(PrivateCDC.destRows(db) == (try p.sourceRows(p.admin)))

        // A writer keeps changing the table while WAL for other tables piles up past a small
        // max_slot_wal_keep_size; checkpoints then remove WAL the slot needs.
        try #require(try Self.invalidate(p) { i in try p.admin.query("INSERT INTO app.a VALUES (\(2000 + i), 'during')") }, "the slot was not invalidated")
        let before = PrivateCDC.destRows(db)
        let check = try Self.checkMessage(p)
        #expect(check.contains("invalidated (wal_status 'lost')") && check.contains("max_slot_wal_keep_size is 1MB"), "\(check)")

        let refused = try Self.sync(p, db)
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("invalidated") && refused.stderr.contains("max_slot_wal_keep_size"), "\(refused.stderr)")
        #expect(refused.stderr.contains("Re-sync data"), "says how to recover: \(refused.stderr)")
        #expect(PrivateCDC.destRows(db) == before, "a refused run changes nothing")

        let recovered = try Self.sync(p, db, Self.resync)
        #expect(recovered.status == 0, "\(recovered.stderr)")
        #expect(recovered.stderr.contains("recreating the slot"), "\(recovered.stderr)")
        #expect(PrivateCDC.destRows(db) == (try p.sourceRows(p.admin)), "the destination equals the source after the re-sync")
        let status = try p.admin.query("SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1", [p.slot]).string(0, "wal_status")
        #expect(status != nil && status != "lost", "a new slot is in place (\(status ?? "none"))")

        // And CDC goes on from the new slot.
        try p.admin.query("ALTER SYSTEM RESET max_slot_wal_keep_size")
        try p.admin.query("SELECT pg_reload_conf()")
        try p.admin.query("DELETE FROM app.a WHERE id = 12; INSERT INTO app.a VALUES (3000, 'after')")
        let next = try Self.sync(p, db, Self.resync)
        #expect(next.status == 0, "\(next.stderr)")
        #expect(!next.stderr.contains("recreating"))
        #expect(PrivateCDC.destRows(db) == (try p.sourceRows(p.admin)))
    }

    /// A slot invalidated under a running follow (its walsender is terminated, and streaming from
    /// the slot again is refused) ends the follow with the slot named as invalidated, as a
    /// transient failure, also from a server that speaks German (told by SQLSTATE and the
    /// slot's state, not by words); the next run with "Re-sync data" recreates it and converges.
    @Test func aSlotInvalidatedWhileFollowingEndsTheFollowAndIsRecovered() throws {
        let p = try PrivateCDC()
        try p.admin.query("INSERT INTO app.a SELECT g, 'v' || g FROM generate_series(1, 200) g")
        let db = p.dir + "/d.db"
        let bg = try p.follow("sqlite:" + db)
        #expect(eventually(30) { PrivateCDC.destRows(db).count == 200 })
        // The follow stops reading (as a consumer that fell behind would), WAL piles up past
        // max_slot_wal_keep_size, and a checkpoint invalidates the slot it still holds.
        kill(bg.process.processIdentifier, SIGSTOP)
        let lost = try Self.invalidate(p)
        // (The locale comes with scripts/install-deps.)
        try p.admin.query("ALTER SYSTEM SET lc_messages = 'de_DE.UTF-8'")
        try p.admin.query("SELECT pg_reload_conf()")
        kill(bg.process.processIdentifier, SIGCONT)
        try #require(lost, "the slot was not invalidated")
        let status = bg.waitExit(timeout: 60)
        #expect(status == 2, "a transient failure: \(bg.stderrText.suffix(800))")
        #expect(bg.stderrText.contains("invalidated while in use") && bg.stderrText.contains("Re-sync data"), "\(bg.stderrText.suffix(800))")
        #expect(!bg.stderrText.contains("can no longer get changes"), "the server spoke German: \(bg.stderrText.suffix(800))")

        try p.admin.query("ALTER SYSTEM RESET lc_messages")
        try p.admin.query("ALTER SYSTEM RESET max_slot_wal_keep_size")
        try p.admin.query("SELECT pg_reload_conf()")
        let recovered = try Self.sync(p, db, Self.resync)
        #expect(recovered.status == 0, "\(recovered.stderr)")
        #expect(PrivateCDC.destRows(db) == (try p.sourceRows(p.admin)), "the destination equals the source after the re-sync")
    }

    /// A slot made before its publication cannot read the changes from before the publication:
    /// the run says so and how to recover, instead of "publication does not exist" (it does).
    @Test func aPublicationMadeAfterTheSlotIsExplained() throws {
        let p = try PrivateCDC()
        // A change the slot holds from before the publication.
        try p.admin.query("INSERT INTO app.a VALUES (1, 'one')")
        try p.admin.query("CREATE PUBLICATION pub_late FOR TABLE app.a")
        var config = p.config
        if case .object(var m)? = config["replication_method"] { m["publication"] = "pub_late"; config["replication_method"] = .object(m) }
        try FileManager.default.createDirectory(atPath: p.dir, withIntermediateDirectories: true)
        let r = try CLI.run(["sync", "--config", try CLI.writeConfig(config), "--destination", "sqlite:" + p.dir + "/late.db"])
        #expect(r.status == 1, "a config error: \(r.stderr)")
        #expect(r.stderr.contains("was created after the changes replication slot") && r.stderr.contains("pg_drop_replication_slot"), "\(r.stderr)")
    }

    static func checkMessage(_ p: PrivateCDC, environment: [String: String] = [:]) throws -> String {
        let r = try CLI.run(["check", "--config", try CLI.writeConfig(p.config)], environment: environment)
        return r.messages.first?["connectionStatus"]?["message"]?.stringValue ?? r.stdout
    }

    /// `check` names the transactions that hold the slot back (never their query text) and says
    /// what bounds the WAL a slot keeps.
    @Test func checkNamesLongTransactionsHoldingTheSlot() throws {
        let p = try PrivateCDC()
        let quiet = try Self.checkMessage(p, environment: ["POSTGATE_LONG_TX_SECONDS": "1"])
        #expect(!quiet.contains("hold the slot back"), "\(quiet)")
        #expect(quiet.contains("max_slot_wal_keep_size is -1"), "\(quiet)")
        let holder = try p.server.connection()
        try holder.query("BEGIN")
        try holder.query("SELECT pg_current_xact_id(), 'a secret literal in the query text'")
        let pid = try #require(try holder.query("SELECT pg_backend_pid()::text AS p").string(0, "p"))
        sleep(2)
        let message = try Self.checkMessage(p, environment: ["POSTGATE_LONG_TX_SECONDS": "1"])
        #expect(message.contains("hold the slot back") && message.contains("pid \(pid)") && message.contains("pg_terminate_backend"), "\(message)")
        #expect(!message.contains("a secret literal"), "query texts are not shown")
        try holder.query("ROLLBACK")
    }

    @Test func aDroppedSlotFailsOrIsRecreatedAndEverythingReloaded() throws {
        let p = try PrivateCDC()
        try FileManager.default.createDirectory(atPath: p.dir, withIntermediateDirectories: true)
        try p.admin.query("INSERT INTO app.a SELECT g, 'v' || g FROM generate_series(1, 300) g")
        let db = p.dir + "/d.db"
        let first = try Self.sync(p, db)
        #expect(first.status == 0, "\(first.stderr)")

        try p.admin.query("SELECT pg_drop_replication_slot($1)", [p.slot])
        try Self.changeWhileUnreadable(p)
        let before = PrivateCDC.destRows(db)

        let refused = try Self.sync(p, db)
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("is gone") && refused.stderr.contains("Re-sync data"), "\(refused.stderr)")
        #expect(PrivateCDC.destRows(db) == before)
        let withoutCreate = try Self.sync(p, db, ["invalid_cdc_cursor_position_behavior": "Re-sync data"])
        #expect(withoutCreate.status != 0 && withoutCreate.stderr.contains("create_slot"), "\(withoutCreate.stderr)")

        // The re-sync replaces the rows chunk by chunk: the table is never seen emptied meanwhile
        // (it was truncated in a commit of its own before the reload, and read empty until then).
        let watch = RowCountWatch(db, table: "app__a")
        let recovered = try Self.sync(p, db, Self.resync, top: ["batch_fetch_limit": 50])
        let fewest = watch.stop()
        #expect(recovered.status == 0, "\(recovered.stderr)")
        #expect(PrivateCDC.destRows(db) == (try p.sourceRows(p.admin)), "rows deleted while the slot was gone are gone from the destination")
        #expect(watch.looks > 10 && fewest >= 280, "the destination held as few as \(fewest) of its 300 rows during the re-sync (\(watch.looks) looks)")
    }
}

/// Counts a SQLite table's rows as often as it can on a thread of its own, keeping the fewest seen.
final class RowCountWatch: @unchecked Sendable {
    private let state = Mutex<(stop: Bool, fewest: Int, looks: Int)>((false, .max, 0))
    private let done = DispatchSemaphore(value: 0)

    init(_ path: String, table: String) {
        Thread.detachNewThread { [self] in
            var config = Configuration()
            config.readonly = true
            let queue = try? DatabaseQueue(path: path, configuration: config)
            while !state.withLock({ $0.stop }) {
                if let n = try? queue?.read({ try Int.fetchOne($0, sql: "SELECT count(*) FROM \(table)") }) {
                    state.withLock { $0.fewest = min($0.fewest, n); $0.looks += 1 }
                }
                usleep(500)
            }
            done.signal()
        }
    }

    var looks: Int { state.withLock { $0.looks } }

    /// Stops watching; the fewest rows seen.
    func stop() -> Int {
        state.withLock { $0.stop = true }
        done.wait()
        return state.withLock { $0.fewest }
    }
}
