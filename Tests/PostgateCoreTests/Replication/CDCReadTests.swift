import Foundation
import Testing
@testable import PostgateCore

/// A schema, publication and slot for one CDC test; all dropped afterwards.
final class CDCFixture {
    let f: Fixture
    let slot: String
    let publication: String

    init(_ prefix: String, tables: String, publicationName: String? = nil) throws {
        f = try Fixture(prefix)
        let tag = "\(UInt32.random(in: 0...UInt32.max))"
        slot = "pg_slot_\(tag)"
        publication = publicationName ?? "pub_\(tag)"
        try f.admin.query("SET search_path TO \(f.q(f.schema))")
        try f.sql(tables)
        try f.admin.query("GRANT USAGE ON SCHEMA \(f.q(f.schema)) TO postgate_repl; GRANT SELECT ON ALL TABLES IN SCHEMA \(f.q(f.schema)) TO postgate_repl")
        try f.admin.query("CREATE PUBLICATION \(f.q(publication)) FOR TABLES IN SCHEMA \(f.q(f.schema))")
        try f.admin.query("SELECT pg_create_logical_replication_slot('\(slot)', 'pgoutput')")
    }

    deinit {
        _ = try? f.admin.query("SELECT pg_drop_replication_slot('\(slot)') FROM pg_replication_slots WHERE slot_name = '\(slot)' AND NOT active")
        _ = try? f.admin.query("DROP PUBLICATION IF EXISTS \(f.q(publication))")
    }

    func config(_ extra: JSONObject = [:]) -> JSONObject {
        var c = f.config(extra)
        c["username"] = .string(f.lab["PG_REPL_USER"])
        c["password"] = .string(f.lab["PG_REPL_PASSWORD"])
        var m: JSONObject = ["method": "CDC", "replication_slot": .string(slot), "publication": .string(publication), "initial_waiting_seconds": 20]
        if case .object(let r)? = extra["replication_method"] { for (k, v) in r.entries { m[k] = v } }
        c["replication_method"] = .object(m)
        return c
    }

    func catalog(_ names: [String]) -> JSONValue { f.catalog(names.map { ($0, "incremental", nil) }) }

    func read(_ names: [String], state: ReadOutput? = nil, config: JSONObject? = nil, environment: [String: String] = [:]) throws -> (CLIResult, ReadOutput) {
        try f.read(config: config ?? self.config(), catalog: catalog(names), state: state.map { $0.stdoutTranscript }, environment: environment)
    }
}

extension ReadOutput {
    func ids(_ stream: String) -> [Int64] {
        recordMessages.filter { $0["record"]?["stream"]?.stringValue == stream }.compactMap { $0["record"]?["data"]?["id"]?.int64Value }
    }
    var globalState: JSONValue? { states.last?["state"]?["global"] }
}

@Suite struct CDCReadTests {
    @Test func snapshotThenInsertsUpdatesDeletesAndTruncates() throws {
        let c = try CDCFixture("cdc_dml", tables: "CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, n numeric, ts timestamptz)")
        let s = c.f.q(c.f.schema)
        try c.f.admin.query("INSERT INTO \(s).a SELECT g, 'a' || g FROM generate_series(1, 10) g; INSERT INTO \(s).b VALUES (1, 1.50, '2026-01-01 00:00:00+00')")
        let (r1, first) = try c.read(["a", "b"])
        #expect(r1.status == 0, "\(r1.stderr)")
        #expect(Set(first.ids("a")) == Set(1...10) && first.ids("b") == [1], "\(first.ids("a")) \(first.ids("b")) \(r1.stderr)")
        #expect(first.records.allSatisfy { $0["_ab_cdc_lsn"]?.int64Value != nil && $0["_ab_cdc_deleted_at"] == .null })
        #expect(first.globalState?["shared_state"]?["state_type"] == "cdc")

        try c.f.admin.query("INSERT INTO \(s).a VALUES (11, 'new')")
        try c.f.admin.query("BEGIN; UPDATE \(s).a SET v = 'upd' WHERE id = 2; DELETE FROM \(s).a WHERE id = 3; INSERT INTO \(s).b VALUES (2, 'NaN', now()); COMMIT")
        try c.f.admin.query("TRUNCATE \(s).b")
        let (r2, second) = try c.read(["a", "b"], state: first)
        #expect(r2.status == 0, "\(r2.stderr)")
        let a = second.recordMessages.filter { $0["record"]?["stream"] == "a" }.compactMap { $0["record"]?["data"] }
        #expect(a.map { $0["id"]?.int64Value ?? -1 } == [11, 2, 3], "changes in commit order")
        try #require(a.count == 3)
        #expect(a[1]["v"] == "upd" && a[2]["_ab_cdc_deleted_at"]?.stringValue?.hasSuffix("Z") == true)
        #expect(a[2]["v"] == nil, "a delete under the default replica identity carries the key only")
        let b = try #require(second.recordMessages.first { $0["record"]?["stream"] == "b" })
        #expect(b["record"]?["data"]?["n"] == .null && b["record"]?["meta"]?["changes"]?.arrayValue?.first?["field"] == "n", "NaN maps the same way as in snapshots")
        #expect(second.logs.contains { $0.contains("TRUNCATE") && $0.contains(".b") })
        #expect(!second.ids("a").contains(1), "snapshot rows are not streamed again")

        let (r3, third) = try c.read(["a", "b"], state: second)
        #expect(r3.status == 0, "\(r3.stderr)")
        #expect(third.records.isEmpty, "nothing new, nothing emitted")
    }

