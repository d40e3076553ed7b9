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

/// Runs a sync: the source driver reads into a `SyncSink`, which hands typed events through a
/// bounded queue to an applier thread that applies them to the destination, committing each
/// checkpoint with the data it covers. No JSON passes between reader and destination.
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
        let origin = "the saved state of \(destination.label)"
        let saved = try SavedState.parse(documents: try destination.committedState(), file: origin)

        let factory = try ConnectionFactory(config: config, logger: logger)
        defer { factory.close() }
        do {
            return try run(destination: destination, saved: saved, origin: origin, factory: factory)
        } catch {
            throw factory.translate(error)
        }
    }

    private func run(destination: SyncDestination, saved: SavedState, origin: String, factory: ConnectionFactory) throws -> SyncProgress {
        let conn = try factory.connect()
        let schemas = options.catalog.map { ConfiguredCatalog.schemas($0, configured: config.schemas) } ?? config.schemas
        let discovered = try Discovery.discover(conn, schemas: schemas, publication: config.replication.publication)
        let catalog = try options.catalog.map { try ConfiguredCatalog.resolveNamespaces($0, discovered: discovered) }
        let plan = try SyncPlan.make(config: config, discovered: discovered, catalog: catalog)
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
        var readStates = saved.streams
        for s in plan where s.mode == .fullRefresh {
            // The reconciliation of a resumed load lists the table's own key, so the stream's must be it.
            if case .load(let l)? = saved.streams[s.id], l.incremental == nil, !s.primaryKey.isEmpty, s.primaryKey == s.discovered.primaryKey,
               try destination.hasStaging(s) {
                resume.insert(s.id)
                logger.info("\(s.id): resuming the interrupted full refresh at page \(l.nextPage)")
            } else {
                readStates[s.id] = nil
            }
        }

        let progress = SyncProgress(plan)
        let printer = ProgressPrinter(progress: progress)
        let queue = EventQueue(capacity: 4 << 20)
        let applier = Applier(queue: queue, destination: destination, plan: plan, resume: resume, progress: progress,
                              printer: printer, stateFile: options.stateFile, logger: logger)
        // Without a catalog, sync takes every table of `schemas`: so also one that joins the publication meanwhile.
        let sink = SyncSink(queue: queue, plan: plan, adopting: options.catalog == nil ? config : nil,
                            replacesKeyRanges: destination.replacesKeyRanges)
        applier.start()
        printer.start()
        var readerError: Error?
        do {
            let driver = SourceDriver(config: config, factory: factory, logger: logger)
            driver.stateOrigin = origin
            // sync owns durability: the slot is confirmed only up to what the destination committed.
            driver.commitFeedback = applier
            driver.follow = options.follow
            driver.stopRequested = { SyncStop.isRequested }
            if case .cdc(let cdc) = config.replication, plan.contains(where: { $0.mode == .cdc }) {
                if cdc.lsnCommitBehaviour == .whileReadingData {
                    logger.info("replication_method.lsn_commit_behaviour \"While reading Data\" is ignored by sync: it confirms positions to the slot only once the destination has committed them")
                }
                if options.follow {
                    SyncStop.graceful.store(true, ordering: .relaxed)
                    logger.info("following changes; SIGINT or SIGTERM commits what was applied and stops")
                }
            }
            defer { SyncStop.graceful.store(false, ordering: .relaxed) }
            try driver.run(conn: conn, streams: plan.map { SourceDriver.Stream(configured: $0.configured, discovered: $0.discovered, state: readStates[$0.id], cdc: $0.mode == .cdc) },
                           cdcState: saved.cdc, sink: sink)
            try sink.flush()
        } catch {
            readerError = error
        }
        queue.close()
        applier.join()
        printer.finish()
        // The destination's failure explains the reader's stop, so it comes first.
        if let e = applier.failure { throw e }
        if let e = readerError { throw e }
        return progress
    }
}

/// What the reader hands the applier.
enum SyncEvent: Sendable {
    case status(StreamID, StreamStatus)
    case estimate(StreamID, Int64)
    /// Snapshot rows as COPY text, with their count.
    case copyRows(FieldLayout, [UInt8], Int)
    case changes(FieldRows)
    case truncate(StreamID)
    case keys(FieldLayout, [UInt8])
    case keysEnd(StreamID)
    case restartLoad(StreamID)
    case schemaChange(StreamID, SchemaChange, PostgresType?)
    /// A table that joined the publication: a stream from here on.
    case addStream(SyncStream)
    case deleteRange(RowShape, [String]?, [String]?)
    case checkpoint(Checkpoint)
    case rollback

