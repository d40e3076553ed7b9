/// How one column's text value (as PostgreSQL prints it with DateStyle ISO, TimeZone UTC,
/// IntervalStyle postgres, bytea_output hex) becomes JSON. One plan serves every read path:
/// snapshot COPY rows and CDC pgoutput tuples alike.
public indirect enum ValueEncoding: Sendable, Equatable {
    /// Digits as printed.
    case integer
    /// numeric and float: digits as printed; NaN and ±Infinity become null with a change note.
    case number
    /// money as printed in the server's lc_monetary (CDC path): currency signs and grouping dropped.
    case money
    /// `t`/`f`.
    case boolean
    /// Any other type: a JSON string of the text.
    case string
    /// A JSON string of text that by its type's output format never needs escaping (uuid, inet, ...).
    case plain
    /// bytea in hex form: `\x` followed by hex digits.
    case bytea
    /// `YYYY-MM-DD` (with ` BC` before year 1).
    case date
    /// `YYYY-MM-DDTHH:MM:SS.ffffff`.
    case timestamp
    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    case timestamptz
    /// `HH:MM:SS.ffffff`.
    case time
    /// `HH:MM:SS.ffffff±HH:MM`.
    case timetz
    /// A Postgres array literal whose elements use `element`; `delimiter` is the type's typdelim.
    case array(element: ValueEncoding, delimiter: UInt8)
    /// hstore: a JSON string holding the JSON object of its pairs (`{"k":"v"}`), as Airbyte's
    /// Postgres source emits it.
    case hstore

    /// The encoding of a catalog type.
    public init(_ t: PostgresType) {
        if t.isArray, let e = t.element {
            self = .array(element: ValueEncoding(e.type), delimiter: e.type.name == "box" ? UInt8(ascii: ";") : UInt8(ascii: ","))
            return
        }
        switch t.name {
        case "int2", "int4", "int8", "oid", "xid8": self = .integer
        case "float4", "float8", "numeric": self = .number
        case "money": self = .money
        case "bool": self = .boolean
        case "date": self = .date
        case "uuid", "inet", "cidr", "macaddr", "macaddr8", "bit", "varbit", "pg_lsn", "interval", "tid", "xid", "cid": self = .plain
        case "bytea": self = .bytea
        case "timestamp": self = .timestamp
        case "timestamptz": self = .timestamptz
        case "time": self = .time
        case "timetz": self = .timetz
        case "hstore": self = .hstore
        default: self = .string
        }
    }
}

extension ValueEncoding {
    /// Appends the JSON form of `v` (the value's text) to `out`. Returns false when the value
    /// could not be represented (NaN, ±Infinity) and null was written instead.
    @inlinable
    public func append(_ v: UnsafeRawBufferPointer, to out: inout ByteBuffer) -> Bool {
        switch self {
        case .integer:
            out.append(v)
            return true
        case .number:
            if v.count > 0, let f = v.first, !(f == UInt8(ascii: "-") || (f >= 0x30 && f <= 0x39)) || (f == UInt8(ascii: "-") && v.count > 1 && v[1] == UInt8(ascii: "I")) {
                // NaN, Infinity, -Infinity
                appendNull(&out)
                return false
            }
            out.append(v)
            return true
        case .money:
            return ValueText.appendMoney(v, to: &out)
        case .boolean:
            if v.count > 0 && v[0] == UInt8(ascii: "t") { appendTrue(&out) } else { appendFalse(&out) }
            return true
        case .string:
            JSONBytes.appendString(v, to: &out)
            return true
        case .date:
            // infinity / -infinity have no date form: null, noted like NaN.
            if ValueText.isInfinity(v) {
                appendNull(&out)
                return false
            }
            out.append(0x22)
            out.append(v)
            out.append(0x22)
            return true
        case .plain:
            out.append(0x22)
            out.append(v)
            out.append(0x22)
            return true
        case .bytea:
            ValueText.appendBytea(v, to: &out)
            return true
        case .timestamp, .timestamptz:
            if ValueText.isInfinity(v) {
                appendNull(&out)
                return false
            }
            ValueText.appendTimestamp(v, zoned: self == .timestamptz, to: &out)
            return true
        case .hstore:
            return ValueText.appendHstore(v, to: &out)
        case .time:
            ValueText.appendTime(v, zoned: false, to: &out)
            return true
        case .timetz:
            ValueText.appendTime(v, zoned: true, to: &out)
            return true
        case .array(let element, let delimiter):
            var parser = ArrayLiteralParser(text: v, element: element, delimiter: delimiter)
            return parser.append(to: &out)
        }
    }

