import Foundation

/// How far a CDC reader is behind its server: bytes of WAL not yet applied, and seconds since
/// the commit of the last transaction applied while some are still pending (0 when caught up).
public struct CDCLag: Sendable, Equatable {
    public var bytes: UInt64
    public var seconds: Double
    /// WAL the slot keeps on the server (from its restart position), when it could be read.
    public var retainedBytes: Int64?
    public var applied: LSN
    public var serverEnd: LSN

    /// The line `sync` and `read` print on stderr.
    public var line: String {
        let retained = retainedBytes.map { "; the slot retains \(Self.size($0)) of WAL" } ?? ""
        return "CDC lag: \(Self.size(Int64(bytes))) and \(String(format: "%.1f", seconds)) s behind the server (applied \(applied), server WAL at \(serverEnd))\(retained)"
    }

    static func size(_ n: Int64) -> String {
        if n < 1 << 10 { return "\(n) B" }
        if n < 1 << 20 { return String(format: "%.1f KiB", Double(n) / 1024) }
        if n < 1 << 30 { return String(format: "%.1f MiB", Double(n) / 1_048_576) }
        return String(format: "%.2f GiB", Double(n) / 1_073_741_824)
    }

    /// An Airbyte ANALYTICS trace carrying the figures.
    public var trace: JSONValue {
        var value = JSONObject([
            ("lag_bytes", .number(String(bytes))), ("lag_seconds", .number(String(format: "%.3f", seconds))),
            ("applied_lsn", .string(applied.description)), ("server_lsn", .string(serverEnd.description)),
        ])
        if let retainedBytes { value["slot_retained_bytes"] = .number(String(retainedBytes)) }
        return [
            "type": "TRACE",
            "trace": ["type": "ANALYTICS", "emitted_at": .number(String(AirbyteMessage.nowMillis)),
                      "analytics": ["type": "cdc_lag", "value": .string(JSONValue.object(value).jsonText)]],
        ]
    }
}

/// Follows what the replication stream says (the server's WAL end, applied commits and their
/// times) and tells the lag; pure, so it is tested without a server.
struct LagMeter {
    private(set) var serverEnd = LSN(0)
    private(set) var applied = LSN(0)
    /// Commit time (Unix seconds) of the last transaction applied.
    private(set) var lastCommit: Double?

    mutating func server(_ end: LSN) { if end > serverEnd { serverEnd = end } }

    /// A transaction was applied up to `end`, committed at `commitUnix`.
    mutating func applied(_ end: LSN, commitUnix: Double) {
        if end > applied { applied = end }
        lastCommit = commitUnix
        server(end)
    }

    /// Nothing is pending up to `lsn` (an idle keepalive, or a state moved to the WAL end).
    mutating func caughtUp(_ lsn: LSN) { if lsn > applied { applied = lsn } }

    func lag(now: Double, retained: Int64?) -> CDCLag {
        let behind = serverEnd > applied ? serverEnd.value - applied.value : 0
        let seconds = behind == 0 ? 0 : max(0, now - (lastCommit ?? now))
        return CDCLag(bytes: behind, seconds: seconds, retainedBytes: retained, applied: applied, serverEnd: serverEnd)
    }
}
