/// Appends JSON to a byte buffer without intermediate `String`s.
///
/// The writer does not check structure; callers emit keys, values and separators in order.
public struct JSONWriter: Sendable {
    public var bytes: [UInt8]

    public init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    @inlinable public mutating func raw(_ s: StaticString) {
        s.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    @inlinable public mutating func raw(_ b: UInt8) { bytes.append(b) }

    public mutating func rawBytes<C: Collection>(_ c: C) where C.Element == UInt8 { bytes.append(contentsOf: c) }

    /// Writes a quoted, escaped JSON string.
    public mutating func string(_ s: String) {
        var s = s
        s.withUTF8 { string(utf8: UnsafeRawBufferPointer($0)) }
    }

    /// Writes a quoted, escaped JSON string from UTF-8 bytes.
    public mutating func string(utf8 buf: UnsafeRawBufferPointer) {
        JSONBytes.appendString(buf, to: &bytes)
    }

    public mutating func int(_ v: Int64) {
        if v >= 0 && v < 10 { bytes.append(0x30 + UInt8(v)); return }
        var tmp: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                  UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var m = v.magnitude
        var len = 0
        withUnsafeMutableBytes(of: &tmp) { t in
            repeat {
                t[19 - len] = 0x30 + UInt8(m % 10)
                m /= 10
                len += 1
            } while m > 0
            if v < 0 { bytes.append(0x2d) }
            bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: t[(20 - len)...]))
        }
    }

    public mutating func bool(_ v: Bool) { v ? raw("true") : raw("false") }
    public mutating func null() { raw("null") }

    /// Writes a whole `JSONValue` compactly.
    public mutating func value(_ v: JSONValue) {
        switch v {
        case .null: null()
        case .bool(let b): bool(b)
        case .number(let n): bytes.append(contentsOf: n.utf8)
        case .string(let s): string(s)
        case .array(let a):
            raw(UInt8(ascii: "["))
            for (k, e) in a.enumerated() {
                if k > 0 { raw(UInt8(ascii: ",")) }
                value(e)
            }
            raw(UInt8(ascii: "]"))
        case .object(let o):
            raw(UInt8(ascii: "{"))
            for (k, e) in o.entries.enumerated() {
                if k > 0 { raw(UInt8(ascii: ",")) }
                string(e.key)
                raw(UInt8(ascii: ":"))
                value(e.value)
            }
            raw(UInt8(ascii: "}"))
        }
    }
}

extension JSONValue {
    /// Compact JSON text of this value.
    public var jsonText: String {
        var w = JSONWriter()
        w.value(self)
        return String(decoding: w.bytes, as: UTF8.self)
    }
}
