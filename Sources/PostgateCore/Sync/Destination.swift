import Foundation
import Logging

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
        case .sqlite(let path): return try SQLiteDestination.open(path: path, logger: logger)
        case .postgres(let info): return try PostgresDestination.open(connInfo: info, logger: logger)
        case .jsonl(let dir): return try JSONLDestination(directory: dir, logger: logger)
        }
    }
}

