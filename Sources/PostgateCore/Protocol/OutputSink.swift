import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A large buffer in front of a file descriptor (stdout by default): protocol messages are
/// appended as bytes and written with few syscalls.
public final class OutputSink {
    private let fd: Int32
    private var buffer: ByteBuffer
    private let flushThreshold: Int

    public init(fd: Int32 = 1, capacity: Int = 1 << 20) {
        self.fd = fd
        self.flushThreshold = capacity
        buffer = ByteBuffer(capacity: capacity + 64 * 1024)
    }

    deinit {
        try? flush()
        buffer.deallocate()
    }

    /// Appends one message (already JSON) and a newline.
    public func emit(_ message: JSONWriter) throws {
        buffer.append(message.bytes)
        buffer.append(0x0a)
        if buffer.count >= flushThreshold { try flush() }
    }

    public func emit(_ message: JSONValue) throws {
        var w = JSONWriter()
        w.value(message)
        try emit(w)
    }

    /// Lets `body` append whole lines (each ending in a newline) to the buffer.
    @inline(__always)
    public func append(_ body: (inout ByteBuffer) throws -> Void) throws {
        try body(&buffer)
        if buffer.count >= flushThreshold { try flush() }
    }

    public struct WriteError: Error, CustomStringConvertible {
        public let errno: Int32
        public var description: String { "cannot write output: \(String(cString: strerror(errno)))" }
    }

    public func flush() throws {
        var off = 0
        defer { buffer.removeAll() }
        while off < buffer.count {
            let n = Glibc.write(fd, buffer.base + off, buffer.count - off)
            if n < 0 {
                if errno == EINTR { continue }
                throw WriteError(errno: errno)
            }
            off += n
        }
    }
}