    @Test func handoffIsExactWithWritesDuringTheSnapshot() throws {
        let c = try CDCFixture("cdc_handoff", tables: "CREATE TABLE t (id int PRIMARY KEY, pad text)")
        let s = c.f.q(c.f.schema)
        try c.f.admin.query("INSERT INTO \(s).t SELECT g, repeat('p', 200) FROM generate_series(1, 100000) g")
        // A writer commits small transactions while the first read takes its snapshot and streams.
        let writer = UncheckedBox(try c.f.lab.adminConnection())
        let stop = Locked(false)
        let written = Locked<[Int64]>([])
        let thread = Thread {
            var next: Int64 = 1_000_000
            while !stop.value {
                if (try? writer.value.query("INSERT INTO \(s).t VALUES (\(next), 'w')")) != nil { written.mutate { $0.append(next) } }
                next += 1
                usleep(1000)
            }
        }
        thread.start()
        Thread.sleep(forTimeInterval: 0.2)
        let writtenBefore = written.value.count
        let (r1, first) = try c.read(["t"])
        let writtenDuring = written.value.count - writtenBefore
        stop.set(true)
        while thread.isExecuting { Thread.sleep(forTimeInterval: 0.01) }
        #expect(r1.status == 0, "\(r1.stderr)")
        let (r2, second) = try c.read(["t"], state: first)
        #expect(r2.status == 0, "\(r2.stderr)")
        let all = first.ids("t") + second.ids("t")
        let expected = Set(1...100_000).union(written.value)
        #expect(writtenDuring > 10, "the writer committed during the read (\(writtenDuring) rows)")
        #expect(Set(all) == expected, "no row lost")
        #expect(all.count == expected.count, "no row emitted twice (\(all.count - expected.count) duplicates)")
    }

    @Test func unchangedToastedValuesAreNeverNull() throws {
        let c = try CDCFixture("cdc_toast", tables: "CREATE TABLE full_id (id int PRIMARY KEY, v text, big text); CREATE TABLE key_id (id int PRIMARY KEY, v text, big text)")
        let s = c.f.q(c.f.schema)
        try c.f.admin.query("ALTER TABLE \(s).full_id REPLICA IDENTITY FULL; ALTER TABLE \(s).full_id ALTER big SET STORAGE EXTERNAL; ALTER TABLE \(s).key_id ALTER big SET STORAGE EXTERNAL")
        let (_, first) = try c.read(["full_id", "key_id"])
        let mb = "repeat(md5(random()::text), 32768)"
        try c.f.admin.query("INSERT INTO \(s).full_id VALUES (1, 'a', \(mb)); INSERT INTO \(s).key_id VALUES (1, 'a', \(mb))")
        let (_, second) = try c.read(["full_id", "key_id"], state: first)
        try c.f.admin.query("UPDATE \(s).full_id SET v = 'b'; UPDATE \(s).key_id SET v = 'b'")
        let (r3, third) = try c.read(["full_id", "key_id"], state: second)
        #expect(r3.status == 0, "\(r3.stderr)")
        let big = try c.f.admin.query("SELECT big FROM \(s).full_id").string(0, 0)
        #expect(big?.utf8.count == 1_048_576)
        let full = try #require(third.recordMessages.first { $0["record"]?["stream"] == "full_id" })
        #expect(full["record"]?["data"]?["v"] == "b")
        #expect(full["record"]?["data"]?["big"]?.stringValue == big, "filled from the old row (REPLICA IDENTITY FULL)")
        let key = try #require(third.recordMessages.first { $0["record"]?["stream"] == "key_id" })
        #expect(key["record"]?["data"]?["v"] == "b")
        #expect(key["record"]?["data"]?["big"] == nil, "left out, never null")
        #expect(key["record"]?["meta"]?["changes"] == [["field": "big", "change": "OMITTED", "reason": "SOURCE_UNCHANGED_TOAST"]])
    }