    var size: Int {
        switch self {
        case .copyRows(_, let b, _), .keys(_, let b): return b.count + 64
        case .changes(let r): return r.byteCount
        default: return 64
        }
    }
}

/// A single-producer, single-consumer queue bounded by bytes: the reader waits while the
/// destination is behind, and stops when the destination failed.
final class EventQueue: Sendable {
    struct State {
        /// Consumed slots are nil, so a delivered event's memory goes at once.
        var items: [SyncEvent?] = []
        var head = 0
        var bytes = 0
        var closed = false
        var failed = false
        var consumerWaiting = false
        var producerWaiting = false
    }
    let capacity: Int
    private let state = Mutex(State())
    private let itemsReady = DispatchSemaphore(value: 0)
    private let spaceReady = DispatchSemaphore(value: 0)

    init(capacity: Int) { self.capacity = capacity }

    /// Adds an event; throws when the consumer has stopped.
    func push(_ e: SyncEvent) throws {
        let size = e.size
        while true {
            let (ok, wake, failed) = state.withLock { s -> (Bool, Bool, Bool) in
                if s.failed { return (false, false, true) }
                if s.bytes > 0 && s.bytes + size > capacity {
                    s.producerWaiting = true
                    return (false, false, false)
                }
                s.items.append(e)
                s.bytes += size
                let wake = s.consumerWaiting
                s.consumerWaiting = false
                return (true, wake, false)
            }
            if failed { throw SyncError.stopped("the destination stopped") }
            if ok {
                if wake { itemsReady.signal() }
                return
            }
            spaceReady.wait()
        }
    }

    /// The next event, or nil once the producer closed the queue and it is drained.
    func pop() -> SyncEvent? {
        while true {
            let (item, wakeProducer, done) = state.withLock { s -> (SyncEvent?, Bool, Bool) in
                if s.head < s.items.count, let e = s.items[s.head] {
                    s.items[s.head] = nil
                    s.head += 1
                    s.bytes -= e.size
                    if s.head >= 64 && s.head * 2 > s.items.count {
                        s.items.removeFirst(s.head)
                        s.head = 0
                    }
                    let wake = s.producerWaiting && s.bytes <= capacity / 2
                    if wake { s.producerWaiting = false }
                    return (e, wake, false)
                }
                if s.closed { return (nil, false, true) }
                s.consumerWaiting = true
                return (nil, false, false)
            }
            if wakeProducer { spaceReady.signal() }
            if let item { return item }
            if done { return nil }
            itemsReady.wait()
        }
    }

    func close() {
        let wake = state.withLock { s -> Bool in
            s.closed = true
            let w = s.consumerWaiting
            s.consumerWaiting = false
            return w
        }
        if wake { itemsReady.signal() }
    }

    /// The consumer stopped: a waiting or later push throws.
    func fail() {
        let wake = state.withLock { s -> Bool in
            s.failed = true
            s.items = []
            s.head = 0
            s.bytes = 0
            let w = s.producerWaiting
            s.producerWaiting = false
            return w
        }
        if wake { spaceReady.signal() }
    }
}

/// `sync`'s sink: batches rows and changes per shape and hands them to the queue.
final class SyncSink: ReadSink {
    let queue: EventQueue
    /// The streams (tables that join the publication are added while following).
    private let streams: Mutex<[StreamID: SyncStream]>
    /// Primary keys per stream, as renamed at the source since the start.
    private let keys: Mutex<[StreamID: [String]]>
    /// The config whose `schemas` tables that join the publication are taken from (nil: a catalog
    /// was given, which is fixed).
    private let adopting: PostgateConfig?
    /// Layouts per row shape, shared with the lanes of a parallel read; the shape is held so its
    /// identity is not reused by another shape meanwhile.
    private let layouts = Mutex<[ObjectIdentifier: (RowShape, FieldLayout)]>([:])
    private var lastShape: RowShape?
    private var lastLayout: FieldLayout?
    private var copyLayout: FieldLayout?
    private var copyBytes: [UInt8] = []
    private var copyCount = 0
    private var changes: FieldRows?
    private var keyLayout: FieldLayout?
    private var keyBytes: [UInt8] = []
    static let blockBytes = 256 << 10

    let replacesKeyRanges: Bool

