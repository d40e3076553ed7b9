import Foundation
import GRDB
import Testing
@testable import PostgateCore

/// Partitioned tables under CDC, with both publication styles: with publish_via_partition_root
/// changes arrive under the partitioned table's name; without it under each partition's, and are
/// mapped to the partitioned table's stream. Partitions created or attached while following are
/// captured without a restart.
@Suite(.serialized) struct PartitionCDCTests {
    static func rows(_ path: String) -> [String] {
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        return (try? DatabaseQueue(path: path).read { db in
            try Row.fetchAll(db, sql: "SELECT id, region, v FROM parts__m ORDER BY id, region").map {
                "\($0["id"] as Int64)|\($0["region"] as String)|\(($0["v"] as String?) ?? "NULL")"
            }
        }) ?? []
    }

    static func source(_ conn: PGConnection) throws -> [String] {
        let r = try conn.query("SELECT id, region, v FROM parts.m ORDER BY id, region")
        return (0..<r.rowCount).map { "\(r.string($0, "id")!)|\(r.string($0, "region")!)|\(r.string($0, "v") ?? "NULL")" }
    }

    @Test(arguments: [true, false])
    func partitionedTablesAreCapturedWhicheverThePublicationStyle(viaRoot: Bool) throws {
        let p = try PrivateCDC()
        let a = p.admin
        try a.query("CREATE SCHEMA parts")
        try a.query("CREATE TABLE parts.m (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region)")
        try a.query("CREATE TABLE parts.m_eu PARTITION OF parts.m FOR VALUES IN ('eu')")
        try a.query("CREATE TABLE parts.m_us PARTITION OF parts.m FOR VALUES IN ('us')")
        try a.query("INSERT INTO parts.m SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, 'v' || g FROM generate_series(1, 200) g")
        try a.query("CREATE PUBLICATION pub_parts FOR TABLE parts.m WITH (publish_via_partition_root = \(viaRoot))")
        let slot = "parts_\(viaRoot ? "root" : "leaf")_\(UInt32.random(in: 0...UInt32.max))"
        try a.query("SELECT pg_create_logical_replication_slot('\(slot)', 'pgoutput')")
        try FileManager.default.createDirectory(atPath: p.dir, withIntermediateDirectories: true)
        let db = p.dir + "/parts.db"
        let config = p.server.cdcConfig(schema: "parts", slot: slot, publication: "pub_parts")
        let bg = try BackgroundSync(config: try CLI.writeConfig(config), destination: "sqlite:" + db, extra: ["--follow"])
        #expect(eventually(60) { Self.rows(db).count == 200 }, "initial load: \(Self.rows(db).count) rows")

        try a.query("INSERT INTO parts.m VALUES (1000, 'eu', 'new eu'), (1001, 'us', 'new us')")
        try a.query("UPDATE parts.m SET v = 'changed' WHERE id IN (2, 3)")
        try a.query("DELETE FROM parts.m WHERE id IN (4, 5)")
        // A partition created, and an empty table attached, while following.
        try a.query("CREATE TABLE parts.m_asia PARTITION OF parts.m FOR VALUES IN ('asia')")
        try a.query("INSERT INTO parts.m VALUES (2000, 'asia', 'asia row')")
        try a.query("CREATE TABLE parts.m_sa (id int NOT NULL, region text NOT NULL, v text)")
        try a.query("ALTER TABLE parts.m ATTACH PARTITION parts.m_sa FOR VALUES IN ('sa')")
        try a.query("INSERT INTO parts.m VALUES (3000, 'sa', 'sa row')")
        try a.query("UPDATE parts.m SET v = 'asia changed' WHERE id = 2000")
        let expected = try Self.source(a)
        let equal = eventually(60) { Self.rows(db) == expected }
        kill(bg.process.processIdentifier, SIGTERM)
        #expect(bg.waitExit() == 0, "\(bg.stderrText)")
        #expect(equal, "destination \(Self.rows(db).count) rows, source \(expected.count); missing: \(Set(expected).subtracting(Self.rows(db)).sorted().prefix(5))")
        if !viaRoot {
            #expect(bg.stderrText.contains("changes of partition parts.m_asia are read as stream parts.m"), "\(bg.stderrText.suffix(600))")
        }
    }
}
