/// Reading fields out of COPY text-format rows (tab-separated, `\N` for NULL, backslash escapes).
public enum CopyText {
    /// The raw (still escaped) bytes of field `index` of `row`; nil for NULL. Throws when the row
    /// has fewer fields.
    public static func field(_ row: UnsafeRawBufferPointer, _ index: Int) throws(RecordEncoder.MalformedRow) -> UnsafeRawBufferPointer? {
        var start = 0
        var k = 0
        let n = row.count
        var i = 0
        while i < n {
            let b = row[i]
            if b == 0x09 || b == 0x0a {
                if k == index { return value(row, start, i) }
                k += 1
                start = i + 1
            }
            i += 1
        }
        if k == index && start <= n { return value(row, start, n) }
        throw RecordEncoder.MalformedRow(offset: n, reason: "expected at least \(index + 1) fields, found \(k)")
    }

    static func value(_ row: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> UnsafeRawBufferPointer? {
        if end - start == 2 && row[start] == 0x5c && row[start + 1] == UInt8(ascii: "N") { return nil }
        return UnsafeRawBufferPointer(rebasing: row[start..<end])
    }

    public static func equal(_ a: [UInt8], _ b: UnsafeRawBufferPointer) -> Bool {
        a.count == b.count && a.withUnsafeBytes { $0.elementsEqual(b) }
    }

    /// The field's text with COPY escapes undone.
    public static func unescaped(_ v: UnsafeRawBufferPointer) -> [UInt8] {
        guard v.contains(0x5c) else { return Array(v) }
        var buf = ByteBuffer(capacity: v.count)
        defer { buf.deallocate() }
        RecordEncoder.unescape(v, into: &buf)
        return Array(buf.bytes)
    }

    /// Appends `v` escaped as one COPY text field.
    @inline(__always)
    public static func appendEscaped(_ v: UnsafeRawBufferPointer, to out: inout ByteBuffer) {
        var start = 0
        let n = v.count
        for i in 0..<n {
            let b = v[i]
            let e: UInt8
            switch b {
            case 0x5c: e = 0x5c
            case 0x0a: e = UInt8(ascii: "n")
            case 0x0d: e = UInt8(ascii: "r")
            case 0x09: e = UInt8(ascii: "t")
            default: continue
            }
            if i > start { out.append(UnsafeRawBufferPointer(rebasing: v[start..<i])) }
            out.append(0x5c)
            out.append(e)
            start = i + 1
        }
        if n > start { out.append(UnsafeRawBufferPointer(rebasing: v[start..<n])) }
    }
}
