import Testing
@testable import PostgateCore

@Suite struct RecordEncoderTests {
    func encoder(tracked: Int? = nil) -> RecordEncoder {
        RecordEncoder(namespace: "s\"1", stream: "t", columns: [
            .init(name: "id", encoding: .integer, emitted: true),
            .init(name: "Name \"x\"", encoding: .string, emitted: true),
            .init(name: "f", encoding: .number, emitted: true),
            .init(name: "hidden", encoding: .string, emitted: false),
        ], trackedColumn: tracked)
    }

    func encode(_ e: inout RecordEncoder, _ row: String) throws -> JSONValue {
        var out = ByteBuffer(capacity: 64)
        defer { out.deallocate() }
        var r = row
        try r.withUTF8 { try e.encode(copyRow: UnsafeRawBufferPointer($0), into: &out) }
        let bytes = out.array
        #expect(bytes.last == 0x0a)
        return try JSONParser.parse(Array(bytes.dropLast()))
    }

    @Test func unescapesCopyTextAndWritesOneRecordLine() throws {
        var e = encoder()
        let v = try encode(&e, "7\ttab\\there\\\\ \\n end\t1.5\tsecret\n")
        #expect(v["type"] == "RECORD")
        #expect(v["record"]?["namespace"] == "s\"1")
        #expect(v["record"]?["data"] == ["id": 7, "Name \"x\"": "tab\there\\ \n end", "f": .number("1.5")])
        #expect(v["record"]?["meta"] == nil)
    }

    @Test func nullsAndNulledValues() throws {
        var e = encoder()
        let v = try encode(&e, "\\N\t\\N\tNaN\t\\N\n")
        #expect(v["record"]?["data"] == ["id": nil, "Name \"x\"": nil, "f": nil])
        #expect(v["record"]?["meta"]?["changes"] == [["field": "f", "change": "NULLED", "reason": "SOURCE_SERIALIZATION_ERROR"]])
    }

    @Test func tracksTheCursorColumn() throws {
        var e = encoder(tracked: 3)
        _ = try encode(&e, "1\ta\t1\tx\n")
        #expect(e.trackedValue == Array("x".utf8) && e.trackedChanged)
        _ = try encode(&e, "2\ta\t1\tx\n")
        #expect(!e.trackedChanged)
        _ = try encode(&e, "3\ta\t1\t\\N\n")
        #expect(e.trackedValue == nil && e.trackedChanged)
    }

    @Test(arguments: ["1\ta\t1\n", "1\ta\t1\tx\ty\n", ""])
    func malformedRowsAreErrorsWithAnOffset(row: String) {
        var e = encoder()
        do {
            _ = try encode(&e, row)
            Issue.record("accepted a malformed row")
        } catch {
            #expect("\(error)".contains("byte offset"))
        }
    }
}
