import Foundation
import Testing
@testable import PostgateCore

/// State files are range-checked when parsed: a value no run could have written is refused with
/// its JSON path, never wrapped around or trapped on.
@Suite struct StateParsingTests {
    static func global(_ shared: String) -> [UInt8] {
        Array(#"[{"type":"STATE","state":{"type":"GLOBAL","global":{"shared_state":\#(shared),"stream_states":[]}}}]"#.utf8)
    }

    static func stream(_ state: String) -> [UInt8] {
        Array(#"[{"type":"STREAM","stream":{"stream_descriptor":{"namespace":"s","name":"t"},"stream_state":\#(state)}}]"#.utf8)
    }

    static func failure(_ body: () throws -> Void) -> String {
        do { try body() } catch let e as InputError { return e.path } catch { return "other error: \(error)" }
        return "accepted"
    }

    @Test(arguments: [
        (#"{"lsn":"0/10","snapshot_filters":[{"xmin":-5,"xmax":10,"lsn":"0/10"}]}"#, "[0].state.global.shared_state.snapshot_filters[0].xmin"),
        (#"{"lsn":"0/10","snapshot_filters":[{"xmin":5,"xmax":-1,"lsn":"0/10"}]}"#, "[0].state.global.shared_state.snapshot_filters[0].xmax"),
        (#"{"lsn":"0/10","snapshot_filters":[{"xmin":5,"xmax":10,"xip":[-3],"lsn":"0/10"}]}"#, "[0].state.global.shared_state.snapshot_filters[0].xip[0]"),
        (#"{"lsn":"0/10","snapshot_filters":[{"xmin":5,"xmax":10,"xip":[12],"lsn":"0/10"}]}"#, "[0].state.global.shared_state.snapshot_filters[0].xip[0]"),
        (#"{"lsn":"0/10","snapshot_filters":[{"xmin":11,"xmax":10,"lsn":"0/10"}]}"#, "[0].state.global.shared_state.snapshot_filters[0].xmin"),
        (#"{"lsn":"0/10","snapshot_filters":[{"xmin":1.5,"xmax":10,"lsn":"0/10"}]}"#, "[0].state.global.shared_state.snapshot_filters[0].xmin"),
        (#"{"lsn":"0/10","snapshot_filters":[{"xmin":1,"xmax":10,"lsn":"-1/0"}]}"#, "[0].state.global.shared_state.snapshot_filters[0].lsn"),
        (#"{"lsn":"0/10","snapshot_filters":[{"xmin":1,"xmax":10,"lsn":"0/10","streams":[7]}]}"#, "[0].state.global.shared_state.snapshot_filters[0].streams[0]"),
        (#"{"lsn":"0/10","chunk_filters":3}"#, "[0].state.global.shared_state.chunk_filters"),
        (#"{"lsn":"0/10","chunk_filters":[{"xmin":1,"xmax":10,"lsn":"0/10"}]}"#, "[0].state.global.shared_state.chunk_filters[0].stream"),
        (#"{"lsn":"0/10","chunk_filters":[{"xmin":1,"xmax":10,"lsn":"0/10","stream":{"namespace":"s","name":"t"},"through":[5]}]}"#, "[0].state.global.shared_state.chunk_filters[0].through"),
        (#"{"lsn":"0/10","chunk_filters":[{"xmin":1,"xmax":10,"lsn":"0/10","stream":{"namespace":"s","name":"t"},"after":"5"}]}"#, "[0].state.global.shared_state.chunk_filters[0].after"),
        (#"{"lsn":"0/10","chunk_filters":[{"xmin":12,"xmax":10,"lsn":"0/10","stream":{"namespace":"s","name":"t"}}]}"#, "[0].state.global.shared_state.chunk_filters[0].xmin"),
        (#"{"lsn":"FF/ZZ"}"#, "[0].state.global.shared_state.lsn"),
        (#"{"lsn":"100000000/0"}"#, "[0].state.global.shared_state.lsn"),
    ])
    func cdcStateFieldsAreRangeChecked(shared: String, path: String) {
        #expect(Self.failure { _ = try CDCState.parse(Self.global(shared), file: "s.json") } == path)
    }

    @Test(arguments: [
        (#"{"state_type":"ctid","ctid":"(-1,0)","relation_filenode":1}"#, "[0].stream.stream_state.ctid"),
        (#"{"state_type":"ctid","ctid":"(4294967296,0)","relation_filenode":1}"#, "[0].stream.stream_state.ctid"),
        (#"{"state_type":"ctid","ctid":"(1,0)","relation_filenode":-1}"#, "[0].stream.stream_state.relation_filenode"),
        (#"{"state_type":"ctid","ctid":"(1,0)","relation_filenode":1,"xmin_lower_bound":-1}"#, "[0].stream.stream_state.xmin_lower_bound"),
        (#"{"state_type":"cursor_based","cursor_field":["u"],"cursor":"x","cursor_record_count":-2}"#, "[0].stream.stream_state.cursor_record_count"),
        (#"{"state_type":"cursor_based","cursor_field":["u"],"cursor":"x","cursor_record_count":"many"}"#, "[0].stream.stream_state.cursor_record_count"),
        (#"{"state_type":"cursor_based","cursor_field":[],"cursor":"x"}"#, "[0].stream.stream_state.cursor_field"),
        (#"{"state_type":"xmin","xmin_raw_value":-1}"#, "[0].stream.stream_state.xmin_raw_value"),
        (#"{"state_type":"xmin","xmin_xid_value":8589934592,"num_wraparound":0}"#, "[0].stream.stream_state.xmin_xid_value"),
        (#"{"state_type":"xmin","xmin_xid_value":5,"num_wraparound":-1}"#, "[0].stream.stream_state.num_wraparound"),
        (#"{"state_type":7}"#, "[0].stream.stream_state.state_type"),
        (#"{"state_type":"ctid","ctid":"(10,0)","relation_filenode":1,"done_ranges":[[20,15]]}"#, "[0].stream.stream_state.done_ranges[0]"),
        (#"{"state_type":"ctid","ctid":"(10,0)","relation_filenode":1,"done_ranges":[[5,15]]}"#, "[0].stream.stream_state.done_ranges[0]"),
        (#"{"state_type":"ctid","ctid":"(10,0)","relation_filenode":1,"done_ranges":{}}"#, "[0].stream.stream_state.done_ranges"),
        (#"{"state_type":"ctid","ctid":"(0,0)","relation_filenode":1,"partitions":"p1"}"#, "[0].stream.stream_state.partitions"),
        (#"{"state_type":"ctid","ctid":"(0,0)","relation_filenode":1,"partitions":[{"oid":0,"ctid":"(0,0)"}]}"#, "[0].stream.stream_state.partitions[0].oid"),
        (#"{"state_type":"ctid","ctid":"(0,0)","relation_filenode":1,"partitions":[{"oid":7,"ctid":"(x)"}]}"#, "[0].stream.stream_state.partitions[0].ctid"),
    ])
    func streamStateFieldsAreRangeChecked(state: String, path: String) {
        #expect(Self.failure { _ = try InputState.parse(Self.stream(state), file: "s.json") } == path)
    }

    /// One parser reads both kinds of state: a bad GLOBAL state fails even when a good one follows
    /// it (as a bad stream state always did), and the last of each kind wins.
    @Test func everyStateIsCheckedByOneParser() throws {
        let bad = #"{"type":"STATE","state":{"type":"GLOBAL","global":{"shared_state":{"lsn":"zz"},"stream_states":[]}}}"#
        let good = #"{"type":"STATE","state":{"type":"GLOBAL","global":{"shared_state":{"lsn":"0/20"},"stream_states":[]}}}"#
        let stream = #"{"type":"STATE","state":{"type":"STREAM","stream":{"stream_descriptor":{"namespace":"s","name":"t"},"stream_state":{"state_type":"full_refresh"}}}}"#
        #expect(Self.failure { _ = try SavedState.parse(Array("[\(bad),\(good)]".utf8), file: "s.json") } == "[0].state.global.shared_state.lsn")
        #expect(Self.failure { _ = try CDCState.parse(Array("[\(bad),\(good)]".utf8), file: "s.json") } == "[0].state.global.shared_state.lsn")
        #expect(Self.failure { _ = try InputState.parse(Array("[\(bad),\(stream)]".utf8), file: "s.json") } == "[0].state.global.shared_state.lsn")
        let legacy = #"{"type":"STATE","state":{"type":"LEGACY","data":{}}}"#
        #expect(Self.failure { _ = try SavedState.parse(Array("[\(legacy)]".utf8), file: "s.json") } == "[0].state.type")
        let saved = try SavedState.parse(Array("[\(good),\(stream),{\"type\":\"LOG\",\"log\":{}}]".utf8), file: "s.json")
        #expect(saved.cdc?.lsn == LSN(0x20) && saved.streams[StreamID(namespace: "s", name: "t")] == .fullRefreshComplete)
    }

    @Test func validStatesStillParse() throws {
        let g = try #require(try CDCState.parse(Self.global(#"{"lsn":"1/A0","snapshot_filters":[{"xmin":5,"xmax":10,"xip":[6,7],"lsn":"1/90","streams":["a.b",{"namespace":"x.y","name":"z"}]}]}"#), file: "s.json"))
        #expect(g.lsn == LSN(0x1_0000_00A0))
        #expect(g.filters.first?.inProgress == [6, 7])
        #expect(g.filters.first?.streams == [StreamID(namespace: "a", name: "b"), StreamID(namespace: "x.y", name: "z")])
        let s = try InputState.parse(Self.stream(#"{"state_type":"xmin","xmin_xid_value":5,"num_wraparound":2}"#), file: "s.json")
        #expect(s[StreamID(namespace: "s", name: "t")] == .incremental(.xmin(.init(raw: 2 << 32 | 5))))
        #expect(try InputState.parse(Array("[]".utf8), file: "s.json").isEmpty)
        #expect(try CDCState.parse(Array("[]".utf8), file: "s.json") == nil)
    }

    /// The progress of chunked loads survives a round trip: CDC key ranges and their snapshots,
    /// page ranges finished out of order, and per-partition progress.
    @Test func chunkedLoadProgressRoundTrips() throws {
        let a = StreamID(namespace: "s", name: "a"), b = StreamID(namespace: "s.x", name: "b")
        let snap = CDCState.SnapshotFilter(xmin: 5, xmax: 9, inProgress: [6], lsn: LSN(0x90), streams: [])
        var state = CDCState(lsn: LSN(0xA0), filters: [], snapshotted: [a])
        state.backfills[b] = CDCState.Backfill(loadedThrough: ["42", "7f0e0b6e-0d2c-4c1b-9b57-0d9b8f7c2a11"])
        state.chunkFilters = [CDCState.ChunkFilter(stream: b, after: nil, through: ["42", "7f0e0b6e-0d2c-4c1b-9b57-0d9b8f7c2a11"], snapshot: snap),
                              CDCState.ChunkFilter(stream: b, after: ["42", "7f0e0b6e-0d2c-4c1b-9b57-0d9b8f7c2a11"], through: nil, snapshot: snap)]
        let text = JSONValue.array([["type": "STATE", "state": state.globalJSON()]]).jsonText
        #expect(try CDCState.parse(Array(text.utf8), file: "s.json") == state)
        var fresh = state
        fresh.backfills[b] = CDCState.Backfill(loadedThrough: nil)
        let freshText = JSONValue.array([["type": "STATE", "state": fresh.globalJSON()]]).jsonText
        #expect(try CDCState.parse(Array(freshText.utf8), file: "s.json") == fresh, "a load that has read no chunk yet")

        let load = StreamState.Load(progress: PageProgress(below: 10, ranges: [20..<30]), partitions: [7: PageProgress(below: 3), 9: PageProgress(below: 0, ranges: [4..<8])],
                                    relationFilenode: 1 << 40, incremental: nil, xminLowerBound: nil, snapshotXmin: 12)
        let stream = #"[{"type":"STREAM","stream":{"stream_descriptor":{"namespace":"s","name":"t"},"stream_state":\#(StreamState.load(load).json.jsonText)}}]"#
        #expect(try InputState.parse(Array(stream.utf8), file: "s.json")[StreamID(namespace: "s", name: "t")] == .load(load))
    }

    /// Snapshot membership of 32-bit xids in any epoch: an xid above xmax's low bits started after
    /// the snapshot even when the epoch is 1 or more (it was taken for an old one before).
    @Test(arguments: [(UInt64(0), UInt64(0)), (UInt64(5), UInt64(0)), (UInt64(5), UInt64(0xFFFF_FF00))])
    func snapshotMembershipInEveryEpoch(epoch: UInt64, base: UInt64) {
        let e = epoch << 32
        let f = CDCState.SnapshotFilter(xmin: e + base + 900, xmax: e + base + 1000, inProgress: [e + base + 950], lsn: LSN(1), streams: [])
        func x(_ n: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: base + n) }
        #expect(f.contains(xid: x(899)), "committed before the snapshot")
        #expect(f.contains(xid: x(949)) && !f.contains(xid: x(950)), "in progress at the snapshot: not in it")
        #expect(!f.contains(xid: x(1000)) && !f.contains(xid: x(1001)) && !f.contains(xid: x(100_000)), "started after the snapshot")
        #expect(f.contains(xid: UInt32(truncatingIfNeeded: base &+ 900 &- 3_000_000)), "long before")
    }

    @Test func keysCompareInTheServersOrder() throws {
        func type(_ name: String) -> PostgresType { PostgresType(name: name, kind: "b", category: "N", declared: name) }
        let ints = try #require(KeyOrder([type("int8"), type("int4")]))
        #expect(ints.less(["9", "5"], ["10", "0"]), "numbers, not text")
        #expect(ints.less(["-10", "0"], ["-9", "0"]) && ints.less(["1", "2"], ["1", "3"]) && !ints.less(["1", "3"], ["1", "3"]))
        #expect(ints.contains(["10", "0"], after: ["9", "5"], through: ["10", "0"]) && !ints.contains(["9", "5"], after: ["9", "5"], through: nil))
        let uuids = try #require(KeyOrder([type("uuid")]))
        #expect(uuids.less(["0000000a-0000-0000-0000-000000000000"], ["0000000B-0000-0000-0000-000000000000"]))
        #expect(KeyOrder([type("text")]) == nil && KeyOrder([]) == nil, "text keys depend on collations: no chunks")
        #expect(ints.valid(["1", "2"]) && !ints.valid(["1"]) && !ints.valid(["x", "2"]) && !uuids.valid(["not-a-uuid"]))
    }

    @Test(arguments: ["", " \n\t\n"])
    func anEmptyStateFileIsAnError(text: String) {
        #expect(Self.failure { _ = try StateFile.documents(Array(text.utf8), file: "s.json") } == "$")
    }

    @Test func aGlobalStateRoundTripsWithStreamIdentities() throws {
        let ids = [StreamID(namespace: "a.b", name: "c"), StreamID(namespace: "a", name: "b.c")]
        let state = CDCState(lsn: LSN(77), filters: [.init(xmin: 3, xmax: 9, inProgress: [4], lsn: LSN(70), streams: ids)], snapshotted: Set(ids))
        let text = JSONValue.array([["type": "STATE", "state": state.globalJSON()]]).jsonText
        #expect(try CDCState.parse(Array(text.utf8), file: "s.json") == state)
    }
}

/// A stream is the pair (namespace, name); its text form never makes two streams alike.
@Suite struct StreamIDTests {
    @Test func distinctPairsPrintDistinctlyAndParseBack() throws {
        let pairs = [("a.b", "c"), ("a", "b.c"), ("x", "y__z"), ("x__y", "z"), ("q\"", "r"), ("q", "\"r"), ("public", "items"), ("sp ace", "ünï")]
        let ids = pairs.map { StreamID(namespace: $0.0, name: $0.1) }
        #expect(Set(ids.map(\.description)).count == ids.count)
        for id in ids { #expect(StreamID(parsing: id.description) == id, "\(id)") }
        #expect(ids[0].description == #""a.b".c"# && ids[1].description == #"a."b.c""#)
        #expect(ids[6].description == "public.items")
    }

    @Test func theUnquotedFormOfEarlierVersionsSplitsAtTheFirstDot() {
        #expect(StreamID(parsing: "a.b.c") == StreamID(namespace: "a", name: "b.c"))
        #expect(StreamID(parsing: "nodot") == nil)
        #expect(StreamID(parsing: #""open.c"#) == StreamID(namespace: "\"open", name: "c"))
    }
}
