import Foundation
import GRDB
import Testing
@testable import PostgateCore

extension TestDestination {
    /// The table (or JSONL file stem) a stream was assigned, and its column names by source column.
    func assigned(_ namespace: String, _ name: String) throws -> (schema: String?, table: String, columns: [String: String])? {
        var text: String?
        switch kind {
        case .sqlite:
            text = try DatabaseQueue(path: path).read { db in
                try String.fetchOne(db, sql: "SELECT assignment FROM _postgate_tables WHERE namespace = ? AND name = ?", arguments: [namespace, name])
            }
        case .postgres:
            text = try pg().query("SELECT assignment::text AS a FROM _postgate.tables WHERE namespace = $1 AND name = $2", [namespace, name]).string(0, "a")
        case .jsonl:
            guard let data = FileManager.default.contents(atPath: path + "/_postgate_state.json") else { return nil }
            let doc = try JSONParser.parse([UInt8](data))
            let a = doc["tables"]?.arrayValue?.first { $0["namespace"]?.stringValue == namespace && $0["name"]?.stringValue == name }
            text = a?.jsonText
        }
        guard let text, let a = TableAssignment(json: try JSONParser.parse(text)) else { return nil }
        return (a.schema, a.table, Dictionary(a.columns.map { ($0.source, $0.name) }, uniquingKeysWith: { x, _ in x }))
    }

    /// The rows of a stream's table as text, `source column=value` joined by `|`, sorted.
    func values(_ namespace: String, _ name: String, columns: [String]) throws -> [String] {
        guard let a = try assigned(namespace, name) else { return ["(no assignment)"] }
        switch kind {
        case .sqlite:
            let cols = columns.map { "CAST(\(PGConnection.quoteIdentifier(a.columns[$0] ?? $0)) AS TEXT)" }.joined(separator: ", ")
            return try DatabaseQueue(path: path).read { db in
                try Row.fetchAll(db, sql: "SELECT \(cols) FROM \(PGConnection.quoteIdentifier(a.table))").map { r in
                    columns.indices.map { "\(columns[$0])=\((r[$0] as String?) ?? "NULL")" }.joined(separator: "|")
                }
            }.sorted()
        case .postgres:
            let cols = columns.map { "\(PGConnection.quoteIdentifier(a.columns[$0] ?? $0))::text" }.joined(separator: ", ")
            let r = try pg().query("SELECT \(cols) FROM \(PGConnection.quoteIdentifier(a.schema!)).\(PGConnection.quoteIdentifier(a.table))")
            return (0..<r.rowCount).map { i in columns.indices.map { "\(columns[$0])=\(r.string(i, $0) ?? "NULL")" }.joined(separator: "|") }.sorted()
        case .jsonl:
            let text = (try? String(contentsOfFile: path + "/\(a.table).jsonl", encoding: .utf8)) ?? ""
            return try text.split(separator: "\n").map { line in
                let o = try JSONParser.parse(String(line))
                return columns.map { c in
                    let v = o[c] ?? .null
                    return "\(c)=\(v == .null ? "NULL" : v.stringValue ?? v.jsonText)"
                }.joined(separator: "|")
            }.sorted()
        }
    }
}

extension Fixture {
    /// The rows of a source table in `TestDestination.values` form.
    func sourceValues(_ schema: String, _ table: String, columns: [String]) throws -> [String] {
        let cols = columns.map { "\(q($0))::text" }.joined(separator: ", ")
        let r = try admin.query("SELECT \(cols) FROM \(q(schema)).\(q(table))")
        return (0..<r.rowCount).map { i in columns.indices.map { "\(columns[$0])=\(r.string(i, $0) ?? "NULL")" }.joined(separator: "|") }.sorted()
    }

