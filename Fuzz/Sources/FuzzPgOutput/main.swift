import FuzzSupport
import PostgateCore

/// One pgoutput message (the payload of an XLogData frame). A decoded message must encode back to
/// the bytes it was read from and decode again to itself; a rejected one must name an offset inside the input.
@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = inputBytes(data, size)
    let message: PgOutputMessage
    do {
        message = try PgOutputDecoder.decode(input)
    } catch {
        require((0...input.count).contains(error.offset), "error offset \(error.offset) outside 0...\(input.count)")
        _ = error.description
        return 0
    }
    var encoder = WireEncoder()
    encoder.message(message)
    // Invalid UTF-8 in a name decodes to U+FFFD, so only well-formed names re-encode to the same bytes.
    if !message.strings.contains(where: { $0.unicodeScalars.contains("\u{FFFD}") }) {
        require(encoder.isPrefix(of: input), "\(message) does not encode to the start of its input")
    }
    do {
        let again = try PgOutputDecoder.decode(encoder.bytes)
        require(again == message, "\(message) re-decoded as \(again)")
    } catch {
        require(false, "\(message) re-encoded is rejected: \(error)")
    }
    if case .begin(_, let time, _) = message { _ = ReplicationFrame.isoTimestamp(time) }
    if case .commit(_, _, _, let time) = message { _ = ReplicationFrame.isoTimestamp(time) }
    return 0
}

runLibFuzzer(testOneInput)
