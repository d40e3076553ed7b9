/// Singer state: `{"bookmarks": {"schema-table": {...}}, "cdc": {...}}`. Each bookmark holds
/// the stream's state in the form Airbyte STREAM states carry it (plus Singer's readable
/// `replication_key`, `replication_key_value` and, while a full table loads, its `table_version`;
/// `version` is the state format's, as in Airbyte); `cdc` holds the
/// state Airbyte's GLOBAL message carries, shared by every LOG_BASED stream.
public struct SingerState: Sendable {
    /// Every bookmark given, including those of streams not read now (they are passed on).
    public var bookmarks: JSONObject
    public var cdc: JSONValue?

    public init(bookmarks: JSONObject = JSONObject(), cdc: JSONValue? = nil) {
        self.bookmarks = bookmarks
        self.cdc = cdc
    }

    /// Parses a state file: the state object itself (what Meltano passes), a STATE message, or
    /// a tap's output (the last STATE line wins).
    public static func parse(_ bytes: [UInt8], file: String, duplicate: @escaping (String) -> Void = { _ in }) throws -> SingerState {
        let docs = try StateFile.documents(bytes, file: file, duplicate: duplicate)
        var state: JSONValue?
        var at = ""
        for (i, d) in docs.enumerated() {
            if d["type"]?.stringValue == "STATE" {
                state = d["value"]
                at = docs.count == 1 ? "value" : "[\(i)].value"
            } else if d["bookmarks"] != nil || d["cdc"] != nil || (docs.count == 1 && d.objectValue != nil) {
                state = d
                at = docs.count == 1 ? "" : "[\(i)]"
            }
        }
        guard let state, state != .null else { return SingerState() }
        guard state.objectValue != nil else {
            throw InputError(file: file, path: at.isEmpty ? "(root)" : at, reason: "expected a Singer state object with `bookmarks`")
        }
        let prefix = at.isEmpty ? "" : at + "."
        var bookmarks = JSONObject()
        switch state["bookmarks"] {
        case nil, .null?: break
        case .object(let o)?: bookmarks = o
        default: throw InputError(file: file, path: prefix + "bookmarks", reason: "expected an object of bookmarks keyed by stream id")
        }
        let cdc = state["cdc"].flatMap { $0 == .null ? nil : $0 }
        return SingerState(bookmarks: bookmarks, cdc: cdc)
    }

    /// What the streams resume from. A bookmark another tap wrote (no `state_type`) is not
    /// Postgate's: that stream starts over, and `note` says so.
    public func saved(for streams: [SingerStream], file: String, note: (String) -> Void) throws(InputError) -> SavedState {
        var saved = SavedState()
        // LOG_BASED streams resume from `cdc`; their bookmarks only show the position.
        for s in streams where s.method != .logBased {
            guard let bm = bookmarks[s.tapStreamID], bm != .null else { continue }
            guard bm["state_type"] != nil else {
                note("\(file): bookmark of \(s.tapStreamID) was not written by Postgate (no state_type); the stream is read from the start")
                continue
            }
            saved.streams[s.configured.id] = try StreamState.parse(bm, file: file, path: "bookmarks.\(s.tapStreamID)")
        }
        if let cdc { saved.cdc = try CDCState.parse(global: cdc, path: "cdc", file: file) }
        return saved
    }

    /// A full table's version in its bookmark, when a load of it was under way.
    public func version(of stream: SingerStream) -> Int64? {
        guard let bm = bookmarks[stream.tapStreamID], bm["state_type"]?.stringValue == "ctid" else { return nil }
        return bm["table_version"]?.int64Value
    }

    /// True when a version of the stream was ever loaded (its table exists at the target).
    public func hasVersion(_ stream: SingerStream) -> Bool {
        bookmarks[stream.tapStreamID]?["table_version"]?.int64Value != nil
    }

    /// The bookmark of a stream's state.
    static func bookmark(_ state: StreamState, version: Int64?) -> JSONValue {
        guard case .object(var o) = state.json else { return state.json }
        if case .incremental(.cursor(let c)) = state {
            o["replication_key"] = .string(c.field)
            o["replication_key_value"] = c.value.map { .string($0) } ?? .null
        }
        // A load under way keeps its version to resume with; a completed one records it, so that
        // later loads do not begin with an ACTIVATE_VERSION (which would retire the rows before
        // their replacements arrive).
        if let version {
            switch state {
            case .load, .fullRefreshComplete: o["table_version"] = .number(String(version))
            case .incremental: break
            }
        }
        return .object(o)
    }

    /// The state as a STATE message's `value`.
    var json: JSONValue {
        var o = JSONObject([("bookmarks", .object(bookmarks))])
        if let cdc { o["cdc"] = cdc }
        return .object(o)
    }
}
