import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Step-by-step reachability checks used by `check` to say where a connection fails.
public enum NetworkProbe {
    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        case nameResolution(host: String, reason: String)
        case tcp(address: String, port: Int, reason: String)

        public var description: String {
            switch self {
            case .nameResolution(let host, let reason): return "could not resolve host name \"\(host)\": \(reason)"
            case .tcp(let address, let port, let reason): return "could not open a TCP connection to \(address) port \(port): \(reason)"
            }
        }
    }

    /// Resolves a host name to numeric addresses (IPv4 and IPv6).
    public static func resolve(host: String) throws(Failure) -> [String] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, nil, &hints, &res)
        guard rc == 0, let first = res else {
            throw .nameResolution(host: host, reason: String(cString: gai_strerror(rc)))
        }
        defer { freeaddrinfo(first) }
        var out: [String] = []
        var cur: UnsafeMutablePointer<addrinfo>? = first
        while let ai = cur {
            var buf = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(ai.pointee.ai_addr, ai.pointee.ai_addrlen, &buf, socklen_t(buf.count), nil, 0, NI_NUMERICHOST) == 0 {
                let s = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if !out.contains(s) { out.append(s) }
            }
            cur = ai.pointee.ai_next
        }
        return out
    }

    /// Opens and closes a TCP connection to a numeric address, within `timeout` seconds.
    public static func connect(address: String, port: Int, timeout: Double) throws(Failure) {
        var hints = addrinfo()
        hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(address, String(port), &hints, &res) == 0, let ai = res else {
            throw .tcp(address: address, port: port, reason: "not a numeric address")
        }
        defer { freeaddrinfo(ai) }
        let fd = socket(ai.pointee.ai_family, ai.pointee.ai_socktype, ai.pointee.ai_protocol)
        guard fd >= 0 else { throw .tcp(address: address, port: port, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        if Glibc.connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0 { return }
        guard errno == EINPROGRESS else { throw .tcp(address: address, port: port, reason: String(cString: strerror(errno))) }
        var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        let ready = poll(&pfd, 1, Int32(timeout * 1000))
        if ready == 0 { throw .tcp(address: address, port: port, reason: "timed out after \(Int(timeout)) s (a firewall may be dropping packets)") }
        var soError: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &len)
        if soError != 0 { throw .tcp(address: address, port: port, reason: String(cString: strerror(soError))) }
    }
}
