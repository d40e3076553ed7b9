import CLibPQ
import COpenSSL
import Foundation
import Logging

/// Owns one libpq connection and closes it when released.
///
/// Not thread-safe: use a connection from one task at a time.
public final class PGConnection {
    private let handle: OpaquePointer
    private let notices: NoticeSink

    /// Connects with the given libpq keywords. Parameters are passed as keyword/value arrays,
    /// never as a connection string, so no value needs quoting.
    public init(parameters: [(String, String)], logger: Logger) throws(PostgresError) {
        let keys = parameters.map(\.0)
        let values = parameters.map(\.1)
        let conn: OpaquePointer? = withCStringArray(keys) { k in
            withCStringArray(values) { v in PQconnectStartParams(k, v, 0) }
        }
        guard let conn else {
            throw PostgresError(kind: .client, message: "libpq could not allocate a connection (out of memory)")
        }
        let timeout = parameters.last { $0.0 == "connect_timeout" }.flatMap { Int($0.1) } ?? 0
        if let failure = Self.complete(conn, timeoutSeconds: timeout) {
            PQfinish(conn)
            throw failure
        }
        PQsetErrorVerbosity(conn, PQERRORS_DEFAULT)
        handle = conn
        notices = NoticeSink(logger: logger)
        PQsetNoticeProcessor(conn, { arg, message in
            guard let arg, let message else { return }
            Unmanaged<NoticeSink>.fromOpaque(arg).takeUnretainedValue().receive(String(cString: message))
        }, Unmanaged.passUnretained(notices).toOpaque())
    }

    deinit { PQfinish(handle) }

    /// Drives a started connection to its end, as PQconnectdbParams would, but with verbose errors so
    /// a failure carries the server's SQLSTATE (a missing database is 3D000 in any server language).
    /// `timeoutSeconds` (libpq's connect_timeout, 0 for none) is counted afresh for each socket libpq
    /// opens; when it runs out the connection fails (libpq's own loop would try a host's next address).
    /// Returns the failure, or nil once connected.
    static func complete(_ conn: OpaquePointer, timeoutSeconds: Int) -> PostgresError? {
        PQsetErrorVerbosity(conn, PQERRORS_VERBOSE)
        let timeout = timeoutSeconds <= 0 ? -1.0 : Double(max(2, timeoutSeconds)) // libpq's minimum is 2 s
        var status = PGRES_POLLING_WRITING
        var socket: Int32 = -2
        var deadline = 0.0
        while PQstatus(conn) != CONNECTION_BAD {
            if status == PGRES_POLLING_OK { return nil }
            if status == PGRES_POLLING_FAILED { break }
            let fd = PQsocket(conn)
            if fd < 0 { break }
            if fd != socket {
                socket = fd
                deadline = monotonicSeconds() + timeout
            }
            var pfd = pollfd(fd: fd, events: Int16(status == PGRES_POLLING_READING ? POLLIN : POLLOUT), revents: 0)
            let wait = timeout < 0 ? -1 : Int32(max(0, (deadline - monotonicSeconds()) * 1000))
            let n = poll(&pfd, 1, wait)
            if n < 0 && errno == EINTR { continue }
            if n == 0 {
                let sofar = String(cString: PQerrorMessage(conn)).trimmingSpaces()
                return PostgresError(kind: .connection, message: (sofar.isEmpty ? "" : sofar + "\n") + "connection to server failed: timeout expired")
            }
            status = PQconnectPoll(conn)
        }
        return verboseFailure(String(cString: PQerrorMessage(conn)))
    }

