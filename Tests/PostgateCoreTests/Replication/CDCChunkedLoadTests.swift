import Foundation
import Testing
@testable import PostgateCore

/// The lines of a run a consumer keeps: everything up to its last STATE (what follows it is
/// read again by the next run).
private func committed(_ out: ReadOutput) -> [JSONValue] {
    guard let last = out.lines.lastIndex(where: { $0["type"] == "STATE" }) else { return [] }
    return Array(out.lines[...last])
}

/// Watches this connector's source sessions: the longest transaction seen and the xmin
/// horizons they held, so a test can show no transaction spans the whole initial load.
private final class SessionWatch: @unchecked Sendable {
    private let conn: PGConnection
    private let loop = BackgroundLoop()
    let longest = Locked<Double>(0)
    let horizons = Locked<[UInt64]>([])

    /// Only sessions whose current or last statement names `schema` count: other tests run
    /// their own connector sessions at the same time.
    private let schema: String

    init(_ lab: Lab, schema: String) throws {
        conn = try lab.adminConnection()
        self.schema = schema
    }

    func start() {
        loop.start { [self] in
                guard let r = try? conn.query("""
                    SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0)::text AS age,
                           coalesce(string_agg(backend_xmin::text, ','), '') AS xmins
                    FROM pg_stat_activity
                    WHERE application_name = 'postgate' AND backend_type = 'client backend' AND xact_start IS NOT NULL
                      AND strpos(query, $1) > 0
                    """, [schema]) else { return }
                let age = Double(r.string(0, "age") ?? "0") ?? 0
                longest.mutate { $0 = max($0, age) }
                let xmins = (r.string(0, "xmins") ?? "").split(separator: ",").compactMap { UInt64($0) }
                if let x = xmins.min() { horizons.mutate { if $0.last != x { $0.append(x) } } }
                usleep(2000)
        }
    }

    func finish() { loop.finish() }
}

/// A writer committing small transactions of every kind to the fixture's tables until stopped.
private final class Writer: @unchecked Sendable {
    let touched = Locked<Set<Int64>>([])
    let commits = Locked(0)
    private let loop = BackgroundLoop()
    private let conn: PGConnection
    private let schema: String
    private let rows: Int64

    init(_ lab: Lab, schema: String, rows: Int64) throws {
        conn = try lab.adminConnection()
        self.schema = schema
        self.rows = rows
    }

    func start() {
        var nextKeyless: Int64 = 1_000_000
        var moved: Set<Int64> = []
        loop.start { [self] in
                let r = Int64.random(in: 1...rows)
                let r2 = Int64.random(in: 1...rows), r3 = Int64.random(in: 1...rows)
                let sql: String
                var keys = [r]
                switch Int.random(in: 0..<10) {
                case 0: sql = "UPDATE \(schema).t SET v = v + 1 WHERE id = \(r)"
                // A wider row no longer fits its page: the update moves it to another ctid range.
                case 1: sql = "UPDATE \(schema).t SET v = v + 1, pad = repeat('m', 1500) WHERE id = \(r)"
                // A key change (each key moves at most once: new keys are above 10,000,000).
                case 2:
                    moved.insert(r)
                    sql = "UPDATE \(schema).t SET id = id + 10000000 WHERE id = \(r)"
                case 3: sql = "DELETE FROM \(schema).t WHERE id = \(r)"
                case 4:
                    // Deleted keys come back, but not keys that moved (the records of a move do
                    // not say which key it left, so the model could not place them).
                    let k = Int64.random(in: 1...(rows + rows / 4))
                    if moved.contains(k) { return }
                    keys = [k]
                    sql = "INSERT INTO \(schema).t VALUES (\(k), 7, 'i') ON CONFLICT DO NOTHING"
                case 5:
                    keys = [r, r2, r3]
                    sql = "BEGIN; UPDATE \(schema).t SET v = v + 1 WHERE id IN (\(r), \(r2), \(r3)); INSERT INTO \(schema).other (n) VALUES (1); COMMIT"
                case 6:
                    keys = []
                    nextKeyless += 1
                    sql = "INSERT INTO \(schema).keyless VALUES (\(nextKeyless), 'w')"
                case 7:
                    keys = []
                    sql = "UPDATE \(schema).keyless SET v = 'u' WHERE n = \(Int64.random(in: 1...500))"
                case 8:
                    keys = []
                    sql = "DELETE FROM \(schema).keyless WHERE n = \(Int64.random(in: 1...500))"
                default:
                    keys = []
                    sql = "INSERT INTO \(schema).other (n) VALUES (2)"
                }
                // A key changed away is touched too (its new key is the old one plus 10,000,000).
                touched.mutate { t in for k in keys { t.insert(k); t.insert(k + 10_000_000) } }
                if (try? conn.query(sql)) != nil { commits.mutate { $0 += 1 } } else { _ = try? conn.query("ROLLBACK") }
                usleep(300)
        }
    }

