/// A secret setting (password, key, token). Every textual form of it is redacted;
/// only `withExposed`/`exposedValue` give the real text, for handing to a C library.
public struct Secret: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    private let value: String

    public init(_ value: String) { self.value = value }

    /// The real secret. Call only where it is handed to libpq, libssh2 or an HTTP body.
    public var exposedValue: String { value }

    public var isEmpty: Bool { value.isEmpty }

    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}
