import Foundation

/// Turns COPY text-format rows into Airbyte RECORD lines, byte by byte, appending to an output
/// buffer. One instance per stream; its tables and scratch memory are reused for every row.
public final class RecordEncoder {
    public struct Column {
        public var name: String
        public var encoding: ValueEncoding
        /// False for columns selected only to follow a cursor.
        public var emitted: Bool

        public init(name: String, encoding: ValueEncoding, emitted: Bool) {
            self.name = name
            self.encoding = encoding
            self.emitted = emitted
        }
    }

    /// A COPY row that does not have the expected shape.
    public struct MalformedRow: Error, CustomStringConvertible {
        public var offset: Int
        public var reason: String
        public var description: String { "malformed COPY row at byte offset \(offset): \(reason)" }
    }

    /// Per-column dispatch codes, so the hot loop never touches an indirect enum.
    enum Kind: UInt8 {
        case integer, number, money, boolean, string, plain, date, bytea, timestamp, timestamptz, time, timetz
        /// Written by the column's `ValueEncoding` itself (arrays, hstore).
        case delegated
    }

    let count: Int
    let kinds: UnsafeMutablePointer<Kind>
    let emitted: UnsafeMutablePointer<Bool>
    /// `"name":` per column (with a leading comma except before the first emitted column), contiguous.
    let keyBytes: UnsafeMutablePointer<UInt8>
    let keyOffsets: UnsafeMutablePointer<Int>
    let keyLengths: UnsafeMutablePointer<Int>
    let arrayEncodings: [Int: ValueEncoding]
    let fieldNames: [[UInt8]]
    let prefix: UnsafeMutableBufferPointer<UInt8>
    /// `,"emitted_at":N}}\n`; `let` storage so the per-row path needs no exclusivity checks.
    let suffix: UnsafeMutablePointer<UInt8>
    let suffixLength: UnsafeMutablePointer<Int>
    let scratch: UnsafeMutablePointer<ByteBuffer>
    /// Columns nulled in the current row (NaN, Infinity).
    let nulled: UnsafeMutablePointer<Int>

    /// Fixed members appended to every record's data (e.g. `,"_ab_cdc_lsn":…`), starting with a comma.
    let dataSuffix: [UInt8]
    /// What is written around each record's data.
    let envelope: RecordEnvelope

    public init(envelope: RecordEnvelope, columns: [Column], dataSuffix: [UInt8] = []) {
        self.dataSuffix = dataSuffix
        self.envelope = envelope
        count = columns.count
        kinds = .allocate(capacity: max(1, count))
        emitted = .allocate(capacity: max(1, count))
        keyOffsets = .allocate(capacity: max(1, count))
        keyLengths = .allocate(capacity: max(1, count))
        var keys: [UInt8] = []
        var arrays: [Int: ValueEncoding] = [:]
        var first = true
        for (i, c) in columns.enumerated() {
            let start = keys.count
            if c.emitted {
                if !first { keys.append(UInt8(ascii: ",")) }
                first = false
                JSONBytes.appendString(c.name, to: &keys)
                keys.append(UInt8(ascii: ":"))
            }
            keyOffsets[i] = start
            keyLengths[i] = keys.count - start
            emitted[i] = c.emitted
            kinds[i] = Self.kind(c.encoding)
            if Self.kind(c.encoding) == .delegated { arrays[i] = c.encoding }
        }
        suffix = .allocate(capacity: RecordEnvelope.suffixCapacity)
        suffixLength = .allocate(capacity: 1)
        suffixLength.initialize(to: 0)
        scratch = .allocate(capacity: 1)
        scratch.initialize(to: ByteBuffer(capacity: 4096))
        nulled = .allocate(capacity: max(1, count))
        keyBytes = .allocate(capacity: max(1, keys.count))
        keyBytes.initialize(from: keys, count: keys.count)
        arrayEncodings = arrays
        fieldNames = columns.map { c in var b: [UInt8] = []; JSONBytes.appendString(c.name, to: &b); return b }
        let p = envelope.prefix
        prefix = .allocate(capacity: p.count)
        _ = prefix.initialize(from: p)
        refreshEmittedAt()
    }

    deinit {
        kinds.deallocate()
        emitted.deallocate()
        keyOffsets.deallocate()
        keyLengths.deallocate()
        keyBytes.deallocate()
        scratch.pointee.deallocate()
        scratch.deallocate()
        prefix.deallocate()
        suffix.deallocate()
        suffixLength.deallocate()
        nulled.deallocate()
    }

    static func kind(_ e: ValueEncoding) -> Kind {
        switch e {
        case .integer: return .integer
        case .number: return .number
        case .money: return .money
        case .boolean: return .boolean
        case .string: return .string
        case .plain: return .plain
        case .date: return .date
        case .bytea: return .bytea
        case .timestamp: return .timestamp
        case .timestamptz: return .timestamptz
        case .time: return .time
        case .timetz: return .timetz
        case .array, .hstore: return .delegated
        }
    }