    func finish() { loop.finish() }
}

/// Runs one step over and over on a thread of its own until `finish()`.
private final class BackgroundLoop: @unchecked Sendable {
    private let stop = Locked(false)
    private var thread: Thread?

    func start(_ step: @escaping () -> Void) {
        let body = UncheckedBox(step)
        let t = Thread { [self] in while !stop.value { body.value() } }
        thread = t
        t.start()
    }

    func finish() {
        stop.set(true)
        while thread?.isExecuting == true { Thread.sleep(forTimeInterval: 0.01) }
    }
}

/// Rows as a destination holds them after applying the records in order: by key, with a
/// record of a moved key (above 10,000,000) replacing the key it moved from.
private struct Model {
    var t: [Int64: Int64] = [:]
    var keyless: [Int64: String] = [:]
    var other: Set<Int64> = []
    /// Records per key of `t` (snapshot rows and changes).
    var counts: [Int64: Int] = [:]

    mutating func apply(_ lines: [JSONValue]) {
        for l in lines where l["type"] == "RECORD" {
            guard let stream = l["record"]?["stream"]?.stringValue, let d = l["record"]?["data"] else { continue }
            let deleted = d["_ab_cdc_deleted_at"] != nil && d["_ab_cdc_deleted_at"] != .null
            switch stream {
            case "t":
                guard let id = d["id"]?.int64Value else { continue }
                counts[id, default: 0] += 1
                if deleted { t[id] = nil; continue }
                if id > 10_000_000 { t[id - 10_000_000] = nil }
                t[id] = d["v"]?.int64Value ?? -1
            case "keyless":
                guard let n = d["n"]?.int64Value else { continue }
                keyless[n] = deleted ? nil : (d["v"]?.stringValue ?? "?")
            case "other":
                guard let id = d["id"]?.int64Value else { continue }
                if deleted { other.remove(id) } else { other.insert(id) }
            default: break
            }
        }
    }
}

