/// The fields a destination receives for rows of one `RowShape`: its emitted columns, then, for
/// CDC streams, `_ab_cdc_lsn` and `_ab_cdc_updated_at`. Built once per shape.
public final class FieldLayout: Sendable {
    public enum Source: Sendable, Equatable {
        /// The value of the shape's column at this index.
        case column(Int)
        case cdcLSN, cdcTime
    }
    public let shape: RowShape
    public let columns: [RowShape.Column]
    public let sources: [Source]
    /// Shape indices of the stream's primary key columns (empty without a key).
    public let primaryKey: [Int]

    public init(_ shape: RowShape, cdc: Bool, primaryKey: [String]) {
        self.shape = shape
        var columns: [RowShape.Column] = []
        var sources: [Source] = []
        for (i, c) in shape.columns.enumerated() where c.emitted {
            columns.append(c)
            sources.append(.column(i))
        }
        if cdc {
            columns += SyncStream.cdcColumns.map { RowShape.Column(name: $0.name, encoding: $0.encoding, type: $0.type) }
            sources += [.cdcLSN, .cdcTime]
        }
        self.columns = columns
        self.sources = sources
        self.primaryKey = primaryKey.compactMap { k in shape.columns.firstIndex { $0.name == k } }
    }

    public var width: Int { columns.count }
}

/// Rows on their way into a destination, in one contiguous arena: per row an operation and per
/// field the unescaped value's bytes (or NULL, or "omitted": an unchanged TOAST value the
/// destination keeps). A value type, handed from the reader thread to the applier.
public struct FieldRows: Sendable {
    public enum Op: UInt8, Sendable {
        case upsert, delete
        /// The row under this (old) key moves to the key of the next row, an upsert; the fields
        /// that row omits (unchanged TOAST values) keep this row's values.
        case rekey
    }
    public static let null: Int32 = -1
    public static let omitted: Int32 = -2

    public let layout: FieldLayout
    public private(set) var bytes: [UInt8] = []
    public private(set) var starts: [Int32] = []
    public private(set) var lengths: [Int32] = []
    public private(set) var ops: [Op] = []

    public init(layout: FieldLayout) { self.layout = layout }

    public var count: Int { ops.count }
    public var byteCount: Int { bytes.count + starts.count * 8 + 64 }

    public func isAbsent(_ r: Int, _ f: Int) -> Bool { lengths[r * layout.width + f] == Self.omitted }

    /// True when row `r` leaves any field out (an unchanged TOAST value).
    public func omitsAny(_ r: Int) -> Bool {
        let w = layout.width
        return lengths[(r * w)..<(r * w + w)].contains(Self.omitted)
    }