    @inlinable func appendNull(_ out: inout ByteBuffer) { out.append("null") }
    @inlinable func appendTrue(_ out: inout ByteBuffer) { out.append("true") }
    @inlinable func appendFalse(_ out: inout ByteBuffer) { out.append("false") }

    /// Convenience for tests and non-hot paths: the JSON text of one value.
    public func json(_ text: String) -> (json: String, representable: Bool) {
        var out = ByteBuffer(capacity: 64)
        defer { out.deallocate() }
        var t = text
        let ok = t.withUTF8 { append(UnsafeRawBufferPointer($0), to: &out) }
        return (String(decoding: out.bytes, as: UTF8.self), ok)
    }
}

/// Normalisers for date/time and money text.
public enum ValueText {
    @inlinable static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }

    /// `infinity` or `-infinity` (dates and timestamps).
    @inlinable static func isInfinity(_ v: UnsafeRawBufferPointer) -> Bool {
        guard let f = v.first else { return false }
        return f == UInt8(ascii: "i") || (f == UInt8(ascii: "-") && v.count > 1 && v[1] == UInt8(ascii: "i"))
    }

    /// hstore text (`"k"=>"v", "n"=>NULL`, backslash escapes inside quotes) → the JSON string of
    /// `{"k":"v","n":null}`. Text that is not hstore output becomes null (returns false).
    @usableFromInline
    static func appendHstore(_ v: UnsafeRawBufferPointer, to out: inout ByteBuffer) -> Bool {
        var obj = ByteBuffer(capacity: v.count + 16)
        defer { obj.deallocate() }
        obj.append(UInt8(ascii: "{"))
        var i = 0
        /// Reads a quoted item into `item`; false when the text is not a quoted string.
        func quoted(_ item: inout [UInt8]) -> Bool {
            guard i < v.count, v[i] == 0x22 else { return false }
            i += 1
            while i < v.count, v[i] != 0x22 {
                if v[i] == 0x5C, i + 1 < v.count { i += 1 }
                item.append(v[i])
                i += 1
            }
            guard i < v.count else { return false }
            i += 1
            return true
        }
        func skipSpaces() { while i < v.count, v[i] == 0x20 { i += 1 } }
        var first = true
        skipSpaces()
        while i < v.count {
            var key: [UInt8] = []
            guard quoted(&key) else { out.append("null"); return false }
            skipSpaces()
            guard i + 1 < v.count, v[i] == UInt8(ascii: "="), v[i + 1] == UInt8(ascii: ">") else { out.append("null"); return false }
            i += 2
            skipSpaces()
            if !first { obj.append(UInt8(ascii: ",")) }
            first = false
            key.withUnsafeBytes { JSONBytes.appendString($0, to: &obj) }
            obj.append(UInt8(ascii: ":"))
            if i + 4 <= v.count, v[i] == UInt8(ascii: "N"), v[i + 1] == UInt8(ascii: "U"), v[i + 2] == UInt8(ascii: "L"), v[i + 3] == UInt8(ascii: "L") {
                obj.append("null")
                i += 4
            } else {
                var value: [UInt8] = []
                guard quoted(&value) else { out.append("null"); return false }
                value.withUnsafeBytes { JSONBytes.appendString($0, to: &obj) }
            }
            skipSpaces()
            if i < v.count {
                guard v[i] == UInt8(ascii: ",") else { out.append("null"); return false }
                i += 1
                skipSpaces()
            }
        }
        obj.append(UInt8(ascii: "}"))
        JSONBytes.appendString(obj.bytes, to: &out)
        return true
    }

    /// `2024-01-02 03:04:05.5+00 BC` → `"2024-01-02T03:04:05.500000Z BC"`.
    @usableFromInline
    static func appendTimestamp(_ v: UnsafeRawBufferPointer, zoned: Bool, to out: inout ByteBuffer) {
        // infinity / -infinity, or anything unexpected, pass through as a string.
        guard let sp = v.firstIndex(of: 0x20), sp + 9 <= v.count, isDigit(v[0]) else {
            JSONBytes.appendString(v, to: &out)
            return
        }
        out.append(0x22)
        out.append(UnsafeRawBufferPointer(rebasing: v[0..<sp]))
        out.append(UInt8(ascii: "T"))
        let rest = UnsafeRawBufferPointer(rebasing: v[(sp + 1)...])
        appendTimeBody(rest, zoned: zoned, utcAsZ: true, to: &out)
        out.append(0x22)
    }

    /// `03:04:05.5+05:30` → `"03:04:05.500000+05:30"`.
    @usableFromInline
    static func appendTime(_ v: UnsafeRawBufferPointer, zoned: Bool, to out: inout ByteBuffer) {
        guard v.count >= 8, isDigit(v[0]) else {
            JSONBytes.appendString(v, to: &out)
            return
        }
        out.append(0x22)
        appendTimeBody(v, zoned: zoned, utcAsZ: false, to: &out)
        out.append(0x22)
    }

    /// Writes `HH:MM:SS.ffffff`, then the zone and any ` BC` suffix found after it.
    @usableFromInline
    static func appendTimeBody(_ v: UnsafeRawBufferPointer, zoned: Bool, utcAsZ: Bool, to out: inout ByteBuffer) {
        let n = v.count
        var i = min(8, n)
        out.append(UnsafeRawBufferPointer(rebasing: v[0..<i]))
        out.append(UInt8(ascii: "."))
        var digits = 0
        if i < n && v[i] == UInt8(ascii: ".") {
            i += 1
            while i < n && isDigit(v[i]) {
                if digits < 6 { out.append(v[i]) }
                digits += 1
                i += 1
            }
        }
        while digits < 6 { out.append(0x30); digits += 1 }
        if i < n && (v[i] == UInt8(ascii: "+") || v[i] == UInt8(ascii: "-")) {
            let start = i
            i += 1
            while i < n && (isDigit(v[i]) || v[i] == UInt8(ascii: ":")) { i += 1 }
            let zone = UnsafeRawBufferPointer(rebasing: v[start..<i])
            if utcAsZ && zone.count >= 3 && zone.dropFirst().allSatisfy({ $0 == 0x30 || $0 == UInt8(ascii: ":") }) {
                out.append(UInt8(ascii: "Z"))
            } else {
                out.append(zone)
                if zone.count == 3 { out.append(UInt8(ascii: ":")); out.append(0x30); out.append(0x30) }
            }
        } else if zoned && utcAsZ {
            out.append(UInt8(ascii: "Z"))
        }
        if i < n {
            // " BC" and anything else Postgres appended.
            JSONBytes.appendEscaped(UnsafeRawBufferPointer(rebasing: v[i...]), to: &out)
        }
    }

    /// `\x6b70` → `"\\x6b70"`: only the leading backslash needs escaping.
    @usableFromInline
    static func appendBytea(_ v: UnsafeRawBufferPointer, to out: inout ByteBuffer) {
        guard v.count >= 2, v[0] == 0x5c, v[1] == UInt8(ascii: "x") else {
            JSONBytes.appendString(v, to: &out)
            return
        }
        out.append(#""\\x"#)
        out.append(UnsafeRawBufferPointer(rebasing: v[2...]))
        out.append(0x22)
    }

    /// `-$1,234.56` → `-1234.56`; `($5.00)` (accounting negatives) → `-5.00`.
    @usableFromInline
    static func appendMoney(_ v: UnsafeRawBufferPointer, to out: inout ByteBuffer) -> Bool {
        var negative = false
        var body: [UInt8] = []
        for b in v {
            if isDigit(b) || b == UInt8(ascii: ".") { body.append(b) }
            else if b == UInt8(ascii: "-") || b == UInt8(ascii: "(") { negative = true }
        }
        guard !body.isEmpty else {
            out.append("null")
            return false
        }
        if negative { out.append(UInt8(ascii: "-")) }
        out.append(body)
        return true
    }
}

