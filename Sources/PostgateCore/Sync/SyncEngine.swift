import Foundation
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Options of `postgate sync`.
public struct SyncOptions: Sendable {
    public var destination: String
    public var catalog: [ConfiguredStream]?
    public var stateFile: String?
    public var follow: Bool
    public init(destination: String, catalog: [ConfiguredStream]?, stateFile: String?, follow: Bool) {
        self.destination = destination
        self.catalog = catalog
        self.stateFile = stateFile
        self.follow = follow
    }
}

/// Process-wide stop request for `sync --follow` (set from a signal handler).
public enum SyncStop {
    static let requested = Atomic<Bool>(false)
    /// True while a graceful stop is possible (CDC streaming); otherwise a signal ends the process.
    static let graceful = Atomic<Bool>(false)

    public static var isRequested: Bool { requested.load(ordering: .relaxed) }
    /// Called from the signal handler: asks for a graceful stop; returns false when none is possible.
    public static func request() -> Bool {
        guard graceful.load(ordering: .relaxed) else { return false }
        requested.store(true, ordering: .relaxed)
        return true
    }
}

/// Runs a sync: the read engine writes Airbyte messages into a pipe; an applier thread reads them
/// and applies records to the destination, committing each STATE with the data it covers.
public final class SyncEngine {
    let config: PostgateConfig
    let options: SyncOptions
    let logger: Logger

    public init(config: PostgateConfig, options: SyncOptions, logger: Logger) {
        self.config = config
        self.options = options
        self.logger = logger
    }

    /// Runs the sync and returns the progress counters (for the summary).
    @discardableResult
    public func run() throws -> SyncProgress {
        let destination = try DestinationURL.open(options.destination, logger: logger)
        let saved = try destination.committedState()
        let origin = "the saved state of \(destination.label)"
        let states = try InputState.parse(documents: saved, file: origin)
        let cdcState = try CDCState.parse(documents: saved, file: origin)

        let factory = try ConnectionFactory(config: config, logger: logger)
        defer { factory.close() }
        do {
            return try run(destination: destination, states: states, cdcState: cdcState, origin: origin, factory: factory)
        } catch {
            throw factory.translate(error)
        }
    }

    private func run(destination: SyncDestination, states: [StreamID: StreamState], cdcState: CDCState?, origin: String,
                     factory: ConnectionFactory) throws -> SyncProgress {
        let conn = try factory.connect()
        let schemas = options.catalog.map { Array(Set($0.map(\.namespace))).sorted() } ?? config.schemas
        let discovered = try Discovery.discover(conn, schemas: schemas)
        let plan = try SyncPlan.make(config: config, discovered: discovered, catalog: options.catalog)
        guard !plan.isEmpty else {
            throw SyncError.plan("nothing to sync: no readable tables, views or materialized views in schemas \(schemas) (setting `schemas`)")
        }
        for s in plan { logger.info("plan: \(s.id) → \(s.mode) (\(s.reason))") }
        if options.follow && !plan.contains(where: { $0.mode == .cdc }) {
            throw SyncError.plan("--follow streams changes by CDC, but no stream is synced by CDC (set replication_method to CDC)")
        }
        try destination.prepare(plan)

        // A full refresh resumes only into rows staged under its saved checkpoint, and only with a
        // primary key (a restarted read then overwrites instead of duplicating).
        var resume: Set<StreamID> = []
        var readStates = states
        for s in plan where s.mode == .fullRefresh {
            if case .load(let l)? = states[s.id], l.incremental == nil, !s.primaryKey.isEmpty, try destination.hasStaging(s) {
                resume.insert(s.id)
                logger.info("\(s.id): resuming the interrupted full refresh at page \(l.nextPage)")
            } else {
                readStates[s.id] = nil
            }
        }

        let progress = SyncProgress(plan)
        let printer = ProgressPrinter(progress: progress)
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw SyncError.stopped("cannot create a pipe: \(String(cString: strerror(errno)))") }
        _ = fcntl(fds[1], 1031 /* F_SETPIPE_SZ */, 1 << 20)
        signal(SIGPIPE, SIG_IGN)
        let applier = Applier(fd: fds[0], destination: destination, plan: plan, resume: resume, progress: progress,
                              printer: printer, stateFile: options.stateFile, logger: logger)
        applier.start()
        printer.start()
        var readerError: Error?
        do {
            let out = OutputSink(fd: fds[1])
            let reader = SnapshotReader(conn: conn, config: config, out: out, logger: logger)
            for s in plan where s.mode != .cdc {
                try reader.read(s.configured, s.discovered, state: readStates[s.id])
            }
            let cdcStreams = plan.filter { $0.mode == .cdc }
            if case .cdc(let cdc) = config.replication, !cdcStreams.isEmpty {
                let cdcReader = CDCReader(factory: factory, config: config, cdc: cdc, out: out, logger: logger)
                cdcReader.emitTruncateEvents = true
                // sync owns durability: the slot is confirmed only up to what the destination committed.
                cdcReader.commitFeedback = applier
                cdcReader.stateOrigin = origin
                if cdc.lsnCommitBehaviour == .whileReadingData {
                    logger.info("replication_method.lsn_commit_behaviour \"While reading Data\" is ignored by sync: it confirms positions to the slot only once the destination has committed them")
                }
                cdcReader.follow = options.follow
                cdcReader.stopRequested = { SyncStop.isRequested }
                if options.follow {
                    SyncStop.graceful.store(true, ordering: .relaxed)
                    logger.info("following changes; SIGINT or SIGTERM commits what was applied and stops")
                }
                defer { SyncStop.graceful.store(false, ordering: .relaxed) }
                try cdcReader.run(cdcStreams.map { ($0.configured, $0.discovered) }, state: cdcState)
            }
            try out.flush()
        } catch {
            readerError = error
        }
        close(fds[1])
        applier.join()
        printer.finish()
        // The destination's failure explains a reader's broken pipe, so it comes first.
        if let e = applier.failure { throw e }
        if let e = readerError { throw e }
        return progress
    }

}

