import Dispatch
import Foundation
import Synchronization

/// Runs work items on several connections at once, one thread per connection. Rows go through
/// each connection's own `RowLane`; everything else reaches the sink under one lock, after the
/// lane's rows, so an item's checkpoint always follows all of its records. The first failure
/// stops every connection after its current row.
final class ParallelItems<Item>: Sendable {
    private struct Shared {
        var next = 0
        var failure: (any Error)?
    }
    private let shared = Mutex(Shared())
    private let stopping = Atomic<Bool>(false)
    /// Read only after `init`; items are taken under `shared`'s lock.
    nonisolated(unsafe) private let items: [Item]
    /// Called only with `shared`'s lock held.
    nonisolated(unsafe) let sink: ReadSink

    init(items: [Item], sink: ReadSink) {
        self.items = items
        self.sink = sink
    }

    /// What one connection's thread works with.
    final class Worker {
        let conn: PGConnection
        let lane: RowLane
        unowned let runner: ParallelItems
        /// Rows added to the lane since it was last handed over.
        private var unhanded: Int64 = 0
        /// Told, with the sink's lock held, how many rows were just handed over (the current
        /// item sets it, to count them to its stream).
        var handed: (Int64) -> Void = { _ in }

        init(conn: PGConnection, lane: RowLane, runner: ParallelItems) {
            self.conn = conn
            self.lane = lane
            self.runner = runner
        }

        /// Adds one row; hands the lane over when it holds a block, and stops when another
        /// connection failed.
        @inline(__always)
        func row(_ shape: RowShape, _ copyText: UnsafeRawBufferPointer) throws {
            try lane.row(shape, copyText: copyText)
            unhanded &+= 1
            if lane.buffered >= ParallelItems.laneBlock {
                try locked {}
                if runner.stopping.load(ordering: .relaxed) { throw Stopped() }
            }
        }

        /// Hands the lane's rows to the sink, then runs `body` under the sink's lock.
        func locked(_ body: () throws -> Void) throws {
            try runner.withSink {
                try lane.handOver()
                if unhanded > 0 { handed(unhanded) }
                unhanded = 0
                try body()
            }
        }
    }

    /// Raised in a worker when another one failed.
    struct Stopped: Error {}

    /// A lane is handed over once it holds this many bytes.
    static var laneBlock: Int { 256 << 10 }

    /// Runs `body` with the sink to itself.
    func withSink(_ body: () throws -> Void) throws {
        try shared.withLock { _ in try body() }
    }

    private func take() -> Item? {
        if stopping.load(ordering: .relaxed) { return nil }
        return shared.withLock { s -> Int? in
            guard s.next < items.count else { return nil }
            defer { s.next += 1 }
            return s.next
        }.map { items[$0] }
    }

    private func fail(_ error: any Error) {
        shared.withLock { s in
            if s.failure == nil && !(error is Stopped) { s.failure = error }
        }
        stopping.store(true, ordering: .relaxed)
    }

    /// Runs every item: `connections[0]` on this thread, the others on threads of their own.
    func run(connections: [PGConnection], _ body: @escaping (Item, Worker) throws -> Void) throws {
        let lanes = try connections.map { _ in try withSinkReturning { sink.makeLane() } }
        let finished = DispatchSemaphore(value: 0)
        let job = Job(runner: self, body: body)
        for (conn, lane) in zip(connections, lanes).dropFirst() {
            let box = UncheckedBox(Worker(conn: conn, lane: lane, runner: self))
            let work = UncheckedBox(job)
            let t = Thread {
                work.value.runner.loop(box.value, work.value.body)
                finished.signal()
            }
            t.name = "postgate-reader"
            t.stackSize = 4 << 20
            t.start()
        }
        loop(Worker(conn: connections[0], lane: lanes[0], runner: self), body)
        for _ in connections.dropFirst() { finished.wait() }
        if let failure = shared.withLock({ $0.failure }) { throw failure }
    }

    /// What each thread runs.
    private final class Job {
        let runner: ParallelItems
        let body: (Item, Worker) throws -> Void
        init(runner: ParallelItems, body: @escaping (Item, Worker) throws -> Void) {
            self.runner = runner
            self.body = body
        }
    }

    private func withSinkReturning(_ body: () throws -> RowLane) throws -> RowLane {
        var lane: RowLane?
        try withSink { lane = try body() }
        return lane!
    }

    private func loop(_ worker: Worker, _ body: (Item, Worker) throws -> Void) {
        while let item = take() {
            do {
                try body(item, worker)
            } catch {
                fail(error)
                return
            }
        }
    }
}