    /// Splits a verbose libpq error into the default text and the first SQLSTATE: `FATAL:  3D000: database
    /// "x" does not exist` becomes `FATAL:  database "x" does not exist`; LOCATION lines are dropped.
    static func verboseFailure(_ text: String) -> PostgresError {
        var sqlState: String?
        var lines: [String] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("LOCATION:  ") { continue }
            var l = String(line)
            for severity in ["FATAL:  ", "ERROR:  ", "PANIC:  "] {
                guard let r = l.range(of: severity) else { continue }
                let code = l[r.upperBound...].prefix(7)
                if code.count == 7, code.hasSuffix(": "), code.prefix(5).allSatisfy({ $0.isASCII && ($0.isNumber || $0.isUppercase) }) {
                    if sqlState == nil { sqlState = String(code.prefix(5)) }
                    l.removeSubrange(r.upperBound..<l.index(r.upperBound, offsetBy: 7))
                }
                break
            }
            lines.append(l)
        }
        return PostgresError(kind: .connection, sqlState: sqlState, message: lines.joined(separator: "\n").trimmingSpaces())
    }

    /// Runs one statement with text parameters (`$1`, `$2`, ...) and returns its result.
    @discardableResult
    public func query(_ sql: String, _ params: [String?] = []) throws(PostgresError) -> PGResult {
        let raw: OpaquePointer?
        if params.isEmpty {
            raw = PQexec(handle, sql)
        } else {
            raw = withOptionalCStringArray(params) { p in
                PQexecParams(handle, sql, Int32(params.count), nil, p, nil, nil, 0)
            }
        }
        guard let raw else { throw lastError(kind: .client) }
        let result = PGResult(raw)
        switch PQresultStatus(raw) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_COPY_OUT, PGRES_COPY_IN, PGRES_COPY_BOTH, PGRES_SINGLE_TUPLE:
            return result
        default:
            throw PGResult.error(from: raw, kind: PQstatus(handle) == CONNECTION_OK ? .server : .client)
        }
    }

    func lastError(kind: PostgresError.Kind) -> PostgresError {
        PostgresError(kind: kind, message: String(cString: PQerrorMessage(handle)).trimmingSpaces())
    }

    /// A run-time parameter the server reported (e.g. `server_version`).
    public func parameterStatus(_ name: String) -> String? {
        guard let p = PQparameterStatus(handle, name) else { return nil }
        return String(cString: p)
    }

    /// The server version as an integer such as 150004.
    public var serverVersion: Int { Int(PQserverVersion(handle)) }

    /// Whether the connection is encrypted with TLS.
    public var usesTLS: Bool { PQsslInUse(handle) == 1 }

    /// A TLS attribute of the connection (`protocol`, `cipher`, ...), if TLS is in use.
    public func tlsAttribute(_ name: String) -> String? {
        guard let p = PQsslAttribute(handle, name) else { return nil }
        return String(cString: p)
    }

    /// The server's TLS certificate, if the connection uses TLS.
    public func peerCertificate() -> Certificate? {
        guard let ssl = PQsslStruct(handle, "OpenSSL") else { return nil }
        guard let x = SSL_get1_peer_certificate(OpaquePointer(ssl)) else { return nil }
        return Certificate(x)
    }

    /// Quotes a name for use as an SQL identifier.
    public static func quoteIdentifier(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// Quotes a value as an SQL string literal (standard_conforming_strings on).
    public static func quoteLiteral(_ value: String) -> String {
        "'" + value.replacingOccurrences(of: "'", with: "''") + "'"
    }
}

/// Routes server notices to the logger instead of libpq's default of printing to stderr.
final class NoticeSink {
    let logger: Logger
    init(logger: Logger) { self.logger = logger }
    func receive(_ message: String) {
        logger.info("server notice: \(message.trimmingSpaces())")
    }
}

func withCStringArray<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    withOptionalCStringArray(strings.map { Optional($0) }, body)
}

func withOptionalCStringArray<R>(_ strings: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { s in s.flatMap { strdup($0) } }
    pointers.append(nil)
    defer {
        // Scrub copies (they may hold a password) before freeing them.
        for p in pointers { if let p { memset(p, 0, strlen(p)); free(p) } }
    }
    return pointers.withUnsafeBufferPointer { buf in
        buf.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: buf.count) { body($0) }
    }
}

extension PGConnection {
    /// Runs `COPY ... TO STDOUT` and hands each row (text format, with its trailing newline) to
    /// `row` without copying it. Rows are never accumulated.
    public func copyOut(_ sql: String, row: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard let start = PQexec(handle, sql) else { throw lastError(kind: .client) }
        let startResult = PGResult(start)
        guard PQresultStatus(start) == PGRES_COPY_OUT else {
            throw PGResult.error(from: startResult.handle, kind: PQstatus(handle) == CONNECTION_OK ? .server : .client)
        }
        var buffer: UnsafeMutablePointer<CChar>?
        var failure: Error?
        while true {
            let n = PQgetCopyData(handle, &buffer, 0)
            if n > 0, let b = buffer {
                if failure == nil {
                    do { try row(UnsafeRawBufferPointer(start: b, count: Int(n))) } catch { failure = error }
                }
                PQfreemem(b)
                buffer = nil
                continue
            }
            if n == -2 { throw lastError(kind: .client) }
            break
        }
        // Collect the final status; COPY ends with one command result.
        var serverError: PostgresError?
        while let r = PQgetResult(handle) {
            let res = PGResult(r)
            if PQresultStatus(r) != PGRES_COMMAND_OK && serverError == nil {
                serverError = PGResult.error(from: res.handle, kind: PQstatus(handle) == CONNECTION_OK ? .server : .client)
            }
        }
        if let failure { throw failure }
        if let serverError { throw serverError }
    }
}

