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

    /// A chunked load: pages below `nextPage` are done. `incremental` becomes the state when the
    /// load completes; `xminLowerBound` marks an xmin pass reading only rows with newer xmins.
    public struct Load: Sendable, Equatable {
        public var nextPage: UInt32
        public var relationFilenode: UInt64
        public var incremental: Incremental?
        public var xminLowerBound: UInt32?
    }

    case load(Load)
    case incremental(Incremental)
    case fullRefreshComplete

    public var json: JSONValue {
        switch self {
        case .load(let l):
            var o = JSONObject([
                ("state_type", "ctid"), ("version", 2), ("ctid", .string("(\(l.nextPage),0)")),
                ("relation_filenode", .number(String(l.relationFilenode))),
            ])
            if let inc = l.incremental { o["incremental_state"] = Self.incrementalJSON(inc) }
            if let lb = l.xminLowerBound { o["xmin_lower_bound"] = .number(String(lb)) }
            return .object(o)
        case .incremental(let inc):
            return Self.incrementalJSON(inc)
        case .fullRefreshComplete:
            return ["state_type": "full_refresh", "version": 2, "status": "complete"]
        }
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

    /// Parses a stream_state object; `path` names it in errors.
    public static func parse(_ v: JSONValue, file: String, path: String) throws(InputError) -> StreamState {
        func fail(_ key: String, _ reason: String) -> InputError { InputError(file: file, path: "\(path).\(key)", reason: reason) }
        guard let type = v["state_type"]?.stringValue else { throw fail("state_type", "is required") }
        switch type {
        case "ctid":
            guard let text = v["ctid"]?.stringValue, let page = parseCtidPage(text) else {
                throw fail("ctid", "expected a tuple id such as \"(42,0)\"")
            }
            guard let fn = v["relation_filenode"]?.int64Value, fn >= 0 else { throw fail("relation_filenode", "expected a non-negative integer") }
            var inc: Incremental?
            if let i = v["incremental_state"], i != .null {
                guard case .incremental(let parsed) = try parse(i, file: file, path: "\(path).incremental_state") else {
                    throw fail("incremental_state", "must be a cursor_based or xmin state")
                }
                inc = parsed
            }
            var lower: UInt32?
            if let lb = v["xmin_lower_bound"]?.int64Value {
                guard let u = UInt32(exactly: lb) else { throw fail("xmin_lower_bound", "out of range") }
                lower = u
            }
            return .load(Load(nextPage: page, relationFilenode: UInt64(fn), incremental: inc, xminLowerBound: lower))
        case "cursor_based":
            guard let field = v["cursor_field"]?.arrayValue?.first?.stringValue else { throw fail("cursor_field", "expected an array with the cursor column") }
            let value: String?
            switch v["cursor"] {
            case .string(let s)?: value = s
            case .number(let n)?: value = n
            case .null?, nil: value = nil
            default: throw fail("cursor", "expected a string")
            }
            let count = v["cursor_record_count"]?.int64Value ?? 0
            return .incremental(.cursor(Cursor(field: field, value: value, recordCount: count)))
        case "xmin":
            if let raw = v["xmin_raw_value"]?.int64Value, raw >= 0 {
                return .incremental(.xmin(Xmin(raw: UInt64(raw))))
            }
            guard let xid = v["xmin_xid_value"]?.int64Value, let epoch = v["num_wraparound"]?.int64Value, xid >= 0, epoch >= 0 else {
                throw fail("xmin_raw_value", "expected xmin_raw_value, or xmin_xid_value with num_wraparound")
            }
            return .incremental(.xmin(Xmin(raw: UInt64(epoch) << 32 | UInt64(xid & 0xffff_ffff))))
        case "full_refresh":
            return .fullRefreshComplete
        default:
            throw fail("state_type", "unknown state type \"\(type)\" (expected ctid, cursor_based, xmin or full_refresh)")
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

/// The per-stream states given to `read --state`.
public enum InputState {
    /// Accepts a JSON array of state messages (with or without the `{"type":"STATE"}` envelope), a
    /// single one, or JSON lines (such as a previous read's output; the last state per stream wins).
    public static func parse(_ bytes: [UInt8], file: String) throws -> [String: StreamState] {
        var docs: [JSONValue] = []
        do {
            let whole = try JSONParser.parse(bytes)
            if case .array(let a) = whole { docs = a } else { docs = [whole] }
        } catch let first {
            // Perhaps JSON lines.
            var offset = 0
            for line in bytes.split(separator: 0x0a, omittingEmptySubsequences: false) {
                defer { offset += line.count + 1 }
                if line.allSatisfy({ $0 == 0x20 || $0 == 0x0d || $0 == 0x09 }) { continue }
                do {
                    docs.append(try JSONParser.parse(Array(line)))
                } catch {
                    if docs.isEmpty { throw ConfigError.syntax(file: file, first) }
                    throw ConfigError.syntax(file: file, JSONSyntaxError(offset: offset + error.offset, reason: error.reason))
                }
            }
        }
        var states: [String: StreamState] = [:]
        for (i, doc) in docs.enumerated() {
            var msg = doc
            if msg["type"]?.stringValue == "STATE", let inner = msg["state"] { msg = inner }
            else if doc["type"] != nil && doc["type"]?.stringValue != "STREAM" && doc["type"]?.stringValue != "GLOBAL" && doc["type"]?.stringValue != "LEGACY" {
                continue  // other messages in a JSON-lines transcript (RECORD, LOG, TRACE)
            }
            guard msg["type"]?.stringValue == "STREAM" || msg["stream"] != nil else { continue }
            guard let stream = msg["stream"], let desc = stream["stream_descriptor"], let name = desc["name"]?.stringValue else {
                throw InputError(file: file, path: "[\(i)].stream.stream_descriptor.name", reason: "is required")
            }
            let ns = desc["namespace"]?.stringValue ?? "public"
            guard let ss = stream["stream_state"], ss != .null else { continue }
            states["\(ns).\(name)"] = try StreamState.parse(ss, file: file, path: "[\(i)].stream.stream_state")
        }
        return states
    }
}