@Suite(.serialized) struct CDCChunkedLoadTests {
    /// The initial load runs in key-range chunks while a writer commits every kind of change,
    /// killed twice: after the last run the records, applied in order, equal the source; a row
    /// the writer never touched arrives exactly once; other streams stream during the load; and
    /// no transaction of the connector spans the load (the xmin horizon moves on).
    @Test(arguments: [false, true]) func chunkedInitialLoadUnderAWriterIsExactlyOnce(createSlot: Bool) throws {
        let c = try CDCFixture("cdc_chunks", tables: """
            CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL, pad text);
            CREATE TABLE other (id serial PRIMARY KEY, n int);
            CREATE TABLE keyless (n bigint, v text);
            ALTER TABLE keyless REPLICA IDENTITY FULL;
            """)
        let s = c.f.q(c.f.schema)
        let rows: Int64 = 30_000
        try c.f.admin.query("INSERT INTO \(s).t SELECT g, 0, repeat('p', 100) FROM generate_series(1, \(rows)) g; INSERT INTO \(s).keyless SELECT g, 'k' FROM generate_series(1, 500) g")
        var cfg = c.config(["batch_fetch_limit": 1000, "max_db_connections": 2])
        if createSlot {
            try c.f.admin.query("SELECT pg_drop_replication_slot('\(c.slot)')")
            cfg["replication_method"] = ["method": "CDC", "replication_slot": .string(c.slot), "publication": .string(c.publication),
                                         "create_slot": true, "initial_waiting_seconds": 20]
        }
        let streams = ["t", "other", "keyless"]
        let writer = try Writer(c.f.lab, schema: s, rows: rows)
        let watch = try SessionWatch(c.f.lab, schema: c.f.schema)
        writer.start()
        watch.start()
        let began = Date()
        var model = Model()
        var runs: [ReadOutput] = []
        var state: ReadOutput?
        for killAfter in [4, 6] {
            let killed = try c.f.readKilled(config: cfg, catalog: c.catalog(streams), state: state?.stdoutTranscript) { $0.states.count >= killAfter }
            try #require(!killed.states.isEmpty, "the run got to a state before it was killed")
            let kept = ReadOutput(text: committed(killed).map(\.jsonText).joined(separator: "\n"))
            model.apply(kept.lines)
            runs.append(kept)
            state = kept
        }
        let (r1, rest) = try c.read(streams, state: state, config: cfg)
        let loadSeconds = Date().timeIntervalSince(began)
        watch.finish()
        writer.finish()
        #expect(r1.status == 0, "\(r1.stderr)")
        model.apply(rest.lines)
        runs.append(rest)
        let (r2, tail) = try c.read(streams, state: rest, config: cfg)
        #expect(r2.status == 0, "\(r2.stderr)")
        model.apply(tail.lines)

        #expect(writer.commits.value > 100, "the writer committed during the load (\(writer.commits.value))")
        var source: [Int64: Int64] = [:]
        let t = try c.f.admin.query("SELECT id::text, v::text FROM \(s).t")
        for i in 0..<t.rowCount { source[Int64(t.string(i, 0)!)!] = Int64(t.string(i, 1)!)! }
        let missing = source.filter { model.t[$0.key] != $0.value }
        let extra = model.t.keys.filter { source[$0] == nil }
        let sample = missing.keys.sorted().prefix(5).map { "\($0): source \(source[$0]!), records \(model.t[$0].map(String.init) ?? "none") (\(model.counts[$0] ?? 0) records)" }
        #expect(missing.isEmpty && extra.isEmpty, "the records applied in order equal the source: \(missing.count) rows missing or stale (\(sample)), \(extra.count) extra (\(extra.sorted().prefix(5)))")
        let untouched = writer.touched.value
        let twice = (1...rows).filter { !untouched.contains($0) && model.counts[$0] != 1 }
        #expect(twice.isEmpty, "a row the writer never touched arrives exactly once (\(twice.count) did not, e.g. \(twice.prefix(5)))")
        var keyless: [Int64: String] = [:]
        let k = try c.f.admin.query("SELECT n::text, v FROM \(s).keyless")
        for i in 0..<k.rowCount { keyless[Int64(k.string(i, 0)!)!] = k.string(i, 1)! }
        #expect(model.keyless == keyless, "the keyless table (REPLICA IDENTITY FULL) converges through its whole-snapshot handoff")
        let others = try c.f.admin.query("SELECT count(*)::text FROM \(s).other").string(0, 0).flatMap { Int($0) } ?? -1
        #expect(model.other.count == others)

        // Other streams stream while the load is in progress: a change of `other` comes before a
        // state that still has `t` loading.
        let lines = runs.flatMap(\.lines)
        let loadingStates = lines.indices.filter { i in
            lines[i]["state"]?["global"]?["stream_states"]?.arrayValue?.contains { $0["stream_state"]?["status"] == "snapshot_in_progress" } == true
        }
        let firstOther = lines.firstIndex { $0["record"]?["stream"] == "other" }
        #expect(firstOther != nil && loadingStates.contains { $0 > firstOther! }, "changes of other streams go out during the initial load")

        // Chunks follow the key's order (not the order of its text: 10000 sorts before 9999 as text).
        let through = lines.compactMap { l -> Int64? in
            l["state"]?["global"]?["stream_states"]?.arrayValue?.first { $0["stream_descriptor"]?["name"] == "t" }?["stream_state"]?["loaded_through"]?.arrayValue?.first?.stringValue.flatMap { Int64($0) }
        }
        #expect(through.count >= 5 && zip(through, through.dropFirst()).allSatisfy { $0 <= $1 }, "the load moves forward in key order: \(through)")
        #expect(through.contains { $0 > 10_000 }, "\(through)")
        // The first round reads about batch_fetch_limit keys per connection (2 × 1,000 here, a few
        // more where the writer deleted keys); chunks cut in text order made it 11,000 and more.
        #expect((through.first ?? .max) <= 2_200, "the first chunks hold batch_fetch_limit keys each: \(through.prefix(3))")

        let longest = watch.longest.value
        let horizons = watch.horizons.value
        #expect(longest < loadSeconds / 4, "no transaction spans the load: the longest took \(longest) s of \(loadSeconds) s")
        #expect(horizons.count >= 3 && horizons.last! > horizons.first!, "the xmin horizon of the connector's sessions moves on during the load: \(horizons)")
    }

