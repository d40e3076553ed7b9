import Foundation
import GRDB
import Testing
@testable import PostgateCore

/// Schema changes under CDC, applied by `sync` in order with the rows around them: the pure
/// tracker's inference, the DDL capture messages, and `sync --follow` into SQLite and PostgreSQL
/// with and without `sql/ddl-capture.sql` installed.
@Suite struct SchemaTrackerTests {
    static func col(_ name: String, _ type: UInt32 = 25, mod: Int32 = -1) -> PgOutputMessage.Column {
        PgOutputMessage.Column(isKey: name == "id", name: name, typeOID: type, typeModifier: mod)
    }
    static func tracker(_ cols: [(Int, String, UInt32)]) -> SchemaTracker {
        SchemaTracker(columns: cols.map { SchemaTracker.Column(attnum: $0.0, name: $0.1, typeOID: $0.2, typeModifier: -1) })
    }

    @Test func relationMessagesAreDiffedByNameAndARenameByPosition() {
        var t = Self.tracker([(1, "id", 23), (2, "a", 25), (3, "b", 25)])
        // Same position, same type, new name: a rename.
        var out = t.relation([Self.col("id", 23), Self.col("aa"), Self.col("b")])
        #expect(out == SchemaTracker.Outcome(changes: [.renameColumn(from: "a", to: "aa")], reload: false))
        #expect(t.columns.map(\.attnum) == [1, 2, 3])
        // A drop in the middle and an add at the end: not one rename. But two renames (aa to b,
        // b to c) read the same, and would keep the values a drop and an add lose: read again.
        out = t.relation([Self.col("id", 23), Self.col("b"), Self.col("c")])
        #expect(out.changes == [.dropColumn(name: "aa"), .addColumn(name: "c", typeOID: 25, existing: nil)])
        #expect(out.reload)
        // Integer widening prints the same; text to integer may not.
        out = t.relation([Self.col("id", 20), Self.col("b", 23), Self.col("c")])
        #expect(out.changes == [.alterType(name: "id", typeOID: 20), .alterType(name: "b", typeOID: 23)])
        #expect(out.reload)
        out = t.relation([Self.col("id", 20), Self.col("b", 23), Self.col("c", 1043, mod: 14)])
        #expect(out.changes == [.alterType(name: "c", typeOID: 1043)] && !out.reload)
        #expect(t.relation([Self.col("id", 20), Self.col("b", 23), Self.col("c", 1043, mod: 14)]) == SchemaTracker.Outcome())
        // Only adds (or only drops): nothing already read holds other values.
        out = t.relation([Self.col("id", 20), Self.col("b", 23), Self.col("c", 1043, mod: 14), Self.col("d")])
        #expect(out.changes == [.addColumn(name: "d", typeOID: 25, existing: nil)] && !out.reload)
        out = t.relation([Self.col("id", 20), Self.col("c", 1043, mod: 14), Self.col("d")])
        #expect(out.changes == [.dropColumn(name: "b")] && !out.reload)
        // Two columns renamed at once: read again (a drop and an add each would lose the values).
        var two = Self.tracker([(1, "id", 23), (2, "a", 25), (3, "b", 25)])
        out = two.relation([Self.col("id", 23), Self.col("x"), Self.col("y")])
        #expect(out.reload && out.changes.count == 4)
    }

    @Test func capturedColumnListsTellRenamesExactly() {
        var t = Self.tracker([(1, "id", 23), (2, "a", 25), (4, "z", 25)])
        // Drop the last column and add one of the same type: a Relation message would call it a
        // rename; the attnums say otherwise.
        let out = t.ddl([DDLCapture.Column(attnum: 1, name: "id", typeOID: 23, typeModifier: -1),
                         DDLCapture.Column(attnum: 2, name: "b", typeOID: 25, typeModifier: -1),
                         DDLCapture.Column(attnum: 5, name: "y", typeOID: 25, typeModifier: -1, missing: "dflt")], rewrite: false)
        #expect(out.changes == [.renameColumn(from: "a", to: "b"), .dropColumn(name: "z"), .addColumn(name: "y", typeOID: 25, existing: "dflt")])
        #expect(!out.reload)
        // A type change without a rewrite may still print values differently: read again.
        var ts = Self.tracker([(1, "id", 23), (2, "at", 1114)])
        let retyped = ts.ddl([DDLCapture.Column(attnum: 1, name: "id", typeOID: 23, typeModifier: -1),
                              DDLCapture.Column(attnum: 2, name: "at", typeOID: 1184, typeModifier: -1)], rewrite: false)
        #expect(retyped == SchemaTracker.Outcome(changes: [.alterType(name: "at", typeOID: 1184)], reload: true))
        // Columns known only by name (from a Relation message) are matched by name.
        var u = SchemaTracker(columns: [SchemaTracker.Column(attnum: nil, name: "id", typeOID: 23, typeModifier: -1)])
        #expect(u.ddl([DDLCapture.Column(attnum: 1, name: "id", typeOID: 23, typeModifier: -1)], rewrite: true) == SchemaTracker.Outcome(changes: [], reload: true))
        #expect(u.columns.first?.attnum == 1)
    }

