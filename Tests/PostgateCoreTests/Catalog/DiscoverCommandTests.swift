import Foundation
import Testing
@testable import PostgateCore

@Suite struct DiscoverCommandTests {
    /// Creates a schema with every kind of relation and many types, discovers it, and cleans up.
    @Test func catalogCoversRelationsTypesAndKeys() throws {
        let lab = try Lab.load()
        let admin = try lab.adminConnection()
        let schema = "Disc Ü\"\(UInt16.random(in: 0...UInt16.max))"
        let q = PGConnection.quoteIdentifier(schema)
        try admin.query("CREATE SCHEMA \(q)")
        defer { _ = try? admin.query("DROP SCHEMA \(q) CASCADE") }
        try admin.query("""
            CREATE TYPE \(q).mood AS ENUM ('sad', 'happy');
            CREATE DOMAIN \(q).posint AS int4 CHECK (VALUE > 0);
            CREATE TABLE \(q)."Mixed Table" (
              "Id" bigint, "Part" int, i2 smallint, i4 integer, ser serial, n numeric(12,2), f4 real, f8 double precision,
              m money, b boolean, t text, vc varchar(10), ch char(3), by bytea, bi bit(4), vb varbit,
              d date, ts timestamp, tstz timestamptz, tm time, tmtz timetz, iv interval,
              j json, jb jsonb, u uuid, ip inet, cidr_ cidr, mac macaddr, mac8 macaddr8,
              pt point, ln line, ls lseg, bx box, pa path, pg polygon, ci circle,
              lsn pg_lsn, tsv tsvector, tsq tsquery, x xml, mo \(q).mood, pi \(q).posint, rng tsrange,
              ia int[], ta text[], na numeric[], ma int[][], da date[],
              PRIMARY KEY ("Id", "Part")
            );
            CREATE VIEW \(q).v AS SELECT "Id", t FROM \(q)."Mixed Table";
            CREATE MATERIALIZED VIEW \(q).mv AS SELECT "Id" FROM \(q)."Mixed Table";
            CREATE TABLE \(q).parted (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
            CREATE TABLE \(q).parted_2025 PARTITION OF \(q).parted FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
            CREATE TABLE \(q).parted_2026 PARTITION OF \(q).parted FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
            CREATE TABLE \(q).hidden (id int);
            GRANT USAGE ON SCHEMA \(q) TO postgate_reader;
            GRANT SELECT ON \(q)."Mixed Table", \(q).v, \(q).mv, \(q).parted TO postgate_reader;
            """)
        let path = try CLI.writeConfig(lab.readerConfig(schemas: [schema]))
        let r = try CLI.run(["discover", "--config", path])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdoutLines.count == 1)
        let msg = try #require(r.messages.first)
        #expect(msg["type"] == "CATALOG")
        let streams = try #require(msg["catalog"]?["streams"]?.arrayValue)
        let byName = Dictionary(uniqueKeysWithValues: streams.map { ($0["name"]?.stringValue ?? "", $0) })
        #expect(Set(byName.keys) == ["Mixed Table", "v", "mv", "parted"], "partitions and unreadable tables are left out")
        for s in streams { #expect(s["namespace"] == .string(schema)) }

        let table = try #require(byName["Mixed Table"])
        #expect(table["source_defined_primary_key"] == [["Id"], ["Part"]])
        #expect(table["supported_sync_modes"] == ["full_refresh", "incremental"])
        #expect(table["source_defined_cursor"] == false)
        let props = try #require(table["json_schema"]?["properties"])
        let integer: JSONValue = ["type": "integer"]
        let number: JSONValue = ["type": "number"]
        let string: JSONValue = ["type": "string"]
        for c in ["Id", "Part", "i2", "i4", "ser", "pi"] { #expect(props[c] == integer, "\(c)") }
        for c in ["n", "f4", "f8", "m"] { #expect(props[c] == number, "\(c)") }
        #expect(props["b"] == ["type": "boolean"])
        for c in ["t", "vc", "ch", "by", "bi", "vb", "iv", "j", "jb", "u", "ip", "cidr_", "mac", "mac8", "pt", "ln", "ls", "bx", "pa", "pg", "ci",
                  "lsn", "tsv", "tsq", "x", "mo", "rng"] {
            #expect(props[c] == string, "\(c)")
        }
        #expect(props["d"] == ["type": "string", "format": "date"])
        #expect(props["ts"] == ["type": "string", "format": "date-time", "airbyte_type": "timestamp_without_timezone"])
        #expect(props["tstz"] == ["type": "string", "format": "date-time", "airbyte_type": "timestamp_with_timezone"])
        #expect(props["tm"] == ["type": "string", "airbyte_type": "time_without_timezone"])
        #expect(props["tmtz"] == ["type": "string", "airbyte_type": "time_with_timezone"])
        // Elements may be null, and any array column may hold nested arrays.
        func items(_ element: JSONValue) -> JSONValue { ["type": "array", "items": ["anyOf": [element, ["type": "array"]]]] }
        #expect(props["ia"] == items(["type": ["null", "integer"]]))
        #expect(props["ta"] == items(["type": ["null", "string"]]))
        #expect(props["na"] == items(["type": ["null", "number"]]))
        #expect(props["ma"] == items(["type": ["null", "integer"]]))
        #expect(props["da"] == items(["type": ["null", "string"], "format": "date"]))
        #expect(props.objectValue?.keys.first == "Id", "columns keep table order")

        #expect(byName["v"]?["source_defined_primary_key"] == [])
        #expect(byName["parted"]?["source_defined_primary_key"] == [["id"], ["at"]])
        #expect(byName["mv"]?["json_schema"]?["properties"]?["Id"] == integer)
    }

    @Test func cdcCatalogAddsMetadataColumnsAndCursor() throws {
        let lab = try Lab.load()
        let admin = try lab.adminConnection()
        let schema = "cdcdisc\(UInt16.random(in: 0...UInt16.max))"
        try admin.query("CREATE SCHEMA \(schema); CREATE TABLE \(schema).t (id int PRIMARY KEY, v text); CREATE VIEW \(schema).w AS SELECT id FROM \(schema).t")
        try admin.query("GRANT USAGE ON SCHEMA \(schema) TO postgate_reader; GRANT SELECT ON ALL TABLES IN SCHEMA \(schema) TO postgate_reader")
        defer { _ = try? admin.query("DROP SCHEMA \(schema) CASCADE") }
        var c = lab.readerConfig(schemas: [schema])
        c["replication_method"] = ["method": "CDC", "replication_slot": "s", "publication": "p"]
        let r = try CLI.run(["discover", "--config", try CLI.writeConfig(c)])
        #expect(r.status == 0, "\(r.stderr)")
        let streams = try #require(r.messages.first?["catalog"]?["streams"]?.arrayValue)
        let t = try #require(streams.first { $0["name"] == "t" })
        #expect(t["source_defined_cursor"] == true)
        #expect(t["default_cursor_field"] == ["_ab_cdc_lsn"])
        for col in ["_ab_cdc_lsn", "_ab_cdc_updated_at", "_ab_cdc_deleted_at"] {
            #expect(t["json_schema"]?["properties"]?[col] != nil, "\(col)")
        }
        let w = try #require(streams.first { $0["name"] == "w" })
        #expect(w["supported_sync_modes"] == ["full_refresh"], "views cannot be captured by CDC")
        #expect(w["json_schema"]?["properties"]?["_ab_cdc_lsn"] == nil)
    }

    @Test func connectionFailureIsATraceError() throws {
        let lab = try Lab.load()
        var c = lab.readerConfig()
        c["password"] = "wrong-password-for-discover"
        let r = try CLI.run(["discover", "--config", try CLI.writeConfig(c)], secrets: ["wrong-password-for-discover"])
        #expect(r.status != 0)
        let msg = try #require(r.messages.first)
        #expect(msg["type"] == "TRACE")
        #expect(msg["trace"]?["error"]?["message"]?.stringValue?.contains("password authentication failed") == true)
    }
}