/// Parses a Postgres array literal (`{1,NULL,{"a b"}}`, optionally `[0:1]={...}`) and writes
/// it as a JSON array with typed elements.
@usableFromInline
struct ArrayLiteralParser {
    let text: UnsafeRawBufferPointer
    let element: ValueEncoding
    let delimiter: UInt8
    var i = 0
    var representable = true
    var scratch: [UInt8] = []

    @usableFromInline
    init(text: UnsafeRawBufferPointer, element: ValueEncoding, delimiter: UInt8) {
        self.text = text
        self.element = element
        self.delimiter = delimiter
    }

    /// Returns false if an element was nulled; writes the text as a string if it is not an array literal.
    @usableFromInline
    mutating func append(to out: inout ByteBuffer) -> Bool {
        if text.count > 0 && text[0] == UInt8(ascii: "[") {
            // Dimension decoration: skip to '='.
            while i < text.count && text[i] != UInt8(ascii: "=") { i += 1 }
            i += 1
        }
        let mark = out.count
        // What is appended here may be taken back, so it stays in the buffer until decided.
        out.spillHolds += 1
        defer { out.spillHolds -= 1 }
        guard i < text.count, text[i] == UInt8(ascii: "{"), parseArray(&out) else {
            out.truncate(to: mark)
            JSONBytes.appendString(text, to: &out)
            return true
        }
        return representable
    }

