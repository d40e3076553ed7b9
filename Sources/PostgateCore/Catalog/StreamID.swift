/// A stream's identity: the pair (namespace, name), compared as a pair everywhere (states,
/// catalog matching, CDC relations, destinations, logs), never as a joined string.
///
/// `description` is also an unambiguous text form: a part is written as is unless it is empty or
/// holds a `.` or `"`, in which case it is double-quoted with `"` doubled. So schema `a.b` with
/// table `c` prints `"a.b".c`, schema `a` with table `b.c` prints `a."b.c"`, and names without
/// dots print as the familiar `schema.table`.
public struct StreamID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var namespace: String
    public var name: String

    public init(namespace: String, name: String) {
        self.namespace = namespace
        self.name = name
    }

    public var description: String { Self.part(namespace) + "." + Self.part(name) }

    public static func < (a: StreamID, b: StreamID) -> Bool {
        (a.namespace, a.name) < (b.namespace, b.name)
    }

    private static func part(_ s: String) -> String {
        if !s.isEmpty && !s.contains(".") && !s.contains("\"") { return s }
        return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// Parses `description`. Text that is not in that form (written by versions before the quoted
    /// form, such as `a.b.c` or `"x.y`) is split at its first dot, as those versions read it.
    public init?(parsing text: String) {
        if let id = Self.parseQuoted(text) {
            self = id
        } else if let dot = text.firstIndex(of: "."), dot != text.startIndex, text.index(after: dot) != text.endIndex {
            self.init(namespace: String(text[..<dot]), name: String(text[text.index(after: dot)...]))
        } else {
            return nil
        }
    }

    private static func parseQuoted(_ text: String) -> StreamID? {
        var parts: [String] = []
        var i = text.startIndex
        while i <= text.endIndex {
            if i < text.endIndex && text[i] == "\"" {
                var part = ""
                var j = text.index(after: i)
                var closed = false
                while j < text.endIndex {
                    if text[j] == "\"" {
                        let next = text.index(after: j)
                        if next < text.endIndex && text[next] == "\"" {
                            part.append("\"")
                            j = text.index(after: next)
                            continue
                        }
                        closed = true
                        j = next
                        break
                    }
                    part.append(text[j])
                    j = text.index(after: j)
                }
                guard closed else { return nil }
                parts.append(part)
                i = j
            } else {
                // Unquoted: up to the next dot (the name part, once the namespace is known, takes the rest).
                let end = parts.isEmpty ? (text[i...].firstIndex(of: ".") ?? text.endIndex) : text.endIndex
                parts.append(String(text[i..<end]))
                i = end
            }
            if parts.count == 2 { guard i == text.endIndex else { return nil }; break }
            guard i < text.endIndex, text[i] == "." else { return nil }
            i = text.index(after: i)
        }
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { return nil }
        return StreamID(namespace: parts[0], name: parts[1])
    }
}
