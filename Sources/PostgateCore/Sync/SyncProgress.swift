import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Per-stream counters, shared between the applier and the progress printer.
public final class SyncProgress: Sendable {
    public struct Stream: Sendable {
        public var key: StreamID
        public var mode: String
        public var records = 0
        public var inserted = 0
        public var updated = 0
        public var deleted = 0
        public var unchanged = 0
        public var appended = 0
        public var estimate: Int64 = -1
        public var started: Date?
        public var finished: Date?
    }

    private let streams: Mutex<[StreamID: Stream]>
    private let order: Mutex<[StreamID]>
    public let began = Date()

    public init(_ plan: [SyncStream]) {
        var all: [StreamID: Stream] = [:]
        for s in plan { all[s.id] = Stream(key: s.id, mode: s.mode.description) }
        streams = Mutex(all)
        order = Mutex(plan.map(\.id))
    }

    /// A stream that joined while syncing (a table added to the publication).
    func add(_ s: SyncStream) {
        let added = streams.withLock { all in
            guard all[s.id] == nil else { return false }
            all[s.id] = Stream(key: s.id, mode: s.mode.description)
            return true
        }
        if added { order.withLock { $0.append(s.id) } }
    }

    func update(_ key: StreamID, _ body: (inout Stream) -> Void) {
        streams.withLock { all in
            if var s = all[key] {
                body(&s)
                all[key] = s
            }
        }
    }

    public var snapshot: [Stream] {
        let order = order.withLock { $0 }
        return streams.withLock { all in order.compactMap { all[$0] } }
    }

    /// One line for a stream: rows, rate, and percent/ETA when the source gave an estimate.
    static func line(_ s: Stream, now: Date = Date()) -> String {
        let elapsed = max(0.001, (s.finished ?? now).timeIntervalSince(s.started ?? now))
        let rate = Double(s.records) / elapsed
        var text = "\(s.key) [\(s.mode)]: \(s.records) rows, \(Int(rate)) rows/s"
        if s.estimate > 0 && s.finished == nil {
            let pct = min(100, Double(s.records) * 100 / Double(s.estimate))
            text += String(format: ", %.0f%%", pct)
            if rate > 0 && Double(s.estimate) > Double(s.records) {
                text += ", ETA \(Int((Double(s.estimate) - Double(s.records)) / rate)) s"
            }
        }
        if s.finished != nil { text += " — done" }
        return text
    }

    /// The end-of-run summary.
    public func summary() -> String {
        let all = snapshot
        var lines = ["sync summary (\(String(format: "%.1f", Date().timeIntervalSince(began))) s):"]
        for s in all {
            var parts = ["\(s.records) rows read"]
            if s.inserted > 0 || s.updated > 0 || s.deleted > 0 || s.unchanged > 0 || s.mode != SyncMode.fullRefresh.description {
                parts.append("\(s.inserted) inserted, \(s.updated) updated, \(s.deleted) deleted, \(s.unchanged) unchanged")
            }
            if s.appended > 0 { parts.append("\(s.appended) appended") }
            lines.append("  \(s.key) [\(s.mode)]: " + parts.joined(separator: "; "))
        }
        let t = all.reduce(into: (0, 0, 0)) { $0.0 += $1.inserted; $0.1 += $1.updated; $0.2 += $1.deleted }
        lines.append("  total: \(t.0) inserted, \(t.1) updated, \(t.2) deleted")
        return lines.joined(separator: "\n")
    }
}

/// Prints progress on stderr: a live line per active stream on a terminal, otherwise a plain
/// line every few seconds.
final class ProgressPrinter: Sendable {
    let progress: SyncProgress
    let live: Bool
    let interval: Double
    private let stop = DispatchSemaphore(value: 0)
    private let exited = DispatchSemaphore(value: 0)
    private let started = Atomic<Bool>(false)
    /// The live line on screen; written by the printer thread, read after it has exited.
    private let lastDrawn = Mutex<String?>(nil)

    init(progress: SyncProgress, interval: Double? = nil) {
        self.progress = progress
        live = isatty(2) == 1
        self.interval = interval ?? (live ? 0.25 : 5)
    }

    func start() {
        started.store(true, ordering: .relaxed)
        let t = Thread { [self] in
            while stop.wait(timeout: .now() + interval) == .timedOut { tick() }
            exited.signal()
        }
        t.name = "postgate-progress"
        t.start()
    }

    /// Stops the printer thread, waits for it, and clears its live line.
    func finish() {
        guard started.exchange(false, ordering: .relaxed) else { return }
        stop.signal()
        exited.wait()
        if live, lastDrawn.withLock({ $0 }) != nil { FileHandle.standardError.write(Data("\r\u{1b}[K".utf8)) }
    }

    func tick() {
        let active = progress.snapshot.filter { $0.started != nil && $0.finished == nil }
        guard !active.isEmpty else { return }
        let text = active.map { SyncProgress.line($0) }.joined(separator: " | ")
        if live {
            FileHandle.standardError.write(Data("\r\u{1b}[K\(text)".utf8))
            lastDrawn.withLock { $0 = text }
        } else {
            FileHandle.standardError.write(Data("progress: \(text)\n".utf8))
        }
    }

    /// Writes a finished stream's final line (clearing the live line first).
    func streamFinished(_ s: SyncProgress.Stream) {
        let prefix = live ? "\r\u{1b}[K" : ""
        FileHandle.standardError.write(Data("\(prefix)\(SyncProgress.line(s))\n".utf8))
    }
}
