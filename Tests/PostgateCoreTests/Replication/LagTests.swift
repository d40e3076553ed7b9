import Foundation
import GRDB
import Testing
@testable import PostgateCore

@Suite struct LagMeterTests {
    @Test func lagIsZeroWhenCaughtUpAndCountsFromTheLastCommitWhenBehind() {
        var m = LagMeter()
        m.server(LSN(1000))
        m.applied(LSN(400), commitUnix: 100)
        let behind = m.lag(now: 103.5, retained: 4096)
        #expect(behind.bytes == 600 && behind.seconds == 3.5 && behind.retainedBytes == 4096)
        #expect(behind.line.contains("600 B and 3.5 s behind") && behind.line.contains("retains 4.0 KiB of WAL"))
        m.caughtUp(LSN(1000))
        #expect(m.lag(now: 200, retained: nil) == CDCLag(bytes: 0, seconds: 0, retainedBytes: nil, applied: LSN(1000), serverEnd: LSN(1000)))
        // Positions never move back.
        m.server(LSN(10))
        m.applied(LSN(20), commitUnix: 300)
        #expect(m.lag(now: 301, retained: nil).bytes == 0)
        let trace = m.lag(now: 301, retained: 7).trace
        #expect(trace["trace"]?["type"] == "ANALYTICS" && trace["trace"]?["analytics"]?["type"] == "cdc_lag")
        let value = try? JSONParser.parse(Array((trace["trace"]?["analytics"]?["value"]?.stringValue ?? "").utf8))
        #expect(value?["slot_retained_bytes"] == 7 && value?["lag_bytes"] == 0)
    }

    /// The server's WAL end comes from samples of it, not from the stream's record positions, and
    /// the seconds count from when that end passed the applied position.
    @Test func lagCountsFromWhenTheServerPassedTheAppliedPosition() {
        var m = LagMeter()
        m.caughtUp(LSN(1000))
        m.sample(LSN(1000), at: 10)
        m.sample(LSN(1000), at: 20)   // idle: the position's latest time is kept
        m.sample(LSN(3000), at: 30)
        #expect(m.samples == [LagMeter.Sample(first: 10, last: 20, lsn: LSN(1000)), LagMeter.Sample(first: 30, last: 30, lsn: LSN(3000))])
        // Applied 1000, server at 3000: it passed 1000 right after t = 20.
        var l = m.lag(now: 35, retained: nil)
        #expect(l.bytes == 2000 && l.seconds == 15)
        // Halfway applied (by a keepalive): interpolated by position between 20 and 30.
        m.caughtUp(LSN(2000))
        l = m.lag(now: 35, retained: nil)
        #expect(l.bytes == 1000 && l.seconds == 10)
        // Samples below the applied position go, but the latest of them.
        #expect(m.samples.count == 2)
        // A transaction being read that committed at 24 passed the position by then.
        m.began(commitUnix: 24)
        #expect(m.lag(now: 35, retained: nil).seconds == 11)
        // Applied through its commit: caught up with the last sample, behind the next one.
        m.applied(LSN(3000), commitUnix: 24)
        #expect(m.lag(now: 35, retained: nil).bytes == 0 && m.lag(now: 35, retained: nil).seconds == 0)
        m.sample(LSN(5000), at: 40)
        #expect(m.lag(now: 41, retained: nil) == CDCLag(bytes: 2000, seconds: 11, retainedBytes: nil, applied: LSN(3000), serverEnd: LSN(5000)))

        // Started far behind with no sample from before: the last commit applied bounds it.
        var behind = LagMeter()
        behind.caughtUp(LSN(100))
        behind.sample(LSN(90_000), at: 50)
        #expect(behind.lag(now: 51, retained: nil).bytes == 89_900 && behind.lag(now: 51, retained: nil).seconds == 1)
        behind.began(commitUnix: 20)
        #expect(behind.lag(now: 51, retained: nil).seconds == 31)
        behind.applied(LSN(200), commitUnix: 20)
        #expect(behind.lag(now: 51, retained: nil).seconds == 31)
        // The server went quiet while the reader is behind: the end passed the applied position
        // when it was first seen above it, however long it stays there.
        var quiet = LagMeter()
        quiet.caughtUp(LSN(1000))
        quiet.sample(LSN(1000), at: 0)
        quiet.sample(LSN(3000), at: 1)
        quiet.sample(LSN(3000), at: 100)
        quiet.caughtUp(LSN(2000))
        #expect(quiet.lag(now: 100, retained: nil).seconds == 99.5)
        // Samples carry the server's clock; `now` is converted with the offset the last one showed.
        quiet.sample(LSN(3000), at: 110, localTime: 105)
        #expect(quiet.lag(now: 105, retained: nil).seconds == 109.5)
        // The sample list stays bounded however long the reader stays behind.
        for i in 0..<(LagMeter.maxSamples + 100) { behind.sample(LSN(UInt64(100_000 + i)), at: Double(60 + i)) }
        #expect(behind.samples.count == LagMeter.maxSamples)
    }
}


