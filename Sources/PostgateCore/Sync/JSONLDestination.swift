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
/// next start, so nothing is duplicated.
public final class JSONLDestination: SyncDestination {
    let directory: URL
    let logger: Logger
    var states: [String: JSONValue] = [:]
    /// Committed lengths of the files being appended to.
    var lengths: [String: UInt64] = [:]
    var pending: [String: [UInt8]] = [:]
    var handles: [String: FileHandle] = [:]
    var renames: [(from: String, to: String)] = []

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

    static func file(_ s: SyncStream) -> String { DestinationNaming.table(s) + ".jsonl" }
    static func staging(_ s: SyncStream) -> String { file(s) + ".loading" }

    public func committedState() throws -> [JSONValue] { states.keys.sorted().compactMap { states[$0] } }

    public func prepare(_ streams: [SyncStream]) throws {}

    public func hasStaging(_ s: SyncStream) -> Bool { lengths[Self.staging(s)] != nil && FileManager.default.fileExists(atPath: path(Self.staging(s))) }

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

    func append(_ file: String, _ line: JSONValue) throws {
        if let broken { throw broken }
        var w = JSONWriter()
        w.value(line)
        w.raw(0x0a)
        pending[file, default: []].append(contentsOf: w.bytes)
        if lengths[file] == nil { _ = try handle(file) }
        if pending[file]!.count >= 1 << 20 { try write(file) }
    }

    func write(_ file: String) throws {
        guard let bytes = pending[file], !bytes.isEmpty else { return }
        let h = try handle(file)
        do { try h.write(contentsOf: bytes) } catch {
            throw SyncError.destinationFailed("cannot write \(path(file)): \(error.localizedDescription)", .system)
        }
        pending[file] = []
    }

    public func startFullRefresh(_ s: SyncStream, resume: Bool) throws {
        let f = Self.staging(s)
        if resume && hasStaging(s) { return }
        handles[f] = nil
        pending[f] = nil
        _ = unlink(path(f))
        lengths[f] = 0
        _ = try handle(f)
    }

    public func load(_ s: SyncStream, _ r: SyncRecord) throws {
        try append(Self.staging(s), .object(r.data))
    }

    public func finishFullRefresh(_ s: SyncStream) throws {
        renames.append((Self.staging(s), Self.file(s)))
    }

    public func merge(_ s: SyncStream, _ r: SyncRecord) throws -> ApplyOutcome {
        var data = r.data
        if !r.omitted.isEmpty { data["_postgate_unchanged"] = .array(r.omitted.sorted().map { .string($0) }) }
        try append(Self.file(s), .object(data))
        return r.deleted ? .deleted : .appended
    }

    public func truncate(_ s: SyncStream) throws -> Int {
        try append(Self.file(s), ["_postgate_truncate": true])
        return 0
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
        let doc: JSONValue = ["states": .object(JSONObject(states.keys.sorted().map { ($0, states[$0]!) })),
                              "files": .object(JSONObject(lengths.keys.sorted().map { ($0, .number(String(lengths[$0]!))) }))]
        var w = JSONWriter()
        w.value(doc)
        try Self.writeDurably(w.bytes, to: path(Self.stateFile))
        fsyncDirectory()
    }

    public func rollback() {
        pending = [:]
        renames = []
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
