import Foundation

/// Turns COPY text-format rows into Airbyte RECORD lines, byte by byte, appending to an output
/// buffer. One instance per stream; its scratch buffers are reused for every row.
public struct RecordEncoder {
    public struct Column {
        public var name: String
        public var encoding: ValueEncoding
        /// False for columns selected only to follow a cursor.
        public var emitted: Bool
    }

    /// A COPY row that does not have the expected shape.
    public struct MalformedRow: Error, CustomStringConvertible {
        public var offset: Int
        public var reason: String
        public var description: String { "malformed COPY row at byte offset \(offset): \(reason)" }
    }

    let columns: [Column]
    let encodings: [ValueEncoding]
    let emitted: [Bool]
    /// `"name":` for each column, with a leading comma except for the first emitted one.
    let keys: [[UInt8]]
    let prefix: [UInt8]
    let fieldNames: [[UInt8]]
    var suffix: [UInt8] = []
    var scratch: [UInt8] = []
    var nulled: [Int] = []

    /// Index of the column whose raw text is kept after each row (the cursor), if any.
    public let trackedColumn: Int?
    /// The tracked column's text in the last row, nil when NULL.
    public private(set) var trackedValue: [UInt8]?
    /// Whether the tracked value differs from the previous row's.
    public private(set) var trackedChanged = false

    public init(namespace: String, stream: String, columns: [Column], trackedColumn: Int? = nil) {
        self.columns = columns
        self.encodings = columns.map(\.encoding)
        self.emitted = columns.map(\.emitted)
        self.trackedColumn = trackedColumn
        var keys: [[UInt8]] = []
        var first = true
        for c in columns {
            var k: [UInt8] = first || !c.emitted ? [] : [UInt8(ascii: ",")]
            if c.emitted { first = false }
            JSONBytes.appendString(c.name, to: &k)
            k.append(UInt8(ascii: ":"))
            keys.append(k)
        }
        self.keys = keys
        self.fieldNames = columns.map { c in var b: [UInt8] = []; JSONBytes.appendString(c.name, to: &b); return b }
        var p: [UInt8] = Array(#"{"type":"RECORD","record":{"namespace":"#.utf8)
        JSONBytes.appendString(namespace, to: &p)
        p.append(contentsOf: Array(#","stream":"#.utf8))
        JSONBytes.appendString(stream, to: &p)
        p.append(contentsOf: Array(#","data":{"#.utf8))
        self.prefix = p
        refreshEmittedAt()
    }

    /// Sets `emitted_at` to now for the records that follow.
    public mutating func refreshEmittedAt() {
        var s: [UInt8] = Array(#","emitted_at":"#.utf8)
        JSONBytes.appendInt(AirbyteMessage.nowMillis, to: &s)
        s.append(contentsOf: Array("}}\n".utf8))
        suffix = s
    }

    /// Appends the RECORD line for one COPY text row (which ends with a newline).
    public mutating func encode(copyRow row: UnsafeRawBufferPointer, into out: inout [UInt8]) throws(MalformedRow) {
        out.append(contentsOf: prefix)
        nulled.removeAll(keepingCapacity: true)
        let n = row.count
        var pos = 0
        let count = encodings.count
        for c in 0..<count {
            guard pos <= n else { throw MalformedRow(offset: n, reason: "expected \(count) fields, found \(c)") }
            // Find the end of the field and whether it holds escapes.
            var end = pos
            var escaped = false
            while end < n {
                let b = row[end]
                if b == 0x09 || b == 0x0a { break }
                if b == 0x5c { escaped = true; end &+= 1 }
                end &+= 1
            }
            if end > n { end = n }
            let isLast = c == count - 1
            if isLast ? (end < n && row[end] == 0x09) : (end >= n || row[end] != 0x09) {
                throw MalformedRow(offset: end, reason: "expected \(count) fields")
            }
            let isNull = end - pos == 2 && row[pos] == 0x5c && row[pos + 1] == UInt8(ascii: "N")
            if emitted[c] { out.append(contentsOf: keys[c]) }
            if isNull {
                if emitted[c] { out.append(contentsOf: [0x6e, 0x75, 0x6c, 0x6c]) }
                if c == trackedColumn { track(nil) }
            } else if escaped {
                var buf = scratch
                scratch = []
                buf.removeAll(keepingCapacity: true)
                Self.unescape(UnsafeRawBufferPointer(rebasing: row[pos..<end]), into: &buf)
                buf.withUnsafeBytes { v in emit(c, v, into: &out) }
                scratch = buf
            } else {
                emit(c, UnsafeRawBufferPointer(rebasing: row[pos..<end]), into: &out)
            }
            pos = end &+ 1
        }
        out.append(UInt8(ascii: "}"))
        if !nulled.isEmpty {
            out.append(contentsOf: Array(#","meta":{"changes":["#.utf8))
            for (k, c) in nulled.enumerated() {
                if k > 0 { out.append(UInt8(ascii: ",")) }
                out.append(contentsOf: Array(#"{"field":"#.utf8))
                out.append(contentsOf: fieldNames[c])
                out.append(contentsOf: Array(#","change":"NULLED","reason":"SOURCE_SERIALIZATION_ERROR"}"#.utf8))
            }
            out.append(contentsOf: Array("]}".utf8))
        }
        out.append(contentsOf: suffix)
    }

    @inline(__always)
    private mutating func emit(_ c: Int, _ v: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        if emitted[c] && !encodings[c].append(v, to: &out) { nulled.append(c) }
        if c == trackedColumn { track(v) }
    }

    private mutating func track(_ v: UnsafeRawBufferPointer?) {
        guard let v else {
            trackedChanged = trackedValue != nil
            trackedValue = nil
            return
        }
        if let t = trackedValue, t.count == v.count, t.withUnsafeBytes({ memcmp($0.baseAddress!, v.baseAddress!, v.count) == 0 }) {
            trackedChanged = false
        } else {
            trackedValue = Array(v)
            trackedChanged = true
        }
    }

    /// Undoes COPY text escaping (`\t`, `\n`, `\\`, octal and hex escapes).
    static func unescape(_ v: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        var i = 0
        let n = v.count
        while i < n {
            let b = v[i]
            guard b == 0x5c, i + 1 < n else { out.append(b); i += 1; continue }
            let e = v[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "n"): out.append(0x0a)
            case UInt8(ascii: "r"): out.append(0x0d)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0c)
            case UInt8(ascii: "v"): out.append(0x0b)
            case UInt8(ascii: "0")...UInt8(ascii: "7"):
                var val = Int(e - 0x30)
                var k = 0
                while k < 2 && i < n && v[i] >= 0x30 && v[i] <= 0x37 { val = val * 8 + Int(v[i] - 0x30); i += 1; k += 1 }
                out.append(UInt8(truncatingIfNeeded: val))
            case UInt8(ascii: "x"):
                var val = 0
                var k = 0
                while k < 2 && i < n, let d = hexValue(v[i]) { val = val * 16 + d; i += 1; k += 1 }
                out.append(UInt8(truncatingIfNeeded: val))
            default: out.append(e)
            }
        }
    }

    private static func hexValue(_ b: UInt8) -> Int? {
        switch b {
        case 0x30...0x39: return Int(b - 0x30)
        case 0x41...0x46: return Int(b - 0x41 + 10)
        case 0x61...0x66: return Int(b - 0x61 + 10)
        default: return nil
        }
    }
}
