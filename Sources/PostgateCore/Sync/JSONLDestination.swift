import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Writes one JSON Lines file per stream in a directory.
///
/// Full refresh writes `<table>.jsonl` anew (staged, then renamed over the old file). Incremental
/// and CDC streams append a change log to `<table>.jsonl`: each line is a record's data; deletes
/// carry `_ab_cdc_deleted_at`, CDC updates that left unchanged TOAST columns out list them in
/// `_postgate_unchanged`, and a source TRUNCATE is a line `{"_postgate_truncate":true}`.
/// Consumers keep the last line per primary key. State is written after the data is fsynced and
/// records each log's committed length; an interrupted run's uncommitted tail is cut off on the
/// next start, so nothing is duplicated. File names follow the table naming rules (compared
/// without case; `/`, `%` and a leading `.` percent-encoded).
public final class JSONLDestination: SyncDestination {
    let directory: URL
    let logger: Logger
    var states: [String: JSONValue] = [:]
    /// Committed lengths of the files being appended to.
    var lengths: [String: UInt64] = [:]
    var pending: [String: ByteBuffer] = [:]
    var handles: [String: FileHandle] = [:]
    var renames: [(from: String, to: String)] = []
    var assignments: [StreamID: TableAssignment] = [:]
    var committedAssignments: [StreamID: TableAssignment] = [:]
    var encoders: [ObjectIdentifier: RecordEncoder] = [:]
    var outcomes: [StreamID: Outcomes] = [:]
    var committedOutcomes: [StreamID: Outcomes] = [:]
    /// Keys listed by a resumed full refresh's reconciliation, per stream.
    var present: [StreamID: Set<String>] = [:]

    static let naming = NamingRules(foldsCase: true, hasSchemas: false, maxBytes: 240, sanitize: { name in
        var out = ""
        for (i, ch) in name.enumerated() {
            switch ch {
            case "%": out += "%25"
            case "/": out += "%2F"
            case "\0": out += "%00"
            case "." where i == 0: out += "%2E"
            default: out.append(ch)
            }
        }
        return out
    })

    public var label: String { "jsonl:\(directory.path)" }
    static let stateFile = "_postgate_state.json"

    /// Failures to create the directory or read its state are the setting's (`config_error`); failures
    /// to write files later are local I/O (`system_error`).
    public init(directory: String, logger: Logger) throws {
        self.directory = URL(fileURLWithPath: directory, isDirectory: true)
        self.logger = logger
        do {
            try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
        } catch {
            throw SyncError.destination("cannot create directory \(directory): \(error.localizedDescription)")
        }
        let statePath = self.directory.appendingPathComponent(Self.stateFile).path
        if let data = FileManager.default.contents(atPath: statePath) {
            let doc: JSONValue
            do { doc = try JSONParser.parse([UInt8](data)) } catch {
                throw SyncError.destination("\(statePath) is not valid JSON (\(error)); remove it to sync from scratch")
            }
            for (k, v) in doc["states"]?.objectValue?.entries ?? [] { states[k] = v }
            for (k, v) in doc["files"]?.objectValue?.entries ?? [] { lengths[k] = v.int64Value.map { UInt64(max(0, $0)) } }
            for v in doc["tables"]?.arrayValue ?? [] {
                guard let a = TableAssignment(json: v) else { throw SyncError.destination("\(statePath): a table assignment does not parse; remove the file to sync from scratch") }
                assignments[a.stream] = a
            }
            committedAssignments = assignments
        }
        // Cut off what an interrupted run appended after its last commit.
        for (file, length) in lengths {
            let path = self.directory.appendingPathComponent(file).path
            if let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? UInt64, size > length {
                guard Glibc.truncate(path, off_t(length)) == 0 else {
                    throw SyncError.destinationFailed("cannot cut \(path) back to its committed length: \(String(cString: strerror(errno)))", .system)
                }
                logger.info("\(file): removed \(size - length) uncommitted bytes from an interrupted run")
            }
        }
    }

    deinit { for (_, b) in pending { b.deallocate() } }

    func assignment(_ s: SyncStream) -> TableAssignment {
        if let a = assignments[s.id] { return a }
        let a = Self.naming.assign(s.id, existing: Array(assignments.values), sequence: assignments.count + 1)
        assignments[s.id] = a
        return a
    }

