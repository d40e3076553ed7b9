import CLibSSH2
import CTunnelCipher
import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// State shared with libssh2's C callbacks through the session's abstract pointer.
final class SessionContext {
    /// Monotonic seconds of the last byte received from the bastion.
    var lastReceive = monotonicSeconds()
    var password: [UInt8] = []
    var signingKey: PrivateKey?
    var signingDigest: PrivateKey.Digest = .sha512
    /// Read-ahead for the bastion socket. libssh2 1.10 asks for at most 16 KiB per recv; one
    /// syscall here fills up to 256 KiB and later asks are served from memory.
    let readAhead = UnsafeMutableRawPointer.allocate(byteCount: SessionContext.readAheadCapacity, alignment: 16)
    var readStart = 0
    var readEnd = 0
    static let readAheadCapacity = 256 * 1024
    /// Bytes received from the bastion that libssh2 has not taken yet.
    var buffered: Int { readEnd - readStart }
    /// Set by the forwarding loop (non-blocking use only): after a receive that emptied the socket,
    /// answer EAGAIN without asking the kernel again until the loop has polled the socket.
    var skipRecvUntilPolled = false
    var socketDrained = false

    deinit { readAhead.deallocate() }
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

private let libssh2Initialised: Bool = {
    // Teaches libssh2 1.10 the RSA SHA-2 host-key algorithms before any session (see tunnel_hostkey.h).
    _ = postgate_hostkey_install_rsa_sha2()
    return libssh2_init(0) == 0
}()

/// Owns one libssh2 session and its TCP socket; disconnects and frees both when released.
final class LibSSH2Session {
    let handle: OpaquePointer
    let socket: Int32
    let context = SessionContext()

    /// Connects to the bastion and completes the SSH handshake (blocking).
    init(host: String, port: Int, hostKeyAlgorithms: String, timeoutSeconds: Int) throws(TunnelError) {
        _ = libssh2Initialised
        let fd = try Self.dial(host: host, port: port, timeout: Double(timeoutSeconds))
        let ctx = Unmanaged.passUnretained(context).toOpaque()
        guard let s = libssh2_session_init_ex(nil, nil, nil, ctx) else {
            close(fd)
            throw .local(reason: "libssh2 could not allocate a session")
        }
        handle = s
        socket = fd
        libssh2_session_set_timeout(s, timeoutSeconds * 1000)
        libssh2_session_callback_set(s, LIBSSH2_CALLBACK_RECV, unsafeBitCast(recvCallback, to: UnsafeMutableRawPointer.self))
        // libssh2 drops names it does not know and fails only when none is left.
        guard libssh2_session_method_pref(s, LIBSSH2_METHOD_HOSTKEY, hostKeyAlgorithms) == 0 else {
            // deinit frees the session and closes the socket.
            throw .local(reason: "libssh2 supports none of the host-key algorithms \(hostKeyAlgorithms): \(lastError())")
        }
        // libssh2 1.10 runs its cipher one 16-byte block per call, so the cipher's own cost matters:
        // AES-128 has 10 rounds against AES-256's 14. All three are in OpenSSH's default set.
        for method in [LIBSSH2_METHOD_CRYPT_CS, LIBSSH2_METHOD_CRYPT_SC] {
            _ = libssh2_session_method_pref(s, method, Self.cipherPreference)
        }
        libssh2_session_set_blocking(s, 1)
        let rc = libssh2_session_handshake(s, fd)
        guard rc == 0 else { throw .handshake(reason: lastError(rc)) }
    }

    /// Ciphers offered to the bastion, cheapest first; CBC and arcfour are never offered.
    static let cipherPreference = "aes128-ctr,aes192-ctr,aes256-ctr"

    deinit {
        libssh2_session_set_blocking(handle, 0)
        _ = libssh2_session_disconnect_ex(handle, SSH_DISCONNECT_BY_APPLICATION, "postgate closing", "")
        libssh2_session_free(handle)
        close(socket)
        Self.scrub(&context.password)
    }

    static func scrub(_ bytes: inout [UInt8]) {
        for i in bytes.indices { bytes[i] = 0 }
    }

    /// The last libssh2 error message (never contains secrets).
    func lastError(_ rc: Int32? = nil) -> String {
        var msg: UnsafeMutablePointer<CChar>?
        var len: Int32 = 0
        let code = libssh2_session_last_error(handle, &msg, &len, 0)
        let text = msg.map { String(cString: $0) } ?? ""
        return text.isEmpty ? "libssh2 error \(rc ?? code)" : text
    }

    var lastErrno: Int32 { libssh2_session_last_errno(handle) }

    /// The server's host key.
    func hostKey() -> ObservedHostKey? {
        var len = 0
        var type: Int32 = 0
        guard let p = libssh2_session_hostkey(handle, &len, &type), len > 0 else { return nil }
        let blob = Array(UnsafeRawBufferPointer(start: p, count: len))
        var r = SSHWireReader(blob)
        let name = r.string().map { String(decoding: $0, as: UTF8.self) } ?? "unknown"
        return ObservedHostKey(type: name, blob: blob)
    }

