/// Byte-level JSON building blocks that append to a `[UInt8]` in place (the hot path of `read`).
public enum JSONBytes {
    @usableFromInline static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    /// Appends `buf` as a quoted, escaped JSON string.
    @inlinable
    public static func appendString(_ buf: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        out.append(0x22)
        appendEscaped(buf, to: &out)
        out.append(0x22)
    }

    /// Appends the escaped body of a JSON string (no quotes).
    @inlinable
    public static func appendEscaped(_ buf: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        var runStart = 0
        var k = 0
        let n = buf.count
        while k < n {
            let b = buf[k]
            if b >= 0x20 && b != 0x22 && b != 0x5c {
                k &+= 1
                continue
            }
            if runStart < k { out.append(contentsOf: UnsafeRawBufferPointer(rebasing: buf[runStart..<k])) }
            switch b {
            case 0x22: out.append(0x5c); out.append(0x22)
            case 0x5c: out.append(0x5c); out.append(0x5c)
            case 0x0a: out.append(0x5c); out.append(UInt8(ascii: "n"))
            case 0x0d: out.append(0x5c); out.append(UInt8(ascii: "r"))
            case 0x09: out.append(0x5c); out.append(UInt8(ascii: "t"))
            case 0x08: out.append(0x5c); out.append(UInt8(ascii: "b"))
            case 0x0c: out.append(0x5c); out.append(UInt8(ascii: "f"))
            default:
                out.append(0x5c); out.append(UInt8(ascii: "u")); out.append(0x30); out.append(0x30)
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 0xf)])
            }
            k &+= 1
            runStart = k
        }
        if runStart < n { out.append(contentsOf: UnsafeRawBufferPointer(rebasing: buf[runStart..<n])) }
    }

    @inlinable
    public static func appendRaw(_ buf: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        out.append(contentsOf: buf)
    }

    /// Appends a decimal integer.
    public static func appendInt(_ v: Int64, to out: inout [UInt8]) {
        var w = JSONWriter(capacity: 0)
        swap(&w.bytes, &out)
        w.int(v)
        swap(&w.bytes, &out)
    }

    /// Appends a Swift string as a quoted JSON string.
    public static func appendString(_ s: String, to out: inout [UInt8]) {
        var s = s
        s.withUTF8 { appendString(UnsafeRawBufferPointer($0), to: &out) }
    }
}