@Suite(.serialized) struct LagAndHeartbeatTests {
    /// While following: a periodic lag line on stderr with the WAL the slot retains, and on a
    /// wholly idle server the built-in heartbeat (no table, no heartbeat_action_query) moves the
    /// slot's confirmed position on.
    @Test func followReportsLagAndTheBuiltInHeartbeatAdvancesAnIdleSlot() throws {
        let p = try PrivateCDC()
        try p.admin.query("INSERT INTO app.a VALUES (1, 'one')")
        try FileManager.default.createDirectory(atPath: p.dir, withIntermediateDirectories: true)
        let db = p.dir + "/d.db"
        let bg = try BackgroundSync(config: try CLI.writeConfig(p.config), destination: "sqlite:" + db, extra: ["--follow"],
                                    environment: ["POSTGATE_LAG_REPORT_SECONDS": "1", "POSTGATE_HEARTBEAT_SECONDS": "1"])
        #expect(eventually(30) { PrivateCDC.destRows(db) == ["1|one"] })
        usleep(1_500_000)
        // Nothing is written to the server from here on but what the follow writes itself: the
        // WAL end moves every heartbeat (the server on its own moves it at most once in 15 s),
        // and the slot is confirmed past where it stood.
        func walEnd() throws -> LSN { try #require(try p.admin.query("SELECT pg_current_wal_lsn()::text AS l").string(0, "l").flatMap(LSN.init)) }
        let start = try walEnd()
        var advances = 0
        var last = start
        for _ in 0..<6 {
            usleep(1_000_000)
            let now = try walEnd()
            if now > last { advances += 1 }
            last = now
        }
        #expect(advances >= 3, "the WAL end moved \(advances) times in 6 s of idle following")
        let moved = try eventually(10) { try p.slotLSNs(p.admin).confirmed > start }
        #expect(moved, "the idle slot was not confirmed past \(start)")
        kill(bg.process.processIdentifier, SIGTERM)
        #expect(bg.waitExit() == 0, "\(bg.stderrText)")
        let lines = bg.stderrText.split(separator: "\n").filter { $0.contains("CDC lag: ") }
        #expect(lines.count >= 2, "periodic lag lines: \(bg.stderrText.suffix(800))")
        // Idle but for the heartbeat: at most the WAL written since the last look, and a moment.
        let lastLine = try #require(lines.last.map(String.init))
        let figures = try #require(Self.figures(lastLine), "\(lastLine)")
        #expect(figures.bytes < 65536 && figures.seconds < 3 && lastLine.contains("the slot retains"), "\(lastLine)")
    }

    /// Bytes and seconds of a lag line.
    static func figures(_ line: String) -> (bytes: Double, seconds: Double)? {
        guard let r = line.range(of: "CDC lag: ") else { return nil }
        let words = line[r.upperBound...].split(separator: " ")
        guard words.count > 4, let n = Double(words[0]), let sec = Double(words[3]) else { return nil }
        let unit: Double = ["B": 1, "KiB": 1024, "MiB": 1_048_576, "GiB": 1_073_741_824][String(words[1])] ?? .nan
        return (n * unit, sec)
    }

    /// `read` reports the lag as an Airbyte ANALYTICS trace while it drains a backlog, with the
    /// server's WAL end (not the position of the record in hand) and the backlog's age.
    @Test func readReportsLagAsATrace() throws {
        let c = try CDCFixture("cdc_lagtrace", tables: "CREATE TABLE a (id int PRIMARY KEY, v text)")
        let s = c.f.q(c.f.schema)
        try c.f.admin.query("INSERT INTO \(s).a VALUES (0, 'zero')")
        let (r1, first) = try c.read(["a"])
        #expect(r1.status == 0, "\(r1.stderr)")
        func walEnd() throws -> LSN { try #require(try c.f.admin.query("SELECT pg_current_wal_lsn()::text AS l").string(0, "l").flatMap(LSN.init)) }
        let before = try walEnd()
        for k in 0..<20 { try c.f.admin.query("INSERT INTO \(s).a SELECT g, repeat('v', 500) FROM generate_series(\(k * 5000 + 1), \(k * 5000 + 5000)) g") }
        let backlog = Double(try walEnd().value - before.value)
        usleep(2_000_000)
        let (r2, _) = try c.read(["a"], state: first, environment: ["POSTGATE_LAG_REPORT_SECONDS": "0.2"])
        #expect(r2.status == 0, "\(r2.stderr)")
        let traces = r2.stdout.split(separator: "\n").compactMap { try? JSONParser.parse(Array($0.utf8)) }.filter { $0["trace"]?["type"] == "ANALYTICS" }
        #expect(!traces.isEmpty, "no cdc_lag trace in \(r2.stderr.suffix(500))")
        #expect(traces.allSatisfy { $0["trace"]?["analytics"]?["type"] == "cdc_lag" })
        let values = traces.compactMap { t in (t["trace"]?["analytics"]?["value"]?.stringValue).flatMap { try? JSONParser.parse(Array($0.utf8)) } }
        func number(_ v: JSONValue?) -> Double { if case .number(let n)? = v { return Double(n) ?? 0 }; return 0 }
        let bytes = values.map { number($0["lag_bytes"]) }.max() ?? 0, seconds = values.map { number($0["lag_seconds"]) }.max() ?? 0
        // Reports every 0.2 s of a drain of 100,000 changes: the first finds most of the backlog
        // still ahead (one transaction is 1/20 of it, all the stream's own positions could show),
        // and every change in it was committed 2 s or more before.
        #expect(bytes >= backlog / 4, "at most \(bytes) B behind of a \(backlog) B backlog (\(values.count) reports)")
        #expect(seconds >= 1.5, "at most \(seconds) s behind a backlog written 2 s before")
        #expect(r2.stderr.contains("CDC lag: "))
    }
}
