import Foundation

/// Where one stream's read stands, as carried in Airbyte STREAM state messages.
///
/// Shapes follow Airbyte's Postgres source: `ctid` (a chunked load in progress), `cursor_based`
/// and `xmin` (incremental positions), plus `full_refresh` (a completed full refresh).
public enum StreamState: Sendable, Equatable {
    /// Incremental position by a user cursor: rows with `cursor` were emitted `recordCount` times.
    public struct Cursor: Sendable, Equatable {
        public var field: String
        /// The cursor value as Postgres prints it; nil when no non-null value was seen yet.
        public var value: String?
        public var recordCount: Int64
    }

    /// Incremental position by xmin: rows whose xmin is at least `xid` (32-bit) in xid epoch `epoch`.
    public struct Xmin: Sendable, Equatable {
        /// 64-bit transaction id (epoch in the high 32 bits).
        public var raw: UInt64
        public var xid: UInt32 { UInt32(truncatingIfNeeded: raw) }
        public var epoch: UInt32 { UInt32(truncatingIfNeeded: raw >> 32) }
    }

    public enum Incremental: Sendable, Equatable {
        case cursor(Cursor)
        case xmin(Xmin)
    }

    /// A chunked load: `progress` says which pages of the relation are read (for a partitioned
    /// table read leaf by leaf, `partitions` says it per leaf, by oid). `incremental` becomes the
    /// state when the load completes; `xminLowerBound` marks an xmin pass reading only rows with
    /// newer xmins.
    public struct Load: Sendable, Equatable {
        public var progress: PageProgress
        public var partitions: [UInt32: PageProgress]?
        public var relationFilenode: UInt64
        public var incremental: Incremental?
        public var xminLowerBound: UInt32?
        /// The interrupted read's snapshot xmin (with epoch): a resumed full refresh re-reads what
        /// changed in the copied pages since.
        public var snapshotXmin: UInt64?

        /// Every page below this one is read (of the relation itself, not per leaf).
        public var nextPage: UInt32 { progress.below }

        public init(nextPage: UInt32, relationFilenode: UInt64, incremental: Incremental?, xminLowerBound: UInt32?, snapshotXmin: UInt64? = nil) {
            self.init(progress: PageProgress(below: nextPage), partitions: nil, relationFilenode: relationFilenode, incremental: incremental,
                      xminLowerBound: xminLowerBound, snapshotXmin: snapshotXmin)
        }

        public init(progress: PageProgress, partitions: [UInt32: PageProgress]?, relationFilenode: UInt64, incremental: Incremental?,
                    xminLowerBound: UInt32?, snapshotXmin: UInt64?) {
            self.progress = progress
            self.partitions = partitions
            self.relationFilenode = relationFilenode
            self.incremental = incremental
            self.xminLowerBound = xminLowerBound
            self.snapshotXmin = snapshotXmin
        }

        /// True when nothing was read yet.
        public var isFresh: Bool { progress == PageProgress() && (partitions?.values.allSatisfy { $0 == PageProgress() } ?? true) }
    }

    case load(Load)
    case incremental(Incremental)
    case fullRefreshComplete

    public var json: JSONValue {
        switch self {
        case .load(let l):
            var o = JSONObject([("state_type", "ctid"), ("version", 2)])
            Self.progressJSON(l.progress, into: &o)
            o["relation_filenode"] = .number(String(l.relationFilenode))
            if let parts = l.partitions {
                o["partitions"] = .array(parts.keys.sorted().map { oid in
                    var p = JSONObject([("oid", .number(String(oid)))])
                    Self.progressJSON(parts[oid]!, into: &p)
                    return .object(p)
                })
            }
            if let inc = l.incremental { o["incremental_state"] = Self.incrementalJSON(inc) }
            if let lb = l.xminLowerBound { o["xmin_lower_bound"] = .number(String(lb)) }
            if let x = l.snapshotXmin { o["snapshot_xmin"] = .number(String(x)) }
            return .object(o)
        case .incremental(let inc):
            return Self.incrementalJSON(inc)
        case .fullRefreshComplete:
            return ["state_type": "full_refresh", "version": 2, "status": "complete"]
        }
    }

    /// `ctid` (every page below it is read) and, when items finished out of order, `done_ranges`
    /// (`[first page, page after the last]` pairs; 4294967295 means the end of the relation).
    static func progressJSON(_ p: PageProgress, into o: inout JSONObject) {
        o["ctid"] = .string("(\(p.below),0)")
        if !p.ranges.isEmpty {
            o["done_ranges"] = .array(p.ranges.map { .array([.number(String($0.lowerBound)), .number(String($0.upperBound))]) })
        }
    }

