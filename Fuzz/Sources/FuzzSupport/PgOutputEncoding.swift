import PostgateCore

/// A canonical encoder for pgoutput messages and replication frames, the inverse of
/// `PgOutputDecoder` and `ReplicationFrame.decode`, so targets can check what was decoded.
public struct WireEncoder {
    public private(set) var bytes: [UInt8] = []
    /// Offsets of flag bytes of which the decoder keeps only whether they are zero (`nonZero`) or bit 0 (`bit0`).
    public private(set) var lossyFlags: [(offset: Int, bit0Only: Bool)] = []

    public init() {}

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { u8(UInt8(v >> 8)); u8(UInt8(truncatingIfNeeded: v)) }
    mutating func u32(_ v: UInt32) { u16(UInt16(v >> 16)); u16(UInt16(truncatingIfNeeded: v)) }
    mutating func u64(_ v: UInt64) { u32(UInt32(v >> 32)); u32(UInt32(truncatingIfNeeded: v)) }
    mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    mutating func cstring(_ s: String) { bytes.append(contentsOf: s.utf8); u8(0) }
    mutating func flag(_ set: Bool, bit0Only: Bool) {
        lossyFlags.append((bytes.count, bit0Only))
        u8(set ? 1 : 0)
    }

    mutating func tuple(_ values: [TupleValue]) {
        u16(UInt16(values.count))
        for v in values {
            switch v {
            case .null: u8(UInt8(ascii: "n"))
            case .unchangedToast: u8(UInt8(ascii: "u"))
            case .text(let b): u8(UInt8(ascii: "t")); u32(UInt32(b.count)); bytes.append(contentsOf: b)
            case .binary(let b): u8(UInt8(ascii: "b")); u32(UInt32(b.count)); bytes.append(contentsOf: b)
            }
        }
    }

    /// Appends one pgoutput message in the layout PostgreSQL sends.
    public mutating func message(_ m: PgOutputMessage) {
        switch m {
        case .begin(let finalLSN, let commitTime, let xid):
            u8(UInt8(ascii: "B")); u64(finalLSN.value); i64(commitTime); u32(xid)
        case .commit(let flags, let commitLSN, let endLSN, let commitTime):
            u8(UInt8(ascii: "C")); u8(flags); u64(commitLSN.value); u64(endLSN.value); i64(commitTime)
        case .origin(let lsn, let name):
            u8(UInt8(ascii: "O")); u64(lsn.value); cstring(name)
        case .relation(let oid, let namespace, let name, let replicaIdentity, let columns):
            u8(UInt8(ascii: "R")); u32(oid); cstring(namespace); cstring(name); u8(replicaIdentity)
            u16(UInt16(columns.count))
            for c in columns {
                flag(c.isKey, bit0Only: true); cstring(c.name); u32(c.typeOID); u32(UInt32(bitPattern: c.typeModifier))
            }
        case .type(let oid, let namespace, let name):
            u8(UInt8(ascii: "Y")); u32(oid); cstring(namespace); cstring(name)
        case .insert(let relation, let new):
            u8(UInt8(ascii: "I")); u32(relation); u8(UInt8(ascii: "N")); tuple(new)
        case .update(let relation, let oldKind, let old, let new):
            u8(UInt8(ascii: "U")); u32(relation)
            if let oldKind, let old { u8(oldKind); tuple(old) }
            u8(UInt8(ascii: "N")); tuple(new)
        case .delete(let relation, let oldKind, let old):
            u8(UInt8(ascii: "D")); u32(relation); u8(oldKind); tuple(old)
        case .truncate(let options, let relations):
            u8(UInt8(ascii: "T")); u32(UInt32(relations.count)); u8(options)
            for r in relations { u32(r) }
        case .message(let transactional, let lsn, let prefix, let content):
            u8(UInt8(ascii: "M")); flag(transactional, bit0Only: true); u64(lsn.value); cstring(prefix)
            u32(UInt32(content.count)); bytes.append(contentsOf: content)
        }
    }

    /// Appends one replication frame (the CopyData payload of a replication stream).
    public mutating func frame(_ f: ReplicationFrame) {
        switch f {
        case .xlogData(let start, let end, let sendTime, let payload):
            u8(UInt8(ascii: "w")); u64(start.value); u64(end.value); i64(sendTime); bytes.append(contentsOf: payload)
        case .keepalive(let walEnd, let sendTime, let replyRequested):
            u8(UInt8(ascii: "k")); u64(walEnd.value); i64(sendTime); flag(replyRequested, bit0Only: false)
        }
    }

    /// Whether `input` starts with these bytes, comparing lossy flag bytes only as far as the decoder reads them.
    public func isPrefix(of input: [UInt8]) -> Bool {
        guard input.count >= bytes.count else { return false }
        var expected = bytes
        var actual = Array(input[..<bytes.count])
        for (offset, bit0Only) in lossyFlags {
            actual[offset] = bit0Only ? actual[offset] & 1 : (actual[offset] != 0 ? 1 : 0)
            expected[offset] = bit0Only ? expected[offset] & 1 : expected[offset]
        }
        return expected == actual
    }
}

extension PgOutputMessage {
    /// The message's strings, which the decoder reads leniently (invalid UTF-8 becomes U+FFFD).
    public var strings: [String] {
        switch self {
        case .origin(_, let name): return [name]
        case .relation(_, let ns, let name, _, let columns): return [ns, name] + columns.map(\.name)
        case .type(_, let ns, let name): return [ns, name]
        case .message(_, _, let prefix, _): return [prefix]
        default: return []
        }
    }
}