    func file(_ s: SyncStream) -> String { assignment(s).table + ".jsonl" }
    func staging(_ s: SyncStream) -> String { assignment(s).staging + ".jsonl" }

    public func committedState() throws -> [JSONValue] { states.keys.sorted().compactMap { states[$0] } }

    public func prepare(_ streams: [SyncStream]) throws {
        for s in streams { _ = assignment(s) }
    }

    public func addStream(_ s: SyncStream) throws { _ = assignment(s) }

    public func hasStaging(_ s: SyncStream) -> Bool {
        guard assignments[s.id] != nil else { return false }
        return lengths[staging(s)] != nil && FileManager.default.fileExists(atPath: path(staging(s)))
    }

    func path(_ file: String) -> String { directory.appendingPathComponent(file).path }

    func handle(_ file: String) throws -> FileHandle {
        if let h = handles[file] { return h }
        let p = path(file)
        if !FileManager.default.fileExists(atPath: p) {
            guard FileManager.default.createFile(atPath: p, contents: nil) else {
                throw SyncError.destinationFailed("cannot create \(p)", .system)
            }
        }
        guard let h = FileHandle(forWritingAtPath: p) else { throw SyncError.destinationFailed("cannot open \(p) for writing", .system) }
        let end = h.seekToEndOfFile()
        // A file this destination has not written before is committed as it stands; one that is
        // shorter than its committed length (replaced by a consumer) is taken as it is now.
        lengths[file] = min(lengths[file] ?? end, end)
        handles[file] = h
        return h
    }

    /// Set when a rollback could not be carried out; every later write fails with it.
    var broken: SyncError?

    /// Appends to a file's pending bytes.
    func append(_ file: String, _ body: (inout ByteBuffer) throws -> Void) throws {
        if let broken { throw broken }
        if lengths[file] == nil || handles[file] == nil { _ = try handle(file) }
        var buf = pending[file] ?? ByteBuffer(capacity: 1 << 16)
        do {
            defer { pending[file] = buf }
            try body(&buf)
        }
        if buf.count >= 1 << 20 { try write(file) }
    }

    func write(_ file: String) throws {
        guard var bytes = pending[file], bytes.count > 0 else { return }
        let h = try handle(file)
        do { try h.write(contentsOf: Data(bytes.bytes)) } catch {
            throw SyncError.destinationFailed("cannot write \(path(file)): \(error.localizedDescription)", .system)
        }
        bytes.removeAll()
        pending[file] = bytes
    }

    public func startFullRefresh(_ s: SyncStream, resume: Bool) throws {
        let f = staging(s)
        if resume && hasStaging(s) { return }
        handles[f] = nil
        pending[f]?.removeAll()
        _ = unlink(path(f))
        lengths[f] = 0
        _ = try handle(f)
    }

    func encoder(_ layout: FieldLayout) -> RecordEncoder {
        if let e = encoders[ObjectIdentifier(layout)] { return e }
        let shape = layout.shape
        let e = RecordWriter.makeEncoder(shape, envelope: .dataOnly, cdcFields: .airbyte)
        encoders[ObjectIdentifier(layout)] = e
        return e
    }

    public func load(_ s: SyncStream, _ layout: FieldLayout, copyText: [UInt8], count: Int, merge: Bool) throws {
        let e = encoder(layout)
        try append(staging(s)) { buf in
            try CopyText.forEachRow(copyText) { try e.encode(copyRow: $0, into: &buf) }
        }
    }

    public func finishFullRefresh(_ s: SyncStream) throws {
        renames.append((staging(s), file(s)))
    }

    public func merge(_ s: SyncStream, _ rows: FieldRows) throws {
        var o = Outcomes()
        try append(file(s)) { buf in Self.encode(rows, into: &buf, outcomes: &o) }
        outcomes[s.id, default: Outcomes()].add(o)
    }