    /// Another schema for this test, readable by the reader, dropped with the fixture's.
    func extraSchema(_ name: String) throws -> String {
        try admin.query("DROP SCHEMA IF EXISTS \(q(name)) CASCADE; CREATE SCHEMA \(q(name))")
        try admin.query("GRANT USAGE ON SCHEMA \(q(name)) TO postgate_reader")
        extraSchemas.append(name)
        return name
    }
}

/// Regression tests of the hostile naming and exactness campaign (issue 13): identity is
/// (namespace, name), destinations never merge two streams or two columns, and values come back
/// as the source wrote them.
@Suite(.serialized) struct DestinationIdentityTests {
    @Test(arguments: TestDestination.Kind.allCases)
    func namesThatJoinAlikeLandInDistinctTables(kind: TestDestination.Kind) throws {
        let f = try Fixture("ident_\(kind.rawValue)")
        let base = f.schema
        let s2 = try f.extraSchema(base + "__y")
        let s3 = try f.extraSchema(base + ".p")
        try f.sql("""
            CREATE TABLE \(f.q(base)).\(f.q("y__z")) (id int PRIMARY KEY, v text); INSERT INTO \(f.q(base)).\(f.q("y__z")) VALUES (1, 'x.y__z');
            CREATE TABLE \(f.q(s2)).z (id int PRIMARY KEY, v text); INSERT INTO \(f.q(s2)).z VALUES (2, 'x__y.z');
            CREATE TABLE \(f.q(base)).\(f.q("p.c")) (id int PRIMARY KEY, v text); INSERT INTO \(f.q(base)).\(f.q("p.c")) VALUES (3, 'a.\\"b.c\\"');
            CREATE TABLE \(f.q(s3)).c (id int PRIMARY KEY, v text); INSERT INTO \(f.q(s3)).c VALUES (4, '\\"a.b\\".c');
            """)
        try f.admin.query("GRANT SELECT ON ALL TABLES IN SCHEMA \(f.q(s2)) TO postgate_reader; GRANT SELECT ON ALL TABLES IN SCHEMA \(f.q(s3)) TO postgate_reader")
        let dest = try TestDestination(kind, lab: f.lab)
        var config = f.config()
        config["schemas"] = .array([.string(base), .string(s2), .string(s3)])
        for round in 1...2 {
            let r = try f.sync(config, dest)
            #expect(r.status == 0, "round \(round): \(r.stderr)")
            let streams = [(base, "y__z"), (s2, "z"), (base, "p.c"), (s3, "c")]
            var tables: Set<String> = []
            for (ns, name) in streams {
                let a = try #require(try dest.assigned(ns, name), "\(ns).\(name) has a table")
                tables.insert("\(a.schema ?? "")\u{0}\(a.table.lowercased())")
                #expect(try dest.values(ns, name, columns: ["id", "v"]) == f.sourceValues(ns, name, columns: ["id", "v"]), "round \(round): \(ns).\(name)")
            }
            #expect(tables.count == streams.count, "four streams, four tables: \(tables)")
        }
    }

