import Foundation

/// A log sequence number.
public struct LSN: Sendable, Comparable, Hashable, CustomStringConvertible {
    public var value: UInt64
    public init(_ value: UInt64) { self.value = value }

    /// Parses `16/B374D848`.
    public init?(_ text: String) {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let hi = UInt64(parts[0], radix: 16), let lo = UInt64(parts[1], radix: 16), hi <= 0xffff_ffff, lo <= 0xffff_ffff else { return nil }
        value = hi << 32 | lo
    }

    public var description: String { String(value >> 32, radix: 16, uppercase: true) + "/" + String(value & 0xffff_ffff, radix: 16, uppercase: true) }
    public static func < (a: LSN, b: LSN) -> Bool { a.value < b.value }
}

/// One column value of a pgoutput tuple.
public enum TupleValue: Sendable, Equatable {
    case null
    /// A TOASTed value the change did not touch; its content is not sent.
    case unchangedToast
    case text([UInt8])
    case binary([UInt8])
}

/// A decoded pgoutput message (protocol versions 1 and 2, without streamed transactions).
public enum PgOutputMessage: Sendable, Equatable {
    public struct Column: Sendable, Equatable {
        public var isKey: Bool
        public var name: String
        public var typeOID: UInt32
        public var typeModifier: Int32
    }

    case begin(finalLSN: LSN, commitTime: Int64, xid: UInt32)
    case commit(flags: UInt8, commitLSN: LSN, endLSN: LSN, commitTime: Int64)
    case origin(lsn: LSN, name: String)
    case relation(oid: UInt32, namespace: String, name: String, replicaIdentity: UInt8, columns: [Column])
    case type(oid: UInt32, namespace: String, name: String)
    case insert(relation: UInt32, new: [TupleValue])
    /// `oldKind` is `K` (key columns) or `O` (whole old row) when the old tuple was sent.
    case update(relation: UInt32, oldKind: UInt8?, old: [TupleValue]?, new: [TupleValue])
    case delete(relation: UInt32, oldKind: UInt8, old: [TupleValue])
    case truncate(options: UInt8, relations: [UInt32])
    case message(transactional: Bool, lsn: LSN, prefix: String, content: [UInt8])
}

/// A malformed replication message, with the byte offset where decoding stopped.
public struct PgOutputError: Error, Sendable, CustomStringConvertible {
    public var offset: Int
    public var reason: String
    public var description: String { "malformed pgoutput message at byte offset \(offset): \(reason)" }
}

/// Decodes pgoutput messages from bytes; never traps on bad input.
public struct PgOutputDecoder {
    private let b: [UInt8]
    private var i = 0

    public static func decode(_ bytes: [UInt8]) throws(PgOutputError) -> PgOutputMessage {
        var d = PgOutputDecoder(b: bytes)
        return try d.message()
    }

    private init(b: [UInt8]) { self.b = b }

    private func fail(_ reason: String) -> PgOutputError { PgOutputError(offset: i, reason: reason) }

    private mutating func u8() throws(PgOutputError) -> UInt8 {
        guard i < b.count else { throw fail("unexpected end of message") }
        defer { i += 1 }
        return b[i]
    }

    private mutating func u16() throws(PgOutputError) -> UInt16 { UInt16(try u8()) << 8 | UInt16(try u8()) }
    private mutating func u32() throws(PgOutputError) -> UInt32 { UInt32(try u16()) << 16 | UInt32(try u16()) }
    private mutating func u64() throws(PgOutputError) -> UInt64 { UInt64(try u32()) << 32 | UInt64(try u32()) }

    private mutating func bytes(_ n: Int) throws(PgOutputError) -> [UInt8] {
        guard n >= 0, i + n <= b.count else { throw fail("a length of \(n) runs past the end of the message") }
        defer { i += n }
        return Array(b[i..<(i + n)])
    }

    private mutating func cstring() throws(PgOutputError) -> String {
        guard let end = b[i...].firstIndex(of: 0) else { throw fail("unterminated string") }
        defer { i = end + 1 }
        return String(decoding: b[i..<end], as: UTF8.self)
    }

    private mutating func tuple() throws(PgOutputError) -> [TupleValue] {
        let n = Int(try u16())
        var out: [TupleValue] = []
        out.reserveCapacity(n)
        for _ in 0..<n {
            let kind = try u8()
            switch kind {
            case UInt8(ascii: "n"): out.append(.null)
            case UInt8(ascii: "u"): out.append(.unchangedToast)
            case UInt8(ascii: "t"): out.append(.text(try bytes(Int(try u32()))))
            case UInt8(ascii: "b"): out.append(.binary(try bytes(Int(try u32()))))
            default:
                i -= 1
                throw fail("unknown tuple column kind 0x\(String(kind, radix: 16))")
            }
        }
        return out
    }

