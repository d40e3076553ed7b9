import Foundation
import Testing
@testable import PostgateCore

/// What the clients people already run send, as they send it: nulls for unset fields (Airbyte's
/// standard tests), duplicate keys in saved state and every stream incremental (PyAirbyte).
@Suite struct ClientCompatibilityTests {
    @Test func nullMeansAbsentInAConfiguredCatalog() throws {
        let text = #"{"streams":[{"stream":{"name":"t","namespace":null,"json_schema":{},"supported_sync_modes":["full_refresh"]},"sync_mode":"full_refresh","destination_sync_mode":"overwrite","cursor_field":null,"primary_key":null,"generation_id":null,"sync_id":null,"minimum_generation_id":null}]}"#
        let streams = try ConfiguredCatalog.parse(JSONParser.parse(text), file: "c.json")
        #expect(streams.count == 1 && streams[0].namespace.isEmpty && streams[0].cursorField.isEmpty && streams[0].primaryKey.isEmpty)
        let bad = #"{"streams":[{"stream":{"name":"t","namespace":"s"},"sync_mode":"full_refresh","primary_key":[["a"], 7]}]}"#
        let doc = try JSONParser.parse(bad)
        #expect(throws: InputError.self) { _ = try ConfiguredCatalog.parse(doc, file: "c.json") }
        do {
            _ = try ConfiguredCatalog.parse(doc, file: "c.json")
        } catch {
            #expect(error.path == "streams[0].primary_key[1]")
        }
    }

    /// A stream without a namespace is found by name in the configured schemas; a name in two
    /// schemas is an error naming the catalog path.
    @Test func aStreamWithoutANamespaceIsFoundInTheConfiguredSchemas() throws {
        let f = try Fixture("nons")
        let other = "\(f.schema)_b"
        f.extraSchemas.append(other)
        try f.sql("CREATE TABLE \(f.q(f.schema)).only_here (id int); INSERT INTO \(f.q(f.schema)).only_here VALUES (1), (2); CREATE TABLE \(f.q(f.schema)).twice (id int)")
        try f.admin.query("CREATE SCHEMA \(f.q(other)); CREATE TABLE \(f.q(other)).twice (id int); GRANT USAGE ON SCHEMA \(f.q(other)) TO postgate_reader; GRANT SELECT ON ALL TABLES IN SCHEMA \(f.q(other)) TO postgate_reader")
        func catalog(_ name: String) -> JSONValue {
            .object(["streams": [["stream": ["name": .string(name), "namespace": .null, "json_schema": [:]], "sync_mode": "full_refresh",
                                  "destination_sync_mode": "overwrite", "cursor_field": .null, "primary_key": .null]]])
        }
        var cfg = f.config()
        cfg["schemas"] = [.string(f.schema), .string(other)]
        let (r, out) = try f.read(config: cfg, catalog: catalog("only_here"))
        #expect(r.status == 0, "\(r.stderr)")
        #expect(Set(out.records.compactMap { $0["id"]?.int64Value }) == [1, 2])
        #expect(out.recordMessages.first?["record"]?["namespace"] == .string(f.schema))
        let (r2, _) = try f.read(config: cfg, catalog: catalog("twice"))
        #expect(r2.status != 0)
        #expect(r2.stderr.contains("streams[0].stream.namespace") && r2.stderr.contains("several schemas"), "\(r2.stderr)")
    }

    /// PyAirbyte writes `"global_": null` twice in one state object: the last key wins, logged at
    /// debug level; config files stay strict.
    @Test func duplicateKeysInSavedStateTakeTheLastValue() throws {
        let f = try Fixture("dupkeys")
        try f.sql("CREATE TABLE \(f.q(f.schema)).t (id int PRIMARY KEY, updated_at timestamptz); INSERT INTO \(f.q(f.schema)).t VALUES (1, '2026-01-01'), (2, '2026-01-02')")
        let cat = f.catalog([("t", "incremental", "updated_at")])
        let (_, first) = try f.read(config: f.config(), catalog: cat)
        let state = try #require(first.lastState)
        // The same state as PyAirbyte writes it: with a duplicated key.
        let stream = try #require(state["state"]?["stream"]).jsonText
        let text = #"[{"type":"STREAM","stream":\#(stream),"global_":null,"global_":null,"data":null}]"#
        try f.admin.query("INSERT INTO \(f.q(f.schema)).t VALUES (3, '2026-01-03')")
        let (r, second) = try f.read(config: f.config(), catalog: cat, state: text)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(second.records.compactMap { $0["id"]?.int64Value } == [2, 3] || second.records.compactMap { $0["id"]?.int64Value } == [3],
                "only what changed since the state (\(second.records))")
        #expect(throws: JSONSyntaxError.self) { _ = try JSONParser.parse(#"{"password":"a","password":"b"}"#) }
    }

