import Foundation
import Testing
@testable import PostgateCore

/// Schema `X.b` with table `c` and schema `X` with table `b.c` are two streams, in records, states,
/// catalog matching and CDC alike.
@Suite struct StreamIdentityTests {
    /// Two schemas whose (schema, table) pairs join to the same `X.b.c` text.
    final class Pair {
        let f: Fixture
        let dotted: String
        init(_ prefix: String) throws {
            f = try Fixture(prefix)
            dotted = f.schema + ".b"
            let s = f.q(f.schema), d = f.q(dotted)
            try f.admin.query("CREATE SCHEMA \(d); GRANT USAGE ON SCHEMA \(d) TO postgate_reader, postgate_repl")
            try f.admin.query("GRANT USAGE ON SCHEMA \(s) TO postgate_repl")
            try f.admin.query("CREATE TABLE \(d).c (id int PRIMARY KEY, who text); CREATE TABLE \(s).\"b.c\" (id int PRIMARY KEY, who text)")
            try f.admin.query("INSERT INTO \(d).c VALUES (1, 'dotted schema'); INSERT INTO \(s).\"b.c\" VALUES (1, 'dotted table'), (2, 'dotted table')")
            try f.admin.query("GRANT SELECT ON ALL TABLES IN SCHEMA \(d) TO postgate_reader, postgate_repl; GRANT SELECT ON ALL TABLES IN SCHEMA \(s) TO postgate_reader, postgate_repl")
        }
        deinit { _ = try? f.admin.query("DROP SCHEMA \(f.q(dotted)) CASCADE") }

        func catalog(_ mode: String, cursor: String?) -> JSONValue {
            .object(["streams": .array([(dotted, "c"), (f.schema, "b.c")].map { ns, name in
                var o: JSONObject = [
                    "stream": ["name": .string(name), "namespace": .string(ns), "json_schema": ["type": "object"]],
                    "sync_mode": .string(mode), "destination_sync_mode": "append",
                ]
                if let cursor { o["cursor_field"] = [.string(cursor)] }
                return .object(o)
            })])
        }

        func who(_ out: ReadOutput) -> [String] {
            out.recordMessages.compactMap { m in
                guard let r = m["record"], let ns = r["namespace"]?.stringValue, let n = r["stream"]?.stringValue, let w = r["data"]?["who"]?.stringValue else { return nil }
                return "\(ns == dotted ? "X.b" : "X")|\(n)|\(w)"
            }.sorted()
        }
    }

    @Test func bothStreamsAreReadAndResumedByTheirOwnState() throws {
        let p = try Pair("ident")
        let config = p.f.config(["schemas": [.string(p.f.schema), .string(p.dotted)]])
        let (r1, first) = try p.f.read(config: config, catalog: p.catalog("incremental", cursor: "id"))
        #expect(r1.status == 0, "\(r1.stderr)")
        #expect(p.who(first) == ["X.b|c|dotted schema", "X|b.c|dotted table", "X|b.c|dotted table"])

        try p.f.admin.query("INSERT INTO \(p.f.q(p.dotted)).c VALUES (7, 'new in dotted schema')")
        let (r2, second) = try p.f.read(config: config, catalog: p.catalog("incremental", cursor: "id"), state: first.stdoutTranscript)
        #expect(r2.status == 0, "\(r2.stderr)")
        #expect(p.who(second) == ["X.b|c|new in dotted schema"], "each stream resumes from its own cursor")
    }

    @Test func cdcKeepsTheStreamsApart() throws {
        let p = try Pair("ident_cdc")
        let tag = "\(UInt32.random(in: 0...UInt32.max))"
        let slot = "pg_slot_\(tag)", publication = "pub_\(tag)"
        try p.f.admin.query("CREATE PUBLICATION \(p.f.q(publication)) FOR TABLE \(p.f.q(p.dotted)).c, \(p.f.q(p.f.schema)).\"b.c\"")
        try p.f.admin.query("SELECT pg_create_logical_replication_slot('\(slot)', 'pgoutput')")
        defer {
            _ = try? p.f.admin.query("SELECT pg_drop_replication_slot('\(slot)')")
            _ = try? p.f.admin.query("DROP PUBLICATION IF EXISTS \(p.f.q(publication))")
        }
        var config = p.f.config(["schemas": [.string(p.f.schema), .string(p.dotted)]])
        config["username"] = .string(p.f.lab["PG_REPL_USER"])
        config["password"] = .string(p.f.lab["PG_REPL_PASSWORD"])
        config["replication_method"] = ["method": "CDC", "replication_slot": .string(slot), "publication": .string(publication), "initial_waiting_seconds": 20]
        let (r1, first) = try p.f.read(config: config, catalog: p.catalog("incremental", cursor: nil))
        #expect(r1.status == 0, "\(r1.stderr)")
        #expect(p.who(first) == ["X.b|c|dotted schema", "X|b.c|dotted table", "X|b.c|dotted table"])
        let done = first.states.last?["state"]?["global"]?["stream_states"]?.arrayValue ?? []
        #expect(done.count == 2, "both streams are marked snapshotted")

        try p.f.admin.query("INSERT INTO \(p.f.q(p.dotted)).c VALUES (8, 'change in dotted schema'); UPDATE \(p.f.q(p.f.schema)).\"b.c\" SET who = 'changed table' WHERE id = 2")
        let (r2, second) = try p.f.read(config: config, catalog: p.catalog("incremental", cursor: nil), state: first.stdoutTranscript)
        #expect(r2.status == 0, "\(r2.stderr)")
        #expect(p.who(second) == ["X.b|c|change in dotted schema", "X|b.c|changed table"])
    }
}