    static func parseProgress(_ f: StateFields) throws(InputError) -> PageProgress {
        guard let text = try f.string("ctid"), let page = parseCtidPage(text) else {
            throw f.fail("ctid", "expected a tuple id such as \"(42,0)\" with a page number from 0 to \(UInt32.max)")
        }
        var ranges: [Range<UInt32>] = []
        switch f.value["done_ranges"] {
        case nil, .null?: break
        case .array(let list)?:
            for (i, r) in list.enumerated() {
                guard let pair = r.arrayValue, pair.count == 2, case .number(let a) = pair[0], case .number(let b) = pair[1],
                      let lo = UInt32(a), let hi = UInt32(b), lo < hi, lo > page else {
                    throw f.fail("done_ranges[\(i)]", "expected [first page, page after the last] above the ctid page, such as [100, 200]")
                }
                ranges.append(lo..<hi)
            }
        case let other?:
            throw f.fail("done_ranges", "expected an array of page ranges, found \(other.typeName)")
        }
        return PageProgress(below: page, ranges: ranges)
    }

    static func incrementalJSON(_ inc: Incremental) -> JSONValue {
        switch inc {
        case .cursor(let c):
            return .object(JSONObject([
                ("state_type", "cursor_based"), ("version", 2), ("cursor_field", .array([.string(c.field)])),
                ("cursor", c.value.map { .string($0) } ?? .null), ("cursor_record_count", .number(String(c.recordCount))),
            ]))
        case .xmin(let x):
            return .object(JSONObject([
                ("state_type", "xmin"), ("version", 2), ("xmin_xid_value", .number(String(x.xid))),
                ("xmin_raw_value", .number(String(x.raw))), ("num_wraparound", .number(String(x.epoch))),
            ]))
        }
    }

    /// Parses a stream_state object; `path` names it in errors. Every field is type- and
    /// range-checked: a value no run could have written is refused, never wrapped or trapped on.
    public static func parse(_ v: JSONValue, file: String, path: String) throws(InputError) -> StreamState {
        let f = StateFields(v, file: file, path: path)
        guard let type = try f.string("state_type") else { throw f.fail("state_type", "is required") }
        switch type {
        case "ctid":
            let progress = try parseProgress(f)
            var partitions: [UInt32: PageProgress]?
            switch v["partitions"] {
            case nil, .null?: break
            case .array(let list)?:
                var parts: [UInt32: PageProgress] = [:]
                for (i, p) in list.enumerated() {
                    let pf = StateFields(p, file: file, path: "\(path).partitions[\(i)]")
                    guard let oid = try pf.unsigned("oid", max: UInt64(UInt32.max)), oid > 0 else { throw pf.fail("oid", "expected the partition's oid") }
                    parts[UInt32(oid)] = try parseProgress(pf)
                }
                partitions = parts
            case let other?:
                throw f.fail("partitions", "expected an array, found \(other.typeName)")
            }
            guard let fn = try f.unsigned("relation_filenode", max: UInt64(Int64.max)) else { throw f.fail("relation_filenode", "is required") }
            var inc: Incremental?
            if let i = v["incremental_state"], i != .null {
                guard case .incremental(let parsed) = try parse(i, file: file, path: "\(path).incremental_state") else {
                    throw f.fail("incremental_state", "must be a cursor_based or xmin state")
                }
                inc = parsed
            }
            let lower = try f.unsigned("xmin_lower_bound", max: UInt64(UInt32.max)).map { UInt32($0) }
            let snap = try f.unsigned("snapshot_xmin", max: UInt64(Int64.max))
            return .load(Load(progress: progress, partitions: partitions, relationFilenode: fn, incremental: inc, xminLowerBound: lower, snapshotXmin: snap))
        case "cursor_based":
            guard let fields = v["cursor_field"]?.arrayValue, let field = fields.first?.stringValue, fields.count == 1, !field.isEmpty else {
                throw f.fail("cursor_field", "expected an array holding the one cursor column")
            }
            let value: String?
            switch v["cursor"] {
            case .string(let s)?: value = s
            case .number(let n)?: value = n
            case .null?, nil: value = nil
            default: throw f.fail("cursor", "expected a string, a number or null")
            }
            let count = try f.unsigned("cursor_record_count", max: UInt64(Int64.max)) ?? 0
            return .incremental(.cursor(Cursor(field: field, value: value, recordCount: Int64(count))))
        case "xmin":
            if let raw = try f.unsigned("xmin_raw_value", max: UInt64(Int64.max)) {
                return .incremental(.xmin(Xmin(raw: raw)))
            }
            guard let xid = try f.unsigned("xmin_xid_value", max: UInt64(UInt32.max)),
                  let epoch = try f.unsigned("num_wraparound", max: UInt64(Int32.max)) else {
                throw f.fail("xmin_raw_value", "expected xmin_raw_value, or xmin_xid_value with num_wraparound")
            }
            return .incremental(.xmin(Xmin(raw: epoch << 32 | xid)))
        case "full_refresh":
            return .fullRefreshComplete
        default:
            throw f.fail("state_type", "unknown state type \"\(type)\" (expected ctid, cursor_based, xmin or full_refresh)")
        }
    }

