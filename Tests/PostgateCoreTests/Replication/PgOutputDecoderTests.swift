import Foundation
import Testing
@testable import PostgateCore

@Suite struct PgOutputDecoderTests {
    struct W {
        var b: [UInt8] = []
        mutating func u8(_ v: UInt8) { b.append(v) }
        mutating func u16(_ v: UInt16) { b += [UInt8(v >> 8), UInt8(v & 0xff)] }
        mutating func u32(_ v: UInt32) { b += [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }
        mutating func u64(_ v: UInt64) { u32(UInt32(v >> 32)); u32(UInt32(v & 0xffff_ffff)) }
        mutating func cstr(_ s: String) { b += Array(s.utf8) + [0] }
        mutating func text(_ s: String) { u8(UInt8(ascii: "t")); u32(UInt32(s.utf8.count)); b += Array(s.utf8) }
    }

    @Test func lsnTextRoundTrips() {
        #expect(LSN("16/B374D848")?.value == 0x16_B374_D848)
        #expect(LSN(0x16_B374_D848).description == "16/B374D848")
        #expect(LSN("nope") == nil)
    }

    @Test func decodesEveryMessageKind() throws {
        var w = W()
        w.u8(UInt8(ascii: "B")); w.u64(0x100); w.u64(5); w.u32(777)
        #expect(try PgOutputDecoder.decode(w.b) == .begin(finalLSN: LSN(0x100), commitTime: 5, xid: 777))

        w = W(); w.u8(UInt8(ascii: "C")); w.u8(0); w.u64(0x100); w.u64(0x108); w.u64(9)
        #expect(try PgOutputDecoder.decode(w.b) == .commit(flags: 0, commitLSN: LSN(0x100), endLSN: LSN(0x108), commitTime: 9))

        w = W(); w.u8(UInt8(ascii: "R")); w.u32(42); w.cstr("Sch ü"); w.cstr("T\"x"); w.u8(UInt8(ascii: "d")); w.u16(2)
        w.u8(1); w.cstr("id"); w.u32(23); w.u32(UInt32(bitPattern: -1))
        w.u8(0); w.cstr("v"); w.u32(25); w.u32(UInt32(bitPattern: -1))
        #expect(try PgOutputDecoder.decode(w.b) == .relation(oid: 42, namespace: "Sch ü", name: "T\"x", replicaIdentity: UInt8(ascii: "d"), columns: [
            .init(isKey: true, name: "id", typeOID: 23, typeModifier: -1), .init(isKey: false, name: "v", typeOID: 25, typeModifier: -1),
        ]))

        w = W(); w.u8(UInt8(ascii: "I")); w.u32(42); w.u8(UInt8(ascii: "N")); w.u16(2); w.text("1"); w.u8(UInt8(ascii: "n"))
        #expect(try PgOutputDecoder.decode(w.b) == .insert(relation: 42, new: [.text(Array("1".utf8)), .null]))

        w = W(); w.u8(UInt8(ascii: "U")); w.u32(42); w.u8(UInt8(ascii: "O")); w.u16(1); w.text("a"); w.u8(UInt8(ascii: "N")); w.u16(2); w.text("1"); w.u8(UInt8(ascii: "u"))
        #expect(try PgOutputDecoder.decode(w.b) == .update(relation: 42, oldKind: UInt8(ascii: "O"), old: [.text(Array("a".utf8))], new: [.text(Array("1".utf8)), .unchangedToast]))

        w = W(); w.u8(UInt8(ascii: "U")); w.u32(42); w.u8(UInt8(ascii: "N")); w.u16(1); w.text("2")
        #expect(try PgOutputDecoder.decode(w.b) == .update(relation: 42, oldKind: nil, old: nil, new: [.text(Array("2".utf8))]))

        w = W(); w.u8(UInt8(ascii: "D")); w.u32(42); w.u8(UInt8(ascii: "K")); w.u16(1); w.text("3")
        #expect(try PgOutputDecoder.decode(w.b) == .delete(relation: 42, oldKind: UInt8(ascii: "K"), old: [.text(Array("3".utf8))]))

        w = W(); w.u8(UInt8(ascii: "T")); w.u32(2); w.u8(1); w.u32(42); w.u32(43)
        #expect(try PgOutputDecoder.decode(w.b) == .truncate(options: 1, relations: [42, 43]))

        w = W(); w.u8(UInt8(ascii: "M")); w.u8(1); w.u64(0x200); w.cstr("app"); w.u32(2); w.b += [7, 8]
        #expect(try PgOutputDecoder.decode(w.b) == .message(transactional: true, lsn: LSN(0x200), prefix: "app", content: [7, 8]))

        w = W(); w.u8(UInt8(ascii: "O")); w.u64(0x300); w.cstr("node1")
        #expect(try PgOutputDecoder.decode(w.b) == .origin(lsn: LSN(0x300), name: "node1"))

        w = W(); w.u8(UInt8(ascii: "Y")); w.u32(900); w.cstr("public"); w.cstr("mood")
        #expect(try PgOutputDecoder.decode(w.b) == .type(oid: 900, namespace: "public", name: "mood"))
    }

    @Test func malformedInputIsAnErrorWithTheOffsetNeverACrash() {
        func offset(_ bytes: [UInt8]) -> Int? {
            do { _ = try PgOutputDecoder.decode(bytes); return nil } catch { return error.offset }
        }
        #expect(offset([]) == 0)
        #expect(offset([UInt8(ascii: "Z")]) == 0)
        #expect(offset([UInt8(ascii: "B"), 0, 0]) == 3)
        var w = W(); w.u8(UInt8(ascii: "I")); w.u32(1); w.u8(UInt8(ascii: "N")); w.u16(1); w.u8(UInt8(ascii: "t")); w.u32(1000); w.b += [1, 2]
        #expect(offset(w.b) == 13, "a length past the end (offset of the missing data)")
        w = W(); w.u8(UInt8(ascii: "I")); w.u32(1); w.u8(UInt8(ascii: "N")); w.u16(1); w.u8(UInt8(ascii: "x"))
        #expect(offset(w.b) == 8, "an unknown column kind")
        w = W(); w.u8(UInt8(ascii: "T")); w.u32(0x7fff_ffff); w.u8(0)
        #expect(offset(w.b) != nil, "a huge relation count")
        // Random bytes never trap.
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let n = Int.random(in: 0..<40, using: &rng)
            let bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = try? PgOutputDecoder.decode(bytes)
        }
    }

    @Test func framesAndStandbyStatus() throws {
        var w = W(); w.u8(UInt8(ascii: "k")); w.u64(0x500); w.u64(1); w.u8(1)
        let k = try w.b.withUnsafeBytes { try ReplicationFrame.decode($0) }
        #expect(k == .keepalive(walEnd: LSN(0x500), sendTime: 1, replyRequested: true))
        w = W(); w.u8(UInt8(ascii: "w")); w.u64(0x10); w.u64(0x20); w.u64(3); w.b += [UInt8(ascii: "B")]
        let x = try w.b.withUnsafeBytes { try ReplicationFrame.decode($0) }
        #expect(x == .xlogData(start: LSN(0x10), end: LSN(0x20), sendTime: 3, payload: [UInt8(ascii: "B")]))
        let r = ReplicationFrame.standbyStatus(written: LSN(0x0102030405060708), flushed: LSN(0x0102030405060708))
        #expect(r.count == 34 && r[0] == UInt8(ascii: "r") && Array(r[1..<9]) == [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(ReplicationFrame.isoTimestamp(0) == "2000-01-01T00:00:00.000000Z")
        #expect(ReplicationFrame.isoTimestamp(86_400_000_001) == "2000-01-02T00:00:00.000001Z")
    }
}
