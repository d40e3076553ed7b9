import Foundation

/// Builders for the Airbyte protocol messages Postgate emits.
public enum AirbyteMessage {
    /// Milliseconds since the Unix epoch, as Airbyte's `emitted_at`.
    public static var nowMillis: Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded()) }

    public static func spec(_ connectionSpecification: JSONValue) -> JSONValue {
        [
            "type": "SPEC",
            "spec": [
                "connectionSpecification": connectionSpecification,
                "supportsIncremental": true,
                "supported_destination_sync_modes": ["overwrite", "append", "append_dedup"],
            ],
        ]
    }

    public static func connectionStatus(succeeded: Bool, message: String) -> JSONValue {
        ["type": "CONNECTION_STATUS", "connectionStatus": ["status": .string(succeeded ? "SUCCEEDED" : "FAILED"), "message": .string(message)]]
    }

    public static func catalog(streams: [JSONValue]) -> JSONValue {
        ["type": "CATALOG", "catalog": ["streams": .array(streams)]]
    }

    public static func log(level: String, message: String) -> JSONValue {
        ["type": "LOG", "log": ["level": .string(level), "message": .string(message)]]
    }

    /// A TRACE error message; `failureType` is `config_error`, `system_error` or `transient_error`.
    public static func traceError(message: String, internalMessage: String?, failureType: String) -> JSONValue {
        var error: JSONObject = JSONObject([("message", .string(message)), ("failure_type", .string(failureType))])
        if let internalMessage { error["internal_message"] = .string(internalMessage) }
        return [
            "type": "TRACE",
            "trace": ["type": "ERROR", "emitted_at": .number(String(nowMillis)), "error": .object(error)],
        ]
    }
}
