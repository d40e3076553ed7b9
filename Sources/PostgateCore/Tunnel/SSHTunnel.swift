import CLibSSH2
import CTunnelCipher
import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// One SSH session to a bastion forwarding connections from a loopback listener to a target
/// host and port through direct-tcpip channels. The bastion resolves the target name.
///
/// After `open`, the session is driven by one dedicated thread (libssh2 sessions are not
/// thread-safe); other threads only read its status or ask it to close.
public final class SSHTunnel: @unchecked Sendable {
    /// The loopback port libpq should dial (`hostaddr=127.0.0.1 port=<localPort>`).
    public let localPort: Int
    /// `user@host:port` of the bastion, for messages.
    public let bastion: String
    public let hostKey: ObservedHostKey
    public let target: String

    private let lock = NSLock()
    private var _failure: TunnelError?
    private var _channelError: String?
    private var _done = false
    private let wakeWrite: Int32
    private let finished = DispatchSemaphore(value: 0)

    /// Seconds between keepalives; the bastion counts as dead after three intervals of silence.
    public static let keepaliveInterval = 15

    /// Connects, checks the host key, authenticates and starts forwarding.
    public static func open(_ settings: SSHTunnelSettings, targetHost: String, targetPort: Int, logger: Logger,
                            connectTimeout: Int = 15) throws(TunnelError) -> SSHTunnel {
        let policy = try HostKeyPolicy(setting: settings.hostKey)
        let bastion = "\(settings.user)@\(settings.host):\(settings.port)"
        let (session, key) = try handshake(settings, policy: policy, connectTimeout: connectTimeout)
        try policy.verify(key, bastion: bastion, logger: logger)
        switch settings.authentication {
        case .password(let pw):
            try session.authenticatePassword(user: settings.user, password: pw)
        case .key(let k, let passphrase):
            let userKey: SSHUserKey
            do { userKey = try SSHUserKey.parse(k, passphrase: passphrase) } catch { throw .key(error) }
            try session.authenticateKey(user: settings.user, key: userKey)
        }
        logger.info("SSH tunnel: authenticated to bastion \(bastion) (host key \(key.type) \(key.fingerprint))")
        logger.debug("SSH tunnel: RSA SHA-2 host keys \(["unavailable (libssh2's table not as expected)", "added to libssh2", "native in libssh2"][Int(postgate_hostkey_install_rsa_sha2())])")
        logger.debug("SSH tunnel: AES-CTR keystream \(postgate_tunnel_cipher_active() == 1 ? "made in bulk" : "made per block by libcrypto (bulk cipher not in effect)")")
        return try SSHTunnel(session: session, bastion: bastion, hostKey: key, targetHost: targetHost, targetPort: targetPort, logger: logger)
    }

    /// Connects and completes the SSH handshake, asking for the pinned key's type first. A server
    /// presents one host key per handshake, so for a fingerprint pin (type unknown) each further
    /// handshake leaves out the key types already presented, until the pinned key or none is left.
    static func handshake(_ settings: SSHTunnelSettings, policy: HostKeyPolicy, connectTimeout: Int) throws(TunnelError) -> (LibSSH2Session, ObservedHostKey) {
        var observed: [ObservedHostKey] = []
        while let algorithms = policy.algorithmPreference(excluding: Set(observed.map(\.type))) {
            let session: LibSSH2Session
            do {
                session = try LibSSH2Session(host: settings.host, port: settings.port, hostKeyAlgorithms: algorithms, timeoutSeconds: connectTimeout)
            } catch {
                // After a refused key, failing to negotiate means no host-key algorithm is left in
                // common (or libssh2 knows none of those left): the bastion has no other key to offer.
                var negotiation = false
                if case .handshake = error { negotiation = true }
                if case .local = error { negotiation = true }
                guard negotiation, !observed.isEmpty else { throw error }
                break
            }
            guard let key = session.hostKey() else { throw .handshake(reason: "the bastion presented no host key") }
            if policy.accepts(key) { return (session, key) }
            observed.append(key)
            if !policy.retriesOtherKeyTypes { break }
        }
        throw policy.mismatch(observed: observed)
    }

    private init(session: LibSSH2Session, bastion: String, hostKey: ObservedHostKey, targetHost: String, targetPort: Int, logger: Logger) throws(TunnelError) {
        let listener = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard listener >= 0 else { throw .local(reason: "cannot create a listening socket: \(String(cString: strerror(errno)))") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(listener, 64) == 0 else {
            Glibc.close(listener)
            throw .local(reason: "cannot listen on 127.0.0.1: \(String(cString: strerror(errno)))")
        }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &len) } }
        localPort = Int(UInt16(bigEndian: addr.sin_port))
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else {
            Glibc.close(listener)
            throw .local(reason: "cannot create a pipe")
        }
        wakeWrite = fds[1]
        self.bastion = bastion
        self.hostKey = hostKey
        self.target = "\(targetHost):\(targetPort)"
        _ = fcntl(listener, F_SETFL, fcntl(listener, F_GETFL) | O_NONBLOCK)
        _ = fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK)
        libssh2_session_set_blocking(session.handle, 0)
        session.context.skipRecvUntilPolled = true
        libssh2_keepalive_config(session.handle, 1, UInt32(Self.keepaliveInterval))
        let loop = ForwardLoop(session: session, listener: listener, wake: fds[0], targetHost: targetHost, targetPort: targetPort,
                               localPort: localPort, tunnel: self, logger: logger)
        let box = UncheckedBox(loop)
        let thread = Thread { box.value.run() }
        thread.name = "postgate-ssh-tunnel"
        thread.start()
    }

    deinit { Glibc.close(wakeWrite) }

    /// Why the tunnel stopped, if it did.
    public var failure: TunnelError? { lock.withLock { _failure } }

    public var isAlive: Bool { lock.withLock { !_done } }

    /// Takes the reason the last forwarded connection could not be opened, if any.
    public func takeChannelError() -> String? {
        lock.withLock {
            defer { _channelError = nil }
            return _channelError
        }
    }

    /// Stops forwarding, closes every forwarded connection and the SSH session, and waits for that.
    public func close() {
        let alive = lock.withLock { !_done }
        guard alive else { return }
        var b: UInt8 = 1
        _ = write(wakeWrite, &b, 1)
        finished.wait()
    }

    fileprivate func recordChannelError(_ message: String) { lock.withLock { _channelError = message } }

    fileprivate func recordFailure(_ failure: TunnelError?) { lock.withLock { _failure = failure } }

    /// Marks the tunnel finished (the failure, if any, was recorded first) and wakes `close()`.
    fileprivate func finish() {
        lock.withLock { _done = true }
        finished.signal()
    }
}

