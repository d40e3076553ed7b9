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

extension PostgresError: UserFacingError {
    public var userMessage: String { description }
    public var failureType: String { kind == .connection ? "config_error" : "system_error" }
}

/// Output that cannot be written (a closed stdout): the run ends through the error path, which
/// removes inline key material.
extension OutputSink.WriteError: UserFacingError {
    public var userMessage: String { description }
    public var failureType: String { "system_error" }
}

extension PrivateFiles.Failure: UserFacingError {
    public var userMessage: String { description }
    public var failureType: String { "system_error" }
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