    @Test func aStaleStateFailsWithAnExplanationOrResyncs() throws {
        let c = try CDCFixture("cdc_stale", tables: "CREATE TABLE t (id int PRIMARY KEY)")
        let s = c.f.q(c.f.schema)
        let (_, first) = try c.read(["t"])
        try c.f.admin.query("INSERT INTO \(s).t VALUES (1)")
        let (_, second) = try c.read(["t"], state: first)
        try c.f.admin.query("INSERT INTO \(s).t VALUES (2)")
        _ = try c.read(["t"], state: second)  // confirms the second state's position to the slot
        let (r, _) = try c.read(["t"], state: first)
        #expect(r.status != 0)
        #expect(r.stderr.contains("behind the slot's confirmed position") && r.stderr.contains("invalid_cdc_cursor_position_behavior"), "\(r.stderr)")
        var cfg = c.config()
        cfg["replication_method"] = ["method": "CDC", "replication_slot": .string(c.slot), "publication": .string(c.publication), "invalid_cdc_cursor_position_behavior": "Re-sync data"]
        let (r2, resync) = try c.read(["t"], state: first, config: cfg)
        #expect(r2.status == 0, "\(r2.stderr)")
        #expect(Set(resync.ids("t")) == [1, 2] && resync.logs.contains { $0.contains("loading every stream again") })
    }

    @Test func killedReadsResumeWithNothingLost() throws {
        let c = try CDCFixture("cdc_kill", tables: "CREATE TABLE \"Wéird \"\"T\"\"\" (id int PRIMARY KEY, \"Some Col\" text)")
        let s = c.f.q(c.f.schema)
        let t = "Wéird \"T\""
        let (_, first) = try c.read([t])
        for k in 0..<40 { try c.f.admin.query("INSERT INTO \(s).\(c.f.q(t)) SELECT g, 'x' FROM generate_series(\(k * 100 + 1), \(k * 100 + 100)) g") }
        var cfg = c.config()
        cfg["batch_fetch_limit"] = 300
        var state = first
        var seen: [Int64] = []
        for killAfter in [2, 5] {
            let killed = try c.f.readKilled(config: cfg, catalog: c.catalog([t]), state: state.stdoutTranscript) { $0.states.count >= killAfter }
            seen += killed.ids(t)
            state = killed
        }
        let (r, rest) = try c.read([t], state: state, config: cfg)
        #expect(r.status == 0, "\(r.stderr)")
        seen += rest.ids(t)
        #expect(Set(seen) == Set(1...4000), "every change arrives across the kills")
        #expect(rest.recordMessages.first?["record"]?["data"]?["Some Col"] == "x")
    }
}

/// A value shared between a test and a helper thread.
final class Locked<T>: @unchecked Sendable {
    private var v: T
    private let lock = NSLock()
    init(_ v: T) { self.v = v }
    var value: T { lock.withLock { v } }
    func set(_ n: T) { lock.withLock { v = n } }
    func mutate(_ f: (inout T) -> Void) { lock.withLock { f(&v) } }
}

@Suite struct CDCSetupTests {
    @Test func aSlotCreatedHereStartsExactlyAtItsSnapshot() throws {
        let c = try CDCFixture("cdc_create", tables: "CREATE TABLE t (id int PRIMARY KEY, v text)")
        let s = c.f.q(c.f.schema)
        try c.f.admin.query("SELECT pg_drop_replication_slot('\(c.slot)')")
        try c.f.admin.query("INSERT INTO \(s).t SELECT g, 'a' FROM generate_series(1, 50) g")
        var cfg = c.config()
        cfg["replication_method"] = ["method": "CDC", "replication_slot": .string(c.slot), "publication": .string(c.publication), "create_slot": true]
        let (r1, first) = try c.read(["t"], config: cfg)
        #expect(r1.status == 0, "\(r1.stderr)")
        #expect(first.logs.contains { $0.contains("created replication slot") })
        #expect(Set(first.ids("t")) == Set(1...50) && first.ids("t").count == 50)
        #expect(first.globalState?["shared_state"]?["snapshot_filters"] == nil, "the exported snapshot needs no filter")
        try c.f.admin.query("INSERT INTO \(s).t VALUES (51, 'b')")
        let (_, second) = try c.read(["t"], state: first, config: cfg)
        #expect(second.ids("t") == [51])
    }