    /// Runs `body` with the arena's bytes, for `field(_:_:_:)`.
    @inline(__always)
    public func withArena<T, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> T) throws(E) -> T {
        var result: Result<T, E>!
        bytes.withUnsafeBytes { p in
            do throws(E) { result = .success(try body(p)) } catch { result = .failure(error) }
        }
        return try result.get()
    }

    /// Field `f` of row `r` inside `arena` (from `withArena`); nil for NULL and omitted.
    @inline(__always)
    public func field(_ r: Int, _ f: Int, _ arena: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        let i = r * layout.width + f
        let n = Int(lengths[i])
        if n < 0 { return nil }
        let s = Int(starts[i])
        return UnsafeRawBufferPointer(start: arena.baseAddress.map { $0 + s } ?? UnsafeRawPointer(bitPattern: 1), count: n)
    }

    mutating func append(_ v: UnsafeRawBufferPointer) {
        starts.append(Int32(truncatingIfNeeded: bytes.count))
        lengths.append(Int32(truncatingIfNeeded: v.count))
        bytes.append(contentsOf: v)
    }

    mutating func appendMarker(_ m: Int32) {
        starts.append(0)
        lengths.append(m)
    }

    /// A value as the destination stores it: money's locale text becomes plain digits.
    mutating func appendValue(_ v: UnsafeRawBufferPointer, _ encoding: ValueEncoding) {
        switch encoding {
        case .money:
            var buf = ByteBuffer(capacity: v.count + 8)
            defer { buf.deallocate() }
            if ValueText.appendMoney(v, to: &buf) { append(buf.bytes) } else { appendMarker(Self.null) }
        case .array(element: .money, _):
            // As the snapshot reads money arrays: a numeric array literal.
            var buf = ByteBuffer(capacity: v.count + 8)
            defer { buf.deallocate() }
            _ = encoding.append(v, to: &buf)
            var literal = Array(buf.bytes)
            for i in literal.indices {
                if literal[i] == UInt8(ascii: "[") { literal[i] = UInt8(ascii: "{") } else if literal[i] == UInt8(ascii: "]") { literal[i] = UInt8(ascii: "}") }
            }
            literal.withUnsafeBytes { append($0) }
        default:
            append(v)
        }
    }

    mutating func appendStamp(_ source: FieldLayout.Source, lsn: LSN, time: String) {
        if source == .cdcLSN {
            var t = String(lsn.value)
            t.withUTF8 { append(UnsafeRawBufferPointer($0)) }
        } else {
            var t = time
            t.withUTF8 { append(UnsafeRawBufferPointer($0)) }
        }
    }

    /// Appends one COPY text row of the layout's shape (as an upsert).
    public mutating func appendCopyRow(_ row: UnsafeRawBufferPointer, op: Op = .upsert) throws(RecordEncoder.MalformedRow) {
        let shape = layout.shape
        let stamp = shape.cdcStamp
        var scratch: ByteBuffer?
        defer { scratch?.deallocate() }
        var pos = 0
        let n = row.count
        let columnCount = shape.columns.count
        var emittedValues = 0
        for c in 0..<columnCount {
            guard pos <= n else { throw RecordEncoder.MalformedRow(offset: n, reason: "expected \(columnCount) fields, found \(c)") }
            var end = pos
            var escaped = false
            while end < n {
                let b = row[end]
                if b == 0x09 || b == 0x0a { break }
                if b == 0x5c { escaped = true; end += 1 }
                end += 1
            }
            if end > n { end = n }
            if c < columnCount - 1 && (end >= n || row[end] != 0x09) {
                throw RecordEncoder.MalformedRow(offset: end, reason: "expected \(columnCount) fields, found \(c + 1)")
            }
            if shape.columns[c].emitted {
                let v = UnsafeRawBufferPointer(rebasing: row[pos..<end])
                if v.count == 2 && v[0] == 0x5c && v[1] == UInt8(ascii: "N") {
                    appendMarker(Self.null)
                } else if escaped {
                    if scratch == nil { scratch = ByteBuffer(capacity: 256) }
                    scratch!.removeAll()
                    RecordEncoder.unescape(v, into: &scratch!)
                    appendValue(scratch!.bytes, shape.columns[c].encoding)
                } else {
                    appendValue(v, shape.columns[c].encoding)
                }
                emittedValues += 1
            }
            pos = end + 1
        }
        if let stamp {
            for s in layout.sources[emittedValues...] { appendStamp(s, lsn: stamp.lsn, time: stamp.time) }
        }
        ops.append(op)
    }

    /// Appends one captured change: an insert or update as an upsert (an update that changed the
    /// key first deletes the old key), a delete as a delete carrying what the server sent.
    public mutating func appendChange(_ change: Change) {
        // Without a key, an update replaces one row equal to the old row; with one, the old key
        // goes when the update changed it.
        // An old key tuple carries only the key: its other columns are not values.
        let oldRow = change.oldKeyOnly ? nil : change.old
        if change.kind == .update, let old = change.old, layout.primaryKey.isEmpty || keyChanged(old: old, new: change.values) {
            appendTuple(old, old: nil, change: change, keysOnly: !layout.primaryKey.isEmpty)
            let omits = change.values.contains { if case .unchangedToast = $0 { return true } else { return false } }
            ops.append(!layout.primaryKey.isEmpty && omits && oldRow == nil ? .rekey : .delete)
        }
        switch change.kind {
        case .insert, .update:
            appendTuple(change.values, old: oldRow, change: change, keysOnly: false)
            ops.append(.upsert)
        case .delete:
            appendTuple(change.values, old: nil, change: change, keysOnly: change.keyOnly)
            ops.append(.delete)
        }
    }

    func keyChanged(old: [TupleValue], new: [TupleValue]) -> Bool {
        for i in layout.primaryKey where i < old.count && i < new.count {
            switch (old[i], new[i]) {
            case (.unchangedToast, _), (_, .unchangedToast): continue
            case let (a, b): if a != b { return true }
            }
        }
        return false
    }

    mutating func appendTuple(_ values: [TupleValue], old: [TupleValue]?, change: Change, keysOnly: Bool) {
        let columns = layout.shape.columns
        for s in layout.sources {
            guard case .column(let i) = s else { appendStamp(s, lsn: change.lsn, time: change.time); continue }
            if keysOnly && !columns[i].isKey { appendMarker(Self.omitted); continue }
            var v = i < values.count ? values[i] : .unchangedToast
            if case .unchangedToast = v, let old, i < old.count { v = old[i] }
            switch v {
            case .null: appendMarker(Self.null)
            case .unchangedToast: appendMarker(Self.omitted)
            case .text(let t), .binary(let t): t.withUnsafeBytes { appendValue($0, columns[i].encoding) }
            }
        }
    }
}
