import Foundation
import Testing
@testable import PostgateCore

/// `postgate read` against the lab.
@Suite struct ReadCommandTests {
    @Test func everyTypeOfTheMappingTable() throws {
        let f = try Fixture("types")
        try f.sql("""
            CREATE TYPE \(f.q(f.schema)).mood AS ENUM ('sad', 'happy');
            CREATE TYPE \(f.q(f.schema)).pair AS (a int, b text);
            CREATE TABLE \(f.q(f.schema)).t (
              id int PRIMARY KEY, i2 smallint, i8 bigint, bs bigserial, n numeric, n2 numeric(12,2), f4 real, f8 double precision,
              m money, b boolean, ch char(3), vc varchar(10), t text, by bytea, bi bit(4), vb varbit,
              d date, ts timestamp, tstz timestamptz, tm time, tmtz timetz, iv interval,
              j json, jb jsonb, u uuid, ip inet, cid cidr, mac macaddr, mac8 macaddr8,
              pt point, ln line, ls lseg, bx box, pa path, pg polygon, ci circle,
              lsn pg_lsn, tsv tsvector, tsq tsquery, x xml, mo \(f.q(f.schema)).mood, tr tsrange, comp \(f.q(f.schema)).pair,
              ia int[], ta text[], na numeric[], nested int[][], ea int[], da date[], ma money[]);
            INSERT INTO \(f.q(f.schema)).t VALUES (1, -32768, 9223372036854775807, 1, 123456789012345678901234567890.123456789, 12.50,
              1.5, 0.1, 1234.56, true, 'ab', 'v', E'line1\\nline2\\t"q"\\\\', '\\x00ff', B'0101', B'101',
              '2024-02-29', '2024-01-02 03:04:05.5', '2024-01-02 03:04:05.123456+02', '03:04:05', '03:04:05.25+05:30', '1 year 2 mons 3 days 04:05:06',
              '{"a": [1, "x"]}', '{"b": 2}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05',
              '(1,2)', '{1,2,3}', '[(0,0),(1,1)]', '((1,1),(0,0))', '[(0,0),(1,1)]', '((0,0),(1,1),(1,0))', '<(0,0),1>',
              '16/B374D848', 'a fat cat', 'fat & cat', '<a>1</a>', 'happy', '[2024-01-01,2024-02-01)', ROW(1, 'x'),
              '{1,NULL,3}', '{"a b","c\\"d",NULL,""}', '{1.5,NaN}', '{{1,2},{3,4}}', '{}', '{2024-01-01,NULL}', '{1.50}');
            INSERT INTO \(f.q(f.schema)).t (id, n, f4, f8, d, ts, tstz) VALUES (2, 'NaN', 'Infinity', '-Infinity', '0044-03-15 BC', '0044-03-15 12:00:00 BC', 'infinity');
            INSERT INTO \(f.q(f.schema)).t (id) VALUES (3);
            """)
        let (r, out) = try f.read(config: f.config(), catalog: f.catalog([("t", "full_refresh", nil)]))
        #expect(r.status == 0, "\(r.stderr)")
        let rows = Dictionary(uniqueKeysWithValues: out.records.map { ($0["id"]?.int64Value ?? -1, $0) })
        let a = try #require(rows[1])
        let expected: [String: JSONValue] = [
            "i2": .number("-32768"), "i8": .number("9223372036854775807"), "bs": 1,
            "n": .number("123456789012345678901234567890.123456789"), "n2": .number("12.50"),
            "f4": .number("1.5"), "f8": .number("0.1"), "m": .number("1234.56"), "b": true,
            "ch": "ab ", "vc": "v", "t": "line1\nline2\t\"q\"\\", "by": "\\x00ff", "bi": "0101", "vb": "101",
            "d": "2024-02-29", "ts": "2024-01-02T03:04:05.500000", "tstz": "2024-01-02T01:04:05.123456Z",
            "tm": "03:04:05.000000", "tmtz": "03:04:05.250000+05:30", "iv": "1 year 2 mons 3 days 04:05:06",
            "j": "{\"a\": [1, \"x\"]}", "jb": "{\"b\": 2}", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "ip": "192.168.0.1/24", "cid": "10.0.0.0/8", "mac": "08:00:2b:01:02:03", "mac8": "08:00:2b:01:02:03:04:05",
            "pt": "(1,2)", "ln": "{1,2,3}", "ls": "[(0,0),(1,1)]", "bx": "(1,1),(0,0)", "pa": "[(0,0),(1,1)]",
            "pg": "((0,0),(1,1),(1,0))", "ci": "<(0,0),1>", "lsn": "16/B374D848", "tsv": "'a' 'cat' 'fat'", "tsq": "'fat' & 'cat'",
            "x": "<a>1</a>", "mo": "happy", "tr": "[\"2024-01-01 00:00:00\",\"2024-02-01 00:00:00\")", "comp": "(1,x)",
            "ia": [1, nil, 3], "ta": ["a b", "c\"d", nil, ""], "na": [.number("1.5"), nil], "nested": [[1, 2], [3, 4]],
            "ea": [], "da": ["2024-01-01", nil], "ma": [.number("1.50")],
        ]
        for (k, v) in expected { #expect(a[k] == v, "column \(k): \(a[k].map { $0.jsonText } ?? "missing")") }
        let msgs = out.recordMessages
        let metaA = msgs.first { $0["record"]?["data"]?["id"] == 1 }?["record"]?["meta"]
        #expect(metaA?["changes"] == [["field": "na", "change": "NULLED", "reason": "SOURCE_SERIALIZATION_ERROR"]])

        let b = try #require(rows[2])
        #expect(b["n"] == .null && b["f4"] == .null && b["f8"] == .null)
        #expect(b["d"] == "0044-03-15 BC" && b["ts"] == "0044-03-15T12:00:00.000000 BC" && b["tstz"] == .null, "infinity has no date-time form")
        let metaB = msgs.first { $0["record"]?["data"]?["id"] == 2 }?["record"]?["meta"]?["changes"]?.arrayValue?.compactMap { $0["field"]?.stringValue }
        #expect(metaB == ["n", "f4", "f8", "tstz"])
        let c = try #require(rows[3])
        #expect(c["t"] == .null && c["ia"] == .null && c["b"] == .null, "NULLs stay null")
        #expect(c.objectValue?.keys.count == a.objectValue?.keys.count, "null columns are present")
    }

    @Test func weirdIdentifiers() throws {
        let f = try Fixture("Wé \"ird\" S")
        let t = "Tä \"b\"le"
        try f.sql("""
            CREATE TABLE \(f.q(f.schema)).\(f.q(t)) (\(f.q("Ïd \"x\"")) int PRIMARY KEY, \(f.q("Value With Space")) text, \(f.q("select")) int);
            INSERT INTO \(f.q(f.schema)).\(f.q(t)) SELECT g, 'v' || g, g FROM generate_series(1, 5) g;
            """)
        let (r, out) = try f.read(config: f.config(), catalog: f.catalog([(t, "incremental", "select")]))
        #expect(r.status == 0, "\(r.stderr)")
        #expect(out.records.count == 5)
        #expect(out.records.first?["Ïd \"x\""] == 1)
        #expect(out.recordMessages.first?["record"]?["namespace"] == .string(f.schema))
        #expect(out.recordMessages.first?["record"]?["stream"] == .string(t))
        #expect(out.streamState?["cursor"] == "5")
    }

    @Test func statusAndEstimateMessagesFrameEachStream() throws {
        let f = try Fixture("status")
        try f.sql("CREATE TABLE \(f.q(f.schema)).a (id int); INSERT INTO \(f.q(f.schema)).a SELECT generate_series(1, 100); ANALYZE \(f.q(f.schema)).a")
        let (r, out) = try f.read(config: f.config(), catalog: f.catalog([("a", "full_refresh", nil)]))
        #expect(r.status == 0)
        #expect(out.statuses == ["STARTED", "RUNNING", "COMPLETE"])
        let estimate = try #require(out.lines.first { $0["trace"]?["type"] == "ESTIMATE" })
        #expect(estimate["trace"]?["estimate"]?["row_estimate"] == 100)
        #expect((estimate["trace"]?["estimate"]?["byte_estimate"]?.int64Value ?? 0) > 0)
        #expect(out.lines.first?["trace"]?["stream_status"]?["status"] == "STARTED")
        #expect(out.lines.last?["trace"]?["stream_status"]?["status"] == "COMPLETE")
        #expect(out.streamState?["state_type"] == "full_refresh")
    }

    @Test func viewsMaterializedViewsAndPartitionedTables() throws {
        let f = try Fixture("kinds")
        let s = f.q(f.schema)
        try f.sql("""
            CREATE TABLE \(s).base (id int PRIMARY KEY, v text);
            INSERT INTO \(s).base SELECT g, 'v' || g FROM generate_series(1, 300) g;
            CREATE VIEW \(s).vw AS SELECT id, v FROM \(s).base WHERE id % 2 = 0;
            CREATE MATERIALIZED VIEW \(s).mv AS SELECT id FROM \(s).base WHERE id <= 50;
            CREATE TABLE \(s).parted (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
            CREATE TABLE \(s).p1 PARTITION OF \(s).parted FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
            CREATE TABLE \(s).p2 PARTITION OF \(s).parted FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
            INSERT INTO \(s).parted SELECT g, DATE '2025-06-01' + (g % 400) FROM generate_series(1, 2000) g;
            ANALYZE \(s).parted;
            """)
        var cfg = f.config()
        cfg["batch_fetch_limit"] = 100
        let (r, out) = try f.read(config: cfg, catalog: f.catalog([("vw", "full_refresh", nil), ("mv", "full_refresh", nil), ("parted", "full_refresh", nil)]))
        #expect(r.status == 0, "\(r.stderr)")
        let byStream = Dictionary(grouping: out.recordMessages, by: { $0["record"]?["stream"]?.stringValue ?? "" })
        #expect(byStream["vw"]?.count == 150)
        #expect(byStream["mv"]?.count == 50)
        let partedIds = Set(byStream["parted"]?.compactMap { $0["record"]?["data"]?["id"]?.int64Value } ?? [])
        #expect(partedIds.count == 2000 && byStream["parted"]?.count == 2000, "every partition row exactly once")
        let partedStates = out.states.filter { $0["state"]?["stream"]?["stream_descriptor"]?["name"] == "parted" }
        #expect(partedStates.count > 2, "the partitioned table is read in chunks")
    }

    @Test func fullRefreshResumesAfterKillAtSeveralPoints() throws {
        let f = try Fixture("resume")
        let s = f.q(f.schema)
        let total = 20_000
        try f.sql("CREATE TABLE \(s).big (id int PRIMARY KEY, pad text); INSERT INTO \(s).big SELECT g, repeat('x', 100) FROM generate_series(1, \(total)) g; ANALYZE \(s).big")
        var cfg = f.config()
        cfg["batch_fetch_limit"] = 1000
        let cat = f.catalog([("big", "full_refresh", nil)])
        let full = try f.read(config: cfg, catalog: cat).1
        let chunks = full.states.count
        #expect(chunks >= 10, "a 20k-row table read 1000 rows at a time has many checkpoints")
        let maxChunkRows = full.states.compactMap { $0["state"]?["sourceStats"]?["recordCount"]?.int64Value }.max() ?? 0

        for killAfterStates in [1, 4, 9] {
            let first = try f.readKilled(config: cfg, catalog: cat) { $0.states.count >= killAfterStates }
            let saved = try #require(first.lastState)
            #expect(saved["state"]?["stream"]?["stream_state"]?["state_type"] == "ctid")
            let (r2, second) = try f.read(config: cfg, catalog: cat, state: saved.stateFile)
            #expect(r2.status == 0)
            let ids = (first.records + second.records).compactMap { $0["id"]?.int64Value }
            #expect(Set(ids).count == total, "kill after \(killAfterStates) states: union of both runs is the table")
            #expect(Int64(ids.count - total) <= maxChunkRows, "at most one chunk is repeated")
            #expect(second.records.count < total, "the second run resumed rather than restarted")
        }
        // A kill mid-chunk (between checkpoints) also resumes from the last state it printed.
        let mid = try f.readKilled(config: cfg, catalog: cat) { $0.records.count >= 2500 && $0.states.count >= 1 }
        _ = try #require(mid.lastState, "the killed run printed a state")
        let second = try f.read(config: cfg, catalog: cat, state: mid.stdoutTranscript).1
        let ids = (mid.records + second.records).compactMap { $0["id"]?.int64Value }
        #expect(Set(ids).count == total)
        #expect(second.records.count < total, "the second run resumed from the mid-chunk kill rather than restarted")
    }

    @Test func aRewrittenTableRestartsItsLoad() throws {
        let f = try Fixture("rewrite")
        let s = f.q(f.schema)
        try f.sql("CREATE TABLE \(s).t (id int PRIMARY KEY, pad text); INSERT INTO \(s).t SELECT g, repeat('y', 200) FROM generate_series(1, 5000) g; ANALYZE \(s).t")
        var cfg = f.config()
        cfg["batch_fetch_limit"] = 500
        let cat = f.catalog([("t", "full_refresh", nil)])
        let first = try f.readKilled(config: cfg, catalog: cat) { $0.states.count >= 3 }
        let saved = try #require(first.lastState)
        try f.admin.query("DELETE FROM \(s).t WHERE id <= 2500")
        try f.admin.query("VACUUM FULL \(s).t")
        let (r, second) = try f.read(config: cfg, catalog: cat, state: saved.stateFile)
        #expect(r.status == 0)
        #expect(second.logs.contains { $0.contains("rewritten") && $0.contains("restarts") }, "\(second.logs)")
        #expect(r.stderr.contains("rewritten"))
        let ids = Set(second.records.compactMap { $0["id"]?.int64Value })
        #expect(ids == Set(2501...5000), "after the rewrite every remaining row is read again")
    }

    @Test func cursorIncrementalNeverLosesTiesAcrossACheckpoint() throws {
        let f = try Fixture("cursor")
        let s = f.q(f.schema)
        // 30 groups of 100 rows sharing a cursor value; checkpoints every 250 rows fall inside groups.
        try f.sql("CREATE TABLE \(s).ev (id int PRIMARY KEY, updated_at timestamptz); INSERT INTO \(s).ev SELECT g, timestamptz '2026-01-01 00:00:00+00' + ((g - 1) / 100) * interval '1 minute' FROM generate_series(1, 3000) g")
        try f.sql("INSERT INTO \(s).ev VALUES (0, NULL)")
        var cfg = f.config()
        cfg["batch_fetch_limit"] = 250
        let cat = f.catalog([("ev", "incremental", "updated_at")])
        // Initial load (chunked), then a state at the maximum cursor value.
        let (r0, initial) = try f.read(config: cfg, catalog: cat)
        #expect(r0.status == 0, "\(r0.stderr)")
        #expect(Set(initial.records.compactMap { $0["id"]?.int64Value }) == Set(0...3000), "the initial load includes the NULL-cursor row")
        #expect(initial.streamState?["state_type"] == "cursor_based")
        #expect(initial.streamState?["cursor"] == "2026-01-01 00:29:00+00")
        #expect(initial.streamState?["cursor_record_count"] == 100)

        // New rows: some tie with the saved maximum, more come after it, in groups again.
        try f.admin.query("INSERT INTO \(s).ev SELECT g, timestamptz '2026-01-01 00:29:00+00' + ((g - 3001) / 100) * interval '1 minute' FROM generate_series(3001, 4000) g")
        try f.admin.query("INSERT INTO \(s).ev VALUES (5000, NULL)")
        let first = try f.readKilled(config: cfg, catalog: cat, state: try #require(initial.lastState).stateFile) { $0.states.count >= 2 }
        let mid = try #require(first.streamState)
        #expect(mid["state_type"] == "cursor_based")
        let (r2, second) = try f.read(config: cfg, catalog: cat, state: try #require(first.lastState).stateFile)
        #expect(r2.status == 0)
        let got = Set((first.records + second.records).compactMap { $0["id"]?.int64Value })
        #expect(got.isSuperset(of: Set(3001...4000)), "no new row is lost across the kill, including ties at the checkpoint")
        #expect(!got.contains(5000), "rows with a NULL cursor are not seen by incremental syncs (documented)")
        // A further sync with nothing new emits nothing and keeps the position.
        let (_, third) = try f.read(config: cfg, catalog: cat, state: try #require(second.lastState).stateFile)
        #expect(third.records.isEmpty)
        #expect(third.streamState?["cursor"] == second.streamState?["cursor"])
    }

    @Test func cursorIncrementalOnAViewReadsInCursorOrder() throws {
        let f = try Fixture("cview")
        let s = f.q(f.schema)
        try f.sql("CREATE TABLE \(s).b (id int, n int); INSERT INTO \(s).b SELECT g, g % 7 FROM generate_series(1, 70) g; CREATE VIEW \(s).v AS SELECT * FROM \(s).b")
        let cat = f.catalog([("v", "incremental", "n")])
        let (r, first) = try f.read(config: f.config(), catalog: cat)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(first.records.count == 70)
        #expect(first.streamState?["cursor"] == "6" && first.streamState?["cursor_record_count"] == 10)
        try f.admin.query("INSERT INTO \(s).b VALUES (100, 6), (101, 9)")
        let (_, second) = try f.read(config: f.config(), catalog: cat, state: try #require(first.lastState).stateFile)
        let got = Set(second.records.compactMap { $0["id"]?.int64Value }); #expect(got.isSuperset(of: [100, 101]))
        #expect(second.streamState?["cursor"] == "9")
    }

    @Test func xminIncrementalAndWraparoundResync() throws {
        let f = try Fixture("xmin")
        let s = f.q(f.schema)
        try f.sql("CREATE TABLE \(s).t (id int PRIMARY KEY, v int); INSERT INTO \(s).t SELECT g, 0 FROM generate_series(1, 1000) g")
        var cfg = f.config()
        cfg["replication_method"] = ["method": "Xmin"]
        let cat = f.catalog([("t", "incremental", nil)])
        let (r, first) = try f.read(config: cfg, catalog: cat)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(first.records.count == 1000)
        let st = try #require(first.streamState)
        #expect(st["state_type"] == "xmin")
        try f.admin.query("UPDATE \(s).t SET v = 1 WHERE id <= 10")
        try f.admin.query("INSERT INTO \(s).t VALUES (2000, 2)")
        let (_, second) = try f.read(config: cfg, catalog: cat, state: try #require(first.lastState).stateFile)
        let ids = Set(second.records.compactMap { $0["id"]?.int64Value })
        #expect(ids.isSuperset(of: Set(1...10).union([2000])), "changed rows are read")
        // Exactly the rows whose xmin is not older than the saved snapshot xmin are read again (other
        // tests' open transactions can hold that xmin back, so the count is computed, not assumed).
        let savedXid = st["xmin_xid_value"]?.int64Value ?? 0
        let expected = try f.admin.query("SELECT count(*) FROM \(s).t WHERE xmin::text::int8 >= \(savedXid)").string(0, 0).flatMap { Int($0) }
        #expect(ids.count == expected, "unchanged rows older than the saved xmin are not read again")
        #expect((second.streamState?["xmin_raw_value"]?.int64Value ?? 0) >= (st["xmin_raw_value"]?.int64Value ?? 0))

        // The saved state comes from another xid epoch: the counter wrapped, so the stream is read in full.
        let epoch = (st["num_wraparound"]?.int64Value ?? 0) + 1
        let wrapped: JSONValue = [
            "type": "STREAM",
            "stream": ["stream_descriptor": ["name": "t", "namespace": .string(f.schema)],
                       "stream_state": ["state_type": "xmin", "version": 2, "xmin_xid_value": 100, "num_wraparound": .number(String(epoch)),
                                        "xmin_raw_value": .number(String(epoch << 32 | 100))]],
        ]
        let (r3, third) = try f.read(config: cfg, catalog: cat, state: JSONValue.array([wrapped]).jsonText)
        #expect(r3.status == 0)
        #expect(third.records.count == 1001)
        #expect(third.logs.contains { $0.contains("wrapped around") }, "\(third.logs)")
    }

    @Test func badCatalogAndStateAreClearErrors() throws {
        let f = try Fixture("bad")
        try f.sql("CREATE TABLE \(f.q(f.schema)).t (id int)")
        let badCat: JSONValue = ["streams": [["stream": ["name": "t", "namespace": .string(f.schema), "json_schema": ["properties": ["nope": ["type": "string"]]]], "sync_mode": "full_refresh"]]]
        let (r1, _) = try f.read(config: f.config(), catalog: badCat)
        #expect(r1.status != 0)
        #expect(r1.stderr.contains("column \"nope\""), "\(r1.stderr)")
        let (r2, _) = try f.read(config: f.config(), catalog: f.catalog([("missing", "full_refresh", nil)]))
        #expect(r2.status != 0 && r2.stderr.contains("missing"))
        // Incremental without a cursor (as PyAirbyte configures every stream) is read in full, with a warning.
        let (r3, out3) = try f.read(config: f.config(), catalog: f.catalog([("t", "incremental", nil)]))
        #expect(r3.status == 0 && r3.stderr.contains("cursor_field") && out3.logs.contains { $0.contains("read in full") }, "\(r3.stderr)")
        let (r4, out4) = try f.read(config: f.config(), catalog: f.catalog([("t", "full_refresh", nil)]), state: "[{\"type\": \"STREAM\",")
        #expect(r4.status != 0 && r4.stderr.contains("byte offset"), "\(r4.stderr)")
        #expect(out4.lines.first?["type"] == "TRACE")
        let (r5, _) = try f.read(config: f.config(), catalog: .object(["streams": [["stream": ["name": "t", "namespace": 7], "sync_mode": "full_refresh"]]]))
        #expect(r5.status != 0 && r5.stderr.contains("streams[0].stream.namespace"), "\(r5.stderr)")
        let (r6, _) = try f.read(config: f.config(), catalog: .object(["streams": [["stream": ["name": "t"]]]]))
        #expect(r6.status != 0 && r6.stderr.contains("streams[0].sync_mode"), "\(r6.stderr)")
    }
}

extension ReadOutput {
    /// The run's output as a state file in JSON-lines form (read --state takes a transcript).
    var stdoutTranscript: String { lines.map(\.jsonText).joined(separator: "\n") }
}