    /// Every stream configured as incremental (as PyAirbyte does): a table with an evident
    /// cursor uses it (discover offers it as default_cursor_field); one without is read in full
    /// with a warning, not failed.
    @Test func incrementalWithoutACursorUsesTheEvidentOneOrReadsInFull() throws {
        let f = try Fixture("nocursor")
        let s = f.q(f.schema)
        try f.sql("""
            CREATE TABLE \(s).with_ts (id int PRIMARY KEY, updated_at timestamptz NOT NULL);
            INSERT INTO \(s).with_ts VALUES (1, '2026-01-01'), (2, '2026-01-02');
            CREATE TABLE \(s).plain (id int PRIMARY KEY, v text);
            INSERT INTO \(s).plain VALUES (1, 'a'), (2, 'b');
            """)
        let d = try CLI.run(["discover", "--config", try CLI.writeConfig(f.config())])
        let streams = d.messages.first?["catalog"]?["streams"]?.arrayValue ?? []
        #expect(streams.first { $0["name"] == "with_ts" }?["default_cursor_field"] == ["updated_at"])
        #expect(streams.first { $0["name"] == "plain" }?["default_cursor_field"] == nil)

        let cat = f.catalog([("with_ts", "incremental", nil), ("plain", "incremental", nil)])
        let (r, first) = try f.read(config: f.config(), catalog: cat)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(first.records.count == 4)
        #expect(first.logs.contains { $0.contains("plain") && $0.contains("read in full") })
        try f.admin.query("INSERT INTO \(s).with_ts VALUES (3, '2026-01-03'); INSERT INTO \(s).plain VALUES (3, 'c')")
        let (r2, second) = try f.read(config: f.config(), catalog: cat, state: first.stdoutTranscript)
        #expect(r2.status == 0, "\(r2.stderr)")
        let withTs = second.recordMessages.filter { $0["record"]?["stream"] == "with_ts" }.compactMap { $0["record"]?["data"]?["id"]?.int64Value }
        let plain = second.recordMessages.filter { $0["record"]?["stream"] == "plain" }.compactMap { $0["record"]?["data"]?["id"]?.int64Value }
        #expect(Set(withTs).isSubset(of: [2, 3]) && withTs.contains(3), "the evident cursor reads only what changed (\(withTs))")
        #expect(Set(plain) == [1, 2, 3], "without a cursor every run reads the whole table")
    }

    /// hstore reaches records as the text of a JSON object.
    @Test func hstoreColumnsAreJSONObjectText() throws {
        let f = try Fixture("hstore")
        try f.admin.query("CREATE EXTENSION IF NOT EXISTS hstore")
        try f.sql("CREATE TABLE \(f.q(f.schema)).t (id int PRIMARY KEY, h hstore); INSERT INTO \(f.q(f.schema)).t VALUES (1, 'a=>1, \"b c\"=>NULL'), (2, '')")
        let (r, out) = try f.read(config: f.config(), catalog: f.catalog([("t", "full_refresh", nil)]))
        #expect(r.status == 0, "\(r.stderr)")
        let byID = Dictionary(uniqueKeysWithValues: out.records.map { ($0["id"]?.int64Value ?? 0, $0["h"]) })
        let one = try #require(byID[1]??.stringValue)
        #expect(try JSONParser.parse(one) == ["a": "1", "b c": .null])
        #expect(byID[2] == "{}")
    }
}
