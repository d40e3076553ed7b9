import Foundation
import Testing
@testable import PostgateCore

/// Enums, domains (over a base type and over an array), arrays of enums and composites print the
/// same in snapshots and in CDC, also for columns added while the stream is followed.
@Suite struct TypeParityTests {
    static func data(_ out: ReadOutput, id: Int64) -> JSONValue? {
        guard case .object(var o)? = out.records.last(where: { $0["id"]?.int64Value == id }) else { return nil }
        for k in o.keys where k.hasPrefix("_ab_cdc_") { o[k] = nil }
        return .object(o)
    }

    @Test func userDefinedTypesPrintTheSameInSnapshotsAndChanges() throws {
        let c = try CDCFixture("cdc_types", tables: """
            CREATE TYPE mood AS ENUM ('ok', 'meh', 'bad');
            CREATE DOMAIN tags AS text[] CHECK (cardinality(VALUE) < 10);
            CREATE DOMAIN posint AS int CHECK (VALUE > 0);
            CREATE TYPE pair AS (x int, y text);
            CREATE TABLE t (id int PRIMARY KEY, m mood, ms mood[], tg tags, pi posint, pr pair, prs pair[])
            """)
        let s = c.f.q(c.f.schema)
        try c.f.admin.query("INSERT INTO \(s).t VALUES (1, 'meh', '{ok,bad}', '{\"a b\",c}', 5, '(1,\"x y\")', ARRAY['(2,z)'::\(s).pair])")
        let (r1, first) = try c.read(["t"])
        #expect(r1.status == 0, "\(r1.stderr)")
        let snap1 = try #require(Self.data(first, id: 1))
        #expect(snap1["m"] == "meh" && snap1["ms"] == ["ok", "bad"] && snap1["tg"] == ["a b", "c"] && snap1["pi"] == 5)
        #expect(snap1["pr"] == "(1,\"x y\")" && snap1["prs"] == ["(2,z)"], "\(snap1)")

        // Columns of each kind added mid-stream, then changes that use them.
        try c.f.admin.query("ALTER TABLE \(s).t ADD COLUMN m2 \(s).mood, ADD COLUMN ms2 \(s).mood[], ADD COLUMN tg2 \(s).tags, ADD COLUMN pi2 \(s).posint, ADD COLUMN pr2 \(s).pair")
        try c.f.admin.query("UPDATE \(s).t SET m2 = 'ok', ms2 = '{meh,meh}', tg2 = '{q}', pi2 = 7, pr2 = '(3,w)' WHERE id = 1")
        try c.f.admin.query("INSERT INTO \(s).t VALUES (2, 'bad', '{}', '{}', 1, '(,)', '{}', 'bad', '{bad,ok}', '{\"x,y\"}', 9, '(4,\"q r\")')")
        let (r2, second) = try c.read(["t"], state: first)
        #expect(r2.status == 0, "\(r2.stderr)")
        let cdc1 = try #require(Self.data(second, id: 1))
        let cdc2 = try #require(Self.data(second, id: 2))
        #expect(cdc1["ms2"] == ["meh", "meh"] && cdc1["tg2"] == ["q"] && cdc1["pi2"] == 7 && cdc1["pr2"] == "(3,w)", "\(cdc1)")
        #expect(cdc2["tg2"] == ["x,y"] && cdc2["ms"] == .array([]), "\(cdc2)")

        // A fresh load of the same rows (the slot's start again, no state): snapshot records.
        let (r3, third) = try c.read(["t"])
        #expect(r3.status == 0, "\(r3.stderr)")
        #expect(Self.data(third, id: 1) == cdc1, "snapshot \(String(describing: Self.data(third, id: 1))) vs change \(cdc1)")
        #expect(Self.data(third, id: 2) == cdc2, "snapshot \(String(describing: Self.data(third, id: 2))) vs change \(cdc2)")
        // The columns before the change print as in the first snapshot.
        for k in ["m", "ms", "tg", "pi", "pr", "prs"] { #expect(cdc1[k] == snap1[k], "\(k)") }
    }
}