    @Test(arguments: TestDestination.Kind.allCases)
    func bookkeepingNamesCannotBeTakenByAStream(kind: TestDestination.Kind) throws {
        let f = try Fixture("ident_book_\(kind.rawValue)")
        // SQLite and JSONL keep public streams under their bare name; PostgreSQL keeps schema and name.
        let ns = kind == .postgres ? try f.extraSchema("_postgate") : "public"
        let tables = ["_postgate_state", "_postgate_tables", "_postgate_stage_1", "state", "tables"]
        func dropPublic() {
            if kind != .postgres { _ = try? f.admin.query("DROP TABLE IF EXISTS " + tables.map { "public.\(f.q($0))" }.joined(separator: ", ")) }
        }
        dropPublic()
        defer { dropPublic() }
        for t in tables {
            try f.sql("CREATE TABLE \(f.q(ns)).\(f.q(t)) (id int PRIMARY KEY, v text); INSERT INTO \(f.q(ns)).\(f.q(t)) VALUES (1, '\(t)')")
            try f.admin.query("GRANT SELECT ON \(f.q(ns)).\(f.q(t)) TO postgate_reader")
        }
        let dest = try TestDestination(kind, lab: f.lab)
        let catalog: JSONValue = .object(["streams": .array(tables.map { t in
            .object(["stream": ["name": .string(t), "namespace": .string(ns), "json_schema": ["type": "object"]],
                     "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"])
        })])
        let cat = try CLI.writeTemp(catalog.jsonText, suffix: ".json")
        var config = f.config()
        config["schemas"] = .array([.string(ns)])
        for round in 1...2 {
            let r = try f.sync(config, dest, extra: ["--catalog", cat])
            #expect(r.status == 0, "round \(round): \(r.stderr)")
            for t in tables {
                #expect(try dest.values(ns, t, columns: ["id", "v"]) == ["id=1|v=\(t)"], "round \(round): \(t)")
                let a = try #require(try dest.assigned(ns, t))
                #expect(!(a.schema ?? "").hasPrefix("_postgate") && (a.schema != nil || !a.table.hasPrefix("_postgate")), "\(t) → \(a)")
            }
        }
    }

