/// Why a configuration could not be used. Descriptions name the JSON path of the setting,
/// never its value.
public enum ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file could not be read.
    case unreadable(file: String, reason: String)
    /// The file is not valid JSON.
    case syntax(file: String, JSONSyntaxError)
    /// A setting is missing, of the wrong type or out of range.
    case invalid(path: String, reason: String)

    public var description: String {
        switch self {
        case .unreadable(let file, let reason):
            return "cannot read config file \(file): \(reason)"
        case .syntax(let file, let e):
            return "config file \(file) is not valid JSON: \(e.reason) (at byte offset \(e.offset))"
        case .invalid(let path, let reason):
            return "config setting `\(path)`: \(reason)"
        }
    }
}