/// Linux POLLRDHUP (peer closed its side), which Glibc's module does not export.
private let pollRDHUP: Int16 = 0x2000

struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// The forwarding loop: everything that touches the libssh2 session runs here, on one thread.
private final class ForwardLoop {
    final class Client {
        let fd: Int32
        var channel: LibSSH2Channel?
        var toChannel: [UInt8] = []
        var toChannelOffset = 0
        var toClient: [UInt8] = []
        var toClientOffset = 0
        var clientEOF = false
        var channelEOF = false
        var eofSent = false
        var dead = false
        /// Whether the last poll reported the client socket readable (reads stop at EAGAIN).
        var readable = true
        init(fd: Int32) { self.fd = fd }
        var pendingToChannel: Int { toChannel.count - toChannelOffset }
        var pendingToClient: Int { toClient.count - toClientOffset }
    }

    /// Released (disconnect and free) on this thread before the tunnel reports it has finished,
    /// so no libssh2 or OpenSSL call can outlive `close()`.
    var session: LibSSH2Session!
    let listener: Int32
    let wake: Int32
    let targetHost: String
    let targetPort: Int
    let localPort: Int
    let tunnel: SSHTunnel
    let logger: Logger
    var clients: [Client] = []
    var waiting: [Client] = []
    var opening: Client?
    var buffer = [UInt8](repeating: 0, count: 256 * 1024)
    var nextKeepalive: Int32 = 0