    /// Authentication methods the server offers for `user` (may authenticate with "none").
    func authMethods(user: String) -> [String] {
        guard let list = libssh2_userauth_list(handle, user, UInt32(user.utf8.count)) else { return [] }
        return String(cString: list).split(separator: ",").map(String.init)
    }

    var isAuthenticated: Bool { libssh2_userauth_authenticated(handle) == 1 }

    func authenticatePassword(user: String, password: Secret) throws(TunnelError) {
        let methods = authMethods(user: user)
        if isAuthenticated { return }
        context.password = Array(password.exposedValue.utf8)
        defer { Self.scrub(&context.password); context.password = [] }
        if methods.contains("password") {
            let rc = password.exposedValue.withCString { p in
                libssh2_userauth_password_ex(handle, user, UInt32(user.utf8.count), p, UInt32(strlen(p)), nil)
            }
            if rc == 0 { return }
            throw .authentication(user: user, method: "password", reason: rc == LIBSSH2_ERROR_AUTHENTICATION_FAILED ? "wrong user name or password" : lastError(rc))
        }
        if methods.contains("keyboard-interactive") {
            let rc = libssh2_userauth_keyboard_interactive_ex(handle, user, UInt32(user.utf8.count), kbdintCallback)
            if rc == 0 { return }
            throw .authentication(user: user, method: "password", reason: "wrong user name or password")
        }
        throw .authentication(user: user, method: "password", reason: "the bastion does not accept passwords (it offers: \(methods.joined(separator: ", ")))")
    }

    func authenticateKey(user: String, key: SSHUserKey) throws(TunnelError) {
        let methods = authMethods(user: user)
        if isAuthenticated { return }
        guard methods.contains("publickey") else {
            throw .authentication(user: user, method: "public key", reason: "the bastion does not accept keys (it offers: \(methods.joined(separator: ", ")))")
        }
        switch key {
        case .rsa(let pkey):
            context.signingKey = pkey
            defer { context.signingKey = nil }
            var lastRC: Int32 = 0
            for (alg, digest) in [("rsa-sha2-512", PrivateKey.Digest.sha512), ("rsa-sha2-256", .sha256)] {
                guard let blob = SSHUserKey.rsaBlob(pkey, algorithm: alg) else { throw .key(.unreadable(setting: SSHUserKey.setting, detail: "not an RSA key")) }
                context.signingDigest = digest
                var abstract: UnsafeMutableRawPointer? = Unmanaged.passUnretained(context).toOpaque()
                lastRC = blob.withUnsafeBufferPointer { b in
                    libssh2_userauth_publickey(handle, user, b.baseAddress, b.count, rsaSignCallback, &abstract)
                }
                if lastRC == 0 { return }
                if lastRC != LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED && lastRC != LIBSSH2_ERROR_AUTHENTICATION_FAILED { break }
            }
            throw .authentication(user: user, method: "public key", reason: lastRC == LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED || lastRC == LIBSSH2_ERROR_AUTHENTICATION_FAILED
                ? "the key is not in the user's authorized_keys on the bastion" : lastError(lastRC))
        case .libssh2(let text, let passphrase, let type):
            let bytes = Array(text.utf8)
            let rc: Int32 = bytes.withUnsafeBufferPointer { b in
                b.withMemoryRebound(to: CChar.self) { c in
                    (passphrase?.exposedValue ?? "").withCString { pass in
                        libssh2_userauth_publickey_frommemory(handle, user, user.utf8.count, nil, 0, c.baseAddress, c.count, passphrase == nil ? nil : pass)
                    }
                }
            }
            if rc == 0 { return }
            let message = lastError(rc)
            if message.contains("unpack") || message.contains("correct password") || message.lowercased().contains("passphrase") {
                throw .key(.wrongPassphrase(setting: SSHUserKey.setting))
            }
            if rc == LIBSSH2_ERROR_FILE || rc == LIBSSH2_ERROR_METHOD_NOT_SUPPORTED {
                if passphrase != nil || text.contains("ENCRYPTED") { throw .key(.wrongPassphrase(setting: SSHUserKey.setting)) }
                throw .key(.unsupported(setting: SSHUserKey.setting, detail: "this \(type) key could not be loaded (\(lastError(rc)))"))
            }
            throw .authentication(user: user, method: "public key", reason: rc == LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED || rc == LIBSSH2_ERROR_AUTHENTICATION_FAILED
                ? "the key is not in the user's authorized_keys on the bastion" : lastError(rc))
        }
    }