    init(queue: EventQueue, plan: [SyncStream], adopting: PostgateConfig? = nil, replacesKeyRanges: Bool = false) {
        self.queue = queue
        self.replacesKeyRanges = replacesKeyRanges
        let all = Dictionary(plan.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        streams = Mutex(all)
        keys = Mutex(all.mapValues(\.primaryKey))
        self.adopting = adopting
    }

    var adoptsTables: Bool { adopting != nil }

    func adopt(_ table: DiscoveredStream) throws -> ConfiguredStream? {
        guard let config = adopting, config.schemas.contains(table.schema) else { return nil }
        let s = SyncPlan.auto(table, config: config)
        // Changes follow by key: a table without a primary key is synced (in full) by the next run.
        guard s.mode == .cdc else { return nil }
        streams.withLock { $0[s.id] = s }
        keys.withLock { $0[s.id] = s.primaryKey }
        try sendPending()
        try send(.addStream(s))
        return s.configured
    }

    var reconcilesResumedLoads: Bool { true }

    @inline(__always)
    private func layout(_ shape: RowShape) -> FieldLayout {
        if shape === lastShape, let l = lastLayout { return l }
        let l = sharedLayout(shape)
        lastShape = shape
        lastLayout = l
        return l
    }

    /// The one layout of `shape` (safe from any thread).
    func sharedLayout(_ shape: RowShape) -> FieldLayout {
        let cdc = streams.withLock { $0[shape.stream]?.mode == .cdc }
        let key = keys.withLock { $0[shape.stream] ?? [] }
        return layouts.withLock { d in
            if let l = d[ObjectIdentifier(shape)]?.1 { return l }
            let l = FieldLayout(shape, cdc: cdc, primaryKey: key)
            d[ObjectIdentifier(shape)] = (shape, l)
            return l
        }
    }

    func makeLane() -> RowLane { Lane(sink: self) }

    /// One connection's snapshot rows, in blocks of COPY text per layout.
    final class Lane: RowLane {
        unowned let sink: SyncSink
        private var blocks: [(FieldLayout, [UInt8], Int)] = []
        private var layout: FieldLayout?
        private var shape: RowShape?
        private var bytes: [UInt8] = []
        private var count = 0
        private(set) var buffered = 0

        init(sink: SyncSink) { self.sink = sink }

        func row(_ shape: RowShape, copyText: UnsafeRawBufferPointer) throws {
            if shape !== self.shape {
                close()
                self.shape = shape
                layout = sink.sharedLayout(shape)
            }
            bytes.append(contentsOf: copyText)
            count += 1
            buffered += copyText.count
        }

        private func close() {
            if let l = layout, count > 0 {
                blocks.append((l, bytes, count))
                bytes = []
                bytes.reserveCapacity(SyncSink.blockBytes + (64 << 10))
            }
            count = 0
        }

        func handOver() throws {
            close()
            try sink.sendPending()
            for (l, b, n) in blocks { try sink.queue.push(.copyRows(l, b, n)) }
            blocks.removeAll()
            buffered = 0
        }
    }

    fileprivate func sendPending() throws {
        if let l = copyLayout, copyCount > 0 {
            let bytes = copyBytes
            copyBytes.removeAll(keepingCapacity: true)
            try queue.push(.copyRows(l, bytes, copyCount))
        }
        copyLayout = nil
        copyCount = 0
        if let c = changes, c.count > 0 { try queue.push(.changes(c)) }
        changes = nil
        if let l = keyLayout, !keyBytes.isEmpty {
            let bytes = keyBytes
            keyBytes.removeAll(keepingCapacity: true)
            try queue.push(.keys(l, bytes))
        }
        keyLayout = nil
    }

    /// Sends what is batched, then `e` (events keep their order).
    private func send(_ e: SyncEvent) throws {
        try sendPending()
        try queue.push(e)
    }

    func status(_ stream: StreamID, _ status: StreamStatus) throws { try send(.status(stream, status)) }

    func estimate(_ stream: StreamID, rows: Int64, bytes: Int64) throws {
        try queue.push(.estimate(stream, rows))
    }

    func row(_ shape: RowShape, copyText: UnsafeRawBufferPointer) throws {
        let l = layout(shape)
        if l !== copyLayout {
            try sendPending()
            copyLayout = l
        }
        copyBytes.append(contentsOf: copyText)
        copyCount += 1
        if copyBytes.count >= Self.blockBytes { try sendPending() }
    }

    func change(_ shape: RowShape, _ change: Change) throws {
        let l = layout(shape)
        if changes?.layout !== l {
            try sendPending()
            changes = FieldRows(layout: l)
        }
        changes!.appendChange(change)
        if changes!.count >= 4096 || changes!.byteCount >= Self.blockBytes { try sendPending() }
    }

    func truncate(_ stream: StreamID) throws { try send(.truncate(stream)) }

    func schemaChange(_ stream: StreamID, _ change: SchemaChange, type: PostgresType?) throws {
        if case .renameColumn(let from, let to) = change {
            keys.withLock { k in k[stream] = k[stream]?.map { $0 == from ? to : $0 } }
        }
        try send(.schemaChange(stream, change, type))
    }

    func deleteRange(_ keys: RowShape, after: [String]?, through: [String]?) throws { try send(.deleteRange(keys, after, through)) }

    func checkpoint(_ checkpoint: Checkpoint) throws { try send(.checkpoint(checkpoint)) }

    func rollback() throws {
        copyBytes.removeAll(keepingCapacity: true)
        copyCount = 0
        copyLayout = nil
        changes = nil
        keyBytes.removeAll(keepingCapacity: true)
        keyLayout = nil
        try queue.push(.rollback)
    }

    func log(_ level: Logger.Level, _ message: String) {}

    func flush() throws { try sendPending() }

    func presentKeys(_ shape: RowShape, copyText: UnsafeRawBufferPointer) throws {
        let l = layout(shape)
        if l !== keyLayout {
            try sendPending()
            keyLayout = l
        }
        keyBytes.append(contentsOf: copyText)
        if keyBytes.count >= Self.blockBytes { try sendPending() }
    }

    func presentKeysEnd(_ stream: StreamID) throws { try send(.keysEnd(stream)) }

    func restartLoad(_ stream: StreamID) throws { try send(.restartLoad(stream)) }
}

/// Applies the events to the destination on its own thread; reports committed LSNs to the CDC reader.
final class Applier: CDCCommitFeedback, Sendable {
    struct Shared {
        var durable: LSN?
        var done = false
        var failure: Error?
    }
    let queue: EventQueue
    let shared = Mutex(Shared())
    let finished = DispatchSemaphore(value: 0)
    /// Owned by the applier thread (set up before it starts).
    nonisolated(unsafe) let work: Work