    init(session: LibSSH2Session, listener: Int32, wake: Int32, targetHost: String, targetPort: Int, localPort: Int, tunnel: SSHTunnel, logger: Logger) {
        self.session = session
        self.listener = listener
        self.wake = wake
        self.targetHost = targetHost
        self.targetPort = targetPort
        self.localPort = localPort
        self.tunnel = tunnel
        self.logger = logger
    }

    static let fatalCodes: Set<Int32> = [
        LIBSSH2_ERROR_SOCKET_RECV, LIBSSH2_ERROR_SOCKET_SEND, LIBSSH2_ERROR_SOCKET_DISCONNECT, LIBSSH2_ERROR_SOCKET_TIMEOUT,
        LIBSSH2_ERROR_KEX_FAILURE, LIBSSH2_ERROR_DECRYPT, LIBSSH2_ERROR_TIMEOUT, LIBSSH2_ERROR_BAD_USE, LIBSSH2_ERROR_PROTO,
    ]

    func run() {
        var failure: TunnelError?
        do {
            try loop()
        } catch {
            failure = error
            logger.error("\(error)")
        }
        // Record why before closing the forwarded connections, so their users can tell.
        tunnel.recordFailure(failure)
        // Close every forwarded connection now, so their users see the end at once.
        for c in clients + waiting + [opening].compactMap({ $0 }) {
            Glibc.close(c.fd)
            c.channel = nil
        }
        clients = []
        waiting = []
        opening = nil
        Glibc.close(listener)
        Glibc.close(wake)
        session = nil
        tunnel.finish()
    }

    private func lost(_ reason: String) -> TunnelError { .lost(bastion: tunnel.bastion, reason: reason) }

    private func check(_ rc: Int) throws(TunnelError) {
        if rc < 0 && Self.fatalCodes.contains(Int32(rc)) {
            throw lost(rc == Int(LIBSSH2_ERROR_SOCKET_DISCONNECT) || rc == Int(LIBSSH2_ERROR_SOCKET_RECV)
                ? "the bastion closed the connection" : session.lastError(Int32(rc)))
        }
    }

    private func loop() throws(TunnelError) {
        let deadAfter = Double(SSHTunnel.keepaliveInterval * 3 + 5)
        while true {
            var progress = false
            if wakeReadable, drainWake() { return }
            if listenerReadable { acceptClients() }
            wakeReadable = false
            listenerReadable = false
            progress = try openChannels() || progress
            for c in clients where !c.dead { progress = try pump(c) || progress }
            reap()
            var next: Int32 = 0
            let rc = libssh2_keepalive_send(session.handle, &next)
            if rc != 0 && rc != LIBSSH2_ERROR_EAGAIN { try check(Int(rc)) }
            nextKeepalive = max(1, next)
            if monotonicSeconds() - session.context.lastReceive > deadAfter {
                throw lost("no answer from the bastion for \(Int(deadAfter)) s (keepalives unanswered)")
            }
            if !progress {
                try waitForEvents()
                lastMoved = 0
            }
        }
    }

    /// True when asked to stop.
    private func drainWake() -> Bool {
        var b: UInt8 = 0
        return read(wake, &b, 1) == 1
    }

