/// STATE and TRACE messages of a read.
extension AirbyteMessage {
    static func descriptor(namespace: String, name: String) -> JSONValue {
        ["name": .string(name), "namespace": .string(namespace)]
    }

    /// A per-stream STATE message.
    public static func streamState(namespace: String, name: String, state: StreamState, recordCount: Int64) -> JSONValue {
        [
            "type": "STATE",
            "state": [
                "type": "STREAM",
                "stream": ["stream_descriptor": descriptor(namespace: namespace, name: name), "stream_state": state.json],
                "sourceStats": ["recordCount": .number(String(recordCount))],
            ],
        ]
    }

    /// TRACE STREAM_STATUS: STARTED, RUNNING, COMPLETE or INCOMPLETE.
    public static func streamStatus(namespace: String, name: String, status: String) -> JSONValue {
        [
            "type": "TRACE",
            "trace": [
                "type": "STREAM_STATUS", "emitted_at": .number(String(nowMillis)),
                "stream_status": ["stream_descriptor": descriptor(namespace: namespace, name: name), "status": .string(status)],
            ],
        ]
    }

    /// TRACE ESTIMATE from catalog statistics.
    public static func estimate(namespace: String, name: String, rows: Int64, bytes: Int64) -> JSONValue {
        [
            "type": "TRACE",
            "trace": [
                "type": "ESTIMATE", "emitted_at": .number(String(nowMillis)),
                "estimate": [
                    "name": .string(name), "namespace": .string(namespace), "type": "STREAM",
                    "row_estimate": .number(String(rows)), "byte_estimate": .number(String(bytes)),
                ],
            ],
        ]
    }
}
