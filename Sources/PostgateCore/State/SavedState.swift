/// Everything a run resumes from, read from one list of STATE documents (a `--state` file or a
/// destination's bookkeeping) by one parser: per-stream states and the CDC (GLOBAL) state.
public struct SavedState: Sendable {
    public var streams: [StreamID: StreamState]
    public var cdc: CDCState?

    public init(streams: [StreamID: StreamState] = [:], cdc: CDCState? = nil) {
        self.streams = streams
        self.cdc = cdc
    }

    /// Parses the documents in one pass. Every state message is checked, whatever comes after it
    /// (a malformed one fails with its file and JSON path); the last state per stream and the last
    /// GLOBAL state win. Other messages of a transcript (RECORD, LOG, TRACE) are skipped.
    public static func parse(documents docs: [JSONValue], file: String) throws(InputError) -> SavedState {
        var saved = SavedState()
        for (i, doc) in docs.enumerated() {
            guard let msg = StateFile.stateMessage(doc) else { continue }
            let at = doc["type"]?.stringValue == "STATE" ? "[\(i)].state" : "[\(i)]"
            let type = msg["type"]?.stringValue ?? (msg["stream"] != nil ? "STREAM" : msg["global"] != nil ? "GLOBAL" : nil)
            switch type {
            case "STREAM":
                guard let stream = msg["stream"], let desc = stream["stream_descriptor"], let name = desc["name"]?.stringValue, !name.isEmpty else {
                    throw InputError(file: file, path: "\(at).stream.stream_descriptor.name", reason: "is required")
                }
                let ns = desc["namespace"]?.stringValue ?? "public"
                // A stream without a state yet (null) starts from scratch.
                guard let ss = stream["stream_state"], ss != .null else { continue }
                saved.streams[StreamID(namespace: ns, name: name)] = try StreamState.parse(ss, file: file, path: "\(at).stream.stream_state")
            case "GLOBAL":
                saved.cdc = try CDCState.parse(global: msg["global"] ?? .null, path: "\(at).global", file: file)
            case "LEGACY":
                throw InputError(file: file, path: "\(at).type", reason: "LEGACY states are not read; give per-stream (STREAM) or GLOBAL states, such as a previous read's STATE messages")
            default:
                // A document with neither a type, a stream nor a global state holds nothing to resume from.
                continue
            }
        }
        return saved
    }

    /// Parses a state file's bytes (a JSON array, one message, or JSON Lines).
    public static func parse(_ bytes: [UInt8], file: String, duplicate: @escaping (String) -> Void = { _ in }) throws -> SavedState {
        try parse(documents: StateFile.documents(bytes, file: file, duplicate: duplicate), file: file)
    }
}
