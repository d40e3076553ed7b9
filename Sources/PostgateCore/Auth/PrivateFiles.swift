import CPrivateFiles
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A private directory (mode 0700) holding inline key and certificate material as files
/// (mode 0600) for libraries that only take paths.
///
/// The directory is named `postgate-<pid>-XXXXXX` under `TMPDIR`. Every file is overwritten with
/// zeros and removed, and the directory deleted, when the store is released or `removeAll()` runs;
/// `PrivateFilesRegistry` does the same for every live store from signal handlers and at exit, and
/// sweeps directories that runs which were killed left behind.
public final class PrivateFiles: Sendable {
    public let directory: String
    /// The store's slot in the signal-safe table of `CPrivateFiles`.
    private let slot: Int32
    private let released = Atomic<Bool>(false)

    public enum Failure: Error, CustomStringConvertible {
        case cannotCreate(String)
        public var description: String {
            switch self {
            case .cannotCreate(let why): return "cannot create a private directory for key material: \(why)"
            }
        }
    }

    static func reason(_ negativeErrno: Int32) -> String {
        switch -negativeErrno {
        case ENAMETOOLONG: return "the path under TMPDIR is too long"
        case EMFILE: return "too many stores of key material at once"
        default: return String(cString: strerror(-negativeErrno))
        }
    }

    public init() throws(Failure) {
        let template = "\(PrivateFilesRegistry.baseDirectory)/\(PrivateFilesRegistry.prefix)\(getpid())-XXXXXX"
        let slot = postgate_pf_create(template)
        guard slot >= 0 else { throw .cannotCreate(Self.reason(slot)) }
        self.slot = slot
        directory = String(cString: postgate_pf_directory(slot))
    }

    /// Writes `contents` to a new file named `name` and returns its path.
    public func write(name: String, contents: String) throws(Failure) -> String {
        guard !released.load(ordering: .acquiring) else { throw .cannotCreate("the store was already removed") }
        let path = "\(directory)/\(name)"
        // Registered before the file exists, so a signal at any later point finds it.
        let added = postgate_pf_add(slot, path)
        guard added == 0 else { throw .cannotCreate("\(name): \(Self.reason(added))") }
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .cannotCreate("\(name): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var bytes = Array(contents.utf8)
        defer { for k in bytes.indices { bytes[k] = 0 } }
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + off, $0.count - off) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .cannotCreate("\(name): \(String(cString: strerror(errno)))") }
            off += n
        }
        return path
    }

    /// Scrubs and removes every file and the directory. Safe to call more than once.
    public func removeAll() {
        guard !released.exchange(true, ordering: .acquiringAndReleasing) else { return }
        postgate_pf_release(slot)
    }

    deinit { removeAll() }
}

/// Process-wide handling of private directories.
public enum PrivateFilesRegistry {
    /// The start of every private directory's name; the rest is `<pid>-XXXXXX`.
    static let prefix = "postgate-"

    /// Where private directories go: `TMPDIR`, else /tmp.
    public static var baseDirectory: String {
        ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
    }

    /// Overwrites and removes the material of every live store. Async-signal-safe: used by signal
    /// handlers, at exit and on every error exit.
    public static func removeAll() { postgate_pf_scrub_all() }

    /// Removes the private directories a killed run left in `base` (default: `baseDirectory`).
    ///
    /// Only entries named exactly `postgate-<pid>-XXXXXX`, directories (not links) owned by this
    /// user with mode 0700, whose process is gone: no process has that id, or the one that has it
    /// started after the directory last changed (the id was reused). Regular files in it are
    /// overwritten with zeros and removed; anything else keeps the directory. Returns the paths removed.
    @discardableResult
    public static func sweepStale(in base: String? = nil) -> [String] {
        let base = base ?? baseDirectory
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: base) else { return [] }
        var removed: [String] = []
        for name in names {
            guard let pid = ownerPID(name), pid != getpid() else { continue }
            let path = base + "/" + name
            var st = stat()
            guard lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFDIR, st.st_uid == getuid(), st.st_mode & 0o7777 == 0o700,
                  ownerIsGone(pid, directoryChanged: st.st_mtim) else { continue }
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] {
                var est = stat()
                let file = path + "/" + entry
                if lstat(file, &est) == 0, est.st_mode & S_IFMT == S_IFREG { postgate_pf_scrub_file(file) }
            }
            if rmdir(path) == 0 { removed.append(path) }
        }
        return removed
    }

    /// The process id in a name `postgate-<pid>-XXXXXX` (six letters or digits, as mkdtemp makes), else nil.
    static func ownerPID(_ name: String) -> pid_t? {
        guard name.hasPrefix(prefix) else { return nil }
        let parts = name.dropFirst(prefix.count).split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, (1...10).contains(parts[0].count), parts[0].allSatisfy({ $0.isASCII && $0.isNumber }),
              parts[1].count == 6, parts[1].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }),
              let pid = pid_t(parts[0]), pid > 0 else { return nil }
        return pid
    }

    /// True when process `pid` no longer exists, or when the process now holding that id started
    /// after the directory last changed, so cannot have made it.
    static func ownerIsGone(_ pid: pid_t, directoryChanged: timespec) -> Bool {
        if kill(pid, 0) != 0 && errno == ESRCH { return true }
        guard let started = startTime(of: pid) else { return false }
        return started > Double(directoryChanged.tv_sec) + 2
    }

    /// When a process started (seconds since the epoch), from /proc; nil if unknown.
    static func startTime(of pid: pid_t) -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        // Fields after the command name start with field 3 (state); starttime is field 22.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 19, let ticks = Double(fields[19]),
              let bootLine = (try? String(contentsOfFile: "/proc/stat", encoding: .utf8))?.split(separator: "\n").first(where: { $0.hasPrefix("btime ") }),
              let boot = Double(bootLine.dropFirst(6)) else { return nil }
        return boot + ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}
