/// Reads typed settings out of a JSON object, remembering which keys were used and
/// naming the JSON path of anything missing or ill-typed.
final class ObjectReader {
    let path: String
    let object: JSONObject
    private var used: Set<String> = []

    init(_ object: JSONObject, path: String) {
        self.object = object
        self.path = path
    }

    func childPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// Returns the value, treating JSON null as absent.
    func raw(_ key: String) -> JSONValue? {
        used.insert(key)
        guard let v = object[key] else { return nil }
        if case .null = v { return nil }
        return v
    }

    func has(_ key: String) -> Bool { raw(key) != nil }

    private func typeError(_ key: String, expected: String, got: JSONValue) -> ConfigError {
        .invalid(path: childPath(key), reason: "expected \(expected), found \(got.typeName)")
    }

    /// The text of a string setting at `path`. Every string setting passes here: settings end up
    /// in C strings (libpq, libssh2, OpenSSL), where a NUL byte would silently cut the value short.
    static func text(_ v: JSONValue, path: String) throws(ConfigError) -> String? {
        guard case .string(let s) = v else { return nil }
        if s.utf8.contains(0) {
            throw .invalid(path: path, reason: "contains a NUL character (\\u0000), which cannot be passed on; remove it")
        }
        return s
    }

    /// A string; empty strings count as absent.
    func string(_ key: String) throws(ConfigError) -> String? {
        guard let v = raw(key) else { return nil }
        guard let s = try Self.text(v, path: childPath(key)) else { throw typeError(key, expected: "a string", got: v) }
        return s.isEmpty ? nil : s
    }

    func requiredString(_ key: String) throws(ConfigError) -> String {
        guard let s = try string(key) else {
            throw .invalid(path: childPath(key), reason: "is required and must be a non-empty string")
        }
        return s
    }

    func secret(_ key: String) throws(ConfigError) -> Secret? {
        guard let v = raw(key) else { return nil }
        guard let s = try Self.text(v, path: childPath(key)) else { throw typeError(key, expected: "a string", got: v) }
        return s.isEmpty ? nil : Secret(s)
    }

    func requiredSecret(_ key: String, why: String) throws(ConfigError) -> Secret {
        guard let s = try secret(key) else { throw .invalid(path: childPath(key), reason: "is required \(why)") }
        return s
    }

    /// An integer, also accepted as a string of digits (some UIs send numbers as strings).
    func int(_ key: String, default def: Int, range: ClosedRange<Int>) throws(ConfigError) -> Int {
        guard let v = raw(key) else { return def }
        let n: Int?
        switch v {
        case .number(let text): n = Int(text)
        case .string(let text): n = Int(text.trimmingSpaces())
        default: throw typeError(key, expected: "an integer", got: v)
        }
        guard let n else { throw .invalid(path: childPath(key), reason: "expected an integer") }
        guard range.contains(n) else {
            throw .invalid(path: childPath(key), reason: "must be between \(range.lowerBound) and \(range.upperBound), got \(n)")
        }
        return n
    }

    /// A number above `above` and at most `max` (also accepted as a string).
    func number(_ key: String, default def: Double, above: Double, max: Double) throws(ConfigError) -> Double {
        guard let v = raw(key) else { return def }
        let n: Double?
        switch v {
        case .number(let text): n = Double(text)
        case .string(let text): n = Double(text.trimmingSpaces())
        default: throw typeError(key, expected: "a number", got: v)
        }
        guard let n, n.isFinite else { throw .invalid(path: childPath(key), reason: "expected a number") }
        guard n > above && n <= max else {
            throw .invalid(path: childPath(key), reason: "must be above \(above) and at most \(max), got \(n)")
        }
        return n
    }

    func bool(_ key: String, default def: Bool) throws(ConfigError) -> Bool {
        guard let v = raw(key) else { return def }
        guard case .bool(let b) = v else { throw typeError(key, expected: "true or false", got: v) }
        return b
    }

    func stringArray(_ key: String) throws(ConfigError) -> [String]? {
        guard let v = raw(key) else { return nil }
        guard case .array(let items) = v else { throw typeError(key, expected: "an array of strings", got: v) }
        var out: [String] = []
        for (k, item) in items.enumerated() {
            guard let s = try Self.text(item, path: "\(childPath(key))[\(k)]"), !s.isEmpty else {
                throw .invalid(path: "\(childPath(key))[\(k)]", reason: "expected a non-empty string, found \(item.typeName)")
            }
            out.append(s)
        }
        return out
    }

    func object(_ key: String) throws(ConfigError) -> ObjectReader? {
        guard let v = raw(key) else { return nil }
        guard case .object(let o) = v else { throw typeError(key, expected: "an object", got: v) }
        return ObjectReader(o, path: childPath(key))
    }

    /// Matches a string against allowed spellings, case-insensitively and treating `_` as `-`.
    func choice<T>(_ key: String, _ options: [(spellings: [String], value: T)], default def: T?) throws(ConfigError) -> T {
        guard let s = try string(key) else {
            if let def { return def }
            throw .invalid(path: childPath(key), reason: "is required; one of \(options.map { $0.spellings[0] }.joined(separator: ", "))")
        }
        let norm = s.lowercased().replacingUnderscores()
        for o in options where o.spellings.contains(where: { $0.lowercased().replacingUnderscores() == norm }) {
            return o.value
        }
        throw .invalid(path: childPath(key), reason: "must be one of \(options.map { $0.spellings[0] }.joined(separator: ", "))")
    }

    /// Keys present in the object that nothing read.
    var unknownKeys: [String] { object.keys.filter { !used.contains($0) } }
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }

    fileprivate func replacingUnderscores() -> String {
        String(self.map { $0 == "_" ? "-" : $0 })
    }
}
