import Foundation
import Logging

/// Keeps one SSH tunnel per bastion and target for the whole process, rebuilding a tunnel that
/// died when the next connection asks for it. `shutdown()` closes them all.
public final class TunnelManager: @unchecked Sendable {
    public static let shared = TunnelManager()

    private let lock = NSLock()
    private var tunnels: [String: SSHTunnel] = [:]

    /// A live tunnel forwarding to `targetHost:targetPort` through the configured bastion.
    public func tunnel(for s: SSHTunnelSettings, targetHost: String, targetPort: Int, logger: Logger) throws(TunnelError) -> SSHTunnel {
        let key = "\(s.user)@\(s.host):\(s.port)>\(targetHost):\(targetPort)"
        lock.lock()
        defer { lock.unlock() }
        if let t = tunnels[key] {
            if t.isAlive { return t }
            logger.warning("SSH tunnel: rebuilding the tunnel through \(t.bastion) after it was lost\(t.failure.map { ": \($0)" } ?? "")")
            tunnels[key] = nil
        }
        let t = try SSHTunnel.open(s, targetHost: targetHost, targetPort: targetPort, logger: logger)
        tunnels[key] = t
        return t
    }

    /// Closes every tunnel and the connections forwarded through them.
    public func shutdown() {
        let all = lock.withLock { () -> [SSHTunnel] in
            defer { tunnels = [:] }
            return Array(tunnels.values)
        }
        for t in all { t.close() }
    }
}
