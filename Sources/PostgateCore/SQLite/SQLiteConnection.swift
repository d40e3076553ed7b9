import GRDBSQLite

/// A SQLite failure: the operation and SQLite's message (which never holds bound values).
public struct SQLiteError: Error, CustomStringConvertible {
    public var code: Int32
    public var message: String
    public var description: String { message }
}

/// One SQLite database connection; the only owner of its `sqlite3` handle.
public final class SQLiteConnection {
    let handle: OpaquePointer

    public init(path: String) throws(SQLiteError) {
        var db: OpaquePointer?
        let rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            if let db { sqlite3_close_v2(db) }
            throw SQLiteError(code: rc, message: message)
        }
        handle = db
        sqlite3_busy_timeout(db, 10_000)
        sqlite3_extended_result_codes(db, 1)
    }

    deinit { sqlite3_close_v2(handle) }

    func error(_ rc: Int32) -> SQLiteError { SQLiteError(code: rc, message: String(cString: sqlite3_errmsg(handle))) }

    /// Runs statements without results.
    public func execute(_ sql: String) throws(SQLiteError) {
        var err: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &err)
        if rc != SQLITE_OK {
            let message = err.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(handle))
            sqlite3_free(err)
            throw SQLiteError(code: rc, message: message)
        }
    }

    public func prepare(_ sql: String) throws(SQLiteError) -> SQLiteStatement {
        var st: OpaquePointer?
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &st, nil)
        guard rc == SQLITE_OK, let st else { throw error(rc) }
        return SQLiteStatement(st, connection: self)
    }

    /// Rows changed by the last statement.
    public var changes: Int { Int(sqlite3_changes(handle)) }

    /// The text columns of a query's rows.
    public func rows(_ sql: String, _ params: [String] = []) throws(SQLiteError) -> [[String?]] {
        let st = try prepare(sql)
        for (i, p) in params.enumerated() { st.bindText(Int32(i + 1), p) }
        var out: [[String?]] = []
        while try st.step() {
            out.append((0..<st.columnCount).map { st.text($0) })
        }
        return out
    }
}

/// A prepared statement; owned by one `SQLiteStatement`, finalized in `deinit`.
public final class SQLiteStatement {
    let handle: OpaquePointer
    let connection: SQLiteConnection

    init(_ handle: OpaquePointer, connection: SQLiteConnection) {
        self.handle = handle
        self.connection = connection
    }

    deinit { sqlite3_finalize(handle) }

    @inline(__always) public func bindNull(_ i: Int32) { sqlite3_bind_null(handle, i) }
    @inline(__always) public func bindInt(_ i: Int32, _ v: Int64) { sqlite3_bind_int64(handle, i, v) }
    @inline(__always) public func bindDouble(_ i: Int32, _ v: Double) { sqlite3_bind_double(handle, i, v) }
    /// Binds text that stays valid until the statement is stepped (it is not copied).
    @inline(__always) public func bindText(_ i: Int32, _ v: UnsafeRawBufferPointer) {
        guard let p = v.baseAddress, v.count > 0 else { sqlite3_bind_text(handle, i, "", 0, Self.transient); return }
        sqlite3_bind_text(handle, i, p.assumingMemoryBound(to: CChar.self), Int32(v.count), Self.transient)
    }
    /// Binds text without copying: `v` must stay valid until the statement is run or reset.
    @inline(__always) public func bindTextNoCopy(_ i: Int32, _ v: UnsafeRawBufferPointer) {
        guard let p = v.baseAddress, v.count > 0 else { sqlite3_bind_text(handle, i, "", 0, Self.transient); return }
        sqlite3_bind_text(handle, i, p.assumingMemoryBound(to: CChar.self), Int32(v.count), nil)
    }
    @inline(__always) public func bindBlob(_ i: Int32, _ v: UnsafeRawBufferPointer) {
        sqlite3_bind_blob(handle, i, v.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(v.count), Self.transient)
    }
    public func bindText(_ i: Int32, _ s: String) {
        var s = s
        s.withUTF8 { bindText(i, UnsafeRawBufferPointer($0)) }
    }

    /// SQLITE_TRANSIENT: SQLite copies the value.
    static let transient = unsafeBitCast(Int(-1), to: sqlite3_destructor_type.self)

    /// Steps once: true when a row is available.
    public func step() throws(SQLiteError) -> Bool {
        let rc = sqlite3_step(handle)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        let e = connection.error(rc)
        sqlite3_reset(handle)
        throw e
    }

    /// Runs the statement to completion and resets it for the next use.
    @inline(__always)
    public func run() throws(SQLiteError) {
        let rc = sqlite3_step(handle)
        if rc != SQLITE_DONE && rc != SQLITE_ROW {
            let e = connection.error(rc)
            sqlite3_reset(handle)
            throw e
        }
        sqlite3_reset(handle)
    }

    public var columnCount: Int32 { sqlite3_column_count(handle) }

    public func text(_ i: Int32) -> String? {
        guard sqlite3_column_type(handle, i) != SQLITE_NULL, let p = sqlite3_column_text(handle, i) else { return nil }
        return String(cString: p)
    }
}
