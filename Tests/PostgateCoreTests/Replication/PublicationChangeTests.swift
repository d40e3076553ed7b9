import Foundation
import GRDB
import Testing
@testable import PostgateCore

/// `sync --follow` while tables join the publication and partitions are attached, made and
/// detached: each destination table ends equal to its source table, without a restart.
@Suite(.serialized) struct PublicationChangeTests {
    typealias Table = SchemaChangeSyncTests.Table

    @Test(arguments: [true, false], ["sqlite", "postgres"])
    func tablesAndPartitionsThatJoinWhileFollowingAreSynced(capture: Bool, kind: String) throws {
        let p = try PrivateCDC()
        let a = p.admin
        if capture { try a.query(try String(contentsOfFile: CLI.repoRoot + "/sql/ddl-capture.sql", encoding: .utf8)) }
        // Partitions published under their own names (SQLite case) or under the partitioned table's.
        let viaRoot = kind == "postgres"
        try a.query("""
            CREATE TABLE app.late (id int PRIMARY KEY, v text);
            CREATE TABLE app.parted (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
            CREATE TABLE app.p1 PARTITION OF app.parted FOR VALUES FROM (0) TO (1000);
            INSERT INTO app.a SELECT g, 'a' || g FROM generate_series(1, 50) g;
            INSERT INTO app.late SELECT g, 'l' || g FROM generate_series(1, 40) g;
            INSERT INTO app.parted SELECT g, 'p' || g FROM generate_series(1, 100) g;
            DROP PUBLICATION pub_app;
            CREATE PUBLICATION pub_app FOR TABLE app.a, app.parted WITH (publish_via_partition_root = \(viaRoot));
            """)
        let db = p.dir + "/pub.db"
        var destConn: PGConnection?
        let destination: String
        if kind == "sqlite" {
            destination = "sqlite:" + db
        } else {
            try a.query("CREATE DATABASE dest")
            destination = "postgres:host=127.0.0.1 port=\(p.server.port) dbname=dest user=\(p.server.user) password=\(p.server.password) sslmode=disable"
        }
        func dest(_ name: String) throws -> Table? {
            if kind == "sqlite" { return SchemaChangeSyncTests.sqliteTable(db, "app__" + name) }
            if destConn == nil { destConn = try? p.server.connection(database: "dest") }
            guard let c = destConn else { return nil }
            return try? SchemaChangeSyncTests.table(c, "app." + name)
        }
        try FileManager.default.createDirectory(atPath: p.dir, withIntermediateDirectories: true)
        let bg = try BackgroundSync(config: try CLI.writeConfig(p.config), destination: destination, extra: ["--follow"],
                                    environment: ["POSTGATE_PUBLICATION_CHECK_SECONDS": "1"])
        #expect(try eventually(60) { try dest("a")?.rows.count == 50 && dest("late")?.rows.count == 40 && dest("parted")?.rows.count == 100 }, "initial load")

        // A stream whose table is not in the publication misses these changes until it joins.
        try a.query("UPDATE app.late SET v = 'stale' WHERE id <= 5; INSERT INTO app.late SELECT g, 'l' || g FROM generate_series(41, 45) g")
        // A table made and filled before it joins, then changed after.
        try a.query("CREATE TABLE app.fresh (id bigint PRIMARY KEY, v text); INSERT INTO app.fresh SELECT g, 'f' || g FROM generate_series(1, 300) g")
        try a.query("ALTER PUBLICATION pub_app ADD TABLE app.fresh, app.late")
        try a.query("INSERT INTO app.fresh SELECT g, 'f' || g FROM generate_series(301, 310) g; UPDATE app.fresh SET v = 'changed' WHERE id IN (1, 305); DELETE FROM app.fresh WHERE id = 2")
        try a.query("UPDATE app.late SET v = 'after' WHERE id = 40")
        // A table attached with its rows; a partition made as one; a partition detached.
        try a.query("CREATE TABLE app.p2 (id int PRIMARY KEY, v text); INSERT INTO app.p2 SELECT g, 'p' || g FROM generate_series(1000, 1099) g")
        try a.query("ALTER TABLE app.parted ATTACH PARTITION app.p2 FOR VALUES FROM (1000) TO (2000)")
        try a.query("CREATE TABLE app.p3 PARTITION OF app.parted FOR VALUES FROM (2000) TO (3000); INSERT INTO app.parted SELECT g, 'p' || g FROM generate_series(2000, 2009) g")
        try a.query("ALTER TABLE app.parted DETACH PARTITION app.p1")
        try a.query("UPDATE app.parted SET v = 'moved' WHERE id = 1050; INSERT INTO app.a VALUES (51, 'last')")

        var expected: [String: Table] = [:]
        for t in ["a", "late", "fresh", "parted"] { expected[t] = try #require(try SchemaChangeSyncTests.table(a, "app." + t)) }
        #expect(expected["parted"]?.rows.count == 110)
        let equal = try eventually(90) { try ["a", "late", "fresh", "parted"].allSatisfy { try dest($0) == expected[$0] } }
        var got: [String: String] = [:]
        for t in ["a", "late", "fresh", "parted"] { got[t] = String(describing: try dest(t)) }
        kill(bg.process.processIdentifier, SIGTERM)
        let exit = bg.waitExit()
        #expect(exit == 0, "\(bg.stderrText.suffix(3000))")
        #expect(equal, "destination \(got); source \(expected)\n\(bg.stderrText.suffix(4000))")
        #expect(bg.stderrText.contains("table app.fresh joined publication pub_app"), "\(bg.stderrText.suffix(2000))")
        #expect(bg.stderrText.contains("app.late is read again (its table joined publication pub_app"))
        #expect(bg.stderrText.contains("app.parted is read again (1 partition(s) attached"), "\(bg.stderrText.suffix(2000))")
        #expect(!bg.stderrText.contains("WARNING:"), "\(bg.stderrText.suffix(2000))")
        #expect(try dest("p1") == nil && dest("p2") == nil, "partitions are not streams of their own")

        // Moved while no run reads the slot: a partition attached with its rows, then a run.
        try a.query("CREATE TABLE app.p4 (id int PRIMARY KEY, v text); INSERT INTO app.p4 SELECT g, 'p' || g FROM generate_series(3000, 3004) g")
        try a.query("ALTER TABLE app.parted ATTACH PARTITION app.p4 FOR VALUES FROM (3000) TO (4000); INSERT INTO app.fresh VALUES (400, 'again')")
        let again = try CLI.run(["sync", "--config", try CLI.writeConfig(p.config), "--destination", destination])
        #expect(again.status == 0, "\(again.stderr.suffix(1500))")
        #expect(again.stderr.contains("app.parted is read again (1 partition(s) attached and 0 detached"), "\(again.stderr.suffix(1500))")
        for t in ["a", "late", "fresh", "parted"] {
            #expect(try dest(t) == SchemaChangeSyncTests.table(a, "app." + t), "\(t) after a run that resumes")
        }
    }
}