extension PGConnection {
    /// Runs `COPY ... FROM STDIN` with `data` (text format rows) and returns the rows copied.
    @discardableResult
    public func copyIn(_ sql: String, data: UnsafeRawBufferPointer) throws -> Int {
        guard let start = PQexec(handle, sql) else { throw lastError(kind: .client) }
        let startResult = PGResult(start)
        guard PQresultStatus(start) == PGRES_COPY_IN else {
            throw PGResult.error(from: startResult.handle, kind: PQstatus(handle) == CONNECTION_OK ? .server : .client)
        }
        var offset = 0
        while offset < data.count {
            let n = min(1 << 20, data.count - offset)
            let rc = PQputCopyData(handle, data.baseAddress!.advanced(by: offset).assumingMemoryBound(to: CChar.self), Int32(n))
            guard rc == 1 else { throw lastError(kind: .client) }
            offset += n
        }
        guard PQputCopyEnd(handle, nil) == 1 else { throw lastError(kind: .client) }
        var failure: PostgresError?
        var rows = 0
        while let r = PQgetResult(handle) {
            let res = PGResult(r)
            if PQresultStatus(r) != PGRES_COMMAND_OK {
                if failure == nil { failure = PGResult.error(from: res.handle, kind: PQstatus(handle) == CONNECTION_OK ? .server : .client) }
            } else {
                rows = Int(String(cString: PQcmdTuples(r))) ?? 0
            }
        }
        if let failure { throw failure }
        return rows
    }
}

extension PGConnection {
    /// Starts a COPY BOTH stream (START_REPLICATION on a replication connection).
    public func startCopyBoth(_ sql: String) throws {
        guard let r = PQexec(handle, sql) else { throw lastError(kind: .client) }
        let result = PGResult(r)
        guard PQresultStatus(r) == PGRES_COPY_BOTH else {
            throw PGResult.error(from: result.handle, kind: PQstatus(handle) == CONNECTION_OK ? .server : .client)
        }
    }

    /// Waits up to `timeout` seconds for one CopyData message and hands it to `body`.
    /// Returns false when nothing arrived in time; throws when the stream ends or fails.
    public func receiveCopyData(timeout: Double, _ body: (UnsafeRawBufferPointer) throws -> Void) throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            var buffer: UnsafeMutablePointer<CChar>?
            let n = PQgetCopyData(handle, &buffer, 1)
            if n > 0, let b = buffer {
                defer { PQfreemem(b) }
                try body(UnsafeRawBufferPointer(start: b, count: Int(n)))
                return true
            }
            if n == -1 {
                var failure: PostgresError?
                while let r = PQgetResult(handle) {
                    let res = PGResult(r)
                    // A broken connection ends the stream with a result libpq made up: not the server's error.
                    if PQresultStatus(r) != PGRES_COMMAND_OK && failure == nil {
                        failure = PGResult.error(from: res.handle, kind: PQstatus(handle) == CONNECTION_OK ? .server : .client)
                    }
                }
                throw failure ?? PostgresError(kind: .client, message: "the server ended the replication stream")
            }
            if n == -2 { throw lastError(kind: .client) }
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return false }
            var pfd = pollfd(fd: PQsocket(handle), events: Int16(POLLIN), revents: 0)
            _ = poll(&pfd, 1, Int32(max(1, min(left, 1.0) * 1000)))
            if PQconsumeInput(handle) == 0 { throw lastError(kind: .client) }
        }
    }

    /// Sends one CopyData message and flushes it.
    public func sendCopyData(_ bytes: [UInt8]) throws {
        let rc = bytes.withUnsafeBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) { PQputCopyData(handle, $0.baseAddress, Int32($0.count)) }
        }
        guard rc == 1, PQflush(handle) == 0 else { throw lastError(kind: .client) }
    }

    /// Ends a COPY BOTH stream from this side. What the server still has in flight is drained for
    /// at most a second; a stream that keeps coming is left for the connection's close to end.
    public func endCopyBoth() {
        guard PQputCopyEnd(handle, nil) == 1 else { return }
        _ = PQflush(handle)
        let deadline = Date().addingTimeInterval(1)
        while Date() < deadline {
            var buffer: UnsafeMutablePointer<CChar>?
            let n = PQgetCopyData(handle, &buffer, 1)
            if let b = buffer { PQfreemem(b) }
            if n == -1 {
                while let r = PQgetResult(handle) { PQclear(r) }
                return
            }
            if n < -1 { return }
            if n == 0 {
                var pfd = pollfd(fd: PQsocket(handle), events: Int16(POLLIN), revents: 0)
                _ = poll(&pfd, 1, 50)
                if PQconsumeInput(handle) == 0 { return }
            }
        }
    }
}
