import Foundation
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

    public init(fd: Int32 = 1, capacity: Int = 1 << 20) {
        self.fd = fd
        self.flushThreshold = capacity
        storage = .allocate(capacity: 1)
        storage.initialize(to: ByteBuffer(capacity: capacity + 64 * 1024))
    }

    deinit {
        try? flush()
        storage.pointee.deallocate()
        storage.deallocate()
    }

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

    public struct WriteError: Error, CustomStringConvertible {
        public let errno: Int32
        public var description: String { "cannot write output: \(String(cString: strerror(errno)))" }
    }

    public func flush() throws {
        var off = 0
        defer { storage.pointee.removeAll() }
        let total = storage.pointee.count
        let base = storage.pointee.base
        while off < total {
            let n = Glibc.write(fd, base + off, total - off)
            if n < 0 {
                if errno == EINTR { continue }
                throw WriteError(errno: errno)
            }
            off += n
        }
    }
}
