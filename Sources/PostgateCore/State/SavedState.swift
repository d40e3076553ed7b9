/// Everything a run resumes from, read from one list of STATE documents (a `--state` file or a
/// destination's bookkeeping) by one parser: per-stream states and the CDC (GLOBAL) state.
public struct SavedState: Sendable {
    public var streams: [StreamID: StreamState]
    public var cdc: CDCState?

    public init(streams: [StreamID: StreamState] = [:], cdc: CDCState? = nil) {
        self.streams = streams
        self.cdc = cdc
    }

    /// Parses the documents; any malformed state fails with its file and JSON path.
    public static func parse(documents docs: [JSONValue], file: String) throws(InputError) -> SavedState {
        SavedState(streams: try InputState.parse(documents: docs, file: file), cdc: try CDCState.parse(documents: docs, file: file))
    }

    /// Parses a state file's bytes (a JSON array, one message, or JSON Lines).
    public static func parse(_ bytes: [UInt8], file: String) throws -> SavedState {
        try parse(documents: StateFile.documents(bytes, file: file), file: file)
    }
}
