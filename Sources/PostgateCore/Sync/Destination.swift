import Foundation
import Logging

/// What applying one record did to the destination.
public enum ApplyOutcome: Sendable {
    case inserted, updated, unchanged, deleted, appended
    /// Queued; its outcome is reported when the batch is applied.
    case batched
}

/// A record on its way into a destination: the data, and which columns CDC left out because
/// their TOASTed value did not change (those keep the destination's value).
public struct SyncRecord {
    public var data: JSONObject
    public var omitted: Set<String>
    public var deleted: Bool
}

/// Where `sync` applies the stream. Writes happen in an open transaction that `commit` ends
/// together with the state that covers them, so state and data are durable together.
public protocol SyncDestination: AnyObject {
    /// A human name for logs (no secrets).
    var label: String { get }
    /// The committed state: one Airbyte STATE message per stream and one GLOBAL (CDC) message.
    func committedState() throws -> [JSONValue]
    /// Creates missing tables and adds columns the source gained.
    func prepare(_ streams: [SyncStream]) throws
    /// True when an interrupted full refresh of `s` left rows staged that a resumed read can add to.
    func hasStaging(_ s: SyncStream) throws -> Bool
    /// Outcomes of merges reported as `.batched`, applied since the last call, per stream.
    func takeBatchedOutcomes() -> [StreamID: (inserted: Int, updated: Int, unchanged: Int)]
    /// Starts (or, with `resume`, continues) loading a full refresh into a staging area.
    func startFullRefresh(_ s: SyncStream, resume: Bool) throws
    /// Adds one row to a full refresh in progress.
    func load(_ s: SyncStream, _ r: SyncRecord) throws
    /// Makes a finished full refresh the stream's table (in the open transaction).
    func finishFullRefresh(_ s: SyncStream) throws
    /// Merges one incremental or CDC record: upsert by primary key, delete, or append without one.
    func merge(_ s: SyncStream, _ r: SyncRecord) throws -> ApplyOutcome
    /// Removes every row of the stream (a TRUNCATE at the source); returns how many.
    func truncate(_ s: SyncStream) throws -> Int
    /// Stores the given STATE messages and commits everything applied since the last commit.
    func commit(states: [(key: String, message: JSONValue)]) throws
    /// Abandons uncommitted work.
    func rollback()
}

/// Parses `--destination`: `sqlite:PATH`, `postgres:CONNINFO` or `jsonl:DIR`.
public enum DestinationURL {
    public enum Kind: Sendable, Equatable { case sqlite(String), postgres(String), jsonl(String) }

    public static func parse(_ text: String) throws(SyncError) -> Kind {
        guard let colon = text.firstIndex(of: ":") else {
            throw .destination("`--destination` \(describe(text)) has no scheme; use sqlite:PATH, postgres:CONNINFO or jsonl:DIR")
        }
        let scheme = text[..<colon].lowercased()
        var rest = String(text[text.index(after: colon)...])
        switch scheme {
        case "sqlite":
            if rest.hasPrefix("//") { rest.removeFirst(2) }
            guard !rest.isEmpty else { throw .destination("`--destination` sqlite: needs a file path, e.g. sqlite:./postgate.db") }
            return .sqlite(rest)
        case "postgres", "postgresql":
            // A full URI (postgres://...) is handed to libpq as is.
            if rest.hasPrefix("//") { return .postgres(text) }
            guard !rest.isEmpty else { throw .destination("`--destination` postgres: needs a connection string, e.g. postgres:'host=... dbname=...'") }
            return .postgres(rest)
        case "jsonl":
            if rest.hasPrefix("//") { rest.removeFirst(2) }
            guard !rest.isEmpty else { throw .destination("`--destination` jsonl: needs a directory, e.g. jsonl:./out") }
            return .jsonl(rest)
        default:
            throw .destination("`--destination` scheme \"\(scheme)\" is not known; use sqlite:PATH, postgres:CONNINFO or jsonl:DIR")
        }
    }

    /// A destination string for messages, with any password in it masked.
    public static func describe(_ text: String) -> String {
        var t = text
        if let r = t.range(of: #"password\s*=\s*('[^']*'|\S+)"#, options: [.regularExpression, .caseInsensitive]) {
            t.replaceSubrange(r, with: "password=***")
        }
        if let r = t.range(of: #"://[^/@:]*:[^@/]*@"#, options: .regularExpression) {
            let user = t[r].dropFirst(3).split(separator: ":").first ?? ""
            t.replaceSubrange(r, with: "://\(user):***@")
        }
        return t
    }

    /// Opens the destination.
    public static func open(_ text: String, logger: Logger) throws -> SyncDestination {
        switch try parse(text) {
        case .sqlite(let path): return try SQLiteDestination(path: path, logger: logger)
        case .postgres(let conninfo): return try PostgresDestination(conninfo: conninfo, logger: logger)
        case .jsonl(let dir): return try JSONLDestination(directory: dir, logger: logger)
        }
    }
}

extension SyncDestination {
    public func takeBatchedOutcomes() -> [StreamID: (inserted: Int, updated: Int, unchanged: Int)] { [:] }
}


/// Table naming shared by the table destinations: `public` streams keep their name, others are
/// prefixed with their schema (`sales__orders`).
enum DestinationNaming {
    static func table(_ s: SyncStream) -> String {
        s.namespace == "public" ? s.name : "\(s.namespace)__\(s.name)"
    }
    static let stagingSuffix = "__postgate_loading"
    static let stateTable = "_postgate_state"
}
