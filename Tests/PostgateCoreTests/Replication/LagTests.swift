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
        #expect(lines.last?.contains("0 B and 0.0 s behind") == true && lines.last?.contains("the slot retains") == true, "\(lines.last ?? "")")
    }

    /// `read` reports the lag as an Airbyte ANALYTICS trace while it drains a backlog.
    @Test func readReportsLagAsATrace() throws {
        let c = try CDCFixture("cdc_lagtrace", tables: "CREATE TABLE a (id int PRIMARY KEY, v text)")
        let s = c.f.q(c.f.schema)
        try c.f.admin.query("INSERT INTO \(s).a VALUES (0, 'zero')")
        let (r1, first) = try c.read(["a"])
        #expect(r1.status == 0, "\(r1.stderr)")
        for k in 0..<10 { try c.f.admin.query("INSERT INTO \(s).a SELECT g, repeat('v', 200) FROM generate_series(\(k * 5000 + 1), \(k * 5000 + 5000)) g") }
        let (r2, _) = try c.read(["a"], state: first, environment: ["POSTGATE_LAG_REPORT_SECONDS": "0.2"])
        #expect(r2.status == 0, "\(r2.stderr)")
        let traces = r2.stdout.split(separator: "\n").compactMap { try? JSONParser.parse(Array($0.utf8)) }.filter { $0["trace"]?["type"] == "ANALYTICS" }
        #expect(!traces.isEmpty, "no cdc_lag trace in \(r2.stderr.suffix(500))")
        #expect(traces.allSatisfy { $0["trace"]?["analytics"]?["type"] == "cdc_lag" })
        #expect(r2.stderr.contains("CDC lag: "))
    }
}