    /// Opens a TCP connection within `timeout` seconds, trying each address of `host`.
    static func dial(host: String, port: Int, timeout: Double) throws(TunnelError) -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &res)
        guard rc == 0, let first = res else { throw .resolve(host: host, reason: String(cString: gai_strerror(rc))) }
        defer { freeaddrinfo(first) }
        var lastReason = "no address"
        var cur: UnsafeMutablePointer<addrinfo>? = first
        while let ai = cur {
            cur = ai.pointee.ai_next
            let fd = Glibc.socket(ai.pointee.ai_family, ai.pointee.ai_socktype, ai.pointee.ai_protocol)
            if fd < 0 { continue }
            let flags = fcntl(fd, F_GETFL)
            _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
            var ok = Glibc.connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0
            if !ok && errno == EINPROGRESS {
                var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                if poll(&pfd, 1, Int32(timeout * 1000)) == 1 {
                    var err: Int32 = 0
                    var len = socklen_t(MemoryLayout<Int32>.size)
                    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
                    if err == 0 { ok = true } else { lastReason = String(cString: strerror(err)) }
                } else {
                    lastReason = "timed out after \(Int(timeout)) s"
                }
            } else if !ok {
                lastReason = String(cString: strerror(errno))
            }
            if ok {
                _ = fcntl(fd, F_SETFL, flags)
                var one: Int32 = 1
                setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, socklen_t(MemoryLayout<Int32>.size))
                var idle: Int32 = 15, intvl: Int32 = 5, cnt: Int32 = 3
                setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE, &idle, socklen_t(MemoryLayout<Int32>.size))
                setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPINTVL, &intvl, socklen_t(MemoryLayout<Int32>.size))
                setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPCNT, &cnt, socklen_t(MemoryLayout<Int32>.size))
                var big: Int32 = 4 << 20
                setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, socklen_t(MemoryLayout<Int32>.size))
                return fd
            }
            close(fd)
        }
        throw .connect(host: host, port: port, reason: lastReason)
    }
}

/// Owns one libssh2 channel.
final class LibSSH2Channel {
    let handle: OpaquePointer
    init(_ handle: OpaquePointer) { self.handle = handle }
    deinit { libssh2_channel_free(handle) }
}

/// Receives from the bastion socket, recording when data last arrived (for dead-bastion detection).
private let recvCallback: @convention(c) (Int32, UnsafeMutableRawPointer?, Int, Int32, UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int = {
    fd, buffer, length, flags, abstract in
    guard let a = abstract?.pointee, let buffer else { return -Int(EINVAL) }
    let ctx = Unmanaged<SessionContext>.fromOpaque(a).takeUnretainedValue()
    if ctx.readStart == ctx.readEnd {
        if ctx.skipRecvUntilPolled && ctx.socketDrained { return -Int(EAGAIN) }
        let n = recv(fd, ctx.readAhead, SessionContext.readAheadCapacity, flags)
        if n < 0 {
            if errno == EAGAIN || errno == EWOULDBLOCK { ctx.socketDrained = true }
            return -Int(errno)
        }
        if n == 0 { return 0 }
        // A short read took everything the socket had.
        if n < SessionContext.readAheadCapacity { ctx.socketDrained = true }
        ctx.readStart = 0
        ctx.readEnd = n
        ctx.lastReceive = monotonicSeconds()
    }
    let k = min(length, ctx.readEnd - ctx.readStart)
    buffer.copyMemory(from: ctx.readAhead + ctx.readStart, byteCount: k)
    ctx.readStart += k
    return k
}

/// Signs the authentication data with the RSA key in the context, using SHA-2.
private let rsaSignCallback: @convention(c) (OpaquePointer?, UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?, UnsafeMutablePointer<Int>?, UnsafePointer<UInt8>?, Int, UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32 = {
    _, sig, sigLen, data, dataLen, abstract in
    guard let a = abstract?.pointee, let data, let sig, let sigLen else { return -1 }
    let ctx = Unmanaged<SessionContext>.fromOpaque(a).takeUnretainedValue()
    guard let key = ctx.signingKey, let signature = key.sign(UnsafeRawBufferPointer(start: data, count: dataLen), digest: ctx.signingDigest),
          let out = malloc(signature.count)?.assumingMemoryBound(to: UInt8.self) else { return -1 }
    signature.withUnsafeBufferPointer { out.update(from: $0.baseAddress!, count: signature.count) }
    sig.pointee = out
    sigLen.pointee = signature.count
    return 0
}

/// Answers every keyboard-interactive prompt with the password.
private let kbdintCallback: @convention(c) (UnsafePointer<CChar>?, Int32, UnsafePointer<CChar>?, Int32, Int32, UnsafePointer<LIBSSH2_USERAUTH_KBDINT_PROMPT>?, UnsafeMutablePointer<LIBSSH2_USERAUTH_KBDINT_RESPONSE>?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Void = {
    _, _, _, _, count, _, responses, abstract in
    guard let a = abstract?.pointee, let responses else { return }
    let ctx = Unmanaged<SessionContext>.fromOpaque(a).takeUnretainedValue()
    for i in 0..<Int(count) {
        guard let text = malloc(max(1, ctx.password.count))?.assumingMemoryBound(to: CChar.self) else { continue }
        ctx.password.withUnsafeBytes { p in if p.count > 0 { memcpy(text, p.baseAddress!, p.count) } }
        responses[i].text = text
        responses[i].length = UInt32(ctx.password.count)
    }
}