    @Test func sqliteFoldsCaseSoCaseVariantsGetDistinctNames() throws {
        let f = try Fixture("ident_case")
        let s = f.q(f.schema)
        try f.sql("""
            CREATE TABLE \(s)."Items" (id int PRIMARY KEY, v text); INSERT INTO \(s)."Items" VALUES (1, 'upper');
            CREATE TABLE \(s).items (id int PRIMARY KEY, v text); INSERT INTO \(s).items VALUES (2, 'lower');
            CREATE TABLE \(s).twin ("ID" int PRIMARY KEY, id int, "Id" text); INSERT INTO \(s).twin VALUES (10, 20, 'thirty');
            """)
        let dest = try TestDestination(.sqlite, lab: f.lab)
        let r = try f.sync(f.config(), dest)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try dest.values(f.schema, "Items", columns: ["id", "v"]) == ["id=1|v=upper"])
        #expect(try dest.values(f.schema, "items", columns: ["id", "v"]) == ["id=2|v=lower"])
        #expect(try dest.values(f.schema, "twin", columns: ["ID", "id", "Id"]) == ["ID=10|id=20|Id=thirty"])
        let twin = try #require(try dest.assigned(f.schema, "twin"))
        #expect(twin.columns["ID"] == "ID" && twin.columns["id"] == "id_2" && twin.columns["Id"] == "Id_3", "\(twin.columns)")
        let upper = try #require(try dest.assigned(f.schema, "Items")).table, lower = try #require(try dest.assigned(f.schema, "items")).table
        #expect(upper.lowercased() != lower.lowercased(), "\(upper) / \(lower)")
    }

    @Test(arguments: TestDestination.Kind.allCases)
    func hostileNamesLoad(kind: TestDestination.Kind) throws {
        let f = try Fixture("ident_hostile_\(kind.rawValue)")
        let s = f.q(f.schema)
        let long = String(repeating: "é", count: 31) + "x"  // 63 bytes
        let names = ["it's \"quoted\"", "with space", "new\nline", "ünïcødé 表", long, "select", "order"]
        for (i, n) in names.enumerated() {
            try f.sql("CREATE TABLE \(s).\(f.q(n)) (\(f.q(n)) int PRIMARY KEY, \"from\" text, \(f.q("c " + String(i))) text); INSERT INTO \(s).\(f.q(n)) VALUES (\(i), 'v\(i)', 'w\(i)')")
        }
        let dest = try TestDestination(kind, lab: f.lab)
        for round in 1...2 {
            let r = try f.sync(f.config(), dest)
            #expect(r.status == 0, "round \(round): \(r.stderr)")
            for (i, n) in names.enumerated() {
                let cols = [n, "from", "c \(i)"]
                #expect(try dest.values(f.schema, n, columns: cols) == f.sourceValues(f.schema, n, columns: cols), "round \(round): \(n)")
            }
        }
    }

    @Test func sqliteKeepsNumericExactlyAndEveryTypeAsDocumented() throws {
        let f = try Fixture("ident_types")
        let s = f.q(f.schema)
        try f.sql("""
            CREATE TABLE \(s).t (id int PRIMARY KEY, n numeric, m money, i8 int8, x xid8, f8 float8, b bool, by bytea, d date,
                                 ts timestamp, tz timestamptz, j jsonb, a int[], u uuid);
            INSERT INTO \(s).t VALUES
              (1, 12345678901234567.89, 12.50, 9007199254740993, '18446744073709551615', 0.1, true, '\\x00ff', '2024-02-29',
               '2024-01-02 03:04:05.5', '2024-01-02 03:04:05+02', '{"k": [1, 2]}', '{1,NULL,3}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
              (2, 1.00, NULL, -1, '0', 'NaN', false, '', '0044-03-15 BC', 'infinity', '-infinity', 'null', '{}', NULL);
            """)
        let dest = try TestDestination(.sqlite, lab: f.lab)
        let r = try f.sync(f.config(), dest)
        #expect(r.status == 0, "\(r.stderr)")
        let table = try #require(try dest.assigned(f.schema, "t")).table
        let rows = try DatabaseQueue(path: dest.path).read { db in
            try Row.fetchAll(db, sql: """
                SELECT typeof(n) || ':' || n, coalesce(typeof(m) || ':' || m, 'NULL'), typeof(i8) || ':' || i8, typeof(x) || ':' || x,
                       typeof(f8) || ':' || coalesce(f8, 'NULL'), typeof(b) || ':' || b, typeof(by) || ':' || hex(by), typeof(d) || ':' || d,
                       ts, tz, j, a, coalesce(u, 'NULL')
                FROM \(PGConnection.quoteIdentifier(table)) ORDER BY id
                """).map { r in (0..<13).map { (r[$0] as String?) ?? "?" } }
        }
        #expect(rows.count == 2)
        guard rows.count == 2 else { return }
        #expect(rows[0] == ["text:12345678901234567.89", "text:12.50", "integer:9007199254740993", "text:18446744073709551615",
                            "real:0.1", "integer:1", "blob:00FF", "text:2024-02-29", "2024-01-02T03:04:05.500000", "2024-01-02T01:04:05.000000Z",
                            #"{"k": [1, 2]}"#, "[1,null,3]", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"])
        #expect(rows[1] == ["text:1.00", "NULL", "integer:-1", "text:0", "null:NULL", "integer:0", "blob:", "text:0044-03-15 BC",
                            "infinity", "-infinity", "null", "[]", "NULL"])
    }

    @Test(arguments: TestDestination.Kind.allCases)
    func anUpdateThatChangesTheKeyReplacesTheRow(kind: TestDestination.Kind) throws {
        let c = try CDCFixture("ident_pk_\(kind.rawValue)", tables: "CREATE TABLE t (id int PRIMARY KEY, v text)")
        let f = c.f
        let s = f.q(f.schema)
        try f.admin.query("INSERT INTO \(s).t VALUES (1, 'one'), (2, 'two'), (3, 'three')")
        let dest = try TestDestination(kind, lab: f.lab)
        let r1 = try f.sync(c.config(), dest)
        #expect(r1.status == 0, "\(r1.stderr)")
        try f.admin.query("UPDATE \(s).t SET id = -id WHERE id IN (1, 2)")
        try f.admin.query("UPDATE \(s).t SET id = 30, v = 'moved' WHERE id = 3")
        let r2 = try f.sync(c.config(), dest)
        #expect(r2.status == 0, "\(r2.stderr)")
        #expect(try dest.rows(schema: f.schema, table: "t", hasBig: false) == f.sourceRows("t", hasBig: false))
        #expect(try dest.rows(schema: f.schema, table: "t", hasBig: false) == ["-2|two|-1", "-1|one|-1", "30|moved|-1"])
    }

    /// Found in review: a batch flushed before a row without its unchanged TOAST value was
    /// applied again afterwards (undoing the update), and a key-changing update of a TOASTed row
    /// lost the value it did not send.
    @Test(arguments: TestDestination.Kind.allCases)
    func toastedRowsSurviveKeyChangesAndPartialUpdates(kind: TestDestination.Kind) throws {
        let c = try CDCFixture("ident_toast_\(kind.rawValue)", tables: SyncTests.tables)
        let f = c.f
        let s = f.q(f.schema)
        try f.admin.query("INSERT INTO \(s).a VALUES (1, 'one', \(SyncTests.bigValue)), (2, 'two', \(SyncTests.bigValue))")
        let dest = try TestDestination(kind, lab: f.lab)
        #expect(try f.sync(c.config(), dest).status == 0)
        // In one run: an insert, then an update of it that leaves its TOASTed value out; key
        // changes of TOASTed rows; and another insert after them.
        try f.admin.query("INSERT INTO \(s).a VALUES (5, 'a', \(SyncTests.bigValue))")
        try f.admin.query("UPDATE \(s).a SET v = 'b' WHERE id = 5")
        try f.admin.query("UPDATE \(s).a SET id = id + 100 WHERE id IN (1, 2)")
        try f.admin.query("UPDATE \(s).a SET v = 'moved' WHERE id = 101")
        try f.admin.query("INSERT INTO \(s).a VALUES (6, 'six', NULL)")
        let r = try f.sync(c.config(), dest)
        #expect(r.status == 0, "\(r.stderr)")
        let want = try f.sourceRows("a")
        #expect(want.count == 4)
        if kind == .jsonl {
            // A JSON Lines consumer keeps the last line per key; a moved row's unchanged TOAST
            // value is listed in `_postgate_unchanged` under its new key.
            #expect(try dest.rows(schema: f.schema, table: "a", hasBig: false) == f.sourceRows("a", hasBig: false))
            #expect(try dest.rows(schema: f.schema, table: "a").contains(want.first { $0.hasPrefix("5|") }!))
        } else {
            #expect(try dest.rows(schema: f.schema, table: "a") == want)
        }
    }

    @Test(arguments: TestDestination.Kind.allCases)
    func aResumedFullRefreshCatchesChangesInCopiedRanges(kind: TestDestination.Kind) throws {
        let f = try Fixture("ident_resume_\(kind.rawValue)")
        let s = f.q(f.schema)
        let dest = try TestDestination(kind, lab: f.lab)
        // Killed once a good part of the table is committed but the load is unfinished.
        try f.killedFullRefresh(into: dest, atPage: 200, tableOptions: "WITH (fillfactor = 90)")
        // Changes in the copied pages between the kill and the rerun: deletes, in-place updates,
        // and updates that move a row to the end of the table.
        try f.admin.query("DELETE FROM \(s).big WHERE id BETWEEN 100 AND 149")
        try f.admin.query("UPDATE \(s).big SET v = 'updated ' || id WHERE id BETWEEN 1000 AND 1006")
        try f.admin.query("UPDATE \(s).big SET v = repeat('moved', 400) || id WHERE id BETWEEN 2000 AND 2006")
        try f.admin.query("INSERT INTO \(s).big VALUES (0, 'new at the start')")
        let r = try f.sync(f.config(["batch_fetch_limit": 2000]), dest)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("resuming the interrupted full refresh"), "\(r.stderr)")
        let got = try dest.rows(schema: f.schema, table: "big", hasBig: false)
        let want = try f.sourceRows("big", hasBig: false)
        #expect(got.count == want.count)
        #expect(got == want, "\(Set(got).symmetricDifference(Set(want)).sorted().prefix(10))")
        if kind == .jsonl { #expect(dest.lines(schema: f.schema, table: "big").count == want.count, "no row written twice") }
    }
}
