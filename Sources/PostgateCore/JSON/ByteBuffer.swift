import Foundation

/// A growable byte buffer over manually managed memory, for the hot output path: appends are
/// a bounds check and a copy, with no reference counting. Its owner calls `deallocate()`.
public struct ByteBuffer {
    public private(set) var base: UnsafeMutablePointer<UInt8>
    public private(set) var count = 0
    public private(set) var capacity: Int
    /// Where the bytes go when the buffer is full, instead of growing it (set by `OutputSink`): a
    /// record larger than the buffer then streams out in pieces, so memory does not follow the
    /// largest value. Not called while `spillHolds` is above zero.
    public var spill: ((UnsafeRawBufferPointer) -> Void)?
    /// Writers that may still take back what they appended (`truncate(to:)`) hold the spill.
    public var spillHolds = 0

    public init(capacity: Int) {
        self.capacity = max(16, capacity)
        base = .allocate(capacity: self.capacity)
    }

    public func deallocate() { base.deallocate() }

    @inline(__always)
    public mutating func reserve(_ n: Int) {
        if count &+ n > capacity { grow(count &+ n) }
    }

    @inline(never)
    mutating func grow(_ needed: Int) {
        if let spill, spillHolds == 0, count > 0 {
            spill(bytes)
            let more = needed &- count
            count = 0
            if more <= capacity { return }
            return grow(more)
        }
        var c = capacity
        while c < needed { c *= 2 }
        let nb = UnsafeMutablePointer<UInt8>.allocate(capacity: c)
        nb.update(from: base, count: count)
        base.deallocate()
        base = nb
        capacity = c
    }

    @inline(__always)
    public mutating func append(_ b: UInt8) {
        reserve(1)
        base[count] = b
        count &+= 1
    }

    @inline(__always)
    public mutating func append(_ p: UnsafeRawBufferPointer) {
        let n = p.count
        guard n > 0 else { return }
        append(p.baseAddress!.assumingMemoryBound(to: UInt8.self), n)
    }

    @inline(__always)
    public mutating func append(_ p: UnsafePointer<UInt8>, _ n: Int) {
        if count &+ n > capacity && spill != nil && spillHolds == 0 { return appendInPieces(p, n) }
        reserve(n)
        let d = base + count
        if n >= 8 && n <= 16 {
            // Two overlapping word copies beat a memcpy call for keys and short values.
            let s = UnsafeRawPointer(p)
            UnsafeMutableRawPointer(d).storeBytes(of: s.loadUnaligned(as: UInt64.self), as: UInt64.self)
            UnsafeMutableRawPointer(d + n - 8).storeBytes(of: s.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self), as: UInt64.self)
        } else if n < 8 {
            var i = 0
            while i < n { d[i] = p[i]; i &+= 1 }
        } else {
            memcpy(d, p, n)
        }
        count &+= n
    }

    /// Copies a run longer than the free space in buffer-sized pieces, spilling between them.
    @inline(never)
    mutating func appendInPieces(_ p: UnsafePointer<UInt8>, _ n: Int) {
        var off = 0
        while off < n {
            if count == capacity, let spill {
                spill(bytes)
                count = 0
            }
            let k = Swift.min(n &- off, capacity &- count)
            memcpy(base + count, p + off, k)
            count &+= k
            off &+= k
        }
    }

    public mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    public mutating func append(_ s: StaticString) {
        s.withUTF8Buffer { append(UnsafeRawBufferPointer($0)) }
    }

    /// Drops the last bytes back to `count`.
    public mutating func truncate(to n: Int) { count = min(count, max(0, n)) }

    public mutating func removeAll() { count = 0 }

    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// A copy of the contents (tests and small messages).
    public var array: [UInt8] { Array(bytes) }
}
