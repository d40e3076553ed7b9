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

/// Tells how far a CDC reader is behind its server, from the server's WAL end sampled over time
/// (`pg_current_wal_lsn()`: the replication stream's own positions are those of the records it
/// sends, not the server's end) and the commit times the stream carries. Pure, so it is tested
/// without a server. Times are the server's clock (samples carry it, and the offset to the
/// local clock converts `now`), like the commit times.
///
/// Bytes behind are the server's WAL end minus the position applied. Seconds behind are the time
/// since the server's WAL end first passed the applied position: between the last time it was
/// seen at or below it and the first time above it (interpolated by position), else from the last
/// commit applied; never earlier than that commit, nor later than the commit of the transaction
/// being read.
struct LagMeter {
    struct Sample: Equatable {
        /// The first and the last time the server's end was seen at `lsn`.
        var first: Double
        var last: Double
        var lsn: LSN
    }
    private(set) var serverEnd = LSN(0)
    private(set) var applied = LSN(0)
    /// Commit time (Unix seconds) of the last transaction applied.
    private(set) var lastCommit: Double?
    /// Commit time of the transaction being read (not applied yet).
    private(set) var inFlightCommit: Double?
    /// The server's WAL end over time, ascending in both.
    private(set) var samples: [Sample] = []
    /// Server clock minus local clock, from the last sample.
    private(set) var clockOffset = 0.0
    static let maxSamples = 4096

    /// The server's WAL end read at `serverTime` (its clock), locally at `localTime`.
    mutating func sample(_ end: LSN, at serverTime: Double, localTime: Double? = nil) {
        server(end)
        clockOffset = localTime.map { serverTime - $0 } ?? 0
        if let last = samples.last, end <= last.lsn {
            if end == last.lsn { samples[samples.count - 1].last = max(last.last, serverTime) }
        } else {
            samples.append(Sample(first: serverTime, last: serverTime, lsn: end))
        }
        prune()
    }

    /// A position the stream says the server has reached (it is at least there).
    mutating func server(_ end: LSN) { if end > serverEnd { serverEnd = end } }

    /// A transaction committed at `commitUnix` began arriving.
    mutating func began(commitUnix: Double) { inFlightCommit = commitUnix }

    /// A transaction was applied up to `end`, committed at `commitUnix`.
    mutating func applied(_ end: LSN, commitUnix: Double) {
        if end > applied { applied = end }
        lastCommit = commitUnix
        inFlightCommit = nil
        server(end)
        prune()
    }

    /// Nothing is pending up to `lsn` (an idle keepalive, or a state moved to the WAL end).
    mutating func caughtUp(_ lsn: LSN) {
        if lsn > applied { applied = lsn }
        prune()
    }

    /// Samples at or below the applied position are kept only for the latest of them.
    private mutating func prune() {
        var drop = 0
        while drop + 1 < samples.count && samples[drop + 1].lsn <= applied { drop += 1 }
        if samples.count - drop > Self.maxSamples { drop = samples.count - Self.maxSamples }
        if drop > 0 { samples.removeFirst(drop) }
    }

    /// The lag at local time `now`.
    func lag(now localNow: Double, retained: Int64?) -> CDCLag {
        let now = localNow + clockOffset
        let behind = serverEnd > applied ? serverEnd.value - applied.value : 0
        var seconds = 0.0
        if behind > 0 {
            // When the server's end passed the applied position, as far as the samples tell.
            var passed: Double?
            if let i = samples.firstIndex(where: { $0.lsn > applied }) {
                if i > 0 {
                    let below = samples[i - 1], above = samples[i]
                    let f = Double(applied.value - below.lsn.value) / Double(above.lsn.value - below.lsn.value)
                    passed = below.last + (above.first - below.last) * min(1, max(0, f))
                } else {
                    // No sample from before it passed: the last commit applied is the best bound
                    // (the reader started behind, or the server wrote nothing else meanwhile).
                    passed = lastCommit ?? samples[i].first
                }
            }
            // Only the stream told of the server's end: the last commit applied is the bound.
            if passed == nil { passed = lastCommit }
            // The transaction being read committed past the applied position: it passed by then.
            if let c = inFlightCommit { passed = min(passed ?? c, c) }
            if let c = lastCommit, let p = passed, p < c { passed = c }
            seconds = passed.map { max(0, now - $0) } ?? 0
        }
        return CDCLag(bytes: behind, seconds: seconds, retainedBytes: retained, applied: applied, serverEnd: serverEnd)
    }
}
