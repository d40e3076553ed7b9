import Testing
@testable import PostgateCore

@Suite struct TypeMappingTests {
    func t(_ name: String, kind: Character = "b", category: Character = "N") -> PostgresType {
        PostgresType(name: name, kind: kind, category: category, declared: name)
    }

    @Test func scalarKinds() {
        #expect(JSONKind(t("int2")) == .integer)
        #expect(JSONKind(t("int4")) == .integer)
        #expect(JSONKind(t("int8")) == .integer)
        #expect(JSONKind(t("numeric")) == .number)
        #expect(JSONKind(t("float8")) == .number)
        #expect(JSONKind(t("money")) == .number)
        #expect(JSONKind(t("bool")) == .boolean)
        #expect(JSONKind(t("date")) == .date)
        #expect(JSONKind(t("timestamptz")) == .timestampWithTimeZone)
        #expect(JSONKind(t("timetz")) == .timeWithTimeZone)
        for s in ["text", "bytea", "jsonb", "uuid", "inet", "interval", "bit", "varbit", "xml", "pg_lsn", "tsvector", "point"] {
            #expect(JSONKind(t(s)) == .string, "\(s)")
        }
        #expect(JSONKind(t("mood", kind: "e", category: "E")) == .string)
    }

    @Test func arraysAreTypedArrays() {
        let arr = PostgresType(name: "_int8", kind: "b", category: "A", element: t("int8"), declared: "bigint[]")
        #expect(JSONKind(arr) == .array(.integer))
        // Elements may be null, and an array column may hold nested arrays ({{1,2},{3,4}}).
        #expect(JSONKind(arr).jsonSchema == ["type": "array", "items": ["anyOf": [["type": ["null", "integer"]], ["type": "array"]]]])
    }
}
