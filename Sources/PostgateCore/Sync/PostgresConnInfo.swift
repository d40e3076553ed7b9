import CLibPQ
import Foundation

/// A `postgres:` destination parsed into libpq keywords: from a `postgres://` or `postgresql://`
/// URI (scheme in any case) or from `key=value` pairs.
///
/// Postgate parses URIs itself, so libpq never sees the text: the user name and password end at
/// the last `@`, so a raw `@`, `:`, `/`, `?` or `#` in the password is read as written; `%` starts a
/// percent-encoded byte everywhere. Every textual form masks secret values (`password=***`), and
/// parse errors name the part that is wrong, never its text.
public struct PostgresConnInfo: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// One libpq keyword and its value.
    public struct Parameter: Sendable, Equatable {
        public var keyword: String
        public var value: String
        public init(_ keyword: String, _ value: String) {
            self.keyword = keyword
            self.value = value
        }
    }

    /// The keywords and values, in the order given.
    public let parameters: [Parameter]

    public init(parameters: [Parameter]) { self.parameters = parameters }

    /// The value of `keyword`, if given (the last one wins, as in libpq).
    public func value(_ keyword: String) -> String? { parameters.last { $0.keyword == keyword }?.value }

    /// The pairs for `PQconnectdbParams`, secrets included.
    public var libpqParameters: [(String, String)] { parameters.map { ($0.keyword, $0.value) } }

    /// `postgres:key=value ...` with every secret value shown as `***`.
    public var description: String {
        "postgres:" + parameters.map { p in
            "\(p.keyword)=" + (Self.secretKeywords.contains(p.keyword) ? "***" : Self.quoted(p.value))
        }.joined(separator: " ")
    }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }

    /// A parse failure: which part of the destination is wrong (never its text).
    public struct ParseError: Error, Sendable, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// Parses the text after `postgres:` (or a whole `postgres://` URI).
    public static func parse(_ text: String) throws(ParseError) -> PostgresConnInfo {
        if let rest = uriRemainder(text) { return try parseURI(rest) }
        if text.contains("=") { return try parseKeywords(text) }
        // A bare word is a database name, as for psql; it is never expanded.
        guard !text.isEmpty, !text.contains(where: { $0 == "@" || $0 == ":" || $0 == "/" || $0.isWhitespace }) else {
            throw ParseError("`--destination` postgres: takes key=value pairs (postgres:'host=... dbname=...') or a URI (postgres://user@host/db); this is neither (it is not shown, as it may contain a password)")
        }
        return PostgresConnInfo(parameters: [Parameter("dbname", text)])
    }

    /// The part after `scheme://` when `text` is a postgres URI, scheme in any case.
    static func uriRemainder(_ text: String) -> Substring? {
        for scheme in ["postgresql://", "postgres://"] where text.count >= scheme.count {
            if text.prefix(scheme.count).lowercased() == scheme { return text.dropFirst(scheme.count) }
        }
        return nil
    }

    static func parseURI(_ s: Substring) throws(ParseError) -> PostgresConnInfo {
        var p: [Parameter] = []
        var rest = s
        // The user name and password end at the last `@`; a `@` after it must be percent-encoded.
        if let at = s.lastIndex(of: "@") {
            let userinfo = s[..<at]
            rest = s[s.index(after: at)...]
            if let colon = userinfo.firstIndex(of: ":") {
                let user = try decode(userinfo[..<colon], "the user name")
                if !user.isEmpty { p.append(Parameter("user", user)) }
                p.append(Parameter("password", try decode(userinfo[userinfo.index(after: colon)...], "the password")))
            } else {
                let user = try decode(userinfo, "the user name")
                if !user.isEmpty { p.append(Parameter("user", user)) }
            }
        }
        if rest.contains("#") {
            throw ParseError("`--destination`: a URI fragment (`#`) is not supported; percent-encode `#` as %23")
        }
        let hostEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        let (hosts, ports) = try parseHosts(rest[..<hostEnd])
        if hosts.contains(where: { !$0.isEmpty }) { p.append(Parameter("host", hosts.joined(separator: ","))) }
        if ports.contains(where: { !$0.isEmpty }) { p.append(Parameter("port", ports.joined(separator: ","))) }
        var tail = rest[hostEnd...]
        if tail.first == "/" {
            let queryStart = tail.firstIndex(of: "?") ?? tail.endIndex
            let db = try decode(tail[tail.index(after: tail.startIndex)..<queryStart], "the database name")
            if !db.isEmpty { p.append(Parameter("dbname", db)) }
            tail = tail[queryStart...]
        }
        if tail.first == "?" {
            for pair in tail.dropFirst().split(separator: "&") {
                guard let eq = pair.firstIndex(of: "=") else {
                    throw ParseError("`--destination`: a query parameter has no `=` (write ?key=value&key=value)")
                }
                var key = try decode(pair[..<eq], "a query parameter name")
                guard knownKeywords.isEmpty || knownKeywords.contains(key) || key == "ssl" else {
                    let shown = key.count <= 64 && key.allSatisfy { ($0.isASCII && $0.isLetter) || $0 == "_" } ? "`\(key)`" : "a name"
                    throw ParseError("`--destination`: query parameter \(shown) is not a libpq connection keyword")
                }
                var value = try decode(pair[pair.index(after: eq)...], "the value of query parameter `\(key)`")
                if key == "ssl" {
                    guard value == "true" else { throw ParseError("`--destination`: query parameter `ssl` takes only `true` (or use sslmode)") }
                    key = "sslmode"
                    value = "require"
                }
                p.append(Parameter(key, value))
            }
        }
        return PostgresConnInfo(parameters: p)
    }

    /// `host[:port]`, comma-separated, IPv6 addresses in brackets.
    static func parseHosts(_ text: Substring) throws(ParseError) -> (hosts: [String], ports: [String]) {
        var hosts: [String] = []
        var ports: [String] = []
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            var host: Substring
            var port: Substring?
            if item.first == "[" {
                guard let close = item.firstIndex(of: "]") else {
                    throw ParseError("`--destination`: an IPv6 host address lacks its closing `]`")
                }
                host = item[item.index(after: item.startIndex)..<close]
                let after = item[item.index(after: close)...]
                if after.first == ":" { port = after.dropFirst() } else if !after.isEmpty {
                    throw ParseError("`--destination`: after an IPv6 host address in brackets only `:port` may follow")
                }
            } else if let colon = item.firstIndex(of: ":") {
                host = item[..<colon]
                port = item[item.index(after: colon)...]
            } else {
                host = item
            }
            hosts.append(try decode(host, "the host"))
            if let port {
                guard let n = Int(port), port.allSatisfy({ $0.isASCII && $0.isNumber }), (1...65535).contains(n) else {
                    throw ParseError("`--destination`: the port is not a number from 1 to 65535")
                }
                ports.append(String(n))
            } else {
                ports.append("")
            }
        }
        return (hosts, ports)
    }

    /// Percent-decodes one part of a URI; errors name the part.
    static func decode(_ text: Substring, _ part: String) throws(ParseError) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var it = text.utf8.makeIterator()
        while let b = it.next() {
            guard b == UInt8(ascii: "%") else { bytes.append(b); continue }
            guard let h = it.next().flatMap(hexValue), let l = it.next().flatMap(hexValue) else {
                throw ParseError("`--destination`: \(part) has a `%` not followed by two hex digits; write `%` as %25")
            }
            let v = h << 4 | l
            guard v != 0 else { throw ParseError("`--destination`: \(part) contains %00") }
            bytes.append(v)
        }
        guard let s = String(validating: bytes, as: UTF8.self) else {
            throw ParseError("`--destination`: \(part) is not valid UTF-8 once percent-decoded")
        }
        return s
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// `key=value` pairs, parsed by libpq's own `PQconninfoParse`. Its error message quotes the
    /// text where it stopped, which can be part of the password, so it is not shown.
    static func parseKeywords(_ text: String) throws(ParseError) -> PostgresConnInfo {
        var err: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(text, &err) else {
            if let err { PQfreemem(err) }
            throw ParseError("`--destination`: the connection string could not be parsed (check the key=value pairs; quote a value holding spaces or quotes in single quotes, with \\' and \\\\ inside); it is not shown because it may contain a password")
        }
        defer { PQconninfoFree(options) }
        var p: [Parameter] = []
        var o = options
        while let keyword = o.pointee.keyword {
            if let val = o.pointee.val {
                p.append(Parameter(String(cString: keyword), String(cString: val)))
                memset(val, 0, strlen(val))
            }
            o += 1
        }
        return PostgresConnInfo(parameters: p)
    }

    /// The keywords libpq knows.
    static var knownKeywords: Set<String> { libpqKeywords.known }
    /// The keywords whose values are secret (`password`, `sslpassword`: those libpq displays as `*`).
    static var secretKeywords: Set<String> { libpqKeywords.secret }

    private static let libpqKeywords: (known: Set<String>, secret: Set<String>) = {
        var known: Set<String> = []
        var secret: Set<String> = ["password", "sslpassword"]
        if let options = PQconndefaults() {
            var o = options
            while let keyword = o.pointee.keyword {
                let k = String(cString: keyword)
                known.insert(k)
                if let d = o.pointee.dispchar, d.pointee == CChar(UInt8(ascii: "*")) { secret.insert(k) }
                o += 1
            }
            PQconninfoFree(options)
        }
        return (known, secret)
    }()

    /// A value as conninfo would take it: bare when plain, else in single quotes.
    static func quoted(_ v: String) -> String {
        if !v.isEmpty && !v.contains(where: { $0.isWhitespace || $0 == "'" || $0 == "\\" }) { return v }
        return "'" + v.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
    }
}