    private func acceptClients() {
        while true {
            let fd = accept(listener, nil, nil)
            if fd < 0 { return }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            var big: Int32 = 4 << 20
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, socklen_t(MemoryLayout<Int32>.size))
            waiting.append(Client(fd: fd))
        }
    }

    /// Opens channels one at a time (libssh2 keeps one pending open per session).
    private func openChannels() throws(TunnelError) -> Bool {
        var progress = false
        while true {
            if opening == nil {
                guard !waiting.isEmpty else { return progress }
                opening = waiting.removeFirst()
            }
            guard let c = opening else { return progress }
            let ch = libssh2_channel_direct_tcpip_ex(session.handle, targetHost, Int32(targetPort), "127.0.0.1", Int32(localPort))
            if let ch {
                c.channel = LibSSH2Channel(ch)
                clients.append(c)
                opening = nil
                progress = true
                continue
            }
            let err = session.lastErrno
            if err == LIBSSH2_ERROR_EAGAIN { return progress }
            try check(Int(err))
            let message = session.lastError(err)
            let reason: String
            if message.contains("administratively prohibited") {
                reason = "port forwarding is disabled for this user on the bastion (sshd AllowTcpForwarding / PermitOpen); ask its administrator to allow forwarding to \(targetHost):\(targetPort)"
            } else if message.contains("connect failed") {
                reason = "the bastion could not connect to \(targetHost):\(targetPort) (is the name resolvable from the bastion, and the database listening?) [check settings `host` / `port`]"
            } else {
                reason = message
            }
            tunnel.recordChannelError(reason)
            logger.error("SSH tunnel: \(reason)")
            Glibc.close(c.fd)
            opening = nil
            progress = true
        }
    }

    /// Moves data both ways for one client; true if anything moved.
    private func pump(_ c: Client) throws(TunnelError) -> Bool {
        guard let ch = c.channel?.handle else { return false }
        var progress = false
        // Client → bastion.
        if c.readable && !c.clientEOF && c.pendingToChannel < 256 * 1024 {
            let n = buffer.withUnsafeMutableBytes { read(c.fd, $0.baseAddress, $0.count) }
            if n > 0 {
                if c.toChannelOffset == c.toChannel.count { c.toChannel.removeAll(keepingCapacity: true); c.toChannelOffset = 0 }
                c.toChannel.append(contentsOf: buffer[0..<n])
                progress = true
            } else if n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) {
                c.clientEOF = true
                progress = true
            } else {
                c.readable = false
            }
        }
        while c.pendingToChannel > 0 {
            let w = c.toChannel.withUnsafeBytes { p in
                libssh2_channel_write_ex(ch, 0, p.baseAddress!.advanced(by: c.toChannelOffset).assumingMemoryBound(to: CChar.self), c.pendingToChannel)
            }
            if w > 0 { c.toChannelOffset += w; progress = true; continue }
            if w == Int(LIBSSH2_ERROR_EAGAIN) { break }
            try check(w)
            c.dead = true
            return true
        }
        if c.clientEOF && c.pendingToChannel == 0 && !c.eofSent {
            let rc = libssh2_channel_send_eof(ch)
            if rc == 0 { c.eofSent = true; progress = true } else if rc != LIBSSH2_ERROR_EAGAIN { try check(Int(rc)); c.eofSent = true }
        }
        // Bastion → client.
        while true {
            if c.pendingToClient > 0 {
                let n = c.toClient.withUnsafeBytes { p in write(c.fd, p.baseAddress!.advanced(by: c.toClientOffset), c.pendingToClient) }
                if n > 0 { c.toClientOffset += n; progress = true }
                else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { break }
                else { c.dead = true; return true }
                if c.pendingToClient > 0 { break }
                c.toClient.removeAll(keepingCapacity: true)
                c.toClientOffset = 0
            }
            if c.channelEOF { break }
            let r = buffer.withUnsafeMutableBytes { libssh2_channel_read_ex(ch, 0, $0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count) }
            if r > 0 {
                progress = true
                lastMoved += r
                let n = buffer.withUnsafeBytes { write(c.fd, $0.baseAddress, r) }
                let written = max(0, n)
                if n < 0 && errno != EAGAIN && errno != EWOULDBLOCK { c.dead = true; return true }
                if written < r {
                    c.toClient.append(contentsOf: buffer[written..<r])
                    break
                }
                continue
            }
            if r == 0 || r == Int(LIBSSH2_ERROR_EAGAIN) {
                if libssh2_channel_eof(ch) == 1 { c.channelEOF = true; progress = true }
                break
            }
            try check(r)
            c.dead = true
            return true
        }
        // Closed only once everything the bastion sent has reached the client.
        if c.channelEOF && c.pendingToClient == 0 { c.dead = true; progress = true }
        return progress
    }

    private func reap() {
        clients.removeAll { c in
            guard c.dead else { return false }
            Glibc.close(c.fd)
            if let ch = c.channel?.handle { _ = libssh2_channel_close(ch) }
            c.channel = nil
            return true
        }
    }

    var bulkMode = false
    /// What the last poll reported for the listener and the wake pipe (true before the first poll).
    var listenerReadable = true
    var wakeReadable = true
    /// Bytes moved from the bastion to clients since the last wait.
    var lastMoved = 0

    /// Bytes waiting on the bastion socket while no channel is open (-1 when not idle).
    var idleUnread = -1

    /// The poll set, rebuilt in place on every wait.
    var fds: [pollfd] = []

    private func waitForEvents() throws(TunnelError) {
        fds.removeAll(keepingCapacity: true)
        fds.append(pollfd(fd: listener, events: Int16(POLLIN), revents: 0))
        fds.append(pollfd(fd: wake, events: Int16(POLLIN), revents: 0))
        let dirs = libssh2_session_block_directions(session.handle)
        var sshEvents: Int16 = pollRDHUP
        let idle = clients.isEmpty && opening == nil && waiting.isEmpty
        if idle {
            // With no channel nothing reads the socket, so keepalive replies wait there until the next
            // connection. Count their arrival as life, and wait for readability only while none is queued.
            var n: Int32 = 0
            _ = ioctl(session.socket, UInt(FIONREAD), &n)
            if Int(n) > idleUnread && idleUnread >= 0 { session.context.lastReceive = monotonicSeconds() }
            idleUnread = Int(n)
            if n == 0 { sshEvents |= Int16(POLLIN) }
            fds.append(pollfd(fd: session.socket, events: sshEvents, revents: 0))
            _ = poll(&fds, nfds_t(fds.count), Int32(min(1000, Int(nextKeepalive) * 1000)))
            listenerReadable = fds[0].revents != 0
            wakeReadable = fds[1].revents != 0
            session.context.socketDrained = false
            if fds[2].revents & (Int16(POLLERR | POLLHUP | POLLNVAL) | pollRDHUP) != 0 {
                throw lost("the bastion closed the connection")
            }
            if fds[2].revents & Int16(POLLIN) != 0 { session.context.lastReceive = monotonicSeconds() }
            return
        }
        idleUnread = -1
        let blockedOnClients = !clients.isEmpty && clients.allSatisfy { $0.pendingToClient > 0 } && opening == nil
        if !blockedOnClients || dirs & LIBSSH2_SESSION_BLOCK_INBOUND != 0 { sshEvents |= Int16(POLLIN) }
        // block_directions keeps the direction of the last EAGAIN; wait for writability only while
        // something is actually waiting to be sent, or the poll would return at once forever.
        let wantsToSend = opening != nil || clients.contains { $0.pendingToChannel > 0 || ($0.clientEOF && !$0.eofSent) }
        if dirs & LIBSSH2_SESSION_BLOCK_OUTBOUND != 0 && wantsToSend { sshEvents |= Int16(POLLOUT) }
        fds.append(pollfd(fd: session.socket, events: sshEvents, revents: 0))
        for c in clients {
            var ev: Int16 = 0
            if !c.clientEOF && c.pendingToChannel < 256 * 1024 { ev |= Int16(POLLIN) }
            if c.pendingToClient > 0 { ev |= Int16(POLLOUT) }
            fds.append(pollfd(fd: c.fd, events: ev, revents: 0))
        }
        var timeout = Int32(min(1000, Int(nextKeepalive) * 1000))
        // In bulk transfer (the last wake-up moved a lot), let data accumulate: wake when 32 KiB are
        // waiting or after 1 ms, instead of once per packet.
        let bulk = lastMoved >= 64 * 1024
        if bulk != bulkMode {
            var low: Int32 = bulk ? 32 * 1024 : 1
            setsockopt(session.socket, SOL_SOCKET, SO_RCVLOWAT, &low, socklen_t(MemoryLayout<Int32>.size))
            bulkMode = bulk
        }
        if bulkMode { timeout = 1 }
        // Bytes already read ahead from the bastion are not visible to poll: do not sleep on them.
        if session.context.buffered > 0 && !blockedOnClients { timeout = 0 }
        _ = poll(&fds, nfds_t(fds.count), opening != nil && timeout != 0 ? 20 : timeout)
        listenerReadable = fds[0].revents != 0
        wakeReadable = fds[1].revents != 0
        session.context.socketDrained = false
        for (i, c) in clients.enumerated() where fds[3 + i].revents != 0 { c.readable = true }
        if fds[2].revents & Int16(POLLERR | POLLNVAL) != 0 {
            throw lost("the connection to the bastion failed")
        }
    }
}
