/// An error from PostgreSQL or libpq. The description carries the server's message,
/// SQLSTATE and hint, never connection parameters.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Establishing the connection failed.
        case connection
        /// A statement failed on the server.
        case server
        /// The connection broke or libpq reported a client-side failure.
        case client
    }

    public var kind: Kind
    /// Five-character SQLSTATE, when the server sent one.
    public var sqlState: String?
    public var message: String
    public var detail: String?
    public var hint: String?

    public init(kind: Kind, sqlState: String? = nil, message: String, detail: String? = nil, hint: String? = nil) {
        self.kind = kind
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.hint = hint
    }

    public var description: String {
        var s = message
        if let sqlState { s = "\(s) (SQLSTATE \(sqlState))" }
        if let detail { s += ". Detail: \(detail)" }
        if let hint { s += ". Hint: \(hint)" }
        return s
    }
}