    /// The applier thread's state.
    final class Work {
        let destination: SyncDestination
        var streams: [StreamID: SyncStream]
        var resume: Set<StreamID>
        let progress: SyncProgress
        let printer: ProgressPrinter
        let stateFile: String?
        let logger: Logger
        /// STATE messages committed so far, by key (mirrored to --state-file).
        var committed: [String: JSONValue] = [:]
        /// Records per stream not yet published to `progress`.
        var pending: [StreamID: Int] = [:]

        init(destination: SyncDestination, streams: [StreamID: SyncStream], resume: Set<StreamID>, progress: SyncProgress,
             printer: ProgressPrinter, stateFile: String?, logger: Logger) {
            self.destination = destination
            self.streams = streams
            self.resume = resume
            self.progress = progress
            self.printer = printer
            self.stateFile = stateFile
            self.logger = logger
        }
    }

    init(queue: EventQueue, destination: SyncDestination, plan: [SyncStream], resume: Set<StreamID>, progress: SyncProgress,
         printer: ProgressPrinter, stateFile: String?, logger: Logger) {
        self.queue = queue
        work = Work(destination: destination, streams: Dictionary(plan.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a }),
                    resume: resume, progress: progress, printer: printer, stateFile: stateFile, logger: logger)
    }

    var failure: Error? { shared.withLock { $0.failure } }

    func start() {
        let t = Thread { [self] in
            var failed: Error?
            do { try loop() } catch { failed = error }
            work.destination.rollback()
            if failed != nil { queue.fail() }
            shared.withLock { $0.done = true; $0.failure = failed }
            finished.signal()
        }
        t.name = "postgate-applier"
        t.stackSize = 4 << 20
        t.start()
    }

    func join() { finished.wait() }

    func durableLSN() -> LSN? { shared.withLock { $0.durable } }

    func waitUntilDurable(_ lsn: LSN) throws -> LSN? {
        while true {
            let (d, done, failure) = shared.withLock { ($0.durable, $0.done, $0.failure) }
            if let d, d >= lsn { return d }
            if done {
                throw failure ?? SyncError.stopped("the destination stopped before committing position \(lsn); nothing after its last commit was confirmed to the slot")
            }
            usleep(2_000)
        }
    }