    /// Past `initial_load_timeout_hours` the run stops loading, reads the changes so far, and
    /// exits non-zero with a resumable state; the next run finishes the load, every row once.
    @Test func theInitialLoadStopsAtItsTimeoutAndResumes() throws {
        let c = try CDCFixture("cdc_timeout", tables: "CREATE TABLE t (id int PRIMARY KEY, pad text); CREATE TABLE other (id int PRIMARY KEY)")
        let s = c.f.q(c.f.schema)
        try c.f.admin.query("INSERT INTO \(s).t SELECT g, repeat('p', 100) FROM generate_series(1, 40000) g")
        // The slot starts after the rows, so the load's first watermark is not behind their insert.
        try c.f.admin.query("SELECT pg_drop_replication_slot('\(c.slot)'); SELECT pg_create_logical_replication_slot('\(c.slot)', 'pgoutput')")
        let base: JSONObject = ["batch_fetch_limit": 200, "max_db_connections": 1]
        var cfg = c.config(base)
        cfg["replication_method"] = ["method": "CDC", "replication_slot": .string(c.slot), "publication": .string(c.publication),
                                     "initial_waiting_seconds": 20, "initial_load_timeout_hours": .number("0.00005")]
        try c.f.admin.query("INSERT INTO \(s).other VALUES (1)")
        let t0 = Date()
        let (r1, first) = try c.read(["t", "other"], config: cfg)
        let firstSeconds = Date().timeIntervalSince(t0)
        #expect(firstSeconds < 10, "the run ends soon after the timeout (\(firstSeconds) s)")
        #expect(r1.status != 0, "an unfinished load is not a success")
        #expect(r1.stderr.contains("initial_load_timeout_hours") && r1.stderr.contains("Run again"), "\(r1.stderr)")
        let loaded = first.ids("t")
        #expect(!loaded.isEmpty && loaded.count < 40_000, "the load stopped part way (\(loaded.count) rows)")
        #expect(first.ids("other") == [1], "a small table's load is not held up behind a large one")
        #expect(first.statuses.contains("INCOMPLETE"))
        let ts = first.globalState?["stream_states"]?.arrayValue?.first { $0["stream_descriptor"]?["name"] == "t" }
        #expect(ts?["stream_state"]?["status"] == "snapshot_in_progress" && ts?["stream_state"]?["loaded_through"] != nil)
        let trace = first.lines.first { $0["trace"]?["type"] == "ERROR" }
        #expect(trace?["trace"]?["error"]?["failure_type"] == "transient_error")

        try c.f.admin.query("INSERT INTO \(s).other VALUES (2)")
        let (r2, second) = try c.read(["t", "other"], state: first, config: c.config(base))
        #expect(r2.status == 0, "\(r2.stderr)")
        let all = loaded + second.ids("t")
        #expect(Set(all) == Set(1...40_000) && all.count == 40_000, "every row once across the two runs (\(all.count))")
        #expect(second.ids("other") == [2])
    }

    /// Runs whose initial load times out at once still bring every stream forward: each stream
    /// still loading gets a chunk per run, so the ones after the first are not starved for ever.
    @Test func runsThatTimeOutAtOnceStillLoadEveryStream() throws {
        let c = try CDCFixture("cdc_starve", tables: "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY); CREATE TABLE d (id int PRIMARY KEY)")
        let s = c.f.q(c.f.schema)
        try c.f.admin.query("INSERT INTO \(s).a SELECT generate_series(1, 500); INSERT INTO \(s).b SELECT generate_series(1, 500); INSERT INTO \(s).d SELECT generate_series(1, 500)")
        try c.f.admin.query("SELECT pg_drop_replication_slot('\(c.slot)'); SELECT pg_create_logical_replication_slot('\(c.slot)', 'pgoutput')")
        var cfg = c.config(["batch_fetch_limit": 200, "max_db_connections": 1])
        cfg["replication_method"] = ["method": "CDC", "replication_slot": .string(c.slot), "publication": .string(c.publication),
                                     "initial_waiting_seconds": 20, "initial_load_timeout_hours": .number("0.0000001")]
        var state: ReadOutput?
        var seen: [String: [Int64]] = ["a": [], "b": [], "d": []]
        for run in 1...3 {
            let (r, out) = try c.read(["a", "b", "d"], state: state, config: cfg)
            for t in ["a", "b", "d"] {
                let got = out.ids(t)
                #expect(got.count == 200 || (run == 3 && got.count == 100), "run \(run): \(t) loads one chunk (\(got.count) rows)")
                seen[t, default: []] += got
            }
            if run < 3 {
                #expect(r.status != 0 && r.stderr.contains("initial_load_timeout_hours"), "run \(run) stops at the timeout: \(r.stderr)")
            } else {
                #expect(r.status == 0, "the last run finishes the loads: \(r.stderr)")
            }
            state = out
        }
        for t in ["a", "b", "d"] {
            #expect(Set(seen[t]!) == Set(1...500) && seen[t]!.count == 500, "\(t): every row once across the runs (\(seen[t]!.count))")
        }
    }

