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
    /// Stores the given STATE messages (a `null` message removes its key) and commits everything
    /// applied since the last commit.
    func commit(states: [(key: String, message: JSONValue)]) throws
    /// Abandons uncommitted work.
    func rollback()
}

/// Parses `--destination`: `sqlite:PATH`, `postgres:CONNINFO` (key=value pairs or a
/// `postgres://` URI) or `jsonl:DIR`; schemes in any case. Errors never repeat the text, which may
/// hold a password.
public enum DestinationURL {
    public enum Kind: Sendable, Equatable { case sqlite(String), postgres(PostgresConnInfo), jsonl(String) }

    static let usage = "use sqlite:PATH, postgres:CONNINFO (key=value pairs or a postgres:// URI) or jsonl:DIR"

    public static func parse(_ text: String) throws(SyncError) -> Kind {
        // A URI with its scheme in any case (Postgres://, POSTGRESQL://).
        if PostgresConnInfo.uriRemainder(text) != nil { return .postgres(try postgres(text)) }
        guard let colon = text.firstIndex(of: ":") else {
            throw .destination("`--destination` has no scheme; \(usage)")
        }
        let scheme = text[..<colon]
        // Anything before the first `:` that is not a plain scheme name (a password in a
        // `host=... password=a:b` string, say) is never repeated.
        guard let first = scheme.first, first.isASCII && first.isLetter, scheme.count <= 20,
              scheme.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "+" || $0 == "-" || $0 == ".") }) else {
            throw .destination("`--destination` does not start with a scheme; \(usage)")
        }
        var rest = String(text[text.index(after: colon)...])
        switch scheme.lowercased() {
        case "sqlite":
            if rest.hasPrefix("//") { rest.removeFirst(2) }
            guard !rest.isEmpty else { throw .destination("`--destination` sqlite: needs a file path, e.g. sqlite:./postgate.db") }
            return .sqlite(rest)
        case "postgres", "postgresql":
            guard !rest.isEmpty else { throw .destination("`--destination` postgres: needs a connection string, e.g. postgres:'host=... dbname=...'") }
            return .postgres(try postgres(rest))
        case "jsonl":
            if rest.hasPrefix("//") { rest.removeFirst(2) }
            guard !rest.isEmpty else { throw .destination("`--destination` jsonl: needs a directory, e.g. jsonl:./out") }
            return .jsonl(rest)
        default:
            throw .destination("`--destination` scheme \"\(scheme)\" is not known; \(usage)")
        }
    }

    static func postgres(_ text: String) throws(SyncError) -> PostgresConnInfo {
        do { return try PostgresConnInfo.parse(text) } catch { throw .destination(error.description) }
    }

    /// A destination string for messages, derived from its parsed parts: passwords masked,
    /// nothing shown of a string that does not parse.
    public static func describe(_ text: String) -> String {
        switch try? parse(text) {
        case .sqlite(let path): return "sqlite:" + path
        case .postgres(let info): return info.description
        case .jsonl(let dir): return "jsonl:" + dir
        case nil: return "(a --destination that does not parse)"
        }
    }

    /// Opens the destination.
    public static func open(_ text: String, logger: Logger) throws -> SyncDestination {
        switch try parse(text) {
        case .sqlite(let path): return try SQLiteDestination(path: path, logger: logger)
        case .postgres(let info): return try PostgresDestination(connInfo: info, logger: logger)
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
