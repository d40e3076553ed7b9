import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A large buffer in front of a file descriptor (stdout by default): protocol messages are
/// appended as bytes and written with few syscalls.
public final class OutputSink {
    private let fd: Int32
    /// Held through a pointer so per-row appends need no exclusivity bookkeeping.
    private let storage: UnsafeMutablePointer<ByteBuffer>
    private let flushThreshold: Int
    private let spilled = SpillTarget()

    /// Receives the bytes of a record too large for the buffer; a write error waits for the next flush.
    private final class SpillTarget: @unchecked Sendable {
        var error: Int32?
    }

    public init(fd: Int32 = 1, capacity: Int = 1 << 20) {
        self.fd = fd
        self.flushThreshold = capacity
        storage = .allocate(capacity: 1)
        var buffer = ByteBuffer(capacity: capacity + 64 * 1024)
        // Memory stays at the buffer's size however large one record is.
        buffer.spill = { [spilled] bytes in
            guard spilled.error == nil else { return }
            if let e = OutputSink.writeAll(fd, bytes) { spilled.error = e }
            OutputSink.noteLineEnd(fd, bytes)
        }
        storage.initialize(to: buffer)
    }

    deinit {
        try? flush()
        storage.pointee.deallocate()
        storage.deallocate()
    }

    /// The buffer's size now (it grows only while an encoding holds the spill).
    var bufferCapacity: Int { storage.pointee.capacity }

    /// Appends one message (already JSON) and a newline.
    public func emit(_ message: JSONWriter) throws {
        storage.pointee.append(message.bytes)
        storage.pointee.append(0x0a)
        if storage.pointee.count >= flushThreshold { try flush() }
    }

    public func emit(_ message: JSONValue) throws {
        var w = JSONWriter()
        w.value(message)
        try emit(w)
    }

    /// Lets `body` append whole lines (each ending in a newline) to the buffer.
    @inline(__always)
    public func append(_ body: (inout ByteBuffer) throws -> Void) throws {
        try body(&storage.pointee)
        if storage.pointee.count >= flushThreshold { try flush() }
    }

    /// Appends whole lines encoded elsewhere.
    public func write(_ lines: UnsafeRawBufferPointer) throws {
        if storage.pointee.count + lines.count > flushThreshold {
            try flush()
            if lines.count >= flushThreshold {
                if let e = Self.writeAll(fd, lines) { throw WriteError(errno: e) }
                Self.noteLineEnd(fd, lines)
                return
            }
        }
        storage.pointee.append(lines)
    }

    public struct WriteError: Error, CustomStringConvertible {
        public let errno: Int32
        public var description: String { "cannot write output: \(String(cString: strerror(errno)))" }
    }

    public func flush() throws {
        defer { storage.pointee.removeAll() }
        if let e = spilled.error { throw WriteError(errno: e) }
        if let e = Self.writeAll(fd, storage.pointee.bytes) { throw WriteError(errno: e) }
        Self.noteLineEnd(fd, storage.pointee.bytes)
    }

    private static let stdoutLineOpen = Atomic<Bool>(false)

    /// True when stdout ends inside a record (part of it was spilled before a failure): a message
    /// written now must start on a line of its own.
    public static var stdoutHasOpenLine: Bool { stdoutLineOpen.load(ordering: .relaxed) }

    private static func noteLineEnd(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) {
        guard fd == 1, let last = bytes.last else { return }
        stdoutLineOpen.store(last != 0x0a, ordering: .relaxed)
    }

    /// Writes every byte; returns errno on failure.
    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int32? {
        var off = 0
        let total = bytes.count
        guard let base = bytes.baseAddress else { return nil }
        while off < total {
            let n = Glibc.write(fd, base + off, total - off)
            if n < 0 {
                if errno == EINTR { continue }
                return errno
            }
            off += n
        }
        return nil
    }
}