    /// A stream taken out of the catalog mid-load and added back is loaded again from the start:
    /// the changes made while it was out were never read, so resuming it would keep stale rows.
    @Test func aStreamDeselectedMidLoadIsLoadedAgainWhenAddedBack() throws {
        let c = try CDCFixture("cdc_desel", tables: "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY, v text)")
        let s = c.f.q(c.f.schema)
        try c.f.admin.query("INSERT INTO \(s).b SELECT g, 'old' FROM generate_series(1, 20000) g")
        try c.f.admin.query("SELECT pg_drop_replication_slot('\(c.slot)'); SELECT pg_create_logical_replication_slot('\(c.slot)', 'pgoutput')")
        var cfg = c.config(["batch_fetch_limit": 200, "max_db_connections": 1])
        cfg["replication_method"] = ["method": "CDC", "replication_slot": .string(c.slot), "publication": .string(c.publication),
                                     "initial_waiting_seconds": 20, "initial_load_timeout_hours": .number("0.0000001")]
        let (_, first) = try c.read(["a", "b"], config: cfg)
        let loaded = first.ids("b")
        // The timeout is over before any chunk, yet b (second in line, after the empty a) gets its one chunk.
        try #require(loaded.count == 200, "b's load stopped part way, after one chunk (\(loaded.count))")
        let (r2, second) = try c.read(["a"], state: first, config: c.config())
        #expect(r2.status == 0, "\(r2.stderr)")
        #expect(second.globalState?["stream_states"]?.arrayValue?.contains { $0["stream_descriptor"]?["name"] == "b" } != true, "b's progress is dropped with it")
        try c.f.admin.query("UPDATE \(s).b SET v = 'new' WHERE id = \(loaded.min()!)")
        let (r3, third) = try c.read(["a", "b"], state: second, config: c.config())
        #expect(r3.status == 0, "\(r3.stderr)")
        let rows = third.recordMessages.filter { $0["record"]?["stream"] == "b" }.compactMap { $0["record"]?["data"] }
        #expect(rows.count == 20000, "b is loaded again in full (\(rows.count))")
        #expect(rows.first { $0["id"]?.int64Value == loaded.min()! }?["v"] == "new", "a row changed while b was out arrives as it is now")
    }

    /// A stream added to the catalog later is loaded in chunks; the others keep their positions.
    @Test func aStreamAddedLaterIsLoadedWithoutResettingTheOthers() throws {
        let c = try CDCFixture("cdc_added", tables: "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id bigint PRIMARY KEY, u uuid UNIQUE)")
        let s = c.f.q(c.f.schema)
        try c.f.admin.query("INSERT INTO \(s).a SELECT generate_series(1, 100); INSERT INTO \(s).b SELECT g, gen_random_uuid() FROM generate_series(1, 5000) g")
        let cfg = c.config(["batch_fetch_limit": 700])
        let (_, first) = try c.read(["a"], config: cfg)
        #expect(Set(first.ids("a")) == Set(1...100))
        try c.f.admin.query("INSERT INTO \(s).a VALUES (101); INSERT INTO \(s).b VALUES (5001, gen_random_uuid())")
        let (r, second) = try c.read(["a", "b"], state: first, config: cfg)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(second.ids("a") == [101], "a is not loaded again")
        let b = second.ids("b")
        #expect(Set(b) == Set(1...5001) && b.count == 5001, "b is loaded once, its change included (\(b.count))")
        #expect(second.logs.contains { $0.contains("initial load of") && $0.contains(".b complete") })
        #expect(second.states.count >= 4, "a state after each round of chunks of b (\(second.states.count))")
    }
}
