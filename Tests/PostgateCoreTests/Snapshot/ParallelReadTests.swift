import Foundation
import Testing
@testable import PostgateCore

@Suite struct PageProgressTests {
    /// Ten thousand items finishing out of order on eight readers leave a state of a few ranges:
    /// whatever finished ahead of the lowest item still in flight.
    @Test func progressStaysCompactWhenItemsFinishOutOfOrder() throws {
        var p = PageProgress()
        var inFlight: [Range<UInt32>] = []
        var next: UInt32 = 0
        var largest = 0
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<10_000 {
            while inFlight.count < 8 {
                inFlight.append(next..<(next + 16))
                next += 16
            }
            p.add(inFlight.remove(at: Int.random(in: 0..<inFlight.count, using: &rng)))
            largest = max(largest, p.ranges.count)
        }
        #expect(largest <= 8, "at most one range per reader (\(largest))")
        let state = StreamState.load(StreamState.Load(progress: p, partitions: nil, relationFilenode: 1, incremental: nil, xminLowerBound: nil, snapshotXmin: nil))
        let text = state.json.jsonText
        #expect(text.utf8.count < 1024, "\(text.utf8.count) bytes: \(text)")
        for r in inFlight { p.add(r) }
        #expect(p.ranges.isEmpty && p.below == next)
        #expect(p.remaining() == [next..<PageProgress.end])
    }

    @Test func rangesMergeAndReportWhatIsLeft() {
        var p = PageProgress(below: 10)
        p.add(20..<30)
        p.add(40..<50)
        #expect(p.remaining() == [10..<20, 30..<40, 50..<PageProgress.end])
        p.add(30..<40)
        #expect(p.ranges == [20..<50])
        p.add(5..<20)
        #expect(p.below == 50 && p.ranges.isEmpty)
        p.add(50..<PageProgress.end)
        #expect(p.complete)
    }
}

@Suite struct ParallelReadTests {
    /// Several connections read one exported snapshot: rows a writer commits during the read are
    /// in none of the streams, and every row the snapshot holds is read exactly once, from a
    /// table with a key, one without, and a partitioned table planned leaf by leaf.
    @Test func everyConnectionReadsTheSameSnapshot() throws {
        let f = try Fixture("parallel")
        let s = f.q(f.schema)
        try f.sql("""
            CREATE TABLE \(s).big (id int PRIMARY KEY, pad text);
            INSERT INTO \(s).big SELECT g, repeat('x', 100) FROM generate_series(1, 30000) g;
            CREATE TABLE \(s).keyless (n int, pad text);
            INSERT INTO \(s).keyless SELECT g, repeat('k', 100) FROM generate_series(1, 12000) g;
            CREATE TABLE \(s).parted (id int, k int) PARTITION BY RANGE (k);
            CREATE TABLE \(s).p1 PARTITION OF \(s).parted FOR VALUES FROM (0) TO (1);
            CREATE TABLE \(s).p2 PARTITION OF \(s).parted FOR VALUES FROM (1) TO (2);
            CREATE TABLE \(s).p3 PARTITION OF \(s).parted FOR VALUES FROM (2) TO (3);
            INSERT INTO \(s).parted SELECT g, g % 3 FROM generate_series(1, 15000) g;
            ANALYZE \(s).big; ANALYZE \(s).keyless; ANALYZE \(s).parted;
            """)
        let writer = UncheckedBox(try f.lab.adminConnection())
        let stop = Locked(false)
        let wrote = Locked(0)
        let thread = Thread {
            var n = 1_000_000
            while !stop.value {
                n += 1
                let sql = "INSERT INTO \(s).big VALUES (\(n), 'w'); INSERT INTO \(s).keyless VALUES (\(n), 'w'); INSERT INTO \(s).parted VALUES (\(n), \(n % 3)); DELETE FROM \(s).big WHERE id = \(n - 1_000_000)"
                if (try? writer.value.query(sql)) != nil { wrote.mutate { $0 += 1 } }
                usleep(500)
            }
        }
        // Sessions of the connector seen during the read.
        let watcher = UncheckedBox(try f.lab.adminConnection())
        let sessions = Locked<Set<String>>([])
        let watch = Thread {
            while !stop.value {
                if let r = try? watcher.value.query("SELECT pid::text FROM pg_stat_activity WHERE application_name = 'postgate' AND state = 'active'") {
                    sessions.mutate { for i in 0..<r.rowCount { $0.insert(r.string(i, 0) ?? "") } }
                }
                usleep(1000)
            }
        }
        var cfg = f.config()
        cfg["batch_fetch_limit"] = 1000
        cfg["max_db_connections"] = 3
        thread.start()
        watch.start()
        Thread.sleep(forTimeInterval: 0.1)
        let (r, out) = try f.read(config: cfg, catalog: f.catalog([("big", "full_refresh", nil), ("keyless", "full_refresh", nil), ("parted", "full_refresh", nil)]))
        stop.set(true)
        while thread.isExecuting || watch.isExecuting { Thread.sleep(forTimeInterval: 0.01) }
        #expect(r.status == 0, "\(r.stderr)")
        #expect(wrote.value > 20, "the writer committed during the read (\(wrote.value))")
        func ids(_ stream: String, _ key: String) -> [Int64] {
            out.recordMessages.filter { $0["record"]?["stream"]?.stringValue == stream }.compactMap { $0["record"]?["data"]?[key]?.int64Value }
        }
        let big = ids("big", "id"), keyless = ids("keyless", "n"), parted = ids("parted", "id")
        // Each writer transaction n adds 1,000,000 + n to all three tables and deletes big's row n:
        // one snapshot shows the same first m transactions in all of them.
        let m = Int64(keyless.filter { $0 > 1_000_000 }.count)
        let seen = Set((1_000_001...1_000_000 + max(m, 1)).prefix(Int(m)))
        #expect(Set(big) == Set(m + 1...30000).union(seen) && big.count == 30000, "big: one snapshot's rows once each (\(big.count), m = \(m))")
        #expect(Set(keyless) == Set(1...12000).union(seen) && keyless.count == 12000 + Int(m), "a table without a key is read in page ranges too (\(keyless.count))")
        #expect(Set(parted) == Set(1...15000).union(seen) && parted.count == 15000 + Int(m), "parted (\(parted.count))")
        #expect(Int64(wrote.value) > m + 10, "the writer committed during the read, after the snapshot (\(wrote.value) commits, \(m) visible)")
        #expect(sessions.value.count >= 2, "several connections read (\(sessions.value.count))")

        let states = out.states.compactMap { $0["state"]?["stream"] }
        let partedStates = states.filter { $0["stream_descriptor"]?["name"] == "parted" }
        #expect(partedStates.contains { ($0["stream_state"]?["partitions"]?.arrayValue?.count ?? 0) == 3 }, "the partitioned table's progress is kept per leaf")
        #expect(states.filter { $0["stream_descriptor"]?["name"] == "keyless" }.count >= 3, "a state after each item")
    }