    private mutating func parseArray(_ out: inout ByteBuffer) -> Bool {
        i += 1  // '{'
        out.append(UInt8(ascii: "["))
        if i < text.count && text[i] == UInt8(ascii: "}") {
            i += 1
            out.append(UInt8(ascii: "]"))
            return true
        }
        var first = true
        while i < text.count {
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            skipSpaces()
            guard i < text.count else { return false }
            let c = text[i]
            if c == UInt8(ascii: "{") {
                guard parseArray(&out) else { return false }
            } else if c == UInt8(ascii: "\"") {
                i += 1
                scratch.removeAll(keepingCapacity: true)
                while i < text.count && text[i] != UInt8(ascii: "\"") {
                    if text[i] == UInt8(ascii: "\\") { i += 1; guard i < text.count else { return false } }
                    scratch.append(text[i])
                    i += 1
                }
                guard i < text.count else { return false }
                i += 1
                appendElement(&out)
            } else {
                scratch.removeAll(keepingCapacity: true)
                while i < text.count, text[i] != delimiter, text[i] != UInt8(ascii: "}") {
                    if text[i] == UInt8(ascii: "\\") { i += 1; guard i < text.count else { return false } }
                    scratch.append(text[i])
                    i += 1
                }
                while let last = scratch.last, last == 0x20 { scratch.removeLast() }
                if scratch.count == 4, scratch[0] | 0x20 == UInt8(ascii: "n"), scratch[1] | 0x20 == UInt8(ascii: "u"),
                   scratch[2] | 0x20 == UInt8(ascii: "l"), scratch[3] | 0x20 == UInt8(ascii: "l") {
                    out.append("null")
                } else {
                    appendElement(&out)
                }
            }
            skipSpaces()
            guard i < text.count else { return false }
            if text[i] == delimiter { i += 1; continue }
            if text[i] == UInt8(ascii: "}") {
                i += 1
                out.append(UInt8(ascii: "]"))
                return true
            }
            return false
        }
        return false
    }

    private mutating func skipSpaces() {
        while i < text.count && text[i] == 0x20 { i += 1 }
    }

    private mutating func appendElement(_ out: inout ByteBuffer) {
        let ok = scratch.withUnsafeBytes { element.append($0, to: &out) }
        if !ok { representable = false }
    }
}
