import Foundation

/// The one destination type map, derived from each column's value encoding and source type.
///
/// SQLite: INTEGER (integers; xid8 as DECIMAL_TEXT), REAL (real, double precision), DECIMAL_TEXT (numeric and money:
/// text affinity, so the digits stay exactly as the source printed them), BOOLEAN (0/1), BLOB
/// (bytea), TEXT for everything else (dates and times in the records' ISO 8601 form, arrays and
/// JSON as JSON text). PostgreSQL: the source's built-in type (arrays of built-in types too;
/// money as numeric); enums, composites, extension types and reg* types as text.
enum DestinationTypes {
    /// How a value is bound into SQLite.
    enum SQLiteValue: Sendable, Equatable {
        case integer, real, exactText, boolean, blob, text, isoTime(ValueEncoding), json(ValueEncoding)
    }

    static func sqliteValue(_ encoding: ValueEncoding, _ type: PostgresType?) -> SQLiteValue {
        switch encoding {
        case .integer:
            // xid8 reaches 2^64, past SQLite's integers: its digits are kept as text.
            return type?.name == "xid8" ? .exactText : .integer
        case .number:
            if let n = type?.name, n == "float4" || n == "float8" { return .real }
            return .exactText
        case .money: return .exactText
        case .boolean: return .boolean
        case .bytea: return .blob
        case .timestamp, .timestamptz, .time, .timetz: return .isoTime(encoding)
        case .array: return .json(encoding)
        case .string, .plain, .date, .hstore: return .text
        }
    }

    static func sqlite(_ encoding: ValueEncoding, _ type: PostgresType?) -> String {
        switch sqliteValue(encoding, type) {
        case .integer: return "INTEGER"
        case .real: return "REAL"
        case .exactText: return "DECIMAL_TEXT"
        case .boolean: return "BOOLEAN"
        case .blob: return "BLOB"
        case .text, .isoTime, .json: return "TEXT"
        }
    }

    /// Built-in base types kept as they are (by `typname`), with the SQL name to declare.
    static let postgresBuiltins: [String: String] = [
        "int2": "smallint", "int4": "integer", "int8": "bigint", "float4": "real", "float8": "double precision",
        "numeric": "numeric", "money": "numeric", "bool": "boolean", "text": "text", "varchar": "text", "bpchar": "text",
        "name": "text", "char": "text", "date": "date", "time": "time", "timetz": "timetz", "timestamp": "timestamp",
        "timestamptz": "timestamptz", "interval": "interval", "uuid": "uuid", "inet": "inet", "cidr": "cidr",
        "macaddr": "macaddr", "macaddr8": "macaddr8", "bytea": "bytea", "json": "json", "jsonb": "jsonb", "xml": "xml",
        "bit": "varbit", "varbit": "varbit", "tsvector": "tsvector", "tsquery": "tsquery", "point": "point", "line": "line",
        "lseg": "lseg", "box": "box", "path": "path", "polygon": "polygon", "circle": "circle", "pg_lsn": "pg_lsn",
        "int4range": "int4range", "int8range": "int8range", "numrange": "numrange", "tsrange": "tsrange",
        "tstzrange": "tstzrange", "daterange": "daterange", "oid": "bigint", "xid": "bigint", "cid": "bigint", "xid8": "numeric",
    ]

    static func postgres(_ encoding: ValueEncoding, _ type: PostgresType?) -> String {
        guard let t = type else { return "text" }
        if t.isArray, let e = t.element?.type {
            // box arrays use ';' between elements; text is the safe form for them.
            guard e.kind == "b" || e.kind == "r", e.name != "box", let base = postgresBuiltins[e.name] else { return "text" }
            return base + "[]"
        }
        guard t.kind == "b" || t.kind == "r" else { return "text" }
        return postgresBuiltins[t.name] ?? "text"
    }
}

extension ValueText {
    /// A decimal integer's value, or nil when the text is not one that fits in 64 bits.
    @inline(__always)
    static func int64(_ v: UnsafeRawBufferPointer) -> Int64? {
        let n = v.count
        guard n > 0, n <= 20 else { return nil }
        var i = 0
        var negative = false
        if v[0] == UInt8(ascii: "-") { negative = true; i = 1; guard n > 1 else { return nil } }
        var x: Int64 = 0
        while i < n {
            let d = v[i] &- 0x30
            guard d < 10 else { return nil }
            let (m, o1) = x.multipliedReportingOverflow(by: 10)
            let (a, o2) = negative ? m.subtractingReportingOverflow(Int64(d)) : m.addingReportingOverflow(Int64(d))
            guard !o1 && !o2 else { return nil }
            x = a
            i += 1
        }
        return x
    }

    /// A float's value (`NaN`, `Infinity` and `-Infinity` included).
    static func double(_ v: UnsafeRawBufferPointer) -> Double? {
        guard v.count > 0, v.count < 64 else { return nil }
        // strtod on a NUL-terminated stack copy; it also reads Infinity, -Infinity and NaN.
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: v.count + 1) { buf -> Double? in
            for i in 0..<v.count { buf[i] = CChar(bitPattern: v[i]) }
            buf[v.count] = 0
            var end: UnsafeMutablePointer<CChar>?
            let d = strtod(buf.baseAddress!, &end)
            return end == buf.baseAddress! + v.count ? d : nil
        }
    }

    /// bytea hex text (`\x0102`) as bytes.
    static func hexBytes(_ v: UnsafeRawBufferPointer) -> [UInt8]? {
        guard v.count >= 2, v[0] == 0x5c, v[1] == UInt8(ascii: "x"), v.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity((v.count - 2) / 2)
        var i = 2
        while i + 1 < v.count {
            guard let h = JSONBytes.hexValue(v[i]), let l = JSONBytes.hexValue(v[i + 1]) else { return nil }
            out.append(h << 4 | l)
            i += 2
        }
        return out
    }
}
