/// Byte-level JSON building blocks that append to a `ByteBuffer` (the hot path of `read`).
public enum JSONBytes {
    /// 1 for bytes that must be escaped in a JSON string (controls, '"', '\\'), else 0.
    nonisolated(unsafe) static let escapeTable: UnsafeMutablePointer<UInt8> = {
        let t = UnsafeMutablePointer<UInt8>.allocate(capacity: 256)
        t.initialize(repeating: 0, count: 256)
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
        let table = escapeTable
        var runStart = 0
        var k = 0
        while true {
            while k < n && table[Int(p[k])] == 0 { k &+= 1 }
            if runStart < k { out.append(p + runStart, k - runStart) }
            if k >= n { return }
            let b = p[k]
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
    }

    @inline(__always) static func hexDigit(_ v: UInt8) -> UInt8 { v < 10 ? 0x30 + v : 0x57 + v }

    /// The value of an ASCII hex digit, or nil.
    @inline(__always) static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case 0x30...0x39: return b - 0x30
        case 0x41...0x46: return b - 0x41 + 10
        case 0x61...0x66: return b - 0x61 + 10
        default: return nil
        }
    }

    /// Appends a decimal integer.
    public static func appendInt(_ v: Int64, to out: inout ByteBuffer) {
        var m = v.magnitude
        var digits = 1
        var t = m
        while t >= 10 { t /= 10; digits += 1 }
        out.reserve(digits + 1)
        if v < 0 { out.append(0x2d) }
        var i = digits
        var scratch: (UInt64, UInt64, UInt64) = (0, 0, 0)
        withUnsafeMutableBytes(of: &scratch) { s in
            repeat {
                i -= 1
                s[i] = 0x30 + UInt8(m % 10)
                m /= 10
            } while m > 0
            out.append(UnsafeRawBufferPointer(rebasing: s[0..<digits]))
        }
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

/// Eight-bytes-at-a-time byte tests on a UInt64.
enum SWAR {
    static let ones: UInt64 = 0x0101_0101_0101_0101
    static let highs: UInt64 = 0x8080_8080_8080_8080

    /// Nonzero if some byte equals `b`.
    @inline(__always) static func hasByte(_ x: UInt64, _ b: UInt8) -> UInt64 {
        let y = x ^ (ones &* UInt64(b))
        return (y &- ones) & ~y & highs
    }

    /// Nonzero if some byte is a tab, a newline or a backslash (COPY text field ends and escapes).
    @inline(__always) static func hasCopySpecial(_ x: UInt64) -> UInt64 {
        hasByte(x, 0x09) | hasByte(x, 0x0a) | hasByte(x, 0x5c)
    }
}
