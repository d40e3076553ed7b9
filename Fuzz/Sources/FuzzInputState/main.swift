import FuzzSupport
import PostgateCore

/// A `read --state` file through `InputState.parse`. Each stream state read must come back unchanged
/// from its own JSON (what the next read's state message carries).
@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = inputBytes(data, size)
    let states: [StreamID: StreamState]
    do {
        states = try InputState.parse(input, file: "state.json")
    } catch {
        _ = String(describing: error)
        return 0
    }
    for (stream, state) in states {
        do {
            let again = try StreamState.parse(state.json, file: "state.json", path: "\(stream)")
            require(again == state, "state of \(stream) \(state) reads back from \(state.json.jsonText) as \(again)")
        } catch {
            require(false, "state of \(stream) \(state) is rejected when read back from \(state.json.jsonText): \(error)")
        }
    }
    return 0
}

runLibFuzzer(testOneInput)
