import Foundation

/// A user key ready for SSH authentication.
///
/// RSA keys are signed here with rsa-sha2-512/256 (libssh2 1.10 would sign them with SHA-1, which
/// OpenSSH 9 refuses by default); other key types are handed to libssh2 as they are.
enum SSHUserKey {
    case rsa(PrivateKey)
    case libssh2(privateKey: String, passphrase: Secret?, type: String)

    static let setting = "tunnel_method.ssh_key"

    /// The PEM header line of a private key of `kind` (built, so the source holds no key-shaped line).
    static func beginMarker(_ kind: String) -> String { "-----BEGIN \(kind) PRIVATE" + " KEY-----" }

    static func parse(_ key: Secret, passphrase: Secret?) throws(KeyError) -> SSHUserKey {
        var text = key.exposedValue.replacingOccurrences(of: "\r\n", with: "\n")
        // Some forms deliver the key with literal "\n" sequences instead of newlines.
        if !text.contains("\n") && text.contains("\\n") { text = text.replacingOccurrences(of: "\\n", with: "\n") }
        text = text.trimmingSpaces() + "\n"
        if text.hasPrefix("PuTTY-User-Key-File") {
            throw .unsupported(setting: setting, detail: "PuTTY keys are not supported; convert with `puttygen key.ppk -O private-openssh -o key`")
        }
        if text.contains(beginMarker("OPENSSH")) {
            return try openSSH(text, passphrase: passphrase)
        }
        if text.contains(beginMarker("DSA")) {
            throw .unsupported(setting: setting, detail: "DSA keys are refused by current OpenSSH servers; make an Ed25519 key with `ssh-keygen -t ed25519`")
        }
        if text.contains(beginMarker("EC")) {
            return .libssh2(privateKey: text, passphrase: passphrase, type: "ecdsa")
        }
        guard text.contains("-----BEGIN ") && text.contains("PRIVATE KEY-----") else {
            throw .unreadable(setting: setting, detail: "expected a PEM or OpenSSH private key (a block starting with -----BEGIN ... PRIVATE KEY-----)")
        }
        let pkey = try PrivateKey.pem(text, passphrase: passphrase, setting: setting)
        if pkey.isRSA { return .rsa(pkey) }
        return .libssh2(privateKey: text, passphrase: passphrase, type: "pem")
    }

    /// The `openssh-key-v1` container: the public part is readable without the passphrase.
    private static func openSSH(_ text: String, passphrase: Secret?) throws(KeyError) -> SSHUserKey {
        let body = text.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        guard let data = Data(base64Encoded: body) else {
            throw .unreadable(setting: setting, detail: "the OpenSSH key block is not valid base64")
        }
        var r = SSHWireReader(Array(data))
        let magic = Array("openssh-key-v1".utf8) + [0]
        guard r.bytes(magic.count) == magic,
              let cipher = r.string(), let _ = r.string() /* kdf */, let _ = r.string() /* kdf options */,
              let nkeys = r.uint32(), nkeys >= 1, let pub = r.string()
        else { throw .unreadable(setting: setting, detail: "not a valid OpenSSH private key") }
        var pr = SSHWireReader(pub)
        guard let typeBytes = pr.string() else { throw .unreadable(setting: setting, detail: "not a valid OpenSSH private key") }
        let type = String(decoding: typeBytes, as: UTF8.self)
        let encrypted = String(decoding: cipher, as: UTF8.self) != "none"
        if encrypted && (passphrase == nil || passphrase!.isEmpty) { throw .wrongPassphrase(setting: setting) }
        switch type {
        case "ssh-rsa":
            guard !encrypted else {
                throw .unsupported(setting: setting, detail: "an encrypted RSA key in OpenSSH format cannot be signed with SHA-2 here; re-save it in PEM form with `ssh-keygen -p -m PEM -f KEYFILE` (it keeps its passphrase), or use an Ed25519 key")
            }
            // Unencrypted private section: check ints, then ssh-rsa n e d iqmp p q comment.
            guard let priv = r.string() else { throw .unreadable(setting: setting, detail: "truncated OpenSSH key") }
            var s = SSHWireReader(priv)
            guard let c1 = s.uint32(), let c2 = s.uint32(), c1 == c2, s.string() != nil,
                  let n = s.mpint(), let e = s.mpint(), let d = s.mpint(), let iqmp = s.mpint(), let p = s.mpint(), let q = s.mpint(),
                  let key = PrivateKey.rsa(n: n, e: e, d: d, p: p, q: q, iqmp: iqmp)
            else { throw .unreadable(setting: setting, detail: "the RSA key in OpenSSH format is damaged") }
            return .rsa(key)
        case "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521":
            return .libssh2(privateKey: text, passphrase: passphrase, type: type)
        case "ssh-dss":
            throw .unsupported(setting: setting, detail: "DSA keys are refused by current OpenSSH servers; make an Ed25519 key with `ssh-keygen -t ed25519`")
        default:
            throw .unsupported(setting: setting, detail: "key type \(type) is not supported; use RSA, ECDSA or Ed25519")
        }
    }

    /// The public-key blob announcing RSA with a SHA-2 signature algorithm. OpenSSH parses the
    /// blob's name as an RSA key and checks the signature with that algorithm.
    static func rsaBlob(_ key: PrivateKey, algorithm: String) -> [UInt8]? {
        guard let (e, n) = key.rsaPublic() else { return nil }
        var w = SSHWireWriter()
        w.string(Array(algorithm.utf8))
        w.mpint(e)
        w.mpint(n)
        return w.bytes
    }
}

/// Reads SSH wire-format fields (RFC 4251).
struct SSHWireReader {
    let data: [UInt8]
    var i = 0
    init(_ data: [UInt8]) { self.data = data }

    mutating func bytes(_ n: Int) -> [UInt8]? {
        guard n >= 0, i + n <= data.count else { return nil }
        defer { i += n }
        return Array(data[i..<(i + n)])
    }

    mutating func uint32() -> UInt32? {
        guard let b = bytes(4) else { return nil }
        return b.reduce(0) { $0 << 8 | UInt32($1) }
    }

    mutating func string() -> [UInt8]? {
        guard let n = uint32() else { return nil }
        return bytes(Int(n))
    }

    /// An mpint as an unsigned big-endian magnitude.
    mutating func mpint() -> [UInt8]? {
        guard var b = string() else { return nil }
        while b.first == 0 { b.removeFirst() }
        return b
    }
}

struct SSHWireWriter {
    var bytes: [UInt8] = []

    mutating func uint32(_ v: UInt32) {
        bytes += [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)]
    }

    mutating func string(_ b: [UInt8]) {
        uint32(UInt32(b.count))
        bytes += b
    }

    mutating func mpint(_ magnitude: [UInt8]) {
        var m = Array(magnitude.drop(while: { $0 == 0 }))
        if let f = m.first, f & 0x80 != 0 { m.insert(0, at: 0) }
        string(m)
    }
}