    /// Each row as a JSON object of its fields (source names).
    static func encode(_ rows: FieldRows, into buf: inout ByteBuffer, outcomes o: inout Outcomes) {
        let columns = rows.layout.columns
        let keys: [[UInt8]] = columns.map { c in var k: [UInt8] = []; JSONBytes.appendString(c.name, to: &k); k.append(UInt8(ascii: ":")); return k }
        let cdc = rows.layout.sources.contains(.cdcTime)
        let timeField = rows.layout.sources.firstIndex(of: .cdcTime)
        rows.withArena { arena in
            for r in 0..<rows.count {
                buf.append(UInt8(ascii: "{"))
                var first = true
                var omitted: [String] = []
                for f in 0..<columns.count {
                    if rows.isAbsent(r, f) {
                        if rows.ops[r] == .upsert { omitted.append(columns[f].name) }
                        continue
                    }
                    if !first { buf.append(UInt8(ascii: ",")) }
                    first = false
                    buf.append(keys[f])
                    if let v = rows.field(r, f, arena) { _ = columns[f].encoding.append(v, to: &buf) } else { buf.append("null") }
                }
                let deleting = rows.ops[r] != .upsert
                if cdc || deleting {
                    if !first { buf.append(UInt8(ascii: ",")) }
                    first = false
                    buf.append(#""_ab_cdc_deleted_at":"#)
                    if deleting, let t = timeField, let v = rows.field(r, t, arena) {
                        JSONBytes.appendString(v, to: &buf)
                    } else if deleting {
                        buf.append("true")
                    } else {
                        buf.append("null")
                    }
                }
                if !omitted.isEmpty {
                    if !first { buf.append(UInt8(ascii: ",")) }
                    buf.append(#""_postgate_unchanged":["#)
                    for (i, n) in omitted.sorted().enumerated() {
                        if i > 0 { buf.append(UInt8(ascii: ",")) }
                        JSONBytes.appendString(n, to: &buf)
                    }
                    buf.append(UInt8(ascii: "]"))
                }
                buf.append("}\n")
                switch rows.ops[r] {
                case .delete, .rekey: o.deleted += 1
                case .upsert: o.appended += 1
                }
            }
        }
    }

    public func presentKeys(_ s: SyncStream, _ layout: FieldLayout, copyText: [UInt8]) throws {
        var rows = FieldRows(layout: layout)
        try CopyText.forEachRow(copyText) { try rows.appendCopyRow($0) }
        var set = present[s.id] ?? []
        var buf = ByteBuffer(capacity: 256)
        defer { buf.deallocate() }
        rows.withArena { arena in
            for r in 0..<rows.count {
                var key: [JSONValue] = []
                for f in 0..<layout.columns.count {
                    buf.removeAll()
                    if let v = rows.field(r, f, arena) { _ = layout.columns[f].encoding.append(v, to: &buf) } else { buf.append("null") }
                    key.append((try? JSONParser.parse(Array(buf.bytes))) ?? .null)
                }
                set.insert(JSONValue.array(key).jsonText)
            }
        }
        present[s.id] = set
    }

    /// Rewrites the staging file with the last line per key, without keys gone at the source.
    public func prunePresentKeys(_ s: SyncStream) throws -> Int {
        let keep = present.removeValue(forKey: s.id) ?? []
        let f = staging(s)
        try write(f)
        handles[f] = nil
        guard let data = FileManager.default.contents(atPath: path(f)) else { return 0 }
        var last: [String: Int] = [:]
        var lines: [(key: String, text: ArraySlice<UInt8>)] = []
        let bytes = [UInt8](data)
        for line in bytes.split(separator: 0x0a) {
            guard let o = try? JSONParser.parse(Array(line)) else { continue }
            let key = JSONValue.array(s.primaryKey.map { o[$0] ?? .null }).jsonText
            last[key] = lines.count
            lines.append((key, line))
        }
        var out: [UInt8] = []
        var removed = 0
        for (i, l) in lines.enumerated() where last[l.key] == i {
            if keep.contains(l.key) { out += l.text; out.append(0x0a) } else { removed += 1 }
        }
        try Self.writeDurably(out, to: path(f))
        fsyncDirectory()
        // The rewritten file is taken as committed at once (the states stay as they were): a kill
        // before the next commit reconciles again from the same checkpoint, which converges, as
        // the rewrite keeps the last line per key.
        lengths[f] = UInt64(out.count)
        try saveStateFile(committedAssignments)
        return removed
    }

    /// Reload ranges are not replaced in files of records (the rows read again are appended).
    public var replacesKeyRanges: Bool { false }
    public func deleteRange(_ s: SyncStream, _ keys: RowShape, after: [String]?, through: [String]?) throws {}

    /// Records carry their own fields, so a schema change needs nothing here.
    public func schemaChange(_ s: SyncStream, _ change: SchemaChange, type: PostgresType?) throws {}

    public func truncate(_ s: SyncStream) throws -> Int {
        try append(file(s)) { $0.append(Array(#"{"_postgate_truncate":true}"#.utf8) + [0x0a]) }
        return 0
    }

    public func takeOutcomes() -> [StreamID: Outcomes] {
        defer { committedOutcomes = [:] }
        return committedOutcomes
    }

    public func commit(states newStates: [(key: String, message: JSONValue)]) throws {
        if let broken { throw broken }
        for f in Array(pending.keys) { try write(f) }
        for (f, h) in handles {
            do { try h.synchronize() } catch { throw SyncError.destinationFailed("cannot fsync \(path(f)): \(error.localizedDescription)", .system) }
            lengths[f] = h.offsetInFile
        }
        for (from, to) in renames {
            handles[from] = nil
            guard rename(path(from), path(to)) == 0 else {
                throw SyncError.destinationFailed("cannot rename \(path(from)) to \(path(to)): \(String(cString: strerror(errno)))", .system)
            }
            lengths[from] = nil
        }
        renames = []
        for (k, m) in newStates { states[k] = m == .null ? nil : m }
        try saveStateFile(assignments)
        committedAssignments = assignments
        for (k, o) in outcomes { committedOutcomes[k, default: Outcomes()].add(o) }
        outcomes = [:]
    }

    /// Writes the state file: states, committed file lengths and table assignments.
    func saveStateFile(_ assignments: [StreamID: TableAssignment]) throws {
        let doc: JSONValue = ["states": .object(JSONObject(states.keys.sorted().map { ($0, states[$0]!) })),
                              "files": .object(JSONObject(lengths.keys.sorted().map { ($0, .number(String(lengths[$0]!))) })),
                              "tables": .array(assignments.values.sorted { $0.table < $1.table }.map(\.json))]
        var w = JSONWriter()
        w.value(doc)
        try Self.writeDurably(w.bytes, to: path(Self.stateFile))
        fsyncDirectory()
    }

    public func rollback() {
        for (k, _) in pending { pending[k]?.removeAll() }
        renames = []
        outcomes = [:]
        present = [:]
        assignments = committedAssignments
        // Bytes written since the last commit are cut off, so the files end at their committed length.
        for (f, h) in handles {
            let length = lengths[f] ?? 0
            do {
                if try h.seekToEnd() > length { try h.truncate(atOffset: length) } else { try h.seek(toOffset: length) }
            } catch {
                // Lines that cannot be taken back must not be followed by more: the next write fails.
                broken = SyncError.destinationFailed("cannot cut \(path(f)) back to its committed length (\(error.localizedDescription)); rerun to resume from the last commit", .system)
            }
        }
    }

    /// Writes a file by temp file, fsync and rename, so it is either the old or the new content.
    static func writeDurably(_ bytes: [UInt8], to path: String) throws {
        let tmp = path + ".tmp"
        let fd = Glibc.open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw SyncError.destinationFailed("cannot write \(tmp): \(String(cString: strerror(errno)))", .system) }
        defer { close(fd) }
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + off, bytes.count - off) }
            if n < 0 { if errno == EINTR { continue }; throw SyncError.destinationFailed("cannot write \(tmp): \(String(cString: strerror(errno)))", .system) }
            off += n
        }
        guard fsync(fd) == 0, rename(tmp, path) == 0 else {
            throw SyncError.destinationFailed("cannot save \(path): \(String(cString: strerror(errno)))", .system)
        }
    }

    func fsyncDirectory() {
        let fd = Glibc.open(directory.path, O_RDONLY)
        if fd >= 0 { _ = fsync(fd); close(fd) }
    }
}