    /// A kill repeats at most the items that were in flight; the state stays small.
    @Test func aKilledParallelReadRepeatsOnlyTheItemsInFlight() throws {
        let f = try Fixture("parallel_kill")
        let s = f.q(f.schema)
        let total = 40_000
        try f.sql("CREATE TABLE \(s).big (id int PRIMARY KEY, pad text); INSERT INTO \(s).big SELECT g, repeat('x', 100) FROM generate_series(1, \(total)) g; ANALYZE \(s).big")
        var cfg = f.config()
        cfg["batch_fetch_limit"] = 1000
        cfg["max_db_connections"] = 2
        let cat = f.catalog([("big", "full_refresh", nil)])
        let itemRows = 1000 * 2  // an item is about batch_fetch_limit rows; allow twice that
        var state: ReadOutput?
        var kept: [Int64] = []
        for killAfter in [3, 7] {
            let killed = try f.readKilled(config: cfg, catalog: cat, state: state?.stdoutTranscript) { $0.states.count >= killAfter }
            let last = try #require(killed.lines.lastIndex { $0["type"] == "STATE" })
            let prefix = Array(killed.lines[...last])
            kept += prefix.filter { $0["type"] == "RECORD" }.compactMap { $0["record"]?["data"]?["id"]?.int64Value }
            let stateText = try #require(prefix.last?["state"]?["stream"]?["stream_state"]).jsonText
            #expect(stateText.utf8.count < 512, "\(stateText)")
            var out = ReadOutput(text: "")
            out.lines = prefix
            state = out
        }
        let (r, rest) = try f.read(config: cfg, catalog: cat, state: state?.stdoutTranscript)
        #expect(r.status == 0, "\(r.stderr)")
        let all = kept + rest.records.compactMap { $0["id"]?.int64Value }
        #expect(Set(all) == Set(1...Int64(total)), "nothing lost across two kills")
        #expect(all.count - total <= 2 * 2 * itemRows, "at most the items in flight at each kill are read again (\(all.count - total) rows)")
        #expect(rest.records.count < total - 5000, "the last run resumed")
    }
}
