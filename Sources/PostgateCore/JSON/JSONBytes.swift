/// Byte-level JSON building blocks that append to a `ByteBuffer` (the hot path of `read`).
public enum JSONBytes {
    @usableFromInline static let escapes: [UInt8] = {
        // 0: copy as is; 1: needs an escape.
        var t = [UInt8](repeating: 0, count: 256)
        for b in 0..<0x20 { t[b] = 1 }
        t[0x22] = 1
        t[0x5c] = 1
        return t
    }()

    /// Appends `buf` as a quoted, escaped JSON string.
    @inline(__always)
    public static func appendString(_ buf: UnsafeRawBufferPointer, to out: inout ByteBuffer) {
        out.append(0x22)
        appendEscaped(buf, to: &out)
        out.append(0x22)
    }

    /// Appends the escaped body of a JSON string (no quotes).
    public static func appendEscaped(_ buf: UnsafeRawBufferPointer, to out: inout ByteBuffer) {
        let n = buf.count
        guard n > 0, let p = buf.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        escapes.withUnsafeBufferPointer { table in
            var runStart = 0
            var k = 0
            while k < n {
                let b = p[k]
                if table[Int(b)] == 0 {
                    k &+= 1
                    continue
                }
                if runStart < k { out.append(p + runStart, k - runStart) }
                out.reserve(6)
                switch b {
                case 0x22: out.append(0x5c); out.append(0x22)
                case 0x5c: out.append(0x5c); out.append(0x5c)
                case 0x0a: out.append(0x5c); out.append(UInt8(ascii: "n"))
                case 0x0d: out.append(0x5c); out.append(UInt8(ascii: "r"))
                case 0x09: out.append(0x5c); out.append(UInt8(ascii: "t"))
                case 0x08: out.append(0x5c); out.append(UInt8(ascii: "b"))
                case 0x0c: out.append(0x5c); out.append(UInt8(ascii: "f"))
                default:
                    out.append("\\u00")
                    out.append(hexDigit(b >> 4))
                    out.append(hexDigit(b & 0xf))
                }
                k &+= 1
                runStart = k
            }
            if runStart < n { out.append(p + runStart, n - runStart) }
        }
    }

    @inline(__always) static func hexDigit(_ v: UInt8) -> UInt8 { v < 10 ? 0x30 + v : 0x57 + v }

    /// Appends a decimal integer.
    public static func appendInt(_ v: Int64, to out: inout ByteBuffer) {
        var w = JSONWriter(capacity: 24)
        w.int(v)
        out.append(w.bytes)
    }

    /// Appends a Swift string as a quoted JSON string.
    public static func appendString(_ s: String, to out: inout ByteBuffer) {
        var s = s
        s.withUTF8 { appendString(UnsafeRawBufferPointer($0), to: &out) }
    }

    /// Appends a quoted JSON string to an array (for small, non-hot messages).
    public static func appendString(_ buf: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        var b = ByteBuffer(capacity: buf.count + 8)
        defer { b.deallocate() }
        appendString(buf, to: &b)
        out.append(contentsOf: b.bytes)
    }

    public static func appendString(_ s: String, to out: inout [UInt8]) {
        var s = s
        s.withUTF8 { appendString(UnsafeRawBufferPointer($0), to: &out) }
    }
}
