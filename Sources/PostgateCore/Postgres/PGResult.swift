import CLibPQ

/// Owns one libpq `PGresult` and frees it when released.
public final class PGResult {
    let handle: OpaquePointer

    init(_ handle: OpaquePointer) { self.handle = handle }

    deinit { PQclear(handle) }

    public var rowCount: Int { Int(PQntuples(handle)) }
    /// Rows a command affected (INSERT, UPDATE, DELETE, COPY), 0 when it reports none.
    public var affectedRows: Int { Int(String(cString: PQcmdTuples(handle))) ?? 0 }
    public var columnCount: Int { Int(PQnfields(handle)) }

    public func columnName(_ column: Int) -> String { String(cString: PQfname(handle, Int32(column))) }

    public func columnIndex(_ name: String) -> Int? {
        let i = Int(PQfnumber(handle, name))
        return i < 0 ? nil : i
    }

    public func columnTypeOID(_ column: Int) -> UInt32 { UInt32(PQftype(handle, Int32(column))) }

    public func isNull(_ row: Int, _ column: Int) -> Bool { PQgetisnull(handle, Int32(row), Int32(column)) == 1 }

    /// The text value of a field, or nil for SQL NULL.
    public func string(_ row: Int, _ column: Int) -> String? {
        if isNull(row, column) { return nil }
        return String(cString: PQgetvalue(handle, Int32(row), Int32(column)))
    }

    public func string(_ row: Int, _ name: String) -> String? {
        guard let c = columnIndex(name) else { return nil }
        return string(row, c)
    }

    public func int(_ row: Int, _ name: String) -> Int64? { string(row, name).flatMap { Int64($0) } }

    public func bool(_ row: Int, _ name: String) -> Bool? { string(row, name).map { $0 == "t" } }

    /// Calls `body` with the raw bytes of a field (nil for NULL) without copying them.
    public func withBytes<R>(_ row: Int, _ column: Int, _ body: (UnsafeRawBufferPointer?) throws -> R) rethrows -> R {
        if isNull(row, column) { return try body(nil) }
        let len = Int(PQgetlength(handle, Int32(row), Int32(column)))
        let ptr = PQgetvalue(handle, Int32(row), Int32(column))
        return try body(UnsafeRawBufferPointer(start: ptr, count: len))
    }

    static func error(from handle: OpaquePointer, kind: PostgresError.Kind) -> PostgresError {
        func field(_ code: Int32) -> String? {
            guard let p = PQresultErrorField(handle, code) else { return nil }
            return String(cString: p)
        }
        let primary = field(Int32(UInt8(ascii: "M"))) ?? String(cString: PQresultErrorMessage(handle)).trimmingSpaces()
        return PostgresError(
            kind: kind, sqlState: field(Int32(UInt8(ascii: "C"))), message: primary,
            detail: field(Int32(UInt8(ascii: "D"))), hint: field(Int32(UInt8(ascii: "H"))))
    }
}