    static func parseCtidPage(_ text: String) -> UInt32? {
        let t = text.trimmingSpaces()
        guard t.hasPrefix("("), t.hasSuffix(")") else { return nil }
        let inner = t.dropFirst().dropLast().split(separator: ",")
        guard inner.count == 2, let page = UInt32(inner[0].trimmingCharacters(in: .whitespaces)) else { return nil }
        return page
    }
}

/// Typed, range-checked access to the fields of one state object; errors name the JSON path.
struct StateFields {
    let value: JSONValue
    let file: String
    let path: String

    init(_ value: JSONValue, file: String, path: String) {
        self.value = value
        self.file = file
        self.path = path
    }

    func fail(_ key: String, _ reason: String) -> InputError { InputError(file: file, path: "\(path).\(key)", reason: reason) }

    /// A string field; nil when absent or null.
    func string(_ key: String) throws(InputError) -> String? {
        switch value[key] {
        case nil, .null?: return nil
        case .string(let s)?: return s
        case let other?: throw fail(key, "expected a string, found \(other.typeName)")
        }
    }

    /// A whole number from 0 to `max` (also accepted as a string of digits); nil when absent or null.
    func unsigned(_ key: String, max: UInt64) throws(InputError) -> UInt64? {
        let text: String
        switch value[key] {
        case nil, .null?: return nil
        case .number(let n)?: text = n
        case .string(let s)?: text = s
        case let other?: throw fail(key, "expected a whole number, found \(other.typeName)")
        }
        guard let n = UInt64(text), n <= max else {
            throw fail(key, "\(text.count > 40 ? String(text.prefix(40)) + "…" : text) is not a whole number from 0 to \(max)")
        }
        return n
    }
}

/// The documents of a state file: a JSON array of STATE messages (with or without the
/// `{"type":"STATE"}` envelope), a single one, or JSON lines such as a previous read's output.
public enum StateFile {
    /// `duplicate` is told of keys that appear twice in an object (the last wins).
    public static func documents(_ bytes: [UInt8], file: String, duplicate: @escaping (String) -> Void = { _ in }) throws -> [JSONValue] {
        let policy = JSONParser.DuplicateKeys.lastWins { key, offset in duplicate("\(file): key \"\(key)\" appears twice in one object (byte \(offset)); the last one is used") }
        guard bytes.contains(where: { !($0 == 0x20 || $0 == 0x0a || $0 == 0x0d || $0 == 0x09) }) else {
            throw InputError(file: file, path: "$", reason: "is empty; give a JSON array of STATE messages (`[]` for none), or leave out --state to start from scratch")
        }
        do {
            let whole = try JSONParser.parse(bytes, duplicateKeys: policy)
            if case .array(let a) = whole { return a }
            return [whole]
        } catch let first {
            var docs: [JSONValue] = []
            var offset = 0
            for line in bytes.split(separator: 0x0a, omittingEmptySubsequences: false) {
                defer { offset += line.count + 1 }
                if line.allSatisfy({ $0 == 0x20 || $0 == 0x0d || $0 == 0x09 }) { continue }
                do {
                    docs.append(try JSONParser.parse(Array(line), duplicateKeys: policy))
                } catch {
                    if docs.isEmpty { throw ConfigError.syntax(file: file, first) }
                    throw ConfigError.syntax(file: file, JSONSyntaxError(offset: offset + error.offset, reason: error.reason))
                }
            }
            return docs
        }
    }

    /// The Airbyte state message inside a document, or nil for other messages of a transcript
    /// (RECORD, LOG, TRACE).
    static func stateMessage(_ doc: JSONValue) -> JSONValue? {
        if doc["type"]?.stringValue == "STATE" { return doc["state"] }
        switch doc["type"]?.stringValue {
        case nil, "STREAM"?, "GLOBAL"?, "LEGACY"?: return doc
        default: return nil
        }
    }
}

/// The per-stream states given to `read --state`.
public enum InputState {
    /// Parses the STREAM states of a state file; the last state per stream wins.
    public static func parse(_ bytes: [UInt8], file: String) throws -> [StreamID: StreamState] {
        try parse(documents: StateFile.documents(bytes, file: file), file: file)
    }

    public static func parse(documents docs: [JSONValue], file: String) throws(InputError) -> [StreamID: StreamState] {
        try SavedState.parse(documents: docs, file: file).streams
    }
}