/// Reads the message stream from the pipe and applies it; reports committed LSNs to the CDC reader.
final class Applier: CDCCommitFeedback, @unchecked Sendable {
    let fd: Int32
    let destination: SyncDestination
    let streams: [StreamID: SyncStream]
    let resume: Set<StreamID>
    let progress: SyncProgress
    let printer: ProgressPrinter
    let stateFile: String?
    let logger: Logger
    private let cond = NSCondition()
    private var durable: LSN?
    private var done = false
    private(set) var failure: Error?
    private let finished = DispatchSemaphore(value: 0)
    /// STATE messages committed so far, by key (mirrored to --state-file).
    private var committed: [String: JSONValue] = [:]

    init(fd: Int32, destination: SyncDestination, plan: [SyncStream], resume: Set<StreamID>, progress: SyncProgress,
         printer: ProgressPrinter, stateFile: String?, logger: Logger) {
        self.fd = fd
        self.destination = destination
        self.streams = Dictionary(plan.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        self.resume = resume
        self.progress = progress
        self.printer = printer
        self.stateFile = stateFile
        self.logger = logger
    }

    func start() {
        let t = Thread { [self] in
            do { try loop() } catch {
                cond.lock(); failure = error; cond.unlock()
            }
            destination.rollback()
            close(fd)
            cond.lock(); done = true; cond.broadcast(); cond.unlock()
            finished.signal()
        }
        t.name = "postgate-applier"
        t.stackSize = 4 << 20
        t.start()
    }

    func join() { finished.wait() }

    func durableLSN() -> LSN? {
        cond.lock(); defer { cond.unlock() }
        return durable
    }

    func waitUntilDurable(_ lsn: LSN) throws -> LSN? {
        cond.lock(); defer { cond.unlock() }
        while !(durable.map { $0 >= lsn } ?? false) {
            if done {
                throw failure ?? SyncError.stopped("the destination stopped before committing position \(lsn); nothing after its last commit was confirmed to the slot")
            }
            _ = cond.wait(until: Date().addingTimeInterval(1))
        }
        return durable
    }

    private func loop() throws {
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var line: [UInt8] = []
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SyncError.stopped("cannot read the record stream: \(String(cString: strerror(errno)))")
            }
            if n == 0 { publishCounts(); return }
            var start = 0
            for i in 0..<n where buffer[i] == 0x0a {
                if line.isEmpty {
                    try handle(Array(buffer[start..<i]))
                } else {
                    line.append(contentsOf: buffer[start..<i])
                    try handle(line)
                    // A huge record's buffer is not kept for the rest of the run.
                    line.removeAll(keepingCapacity: line.capacity <= 4 << 20)
                }
                start = i + 1
            }
            if start < n { line.append(contentsOf: buffer[start..<n]) }
        }
    }

    private var lastStream: SyncStream?

    private func stream(_ v: JSONValue?) -> SyncStream? {
        guard let ns = v?["namespace"]?.stringValue, let name = v?["name"]?.stringValue ?? v?["stream"]?.stringValue else { return nil }
        if let l = lastStream, l.namespace == ns, l.name == name { return l }
        guard let s = streams[StreamID(namespace: ns, name: name)] else { return nil }
        lastStream = s
        return s
    }

    /// Counts not yet published to `progress` (published every few thousand records and at each state).
    private var pending: [StreamID: SyncProgress.Stream] = [:]
    private var pendingRecords = 0

    private func count(_ key: StreamID, _ body: (inout SyncProgress.Stream) -> Void) {
        body(&pending[key, default: SyncProgress.Stream(key: key, mode: "")])
        pendingRecords += 1
        if pendingRecords >= 4096 { publishCounts() }
    }

    private func publishCounts() {
        for (key, d) in pending {
            progress.update(key) { p in
                p.records += d.records
                p.inserted += d.inserted
                p.updated += d.updated
                p.deleted += d.deleted
                p.unchanged += d.unchanged
                p.appended += d.appended
            }
        }
        pending = [:]
        pendingRecords = 0
    }

    private func handle(_ bytes: [UInt8]) throws {
        let m = try JSONParser.parse(bytes)
        switch m["type"]?.stringValue {
        case "RECORD":
            guard let rec = m["record"], let s = stream(rec), case .object(let data)? = rec["data"] else { return }
            var omitted: Set<String> = []
            for c in rec["meta"]?["changes"]?.arrayValue ?? [] where c["reason"]?.stringValue == "SOURCE_UNCHANGED_TOAST" {
                if let f = c["field"]?.stringValue { omitted.insert(f) }
            }
            let deleted = data["_ab_cdc_deleted_at"].map { $0 != .null } ?? false
            let r = SyncRecord(data: data, omitted: omitted, deleted: deleted)
            if s.mode == .fullRefresh {
                try destination.load(s, r)
                count(s.id) { $0.records += 1 }
            } else {
                let outcome = try destination.merge(s, r)
                count(s.id) { p in
                    p.records += 1
                    switch outcome {
                    case .inserted: p.inserted += 1
                    case .updated: p.updated += 1
                    case .deleted: p.deleted += 1
                    case .unchanged: p.unchanged += 1
                    case .appended: p.appended += 1
                    case .batched: break
                    }
                }
            }
        case "STATE":
            publishCounts()
            guard let st = m["state"] else { return }
            var key = "global"
            var lsn: LSN?
            var entries: [(key: String, message: JSONValue)] = []
            if st["type"]?.stringValue == "STREAM" {
                guard let desc = st["stream"]?["stream_descriptor"], let s = stream(desc) else { return }
                key = "stream:\(s.id)"
                // Earlier versions keyed this stream by its joined name; that row goes, so it cannot shadow this one.
                let joined = "stream:\(s.namespace).\(s.name)"
                if joined != key { entries.append((joined, .null)) }
                if s.mode == .fullRefresh, st["stream"]?["stream_state"]?["state_type"]?.stringValue == "full_refresh" {
                    try destination.finishFullRefresh(s)
                }
            } else if let text = st["global"]?["shared_state"]?["lsn"]?.stringValue {
                lsn = LSN(text)
            }
            entries.append((key, m))
            try destination.commit(states: entries)
            absorbBatchedOutcomes()
            committed[key] = m
            if let stateFile { try mirror(to: stateFile) }
            if let lsn {
                cond.lock(); durable = lsn; cond.broadcast(); cond.unlock()
            }
        case "TRACE":
            publishCounts()
            guard let t = m["trace"] else { return }
            if t["type"]?.stringValue == "ESTIMATE", let e = t["estimate"], let s = stream(e) {
                let rows = e["row_estimate"]?.int64Value ?? -1
                progress.update(s.id) { $0.estimate = rows }
            } else if t["type"]?.stringValue == "STREAM_STATUS", let st = t["stream_status"], let s = stream(st["stream_descriptor"]) {
                switch st["status"]?.stringValue {
                case "STARTED":
                    progress.update(s.id) { $0.started = $0.started ?? Date() }
                    if s.mode == .fullRefresh { try destination.startFullRefresh(s, resume: resume.contains(s.id)) }
                case "COMPLETE":
                    progress.update(s.id) { $0.finished = Date() }
                    if let p = progress.snapshot.first(where: { $0.key == s.id }) { printer.streamFinished(p) }
                default: break
                }
            }
        case "POSTGATE_ROLLBACK":
            // The reader lost the server and reads again from its last state: drop what came after it.
            pending = [:]
            pendingRecords = 0
            destination.rollback()
            _ = destination.takeBatchedOutcomes()
        case "POSTGATE_TRUNCATE":
            guard let s = stream(m["stream"]) else { return }
            let n = try destination.truncate(s)
            count(s.id) { $0.deleted += n }
        default:
            break // LOG lines were already written to stderr by the reader's logger.
        }
    }

    private func absorbBatchedOutcomes() {
        for (key, o) in destination.takeBatchedOutcomes() {
            progress.update(key) { p in
                p.inserted += o.inserted
                p.updated += o.updated
                p.unchanged += o.unchanged
            }
        }
    }

    /// Writes the committed state as a JSON array of STATE messages (usable as `read --state`).
    private func mirror(to path: String) throws {
        var w = JSONWriter()
        w.value(.array(committed.keys.sorted().map { committed[$0]! }))
        try JSONLDestination.writeDurably(w.bytes, to: path)
    }
}
