/// An error that can be shown to a user as is: `userMessage` says what failed and what to do,
/// and never contains a secret.
public protocol UserFacingError: Error {
    var userMessage: String { get }
    /// Airbyte failure type: `config_error`, `system_error` or `transient_error`.
    var failureType: String { get }
}

extension ConfigError: UserFacingError {
    public var userMessage: String { description }
    public var failureType: String { "config_error" }
}

/// Airbyte's failure types and the exit status of each. The rule:
/// - `config_error` (exit 1): the user's settings or input are wrong; changing them fixes it.
/// - `transient_error` (exit 2): the network, the server or the tunnel was unavailable or went away;
///   running again may succeed (resume from the last STATE).
/// - `system_error` (exit 3): a bug, data Postgate did not expect (such as a replication message it
///   cannot decode) or a local I/O failure (stdout closed, disk full).
/// Command-line usage errors exit with 64 (EX_USAGE) and are reported as `config_error`.
public enum FailureType: String, Sendable, CaseIterable {
    case config = "config_error"
    case transient = "transient_error"
    case system = "system_error"

    public var exitCode: Int32 {
        switch self {
        case .config: return 1
        case .transient: return 2
        case .system: return 3
        }
    }

    /// The failure type of any error: its own for a `UserFacingError`, else `system_error` (an error
    /// nobody classified is a bug).
    public static func of(_ error: Error) -> FailureType {
        guard let e = error as? UserFacingError else { return .system }
        return FailureType(rawValue: e.failureType) ?? .system
    }
}

extension PostgresError: UserFacingError {
    public var userMessage: String { description }
    public var failureType: String { failure.rawValue }

    /// Classified by SQLSTATE where the server sent one. Without one, a failure to connect is the
    /// settings' (host, port, TLS); a connection that broke later is transient.
    public var failure: FailureType {
        if let state = sqlState {
            switch state.prefix(2) {
            case "08", "53", "57", "58", "40": return .transient // connection, resources, shutdown, I/O, rollback
            case "28", "3D", "3F": return .config // authorization, missing database or schema
            default:
                // Missing privilege, table or column: the grants or the catalog need changing.
                if ["42501", "42P01", "42703", "42704"].contains(state) { return .config }
                return kind == .connection ? .config : .system
            }
        }
        switch kind {
        case .connection: return .config
        case .client: return .transient
        case .server: return .system
        }
    }
}


extension PrivateFiles.Failure: UserFacingError {
    public var userMessage: String { description }
    public var failureType: String { FailureType.system.rawValue }
}

/// A replication message Postgate cannot decode: unexpected data or a bug, not a setting.
extension PgOutputError: UserFacingError {
    public var userMessage: String { "CDC: \(description). Please report this with the server version; rerunning from the last STATE re-reads the change" }
    public var failureType: String { FailureType.system.rawValue }
}

/// A COPY row that does not have the shape asked for: unexpected data, not a setting.
extension RecordEncoder.MalformedRow: UserFacingError {
    public var userMessage: String { "unexpected row from the server: \(description)" }
    public var failureType: String { FailureType.system.rawValue }
}

/// Writing protocol messages failed (stdout closed early, disk full): local I/O.
extension OutputSink.WriteError: UserFacingError {
    public var userMessage: String { description }
    public var failureType: String { FailureType.system.rawValue }
}

/// Errors of connection set-up that are not libpq's own.
public enum ConnectionSetupError: Error, UserFacingError, CustomStringConvertible {
    case notSupportedYet(setting: String, what: String)

    public var description: String {
        switch self {
        case .notSupportedYet(let setting, let what): return "setting `\(setting)`: \(what) is not supported by this build of Postgate yet"
        }
    }
    public var userMessage: String { description }
    public var failureType: String { "config_error" }
}

extension KeyError: UserFacingError {
    public var userMessage: String { description }
    public var failureType: String { "config_error" }
}
