/// One stream of an Airbyte ConfiguredAirbyteCatalog.
public struct ConfiguredStream: Sendable {
    public enum SyncMode: String, Sendable { case fullRefresh = "full_refresh", incremental }

    public var namespace: String
    public var name: String
    /// Column names selected in the stream's json_schema (nil: all columns).
    public var selectedColumns: [String]?
    public var syncMode: SyncMode
    public var destinationSyncMode: String?
    public var cursorField: [String]
    public var primaryKey: [[String]]
    /// Where the stream was configured (catalog file and index), for messages; nil when made up.
    public var location: CatalogLocation? = nil

    public var id: StreamID { StreamID(namespace: namespace, name: name) }
}

/// A stream's place in a catalog file.
public struct CatalogLocation: Sendable {
    public var file: String
    public var index: Int
    /// The JSON path of the stream's selected columns (Airbyte's by default).
    public var propertiesPath: String

    public init(file: String, index: Int, propertiesPath: String? = nil) {
        self.file = file
        self.index = index
        self.propertiesPath = propertiesPath ?? "streams[\(index)].stream.json_schema.properties"
    }
}

/// Errors in the catalog or state given to `read`; each names the JSON path.
public struct InputError: Error, UserFacingError, CustomStringConvertible {
    public var file: String
    public var path: String
    public var reason: String

    public var description: String { "\(file): `\(path)`: \(reason)" }
    public var userMessage: String { description }
    public var failureType: String { "config_error" }
}

public enum ConfiguredCatalog {
    /// Parses a ConfiguredAirbyteCatalog document.
    public static func parse(_ json: JSONValue, file: String = "catalog") throws(InputError) -> [ConfiguredStream] {
        guard let streams = json["streams"]?.arrayValue else {
            throw InputError(file: file, path: "streams", reason: "expected an array of configured streams")
        }
        var out: [ConfiguredStream] = []
        for (i, s) in streams.enumerated() {
            let p = "streams[\(i)]"
            guard let stream = s["stream"], let name = stream["name"]?.stringValue, !name.isEmpty else {
                throw InputError(file: file, path: "\(p).stream.name", reason: "is required")
            }
            // Null means absent, for every optional field (Airbyte's own tests send nulls). A stream
            // without a namespace is looked up by name in the configured schemas (see `resolveNamespaces`).
            let namespace: String
            switch stream["namespace"] {
            case nil, .null?: namespace = ""
            case .string(let n)? where !n.isEmpty: namespace = n
            default: throw InputError(file: file, path: "\(p).stream.namespace", reason: "expected the schema of the table (a non-empty string) or null")
            }
            guard let modeText = s["sync_mode"]?.stringValue, let mode = ConfiguredStream.SyncMode(rawValue: modeText) else {
                throw InputError(file: file, path: "\(p).sync_mode", reason: "must be full_refresh or incremental")
            }
            var columns: [String]?
            if let props = stream["json_schema"]?["properties"]?.objectValue { columns = props.keys }
            var cursor: [String] = []
            if let c = s["cursor_field"], c != .null {
                guard let arr = c.arrayValue, arr.allSatisfy({ $0.stringValue != nil }) else {
                    throw InputError(file: file, path: "\(p).cursor_field", reason: "expected an array of strings")
                }
                cursor = arr.compactMap(\.stringValue)
            }
            var pk: [[String]] = []
            switch s["primary_key"] {
            case nil, .null?: break
            case .array(let k)?:
                for (j, part) in k.enumerated() {
                    guard let names = part.arrayValue, names.allSatisfy({ $0.stringValue != nil }) else {
                        throw InputError(file: file, path: "\(p).primary_key[\(j)]", reason: "expected a field path (an array of strings)")
                    }
                    pk.append(names.compactMap(\.stringValue))
                }
            default:
                throw InputError(file: file, path: "\(p).primary_key", reason: "expected an array of field paths or null")
            }
            out.append(ConfiguredStream(
                namespace: namespace, name: name, selectedColumns: columns, syncMode: mode,
                destinationSyncMode: s["destination_sync_mode"]?.stringValue, cursorField: cursor, primaryKey: pk,
                location: CatalogLocation(file: file, index: i)))
        }
        return out
    }

    /// The schemas to discover for `streams`: their namespaces, and the configured schemas when a
    /// stream has none.
    public static func schemas(_ streams: [ConfiguredStream], configured: [String]) -> [String] {
        var set = Set(streams.map(\.namespace).filter { !$0.isEmpty })
        if streams.contains(where: { $0.namespace.isEmpty }) { set.formUnion(configured) }
        return set.sorted()
    }

    /// Gives streams configured without a namespace the schema that holds a table of that name
    /// among `discovered`; a name found in several schemas (or none) is an error naming the path.
    public static func resolveNamespaces(_ streams: [ConfiguredStream], discovered: [DiscoveredStream]) throws(InputError) -> [ConfiguredStream] {
        var out = streams
        for i in out.indices where out[i].namespace.isEmpty {
            let matches = discovered.filter { $0.name == out[i].name }.map(\.schema)
            let at = out[i].location.map { ($0.file, "streams[\($0.index)].stream.namespace") } ?? ("catalog", "stream.namespace")
            guard matches.count == 1 else {
                throw InputError(file: at.0, path: at.1, reason: matches.isEmpty
                    ? "is null and no configured schema has a table named \"\(out[i].name)\"; set the namespace or add its schema to `schemas`"
                    : "is null and a table named \"\(out[i].name)\" is in several schemas (\(matches.sorted().joined(separator: ", "))); set the namespace")
            }
            out[i].namespace = matches[0]
        }
        return out
    }
}
