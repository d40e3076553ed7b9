import FuzzSupport
import PostgateCore

/// A `read --state` file through `CDCState.parse`. A GLOBAL state read must come back unchanged from
/// the state message Postgate writes for it (`globalJSON()`).
@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = inputBytes(data, size)
    let state: CDCState?
    do {
        state = try CDCState.parse(input, file: "state.json")
    } catch {
        _ = String(describing: error)
        return 0
    }
    guard let state else { return 0 }
    let written = state.globalJSON().jsonText
    do {
        let again = try CDCState.parse(Array(written.utf8), file: "state.json")
        require(again == state, "\(state) reads back from \(written) as \(String(describing: again))")
    } catch {
        require(false, "\(state) is rejected when read back from \(written): \(error)")
    }
    return 0
}

runLibFuzzer(testOneInput)
