import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A private directory (mode 0700) holding inline key and certificate material as files
/// (mode 0600) for libraries that only take paths. Every file is overwritten with zeros and
/// removed, and the directory deleted, when the store is released or `removeAll()` runs.
public final class PrivateFiles: @unchecked Sendable {
    public let directory: String
    private var paths: [String] = []
    private let lock = NSLock()

    public enum Failure: Error, CustomStringConvertible {
        case cannotCreate(String)
        public var description: String {
            switch self {
            case .cannotCreate(let why): return "cannot create a private directory for key material: \(why)"
            }
        }
    }

    public init() throws(Failure) {
        let base = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array("\(base)/postgate-XXXXXX".utf8CString)
        guard let p = mkdtemp(&template) else { throw .cannotCreate(String(cString: strerror(errno))) }
        directory = String(cString: p)
        chmod(directory, 0o700)
        PrivateFilesRegistry.shared.register(self)
    }

    /// Writes `contents` to a new file named `name` and returns its path.
    public func write(name: String, contents: String) throws(Failure) -> String {
        let path = "\(directory)/\(name)"
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw .cannotCreate("\(name): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var bytes = Array(contents.utf8)
        defer { for k in bytes.indices { bytes[k] = 0 } }
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + off, $0.count - off) }
            guard n > 0 else { throw .cannotCreate("\(name): \(String(cString: strerror(errno)))") }
            off += n
        }
        lock.withLock { paths.append(path) }
        return path
    }

    /// Scrubs and removes every file and the directory. Safe to call more than once.
    public func removeAll() {
        let victims: [String] = lock.withLock {
            let v = paths
            paths = []
            return v
        }
        for p in victims { Self.scrub(p) }
        rmdir(directory)
    }

    /// Async-signal-tolerant cleanup used on SIGINT/SIGTERM.
    static func scrub(_ path: String) {
        let fd = open(path, O_WRONLY | O_NOFOLLOW)
        if fd >= 0 {
            var st = stat()
            if fstat(fd, &st) == 0 && st.st_size > 0 {
                let zeros = [UInt8](repeating: 0, count: Int(st.st_size))
                _ = zeros.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                fsync(fd)
            }
            close(fd)
        }
        unlink(path)
    }

    deinit {
        removeAll()
        PrivateFilesRegistry.shared.unregister(self)
    }
}

/// Tracks live stores so a signal handler can clean them before the process exits.
public final class PrivateFilesRegistry: @unchecked Sendable {
    public static let shared = PrivateFilesRegistry()
    private let lock = NSLock()
    private var stores: [ObjectIdentifier: PrivateFiles] = [:]

    func register(_ s: PrivateFiles) { lock.withLock { stores[ObjectIdentifier(s)] = s } }

    func unregister(_ s: PrivateFiles) { lock.withLock { _ = stores.removeValue(forKey: ObjectIdentifier(s)) } }

    /// Removes the material of every live store.
    public func removeAll() {
        let all = lock.withLock { Array(stores.values) }
        for s in all { s.removeAll() }
    }
}