    private func loop() throws {
        let w = work
        while let e = queue.pop() {
            switch e {
            case .status(let id, let status):
                publish()
                guard let s = w.streams[id] else { continue }
                switch status {
                case .started:
                    w.progress.update(id) { $0.started = $0.started ?? Date() }
                    if s.mode == .fullRefresh { try w.destination.startFullRefresh(s, resume: w.resume.contains(id)) }
                case .complete:
                    w.progress.update(id) { $0.finished = Date() }
                    if let p = w.progress.snapshot.first(where: { $0.key == id }) { w.printer.streamFinished(p) }
                case .running, .incomplete:
                    break
                }
            case .estimate(let id, let rows):
                w.progress.update(id) { $0.estimate = rows }
            case .copyRows(let layout, let bytes, let n):
                guard let s = w.streams[layout.shape.stream] else { continue }
                if s.mode == .fullRefresh {
                    try w.destination.load(s, layout, copyText: bytes, count: n, merge: w.resume.contains(s.id))
                } else {
                    var rows = FieldRows(layout: layout)
                    try CopyText.forEachRow(bytes) { try rows.appendCopyRow($0) }
                    try w.destination.merge(s, rows)
                }
                count(s.id, n)
            case .changes(let rows):
                guard let s = w.streams[rows.layout.shape.stream] else { continue }
                try w.destination.merge(s, rows)
                count(s.id, rows.count)
            case .truncate(let id):
                guard let s = w.streams[id] else { continue }
                _ = try w.destination.truncate(s)
            case .keys(let layout, let bytes):
                guard let s = w.streams[layout.shape.stream] else { continue }
                try w.destination.presentKeys(s, layout, copyText: bytes)
            case .keysEnd(let id):
                guard let s = w.streams[id] else { continue }
                let n = try w.destination.prunePresentKeys(s)
                if n > 0 { w.logger.info("\(id): removed \(n) staged rows deleted at the source since the interrupted read") }
            case .restartLoad(let id):
                guard let s = w.streams[id], w.resume.remove(id) != nil else { continue }
                w.logger.info("\(id): the interrupted full refresh starts over; its staged rows are dropped")
                try w.destination.startFullRefresh(s, resume: false)
            case .schemaChange(let id, let change, let type):
                guard var s = w.streams[id] else { continue }
                if case .renameColumn(let from, let to) = change { s.primaryKey = s.primaryKey.map { $0 == from ? to : $0 } }
                try w.destination.schemaChange(s, change, type: type)
                w.streams[id] = s
            case .addStream(let s):
                w.logger.info("\(s.id): synced by CDC from here on (its table joined the publication); loaded in chunks, then followed")
                w.streams[s.id] = s
                w.progress.add(s)
                try w.destination.addStream(s)
            case .deleteRange(let keys, let after, let through):
                guard let s = w.streams[keys.stream] else { continue }
                try w.destination.deleteRange(s, keys, after: after, through: through)
            case .checkpoint(let c):
                try commit(c)
            case .rollback:
                // The reader lost the server and reads again from its last checkpoint: drop what came after it.
                w.pending = [:]
                w.destination.rollback()
            }
        }
        publish()
    }

    private func count(_ id: StreamID, _ n: Int) {
        work.pending[id, default: 0] += n
    }

    private func publish() {
        for (id, n) in work.pending { work.progress.update(id) { $0.records += n } }
        work.pending = [:]
    }

    private func commit(_ c: Checkpoint) throws {
        let w = work
        var entries: [(key: String, message: JSONValue)] = []
        var lsn: LSN?
        switch c {
        case .stream(let id, let state, let records):
            let key = "stream:\(id)"
            // Earlier versions keyed this stream by its joined name; that row goes, so it cannot shadow this one.
            let joined = "stream:\(id.namespace).\(id.name)"
            if joined != key { entries.append((joined, .null)) }
            if let s = w.streams[id], s.mode == .fullRefresh, case .fullRefreshComplete = state {
                try w.destination.finishFullRefresh(s)
            }
            entries.append((key, AirbyteMessage.streamState(namespace: id.namespace, name: id.name, state: state, recordCount: records)))
        case .global(let state):
            entries.append(("global", ["type": "STATE", "state": state.globalJSON()]))
            lsn = state.lsn
        }
        try w.destination.commit(states: entries)
        publish()
        for (id, o) in w.destination.takeOutcomes() {
            w.progress.update(id) { p in
                p.inserted += o.inserted
                p.updated += o.updated
                p.deleted += o.deleted
                p.unchanged += o.unchanged
                p.appended += o.appended
            }
        }
        for (k, m) in entries { w.committed[k] = m == .null ? nil : m }
        if let stateFile = w.stateFile { try mirror(to: stateFile) }
        if let lsn { shared.withLock { $0.durable = lsn } }
    }

    /// Writes the committed state as a JSON array of STATE messages (usable as `read --state`).
    private func mirror(to path: String) throws {
        var j = JSONWriter()
        j.value(.array(work.committed.keys.sorted().map { work.committed[$0]! }))
        try JSONLDestination.writeDurably(j.bytes, to: path)
    }
}
