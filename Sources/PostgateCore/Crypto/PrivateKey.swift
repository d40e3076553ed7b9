import COpenSSL
import Foundation

/// Why a private key cannot be used; descriptions say what to do and never show key material.
public enum KeyError: Error, Sendable, CustomStringConvertible {
    case unreadable(setting: String, detail: String)
    case wrongPassphrase(setting: String)
    case unsupported(setting: String, detail: String)

    public var description: String {
        switch self {
        case .unreadable(let s, let d): return "setting `\(s)`: the private key cannot be read: \(d)"
        case .wrongPassphrase(let s): return "setting `\(s)`: the key is encrypted and the passphrase is missing or wrong"
        case .unsupported(let s, let d): return "setting `\(s)`: \(d)"
        }
    }
}

/// Owns an OpenSSL `EVP_PKEY` and frees it when released.
public final class PrivateKey: @unchecked Sendable {
    let pkey: OpaquePointer

    init(_ pkey: OpaquePointer) { self.pkey = pkey }

    deinit { EVP_PKEY_free(pkey) }

    /// Loads a PEM private key (PKCS#1, PKCS#8, SEC1; encrypted or not).
    public static func pem(_ text: String, passphrase: Secret?, setting: String) throws(KeyError) -> PrivateKey {
        ERR_clear_error()
        let bytes = Array(text.utf8)
        let key: OpaquePointer? = bytes.withUnsafeBytes { buf in
            guard let bio = BIO_new_mem_buf(buf.baseAddress, Int32(buf.count)) else { return nil }
            defer { BIO_free(bio) }
            // An empty passphrase (not NULL) keeps OpenSSL from prompting on a terminal.
            let pass = passphrase?.exposedValue ?? ""
            return pass.withCString { p in
                PEM_read_bio_PrivateKey(bio, nil, nil, UnsafeMutableRawPointer(mutating: p))
            }
        }
        guard let key else {
            let reason = ERR_GET_REASON_compat(ERR_peek_last_error())
            ERR_clear_error()
            if text.contains("ENCRYPTED") || reason == 100 /* bad decrypt */ || reason == 101 {
                throw .wrongPassphrase(setting: setting)
            }
            throw .unreadable(setting: setting, detail: "not a valid PEM private key")
        }
        return PrivateKey(key)
    }

    /// Builds an RSA key from its components (big-endian magnitudes), as found in OpenSSH key files.
    static func rsa(n: [UInt8], e: [UInt8], d: [UInt8], p: [UInt8], q: [UInt8], iqmp: [UInt8]) -> PrivateKey? {
        postgate_rsa_from_components(n, n.count, e, e.count, d, d.count, p, p.count, q, q.count, iqmp, iqmp.count).map(PrivateKey.init)
    }

    public var isRSA: Bool { EVP_PKEY_get_base_id(pkey) == EVP_PKEY_RSA }

    /// RSA public exponent and modulus, big-endian.
    func rsaPublic() -> (e: [UInt8], n: [UInt8])? {
        guard isRSA else { return nil }
        var n: OpaquePointer?
        var e: OpaquePointer?
        guard EVP_PKEY_get_bn_param(pkey, "n", &n) == 1, EVP_PKEY_get_bn_param(pkey, "e", &e) == 1, let n, let e else { return nil }
        defer { BN_free(n); BN_free(e) }
        func bytes(_ b: OpaquePointer) -> [UInt8] {
            var out = [UInt8](repeating: 0, count: Int((BN_num_bits(b) + 7) / 8))
            out.withUnsafeMutableBufferPointer { _ = BN_bn2bin(b, $0.baseAddress) }
            return out
        }
        return (bytes(e), bytes(n))
    }

    public enum Digest { case sha256, sha512 }

    /// Signs `data` (RSA PKCS#1 v1.5 with the digest; raw signature bytes).
    public func sign(_ data: UnsafeRawBufferPointer, digest: Digest) -> [UInt8]? {
        guard let ctx = EVP_MD_CTX_new() else { return nil }
        defer { EVP_MD_CTX_free(ctx) }
        let md = digest == .sha256 ? EVP_sha256() : EVP_sha512()
        guard EVP_DigestSignInit(ctx, nil, md, nil, pkey) == 1 else { return nil }
        var len = 0
        guard EVP_DigestSign(ctx, nil, &len, data.baseAddress?.assumingMemoryBound(to: UInt8.self), data.count) == 1 else { return nil }
        var sig = [UInt8](repeating: 0, count: len)
        let ok = sig.withUnsafeMutableBufferPointer {
            EVP_DigestSign(ctx, $0.baseAddress, &len, data.baseAddress?.assumingMemoryBound(to: UInt8.self), data.count)
        }
        guard ok == 1 else { return nil }
        return Array(sig.prefix(len))
    }
}

/// `ERR_GET_REASON` is a macro; this is its definition for OpenSSL 3.
@inline(__always) func ERR_GET_REASON_compat(_ e: UInt) -> Int32 { Int32(e & 0x7FFFFF) }

/// Digests and encodings used for host-key fingerprints.
public enum Digests {
    public static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        bytes.withUnsafeBufferPointer { b in out.withUnsafeMutableBufferPointer { _ = SHA256(b.baseAddress, b.count, $0.baseAddress) } }
        return out
    }

    public static func sha1(_ bytes: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 20)
        bytes.withUnsafeBufferPointer { b in out.withUnsafeMutableBufferPointer { _ = SHA1(b.baseAddress, b.count, $0.baseAddress) } }
        return out
    }

    /// OpenSSH's fingerprint form: `SHA256:` + unpadded base64.
    public static func openSSHFingerprint(_ blob: [UInt8]) -> String {
        var b64 = Data(sha256(blob)).base64EncodedString()
        while b64.hasSuffix("=") { b64.removeLast() }
        return "SHA256:" + b64
    }
}
