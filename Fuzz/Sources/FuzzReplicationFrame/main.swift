import FuzzSupport
import PostgateCore

/// One CopyData message of a replication stream, decoded straight from libFuzzer's buffer (exactly
/// sized, so AddressSanitizer sees any read past it). The frame must encode back to the start of its
/// input, and an XLogData payload goes on to the pgoutput decoder as in `CDCReader`.
@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let raw = UnsafeRawBufferPointer(start: data, count: data == nil ? 0 : size)
    let frame: ReplicationFrame
    do {
        frame = try ReplicationFrame.decode(raw)
    } catch {
        require((0...size).contains(error.offset), "error offset \(error.offset) outside 0...\(size)")
        return 0
    }
    let input = Array(raw)
    var encoder = WireEncoder()
    encoder.frame(frame)
    require(encoder.isPrefix(of: input), "\(frame) does not encode to the start of its input")
    switch frame {
    case .xlogData(let start, _, let sendTime, let payload):
        require(encoder.bytes.count == input.count, "XLogData payload is not the rest of the message")
        _ = ReplicationFrame.isoTimestamp(sendTime)
        _ = try? PgOutputDecoder.decode(payload)
        require(ReplicationFrame.standbyStatus(written: start, flushed: start).count == 34, "standby status update is not 34 bytes")
    case .keepalive(let walEnd, let sendTime, _):
        _ = ReplicationFrame.isoTimestamp(sendTime)
        _ = walEnd.description
    }
    return 0
}

runLibFuzzer(testOneInput)
