import Testing
@testable import PostgateCore

@Suite struct RecordEncoderTests {
    func encoder() -> RecordEncoder {
        RecordEncoder(envelope: .airbyte(StreamID(namespace: "s\"1", name: "t")), columns: [
            .init(name: "id", encoding: .integer, emitted: true),
            .init(name: "Name \"x\"", encoding: .string, emitted: true),
            .init(name: "f", encoding: .number, emitted: true),
            .init(name: "hidden", encoding: .string, emitted: false),
        ])
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

    /// The cursor column of each row (for cursor checkpoints), read by `CopyText.field`.
    @Test func copyTextFieldsForTheCursor() throws {
        func field(_ row: String, _ i: Int) throws -> String? {
            var r = row
            return try r.withUTF8 { p in try CopyText.field(UnsafeRawBufferPointer(p), i).map { String(decoding: CopyText.unescaped($0), as: UTF8.self) } }
        }
        #expect(try field("1\ta\t1\tx\n", 3) == "x")
        #expect(try field("1\ta\\tb\t1\tx\n", 1) == "a\tb")
        #expect(try field("1\ta\t1\t\\N\n", 3) == nil)
        #expect(try field("1\tline\\nbreak\n", 1) == "line\nbreak")
        #expect(throws: RecordEncoder.MalformedRow.self) { _ = try field("1\ta\n", 3) }
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
