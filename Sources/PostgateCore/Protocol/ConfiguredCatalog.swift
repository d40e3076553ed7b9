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
            guard let namespace = stream["namespace"]?.stringValue, !namespace.isEmpty else {
                throw InputError(file: file, path: "\(p).stream.namespace", reason: "is required (the schema of the table)")
            }
            guard let modeText = s["sync_mode"]?.stringValue, let mode = ConfiguredStream.SyncMode(rawValue: modeText) else {
                throw InputError(file: file, path: "\(p).sync_mode", reason: "must be full_refresh or incremental")
            }
            var columns: [String]?
            if let props = stream["json_schema"]?["properties"]?.objectValue { columns = props.keys }
            var cursor: [String] = []
            if let c = s["cursor_field"] {
                guard let arr = c.arrayValue, arr.allSatisfy({ $0.stringValue != nil }) else {
                    throw InputError(file: file, path: "\(p).cursor_field", reason: "expected an array of strings")
                }
                cursor = arr.compactMap(\.stringValue)
            }
            var pk: [[String]] = []
            if let k = s["primary_key"]?.arrayValue {
                pk = k.map { ($0.arrayValue ?? []).compactMap(\.stringValue) }
            }
            out.append(ConfiguredStream(
                namespace: namespace, name: name, selectedColumns: columns, syncMode: mode,
                destinationSyncMode: s["destination_sync_mode"]?.stringValue, cursorField: cursor, primaryKey: pk,
                location: CatalogLocation(file: file, index: i)))
        }
        return out
    }
}
