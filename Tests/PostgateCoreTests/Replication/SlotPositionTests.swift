import Testing
@testable import PostgateCore

/// The rule for confirming positions to a slot, as a pure value.
@Suite struct SlotPositionTests {
    @Test func aConfirmationNeverPassesWhatWasReceived() {
        var p = SlotPosition(start: LSN(100), confirmed: LSN(100))
        var moved = p.confirm(LSN(0xFF_0000_0000))
        #expect(!moved, "nothing past the start was received yet")
        #expect(p.confirmed == LSN(100))
        p.receive(LSN(150))
        moved = p.confirm(LSN(0xFF_0000_0000))
        #expect(moved)
        #expect(p.confirmed == LSN(150))
        moved = p.confirm(LSN(120))
        #expect(!moved, "confirmations only move forward")
        p.receive(LSN(140))
        #expect(p.received == LSN(150))
    }

    @Test func aResumedStartIsNotConfirmedBeyondWhatIsDurable() {
        let p = SlotPosition(start: LSN(200), confirmed: LSN(180))
        #expect(p.confirmed == LSN(180) && p.received == LSN(200))
    }

    @Test func aStatePastTheServersWALIsRefusedNamingBothPositions() {
        #expect(throws: CDCError.self) {
            try SlotPosition.checkResume(state: LSN(0xFF_0000_0000), origin: "state file s.json", slotConfirmed: LSN(10), serverWritten: LSN(20), slot: "sl")
        }
        let e = #expect(throws: CDCError.self) {
            try SlotPosition.checkResume(state: LSN(0xFF_0000_0000), origin: "state file s.json", slotConfirmed: LSN(10), serverWritten: LSN(0x2A), slot: "sl")
        }
        let text = e?.description ?? ""
        #expect(text.contains("FF/0") && text.contains("0/2A") && text.contains("state file s.json"), "\(text)")
        #expect(throws: CDCError.self) {
            try SlotPosition.checkResume(state: nil, origin: "x", slotConfirmed: LSN(30), serverWritten: LSN(20), slot: "sl")
        }
        #expect(throws: Never.self) {
            try SlotPosition.checkResume(state: LSN(20), origin: "x", slotConfirmed: LSN(10), serverWritten: LSN(20), slot: "sl")
        }
    }

    @Test func aStatusUpdateReportsWrittenAndFlushedApart() {
        let r = ReplicationFrame.standbyStatus(written: LSN(0x0A0B), flushed: LSN(0x0102))
        #expect(r.count == 34 && r[0] == UInt8(ascii: "r"))
        #expect(Array(r[1..<9]) == [0, 0, 0, 0, 0, 0, 0x0A, 0x0B])
        #expect(Array(r[9..<17]) == [0, 0, 0, 0, 0, 0, 0x01, 0x02])
    }
}
