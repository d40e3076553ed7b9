import Testing
@testable import PostgateCore

@Suite struct JSONParserTests {
    @Test func keepsKeyOrderAndNumberText() throws {
        let v = try JSONParser.parse(#"{"b": 1.50, "a": [true, null, "x\u00e9\n"], "c": -0.0e+3}"#)
        #expect(v.objectValue?.keys == ["b", "a", "c"])
        #expect(v["b"] == .number("1.50"))
        #expect(v["c"] == .number("-0.0e+3"))
        #expect(v["a"] == .array([.bool(true), .null, .string("xé\n")]))
    }

    @Test func surrogatePairs() throws {
        #expect(try JSONParser.parse(#""\ud83d\ude00""#) == .string("😀"))
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse(#""\ud83d""#) }
    }

    @Test(arguments: [
        (#"{"a":1,}"#, 7),
        (#"{"a" 1}"#, 5),
        (#"[1, 2"#, 5),
        (#""abc"#, 4),
        (#"{"a": tru}"#, 6),
        (#"{"a": 1} x"#, 9),
        (#"{"a": "\q"}"#, 8),
        (#"{"a":1,"a":2}"#, 12),
        ("", 0),
        ("01", 1),
    ])
    func errorsCarryTheByteOffset(text: String, offset: Int) {
        do {
            _ = try JSONParser.parse(text)
            Issue.record("\(text) parsed but should not")
        } catch {
            #expect(error.offset == offset, "\(text): \(error)")
        }
    }

    @Test func deepNestingIsAnErrorNotACrash() {
        let text = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse(text) }
    }

    @Test func rejectsInvalidUTF8() {
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse([0x22, 0xff, 0xfe, 0x22]) }
    }
}

@Suite struct JSONWriterTests {
    @Test func escapesEverythingJSONRequires() throws {
        var w = JSONWriter()
        w.string("q\"b\\n\n\t\u{01}é😀")
        let text = String(decoding: w.bytes, as: UTF8.self)
        #expect(text == #""q\"b\\n\n\t\u0001é😀""#)
        #expect(try JSONParser.parse(text) == .string("q\"b\\n\n\t\u{01}é😀"))
    }

    @Test(arguments: [Int64.min, -1, 0, 7, 10, 1234567890, Int64.max])
    func integers(v: Int64) {
        var w = JSONWriter()
        w.int(v)
        #expect(String(decoding: w.bytes, as: UTF8.self) == String(v))
    }

    @Test(arguments: [Int64.min, -10, -1, 0, 9, 10, 99, 100, 1_795_247_478_912, Int64.max])
    func byteBufferIntegers(v: Int64) {
        var b = ByteBuffer(capacity: 4)
        defer { b.deallocate() }
        b.append("x")
        JSONBytes.appendInt(v, to: &b)
        #expect(String(decoding: b.bytes, as: UTF8.self) == "x" + String(v))
    }

    @Test func roundTripsValues() throws {
        let v: JSONValue = ["a": [1, "two", nil, true], "b": ["c": .number("1e5")]]
        #expect(try JSONParser.parse(v.jsonText) == v)
    }
}