    private mutating func message() throws(PgOutputError) -> PgOutputMessage {
        let tag = try u8()
        let m: PgOutputMessage
        switch tag {
        case UInt8(ascii: "B"):
            m = .begin(finalLSN: LSN(try u64()), commitTime: Int64(bitPattern: try u64()), xid: try u32())
        case UInt8(ascii: "C"):
            m = .commit(flags: try u8(), commitLSN: LSN(try u64()), endLSN: LSN(try u64()), commitTime: Int64(bitPattern: try u64()))
        case UInt8(ascii: "O"):
            m = .origin(lsn: LSN(try u64()), name: try cstring())
        case UInt8(ascii: "R"):
            let oid = try u32()
            let ns = try cstring()
            let name = try cstring()
            let identity = try u8()
            let n = Int(try u16())
            var cols: [PgOutputMessage.Column] = []
            for _ in 0..<n {
                let flags = try u8()
                cols.append(.init(isKey: flags & 1 == 1, name: try cstring(), typeOID: try u32(), typeModifier: Int32(bitPattern: try u32())))
            }
            m = .relation(oid: oid, namespace: ns, name: name, replicaIdentity: identity, columns: cols)
        case UInt8(ascii: "Y"):
            m = .type(oid: try u32(), namespace: try cstring(), name: try cstring())
        case UInt8(ascii: "I"):
            let rel = try u32()
            guard try u8() == UInt8(ascii: "N") else { i -= 1; throw fail("insert without a new tuple") }
            m = .insert(relation: rel, new: try tuple())
        case UInt8(ascii: "U"):
            let rel = try u32()
            var kind = try u8()
            var oldKind: UInt8?
            var old: [TupleValue]?
            if kind == UInt8(ascii: "K") || kind == UInt8(ascii: "O") {
                oldKind = kind
                old = try tuple()
                kind = try u8()
            }
            guard kind == UInt8(ascii: "N") else { i -= 1; throw fail("update without a new tuple") }
            m = .update(relation: rel, oldKind: oldKind, old: old, new: try tuple())
        case UInt8(ascii: "D"):
            let rel = try u32()
            let kind = try u8()
            guard kind == UInt8(ascii: "K") || kind == UInt8(ascii: "O") else { i -= 1; throw fail("delete without an old tuple") }
            m = .delete(relation: rel, oldKind: kind, old: try tuple())
        case UInt8(ascii: "T"):
            let n = Int(try u32())
            let options = try u8()
            guard n >= 0, n <= (b.count - i) / 4 else { throw fail("truncate of \(n) relations runs past the end") }
            var rels: [UInt32] = []
            for _ in 0..<n { rels.append(try u32()) }
            m = .truncate(options: options, relations: rels)
        case UInt8(ascii: "M"):
            let flags = try u8()
            let lsn = LSN(try u64())
            let prefix = try cstring()
            m = .message(transactional: flags & 1 == 1, lsn: lsn, prefix: prefix, content: try bytes(Int(try u32())))
        default:
            i -= 1
            throw fail("unknown message type 0x\(String(tag, radix: 16))")
        }
        return m
    }
}

/// The streaming-replication framing around pgoutput (inside CopyBoth data).
public enum ReplicationFrame: Sendable, Equatable {
    /// `w`: WAL data starting at `start`; the payload is a pgoutput message.
    case xlogData(start: LSN, end: LSN, sendTime: Int64, payload: [UInt8])
    /// `k`: primary keepalive; `replyRequested` asks for a standby status update now.
    case keepalive(walEnd: LSN, sendTime: Int64, replyRequested: Bool)

    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(PgOutputError) -> ReplicationFrame {
        func u64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 << 8 | UInt64(bytes[at + $1]) } }
        guard let tag = bytes.first else { throw PgOutputError(offset: 0, reason: "empty replication message") }
        switch tag {
        case UInt8(ascii: "w"):
            guard bytes.count >= 25 else { throw PgOutputError(offset: bytes.count, reason: "XLogData header is 25 bytes") }
            return .xlogData(start: LSN(u64(1)), end: LSN(u64(9)), sendTime: Int64(bitPattern: u64(17)), payload: Array(bytes[25...]))
        case UInt8(ascii: "k"):
            guard bytes.count >= 18 else { throw PgOutputError(offset: bytes.count, reason: "keepalive is 18 bytes") }
            return .keepalive(walEnd: LSN(u64(1)), sendTime: Int64(bitPattern: u64(9)), replyRequested: bytes[17] != 0)
        default:
            throw PgOutputError(offset: 0, reason: "unknown replication message type 0x\(String(tag, radix: 16))")
        }
    }

    /// A Standby Status Update: `written` is what was received, `flushed` what was durably taken
    /// (the slot's confirmed position; a walsender shutting down waits for it to reach its end).
    public static func standbyStatus(written: LSN, flushed: LSN, now: Date = Date(), replyRequested: Bool = false) -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "r")]
        func put(_ v: UInt64) { for k in (0..<8).reversed() { out.append(UInt8(truncatingIfNeeded: v >> (UInt64(k) * 8))) } }
        put(max(written, flushed).value)
        put(flushed.value)
        put(flushed.value)
        put(UInt64(bitPattern: postgresMicros(now)))
        out.append(replyRequested ? 1 : 0)
        return out
    }

    /// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
    static let postgresEpoch: Int64 = 946_684_800

    /// Microseconds since 2000-01-01 UTC, PostgreSQL's epoch.
    public static func postgresMicros(_ d: Date) -> Int64 {
        Int64((d.timeIntervalSince1970 - Double(postgresEpoch)) * 1_000_000)
    }

    /// Unix seconds of a PostgreSQL timestamp (the inverse of `postgresMicros`).
    public static func unixSeconds(_ postgresMicros: Int64) -> Double {
        Double(postgresMicros) / 1_000_000 + Double(postgresEpoch)
    }

    /// ISO-8601 UTC text of a PostgreSQL timestamp (microseconds since 2000-01-01).
    public static func isoTimestamp(_ micros: Int64) -> String {
        var whole = micros / 1_000_000
        var frac = micros % 1_000_000
        if frac < 0 { frac += 1_000_000; whole -= 1 }
        var t = time_t(whole + postgresEpoch)
        var tm = tm()
        gmtime_r(&t, &tm)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1, Int(tm.tm_mday), Int(tm.tm_hour), Int(tm.tm_min), Int(tm.tm_sec), Int(frac))
    }
}