    @Test func captureMessagesParseAndMalformedOnesSayWhy() throws {
        let m = try DDLCapture.parse(Array(#"{"v":1,"tag":"ALTER TABLE","oid":42,"schema":"s","table":"t","columns":[{"attnum":1,"name":"id","type":23,"typmod":-1,"missing":null},{"attnum":3,"name":"d","type":25,"typmod":-1,"missing":"x y"}]}"#.utf8))
        #expect(m == .columns(oid: 42, schema: "s", table: "t", columns: [
            DDLCapture.Column(attnum: 1, name: "id", typeOID: 23, typeModifier: -1),
            DDLCapture.Column(attnum: 3, name: "d", typeOID: 25, typeModifier: -1, missing: "x y"),
        ]))
        #expect(try DDLCapture.parse(Array(#"{"tag":"rewrite","oid":7}"#.utf8)) == .rewrite(oid: 7))
        #expect(try DDLCapture.parse(Array(#"{"tag":"DROP TABLE","oid":7,"schema":"s","table":"t"}"#.utf8)) == .dropped(oid: 7, schema: "s", table: "t"))
        #expect(throws: DDLCapture.Malformed.self) { try DDLCapture.parse(Array("not json".utf8)) }
        do {
            _ = try DDLCapture.parse(Array(#"{"tag":"ALTER TABLE","oid":1,"schema":"s","table":"t","columns":[{"name":"x"}]}"#.utf8))
            Issue.record("a column without attnum parsed")
        } catch {
            #expect("\(error)".contains("columns[0]"))
        }
    }

    @Test func savedStatesKeepEachStreamsColumns() throws {
        var s = CDCState(lsn: LSN(100), filters: [], snapshotted: [StreamID(namespace: "app", name: "a")],
                         backfills: [StreamID(namespace: "app", name: "b"): CDCState.Backfill(loadedThrough: ["5"], reload: true)])
        s.schemas[StreamID(namespace: "app", name: "a")] = Self.tracker([(1, "id", 23), (3, "v", 25)])
        s.schemas[StreamID(namespace: "app", name: "b")] = SchemaTracker(columns: [SchemaTracker.Column(attnum: nil, name: "k", typeOID: 20, typeModifier: -1)])
        s.tables[StreamID(namespace: "app", name: "a")] = 16_384
        let text = JSONValue.object(["type": "STATE", "state": s.globalJSON()]).jsonText
        let back = try #require(try CDCState.parse(Array(text.utf8), file: "state.json"))
        #expect(back == s && back.tables == s.tables)
        do {
            _ = try CDCState.parse(Array(text.replacingOccurrences(of: #""table_oid":16384"#, with: #""table_oid":-1"#).utf8), file: "state.json")
            Issue.record("table_oid -1 accepted")
        } catch {
            #expect("\(error)".contains("stream_state.table_oid"), "\(error)")
        }
        let bad = text.replacingOccurrences(of: #"[3,"v",25,-1]"#, with: #"[0,"v",25,-1]"#)
        #expect(bad != text)
        do {
            _ = try CDCState.parse(Array(bad.utf8), file: "state.json")
            Issue.record("attnum 0 accepted")
        } catch {
            #expect("\(error)".contains("stream_state.columns[1][0]"), "\(error)")
        }
    }

    @Test func savedStatesKeepEachPartitionedStreamsLeaves() throws {
        let a = StreamID(namespace: "app", name: "parted")
        var s = CDCState(lsn: LSN(100), filters: [], snapshotted: [a])
        s.schemas[a] = Self.tracker([(1, "id", 23)])
        s.partitions[a] = [16400, 16410]
        let text = JSONValue.object(["type": "STATE", "state": s.globalJSON()]).jsonText
        #expect(text.contains(#""partitions":[16400,16410]"#), "\(text)")
        let back = try #require(try CDCState.parse(Array(text.utf8), file: "state.json"))
        #expect(back.partitions == s.partitions)
        for (bad, reason) in [("[16400,-1]", "[1]"), ("[0]", "[0]"), ("[4294967296]", "[0]"), ("\"16400\"", "")] {
            let broken = text.replacingOccurrences(of: "[16400,16410]", with: bad)
            #expect(broken != text)
            do {
                _ = try CDCState.parse(Array(broken.utf8), file: "state.json")
                Issue.record("partitions \(bad) accepted")
            } catch let e as InputError {
                #expect(e.path == "[0].state.global.stream_states[0].stream_state.partitions" + reason, "\(e.path)")
            }
        }
    }

    @Test func partitionsThatMovedAreCountedAndNewOnesMadeAsPartitionsAreNot() {
        #expect(CDCReader.partitionsMoved(saved: [1, 2], now: [1: false, 2: true]) == nil)
        #expect(CDCReader.partitionsMoved(saved: [1], now: [1: false, 2: true]) == nil, "created as a partition: its rows arrive as changes")
        #expect(CDCReader.partitionsMoved(saved: [1], now: [1: false, 3: false]) == "1 partition(s) attached and 0 detached or dropped at the source")
        #expect(CDCReader.partitionsMoved(saved: [1, 2], now: [2: true]) == "0 partition(s) attached and 1 detached or dropped at the source")
        #expect(CDCReader.partitionsMoved(saved: [], now: [:]) == nil)
    }
}

@Suite(.serialized) struct SchemaChangeSyncTests {
    /// A table as text: its columns (sorted, CDC's own left out) and rows in key order.
    struct Table: Equatable, CustomStringConvertible {
        var columns: [String]
        var rows: [[String]]
        var description: String { "\(columns) \(rows.count) rows; first \(rows.prefix(3)), last \(rows.suffix(2))" }
    }

    static func table(_ conn: PGConnection, _ qualified: String) throws -> Table? {
        guard try conn.query("SELECT to_regclass($1) IS NOT NULL AS e", [qualified]).bool(0, "e") == true else { return nil }
        let r = try conn.query("SELECT * FROM \(qualified) ORDER BY id")
        let names = (0..<r.columnCount).map(r.columnName).filter { !$0.hasPrefix("_ab_cdc_") }.sorted()
        let idx = names.map { r.columnIndex($0)! }
        return Table(columns: names, rows: (0..<r.rowCount).map { i in idx.map { r.string(i, $0) ?? "NULL" } })
    }

    static func sqliteTable(_ path: String, _ name: String) -> Table? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        return try? DatabaseQueue(path: path).read { db -> Table? in
            guard try db.tableExists(name) else { return nil }
            let rows = try Row.fetchAll(db, sql: "SELECT * FROM \"\(name)\" ORDER BY id")
            let names = try db.columns(in: name).map(\.name).filter { !$0.hasPrefix("_ab_cdc_") }.sorted()
            return Table(columns: names, rows: rows.map { row in
                names.map { n -> String in
                    switch row[n] as DatabaseValue? {
                    case nil: return "NULL"
                    case let v?:
                        switch v.storage {
                        case .null: return "NULL"
                        case .int64(let i): return String(i)
                        case .double(let d): return String(d)
                        case .string(let s): return s
                        case .blob(let b): return b.map { String(format: "%02x", $0) }.joined()
                        }
                    }
                }
            })
        }
    }

    @Test(arguments: [true, false], ["sqlite", "postgres"])
    func schemaChangesReachTheDestinationInOrderWithTheRows(capture: Bool, kind: String) throws {
        let p = try PrivateCDC()
        let a = p.admin
        if capture {
            let script = try String(contentsOfFile: CLI.repoRoot + "/sql/ddl-capture.sql", encoding: .utf8)
            try a.query(script)
        }
        try a.query("ALTER TABLE app.a ADD COLUMN n int, ADD COLUMN code text")
        try a.query("INSERT INTO app.a SELECT g, 'v' || g, g, 'c' || g FROM generate_series(1, 300) g")
        try a.query("CREATE TABLE app.gone (id int PRIMARY KEY, x text); INSERT INTO app.gone SELECT g, 'x' FROM generate_series(1, 10) g")
        try FileManager.default.createDirectory(atPath: p.dir, withIntermediateDirectories: true)
        let destination: String
        var destConn: PGConnection?
        let db = p.dir + "/schema.db"
        if kind == "sqlite" {
            destination = "sqlite:" + db
        } else {
            try a.query("CREATE DATABASE dest")
            destination = "postgres:host=127.0.0.1 port=\(p.server.port) dbname=dest user=\(p.server.user) password=\(p.server.password) sslmode=disable"
        }
        func dest(_ name: String) throws -> Table? {
            if kind == "sqlite" { return Self.sqliteTable(db, "app__" + name) }
            if destConn == nil { destConn = try? p.server.connection(database: "dest") }
            guard let c = destConn else { return nil }
            return try? Self.table(c, "app." + name)
        }
        let bg = try p.follow(destination)
        #expect(try eventually(60) { try dest("a")?.rows.count == 300 && dest("gone")?.rows.count == 10 }, "initial load")

        // Rows, then each change, then rows that use it.
        try a.query("INSERT INTO app.a SELECT g, 'v' || g, g, 'c' || g FROM generate_series(301, 310) g")
        try a.query("ALTER TABLE app.a ADD COLUMN flag text DEFAULT 'yes'")
        try a.query("INSERT INTO app.a (id, v, n, code, flag) VALUES (311, 'v311', 311, 'c311', 'no')")
        try a.query("ALTER TABLE app.a ADD COLUMN note text")
        try a.query("UPDATE app.a SET note = 'noted' WHERE id <= 5")
        try a.query("ALTER TABLE app.a RENAME COLUMN v TO title")
        try a.query("UPDATE app.a SET title = 'renamed' WHERE id IN (6, 7)")
        // Values change with the type (USING): the rows already synced must be read again.
        try a.query("ALTER TABLE app.a ALTER COLUMN code TYPE int USING length(code)")
        try a.query("UPDATE app.a SET code = 99 WHERE id = 12")
        try a.query("ALTER TABLE app.a ALTER COLUMN n TYPE bigint")
        try a.query("UPDATE app.a SET n = 5000000000 WHERE id = 8")
        try a.query("DELETE FROM app.a WHERE id IN (9, 10)")
        // A change and rows in one transaction.
        try a.query("BEGIN; ALTER TABLE app.a ADD COLUMN late int DEFAULT 7; INSERT INTO app.a (id, title, n, code, late) VALUES (400, 'in tx', 1, 1, 8); COMMIT")
        try a.query("ALTER TABLE app.a DROP COLUMN note")
        try a.query("INSERT INTO app.a (id, title) VALUES (401, 'last')")
        try a.query("DROP TABLE app.gone")

        let expected = try #require(try Self.table(a, "app.a"))
        #expect(expected.columns == ["code", "flag", "id", "late", "n", "title"])
        let equal = try eventually(90) { try dest("a") == expected }
        let gone = try dest("gone")
        let got = try dest("a")
        kill(bg.process.processIdentifier, SIGTERM)
        let exit = bg.waitExit()
        if exit != 0 { try? bg.stderrText.write(toFile: FileManager.default.temporaryDirectory.appendingPathComponent("schema-\(capture)-\(kind).log").path, atomically: true, encoding: .utf8) }
        #expect(exit == 0, "\(bg.stderrText.prefix(3000))")
        #expect(equal, "destination \(String(describing: got)); source \(expected)\n\(bg.stderrText.suffix(3000))")
        // With capture the dropped table goes too; without, nothing says it was dropped.
        #expect(capture ? gone == nil : gone?.rows.count == 10)
        #expect(bg.stderrText.contains("column v renamed to title"), "\(bg.stderrText.suffix(2000))")
        #expect(bg.stderrText.contains("app.a is read again"))

        // A second run resumes with the columns as saved, and changes nothing more.
        try a.query("INSERT INTO app.a (id, title, late) VALUES (402, 'after restart', 3)")
        let again = try CLI.run(["sync", "--config", try CLI.writeConfig(p.config), "--destination", destination])
        #expect(again.status == 0, "\(again.stderr.suffix(1500))")
        #expect(try dest("a") == Self.table(a, "app.a"))
        #expect(!again.stderr.contains("renamed"), "\(again.stderr.suffix(1500))")
    }

    /// Another table under a stream's name while following: the table dropped and created again
    /// (with DDL capture its stream ends with the drop; without, nothing tells of it), or renamed
    /// away (it keeps its stream for the run). The new table is read from the next run, which tells
    /// it by its oid (saved in the state) and replaces the stream's rows; a renamed table becomes a
    /// stream of its own. Every table ends equal to the source, changes to the new one included.
    @Test(arguments: ["drop, capture", "drop", "rename"])
    func anotherTableUnderAStreamsNameEndsEqual(how: String) throws {
        let p = try PrivateCDC()
        let a = p.admin
        if how == "drop, capture" { try a.query(try String(contentsOfFile: CLI.repoRoot + "/sql/ddl-capture.sql", encoding: .utf8)) }
        try a.query("CREATE TABLE app.t (id int PRIMARY KEY, x text); INSERT INTO app.t SELECT g, 'old' FROM generate_series(1, 10) g")
        let db = p.dir + "/again.db"
        let bg = try p.follow("sqlite:" + db)
        #expect(eventually(60) { Self.sqliteTable(db, "app__t")?.rows.count == 10 }, "initial load")
        try a.query(how == "rename" ? "ALTER TABLE app.t RENAME TO t_old" : "DROP TABLE app.t")
        try a.query("CREATE TABLE app.t (id int PRIMARY KEY, x text); INSERT INTO app.t SELECT g, 'new' FROM generate_series(3, 7) g")
        // Changes to the new table (and the renamed one) after the new one was seen.
        usleep(2_000_000)
        try a.query("UPDATE app.t SET x = 'changed' WHERE id = 4; DELETE FROM app.t WHERE id = 5; INSERT INTO app.t VALUES (20, 'late')")
        if how == "rename" { try a.query("UPDATE app.t_old SET x = 'old changed' WHERE id = 9") }
        try a.query("INSERT INTO app.a VALUES (1, 'marker')")
        #expect(eventually(30) { PrivateCDC.destRows(db) == ["1|marker"] })
        usleep(1_000_000)
        kill(bg.process.processIdentifier, SIGTERM)
        #expect(bg.waitExit() == 0, "\(bg.stderrText.suffix(1500))")
        let next = try CLI.run(["sync", "--config", try CLI.writeConfig(p.config), "--destination", "sqlite:" + db])
        #expect(next.status == 0, "\(next.stderr.suffix(1500))")
        for (source, dest) in [("app.t", "app__t")] + (how == "rename" ? [("app.t_old", "app__t_old")] : []) {
            let expected = try #require(try Self.table(a, source))
            let got = Self.sqliteTable(db, dest)
            #expect(got == expected, "\(dest): \(String(describing: got)); source \(expected)\n\(bg.stderrText.suffix(1500))\n\(next.stderr.suffix(1500))")
        }
        // Without capture the next run tells the table is another by its oid.
        #expect(how == "drop, capture" || next.stderr.contains("is another table than the one synced"), "\(next.stderr.suffix(1500))")
    }

    /// A publication's column list (PostgreSQL 15) limits what CDC streams have: discovery, the
    /// initial load (which copied the left-out column's values before) and what a captured ALTER
    /// TABLE brings; the columns it leaves out never reach the destination, not even for a moment.
    @Test func capturedChangesKeepToThePublicationsColumnList() throws {
        let p = try PrivateCDC()
        let a = p.admin
        try a.query(try String(contentsOfFile: CLI.repoRoot + "/sql/ddl-capture.sql", encoding: .utf8))
        try a.query("ALTER TABLE app.a ADD COLUMN secret text; INSERT INTO app.a VALUES (1, 'one', 's1')")
        try a.query("CREATE PUBLICATION pub_cols FOR TABLE app.a (id, v)")
        // (A slot decodes with the catalog as of each change: it must start after the publication.)
        try a.query("SELECT pg_drop_replication_slot('\(p.slot)')")
        try a.query("SELECT pg_create_logical_replication_slot('\(p.slot)', 'pgoutput')")
        var config = p.config
        if case .object(var m)? = config["replication_method"] { m["publication"] = "pub_cols"; config["replication_method"] = .object(m) }
        try FileManager.default.createDirectory(atPath: p.dir, withIntermediateDirectories: true)
        // Discovery shows the table as the publication has it.
        let discovered = try CLI.run(["discover", "--config", try CLI.writeConfig(config)])
        let stream = discovered.messages.first?["catalog"]?["streams"]?.arrayValue?.first { $0["name"] == "a" }
        #expect(stream?["json_schema"]?["properties"]?.objectValue?.entries.map(\.key).filter { !$0.hasPrefix("_ab_cdc_") }.sorted() == ["id", "v"], "\(discovered.stdout)")
        let db = p.dir + "/cols.db"
        let bg = try BackgroundSync(config: try CLI.writeConfig(config), destination: "sqlite:" + db, extra: ["--follow"])
        #expect(eventually(30) { Self.sqliteTable(db, "app__a")?.rows.count == 1 })
        try a.query("ALTER TABLE app.a ADD COLUMN extra int DEFAULT 3")
        try a.query("ALTER PUBLICATION pub_cols SET TABLE app.a (id, v, extra)")
        try a.query("ALTER TABLE app.a RENAME COLUMN secret TO hidden")
        // (Time for the destination to commit what those changes brought, while no row comes.)
        usleep(1_500_000)
        // The follow has read past those changes once a row after them has arrived.
        try a.query("INSERT INTO app.a VALUES (2, 'two', 's2', 4)")
        var columns: [[String]] = []
        let arrived = eventually(30) {
            if let t = Self.sqliteTable(db, "app__a") { columns.append(t.columns) }
            return Self.sqliteTable(db, "app__a")?.rows.count == 2
        }
        kill(bg.process.processIdentifier, SIGTERM)
        #expect(bg.waitExit() == 0, "\(bg.stderrText.suffix(1500))")
        #expect(arrived, "\(bg.stderrText.suffix(1500))")
        #expect(!columns.joined().contains("secret") && !columns.joined().contains("hidden"), "columns seen: \(Set(columns))")
        #expect(Self.sqliteTable(db, "app__a") == Table(columns: ["extra", "id", "v"], rows: [["3", "1", "one"], ["4", "2", "two"]]))
    }

    /// A stream read again after a rewrite keeps sending deletes of keys its chunks have not
    /// reached (the destination holds those rows): after its first chunk too.
    @Test func aReloadKeepsDeletingRowsItHasNotReadYet() throws {
        let p = try PrivateCDC()
        let a = p.admin
        try a.query("ALTER TABLE app.a ADD COLUMN n int; INSERT INTO app.a SELECT g, 'v' || g, g FROM generate_series(1, 3000) g")
        try FileManager.default.createDirectory(atPath: p.dir, withIntermediateDirectories: true)
        let db = p.dir + "/reload.db"
        var config = p.config
        config["batch_fetch_limit"] = 25
        config["max_db_connections"] = 1
        let bg = try BackgroundSync(config: try CLI.writeConfig(config), destination: "sqlite:" + db, extra: ["--follow"])
        #expect(eventually(60) { SchemaChangeSyncTests.sqliteTable(db, "app__a")?.rows.count == 3000 }, "initial load")
        try a.query("ALTER TABLE app.a ALTER COLUMN n TYPE text USING (n * 2)::text")
        try a.query("UPDATE app.a SET v = 'touched' WHERE id = 1")
        // Deletes of high keys while the chunks work up from the lowest.
        for i in 0..<150 {
            try a.query("DELETE FROM app.a WHERE id = \(3000 - i * 10)")
            usleep(10_000)
        }
        let expected = try #require(try SchemaChangeSyncTests.table(a, "app.a"))
        let equal = eventually(150) { SchemaChangeSyncTests.sqliteTable(db, "app__a") == expected }
        let got = SchemaChangeSyncTests.sqliteTable(db, "app__a")
        kill(bg.process.processIdentifier, SIGTERM)
        #expect(bg.waitExit() == 0, "\(bg.stderrText.suffix(1500))")
        #expect(bg.stderrText.contains("app.a is read again"))
        #expect(equal, "destination \(String(describing: got)); source \(expected)")
    }
}