    /// Sets `emitted_at` to now for the records that follow.
    public func refreshEmittedAt() {
        var s = ByteBuffer(capacity: RecordEnvelope.suffixCapacity)
        defer { s.deallocate() }
        envelope.appendSuffix(to: &s)
        let n = min(RecordEnvelope.suffixCapacity, s.count)
        suffix.update(from: s.base, count: n)
        suffixLength.pointee = n
    }

    /// Appends the RECORD line for one COPY text row (which ends with a newline).
    public func encode(copyRow row: UnsafeRawBufferPointer, into out: inout ByteBuffer) throws(MalformedRow) {
        out.append(UnsafePointer(prefix.baseAddress!), prefix.count)
        var nulledCount = 0
        let n = row.count
        guard let p = row.baseAddress?.assumingMemoryBound(to: UInt8.self), n > 0 else {
            throw MalformedRow(offset: 0, reason: "empty row")
        }
        var pos = 0
        for c in 0..<count {
            guard pos < n else {
                throw MalformedRow(offset: n, reason: "expected \(count) fields, found \(c)")
            }
            // Find the end of the field and whether it holds escapes.
            var end = pos
            var escaped = false
            while end &+ 8 <= n && SWAR.hasCopySpecial(UnsafeRawPointer(p + end).loadUnaligned(as: UInt64.self)) == 0 {
                end &+= 8
            }
            while end < n {
                let b = p[end]
                if b == 0x09 || b == 0x0a { break }
                if b == 0x5c { escaped = true; end &+= 1 }
                end &+= 1
            }
            if end > n { end = n }
            let isLast = c == count - 1
            if isLast ? (end < n && p[end] == 0x09) : (end >= n || p[end] != 0x09) {
                throw MalformedRow(offset: end, reason: "expected \(count) fields")
            }
            let isEmitted = emitted[c]
            if isEmitted { out.append(keyBytes + keyOffsets[c], keyLengths[c]) }
            if end - pos == 2 && p[pos] == 0x5c && p[pos + 1] == UInt8(ascii: "N") {
                if isEmitted { out.append("null") }
            } else if escaped {
                scratch.pointee.removeAll()
                Self.unescape(UnsafeRawBufferPointer(start: p + pos, count: end - pos), into: &scratch.pointee)
                if !emit(c, UnsafeRawBufferPointer(start: scratch.pointee.base, count: scratch.pointee.count), isEmitted, into: &out) {
                    nulled[nulledCount] = c
                    nulledCount &+= 1
                }
            } else if !emit(c, UnsafeRawBufferPointer(start: p + pos, count: end - pos), isEmitted, into: &out) {
                nulled[nulledCount] = c
                nulledCount &+= 1
            }
            pos = end &+ 1
        }
        if !dataSuffix.isEmpty { dataSuffix.withUnsafeBytes { out.append($0) } }
        out.append(UInt8(ascii: "}"))
        if nulledCount > 0 && envelope.carriesMeta {
            out.append(#","meta":{"changes":["#)
            for k in 0..<nulledCount {
                let c = nulled[k]
                if k > 0 { out.append(UInt8(ascii: ",")) }
                out.append(#"{"field":"#)
                fieldNames[c].withUnsafeBytes { out.append($0) }
                out.append(#","change":"NULLED","reason":"SOURCE_SERIALIZATION_ERROR"}"#)
            }
            out.append("]}")
        }
        out.append(UnsafePointer(suffix), suffixLength.pointee)
    }

    /// Writes one value; false when it was replaced by null.
    @inline(__always)
    private func emit(_ c: Int, _ v: UnsafeRawBufferPointer, _ isEmitted: Bool, into out: inout ByteBuffer) -> Bool {
        guard isEmitted else { return true }
        switch kinds[c] {
        case .integer:
            out.append(v)
        case .number:
            return ValueEncoding.number.append(v, to: &out)
        case .string:
            JSONBytes.appendString(v, to: &out)
        case .plain:
            out.append(0x22)
            out.append(v)
            out.append(0x22)
        case .bytea:
            ValueText.appendBytea(v, to: &out)
        case .boolean:
            out.append(v.count > 0 && v[0] == UInt8(ascii: "t") ? "true" : "false")
        case .date:
            return ValueEncoding.date.append(v, to: &out)
        case .timestamp:
            return ValueEncoding.timestamp.append(v, to: &out)
        case .timestamptz:
            return ValueEncoding.timestamptz.append(v, to: &out)
        case .time:
            ValueText.appendTime(v, zoned: false, to: &out)
        case .timetz:
            ValueText.appendTime(v, zoned: true, to: &out)
        case .money:
            return ValueText.appendMoney(v, to: &out)
        case .delegated:
            return arrayEncodings[c]?.append(v, to: &out) ?? true
        }
        return true
    }

    /// Undoes COPY text escaping (`\t`, `\n`, `\\`, octal and hex escapes).
    static func unescape(_ v: UnsafeRawBufferPointer, into out: inout ByteBuffer) {
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
                while k < 2 && i < n, let d = JSONBytes.hexValue(v[i]) { val = val * 16 + Int(d); i += 1; k += 1 }
                out.append(UInt8(truncatingIfNeeded: val))
            default: out.append(e)
            }
        }
    }
}