    /// A column added after discovery is typed by discovery's own lookup: a domain maps as its base
    /// type (an integer domain is a JSON number, an array of a numeric domain an array of numbers).
    @Test func columnsAddedMidStreamAreTypedAsDiscoveryTypesThem() throws {
        let c = try CDCFixture("cdc_domain", tables: "CREATE TABLE k (id int PRIMARY KEY)")
        let s = c.f.q(c.f.schema)
        let (r0, first) = try c.read(["k"])
        #expect(r0.status == 0)
        try c.f.admin.query("""
            CREATE DOMAIN \(s).posint AS int CHECK (VALUE > 0); CREATE DOMAIN \(s).amount AS numeric(10,2);
            ALTER TABLE \(s).k ADD COLUMN n \(s).posint, ADD COLUMN a \(s).amount[], ADD COLUMN t timestamptz;
            INSERT INTO \(s).k VALUES (1, 5, '{1.50,2}', '2024-01-02 03:04:05+00')
            """)
        let (r1, second) = try c.read(["k"], state: first)
        #expect(r1.status == 0, "\(r1.stderr)")
        let row = try #require(second.records.first)
        #expect(row["n"] == 5, "\(row)")
        #expect(row["a"] == [.number("1.50"), .number("2.00")], "\(row)")
        #expect(row["t"] == "2024-01-02T03:04:05.000000Z", "\(row)")
    }

    @Test func columnsAddedMidStreamAndTablesWithoutReplicaIdentity() throws {
        let c = try CDCFixture("cdc_shape", tables: "CREATE TABLE k (id int PRIMARY KEY, v text); CREATE TABLE nokey (v text)")
        let s = c.f.q(c.f.schema)
        let (r0, first) = try c.read(["k", "nokey"])
        #expect(r0.status == 0)
        #expect(first.logs.contains { $0.contains("no primary key and no replica identity") && $0.contains("REPLICA IDENTITY FULL") })
        try c.f.admin.query("INSERT INTO \(s).k VALUES (1, 'a'); ALTER TABLE \(s).k ADD COLUMN \"Added Col\" int; INSERT INTO \(s).k VALUES (2, 'b', 7)")
        let (_, second) = try c.read(["k", "nokey"], state: first)
        let rows = second.recordMessages.filter { $0["record"]?["stream"] == "k" }.compactMap { $0["record"]?["data"] }
        #expect(rows.count == 2 && rows[1]["Added Col"] == 7 && rows[0]["Added Col"] == nil)
        #expect(second.logs.contains { $0.contains(".k: column Added Col added") }, "\(second.logs)")
        // Each kind of change is reported as a LOG message, in order with the records.
        try c.f.admin.query("""
            ALTER TABLE \(s).k RENAME COLUMN v TO title; INSERT INTO \(s).k VALUES (3, 'c', 8);
            ALTER TABLE \(s).k ALTER COLUMN "Added Col" TYPE bigint; INSERT INTO \(s).k VALUES (4, 'd', 9);
            ALTER TABLE \(s).k DROP COLUMN "Added Col"; INSERT INTO \(s).k VALUES (5, 'e')
            """)
        let (_, renamed) = try c.read(["k", "nokey"], state: second)
        let said = renamed.logs.filter { $0.contains(".k: column ") }
        #expect(said.count == 3 && said[0].contains("column v renamed to title") && said[1].contains("column Added Col changed type")
                && said[2].contains("column Added Col dropped"), "\(renamed.logs)")
        let kept = renamed.recordMessages.filter { $0["record"]?["stream"] == "k" }.compactMap { $0["record"]?["data"] }
        #expect(kept.map { $0["title"]?.stringValue } == ["c", "d", "e"] && kept[2]["Added Col"] == nil, "\(kept)")
        // With the opt-in, the table gets REPLICA IDENTITY FULL (the user owns it here) and its updates flow.
        try c.f.admin.query("ALTER TABLE \(s).nokey OWNER TO postgate_repl")
        var cfg = c.config()
        cfg["replication_method"] = ["method": "CDC", "replication_slot": .string(c.slot), "publication": .string(c.publication), "set_replica_identity": true]
        let (_, third) = try c.read(["k", "nokey"], state: renamed, config: cfg)
        #expect(third.logs.contains { $0.hasPrefix("CDC: set REPLICA IDENTITY FULL") }, "\(third.logs)")
        try c.f.admin.query("INSERT INTO \(s).nokey VALUES ('x'); UPDATE \(s).nokey SET v = 'y'")
        let (_, fourth) = try c.read(["k", "nokey"], state: third, config: cfg)
        let vs = fourth.recordMessages.filter { $0["record"]?["stream"] == "nokey" }.compactMap { $0["record"]?["data"]?["v"]?.stringValue }
        #expect(vs == ["x", "y"])
    }
}
