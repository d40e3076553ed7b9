import Testing
@testable import PostgateCore

@Suite struct ValueEncodingTests {
    func j(_ e: ValueEncoding, _ text: String) -> String { e.json(text).json }

    @Test func numbersKeepTheDigitsPostgresPrinted() {
        #expect(j(.integer, "-9223372036854775808") == "-9223372036854775808")
        #expect(j(.number, "12345678901234567890.123456789") == "12345678901234567890.123456789")
        #expect(j(.number, "0.10") == "0.10")
        #expect(j(.number, "1e+300") == "1e+300")
        #expect(j(.number, "-1.5e-07") == "-1.5e-07")
    }

    @Test(arguments: ["NaN", "Infinity", "-Infinity"])
    func unrepresentableNumbersBecomeNull(text: String) {
        let (json, ok) = ValueEncoding.number.json(text)
        #expect(json == "null" && !ok)
    }

    /// infinity has no date or date-time form: null, noted in meta.changes (as Airbyte's own
    /// Postgres source does), so schema checks and typed targets accept the record.
    @Test(arguments: [(ValueEncoding.date, "infinity"), (.date, "-infinity"), (.timestamp, "-infinity"), (.timestamp, "infinity"), (.timestamptz, "infinity"), (.timestamptz, "-infinity")])
    func infiniteDatesAndTimesBecomeNull(encoding: ValueEncoding, text: String) {
        let (json, ok) = encoding.json(text)
        #expect(json == "null" && !ok)
    }

    @Test func infiniteElementsOfDateArraysAreNulled() {
        let (json, ok) = ValueEncoding.array(element: .date, delimiter: UInt8(ascii: ",")).json("{2024-01-01,infinity}")
        #expect(json == #"["2024-01-01",null]"# && !ok)
    }

    /// hstore becomes the text of a JSON object, as Airbyte's Postgres source emits it.
    @Test func hstoreIsTheTextOfAJSONObject() {
        #expect(ValueEncoding(PostgresType(name: "hstore", kind: "b", category: "U", declared: "hstore")) == .hstore)
        #expect(j(.hstore, #""a"=>"1", "b c"=>NULL, "q\"t"=>"x\\y""#) == #""{\"a\":\"1\",\"b c\":null,\"q\\\"t\":\"x\\\\y\"}""#)
        #expect(j(.hstore, "") == #""{}""#)
        let (json, ok) = ValueEncoding.hstore.json("not hstore")
        #expect(json == "null" && !ok)
    }

    @Test func moneyFromLocaleText() {
        #expect(j(.money, "$1,234.56") == "1234.56")
        #expect(j(.money, "-$5.00") == "-5.00")
        #expect(j(.money, "($5.00)") == "-5.00")
    }

    @Test func booleansAndStrings() {
        #expect(j(.boolean, "t") == "true")
        #expect(j(.boolean, "f") == "false")
        #expect(j(.string, "a\"b\\c\nd\u{7}") == #""a\"b\\c\nd\u0007""#)
        #expect(j(.string, #"\x6b707a"#) == #""\\x6b707a""#)
        #expect(j(.string, "") == #""""#)
    }

    @Test func plainAndByteaText() {
        #expect(j(.plain, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11") == #""a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11""#)
        #expect(j(.bytea, #"\x00ff"#) == #""\\x00ff""#)
        #expect(j(.bytea, #"\x"#) == #""\\x""#)
        #expect(ValueEncoding(PostgresType(name: "uuid", kind: "b", category: "U", declared: "uuid")) == .plain)
        #expect(ValueEncoding(PostgresType(name: "bytea", kind: "b", category: "U", declared: "bytea")) == .bytea)
    }

    @Test func datesAndTimes() {
        #expect(j(.date, "2024-02-29") == #""2024-02-29""#)
        #expect(j(.date, "0044-03-15 BC") == #""0044-03-15 BC""#)
        #expect(j(.timestamp, "2024-01-02 03:04:05") == #""2024-01-02T03:04:05.000000""#)
        #expect(j(.timestamp, "2024-01-02 03:04:05.5") == #""2024-01-02T03:04:05.500000""#)
        #expect(j(.timestamp, "2024-01-02 03:04:05.123456") == #""2024-01-02T03:04:05.123456""#)
        #expect(j(.timestamp, "0044-03-15 12:00:00 BC") == #""0044-03-15T12:00:00.000000 BC""#)
        #expect(j(.timestamp, "12345-01-01 00:00:00") == #""12345-01-01T00:00:00.000000""#)
        #expect(j(.timestamptz, "2024-01-02 03:04:05.25+00") == #""2024-01-02T03:04:05.250000Z""#)
        #expect(j(.timestamptz, "0001-01-01 00:00:00+00 BC") == #""0001-01-01T00:00:00.000000Z BC""#)
        #expect(j(.time, "03:04:05") == #""03:04:05.000000""#)
        #expect(j(.time, "24:00:00") == #""24:00:00.000000""#)
        #expect(j(.timetz, "03:04:05.25+05:30") == #""03:04:05.250000+05:30""#)
        #expect(j(.timetz, "03:04:05-08") == #""03:04:05.000000-08:00""#)
    }

    @Test func arrays() {
        let ints = ValueEncoding.array(element: .integer, delimiter: UInt8(ascii: ","))
        #expect(j(ints, "{1,NULL,3}") == "[1,null,3]")
        #expect(j(ints, "{}") == "[]")
        #expect(j(ints, "{{1,2},{3,4}}") == "[[1,2],[3,4]]")
        #expect(j(ints, "{{{1}},{{2}}}") == "[[[1]],[[2]]]")
        #expect(j(ints, "[0:1]={7,8}") == "[7,8]")
        let texts = ValueEncoding.array(element: .string, delimiter: UInt8(ascii: ","))
        #expect(j(texts, #"{"a b","c\"d",NULL,"",e,"NULL","x\\y"}"#) == #"["a b","c\"d",null,"","e","NULL","x\\y"]"#)
        let nums = ValueEncoding.array(element: .number, delimiter: UInt8(ascii: ","))
        let (json, ok) = nums.json("{1.5,NaN,-Infinity}")
        #expect(json == "[1.5,null,null]" && !ok)
        let bools = ValueEncoding.array(element: .boolean, delimiter: UInt8(ascii: ","))
        #expect(j(bools, "{t,f}") == "[true,false]")
        let stamps = ValueEncoding.array(element: .timestamptz, delimiter: UInt8(ascii: ","))
        #expect(j(stamps, #"{"2024-01-02 03:04:05+00",NULL}"#) == #"["2024-01-02T03:04:05.000000Z",null]"#)
        let boxes = ValueEncoding.array(element: .string, delimiter: UInt8(ascii: ";"))
        #expect(j(boxes, "{(1,1),(0,0);(2,2),(1,1)}") == #"["(1,1),(0,0)","(2,2),(1,1)"]"#)
        // Not an array literal: kept as a string rather than guessed at.
        #expect(j(ints, "garbage") == #""garbage""#)
    }

    @Test func encodingFollowsTheCatalogType() {
        let e = ValueEncoding(PostgresType(name: "_box", kind: "b", category: "A",
                                           element: PostgresType(name: "box", kind: "b", category: "G", declared: "box"), declared: "box[]"))
        #expect(e == .array(element: .string, delimiter: UInt8(ascii: ";")))
        #expect(ValueEncoding(PostgresType(name: "timestamptz", kind: "b", category: "D", declared: "timestamptz")) == .timestamptz)
    }
}
