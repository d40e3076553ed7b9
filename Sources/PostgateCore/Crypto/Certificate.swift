import COpenSSL
import Foundation

/// Owns an OpenSSL `X509` certificate and frees it when released.
public final class Certificate: @unchecked Sendable {
    let x509: OpaquePointer

    init(_ x509: OpaquePointer) { self.x509 = x509 }

    deinit { X509_free(x509) }

    /// Every certificate in a PEM text; throws when there is none or one is damaged.
    public static func pemChain(_ text: String, setting: String) throws(KeyError) -> [Certificate] {
        ERR_clear_error()
        var out: [Certificate] = []
        let bytes = Array(text.utf8)
        bytes.withUnsafeBytes { buf in
            guard let bio = BIO_new_mem_buf(buf.baseAddress, Int32(buf.count)) else { return }
            defer { BIO_free(bio) }
            while let x = PEM_read_bio_X509(bio, nil, nil, nil) { out.append(Certificate(x)) }
        }
        ERR_clear_error()
        guard !out.isEmpty else {
            throw .unreadable(setting: setting, detail: "no PEM certificate found (expected a block starting with -----BEGIN CERTIFICATE-----)")
        }
        let blocks = text.components(separatedBy: "-----BEGIN CERTIFICATE-----").count - 1
        if blocks > out.count {
            throw .unreadable(setting: setting, detail: "certificate \(out.count + 1) of \(blocks) is damaged")
        }
        return out
    }

    /// The subject as `CN=…, O=…` (RFC 2253 order).
    public var subject: String {
        guard let name = X509_get_subject_name(x509), let bio = BIO_new(BIO_s_mem()) else { return "?" }
        defer { BIO_free(bio) }
        X509_NAME_print_ex(bio, name, 0, postgate_XN_FLAG_RFC2253)
        var p: UnsafeMutablePointer<CChar>?
        let n = BIO_get_mem_data_compat(bio, &p)
        guard n > 0, let p else { return "?" }
        return String(decoding: UnsafeRawBufferPointer(start: p, count: n), as: UTF8.self)
    }

    /// The end of the validity period.
    public var notAfter: Date? {
        guard let t = X509_get0_notAfter(x509) else { return nil }
        var tm = tm()
        guard ASN1_TIME_to_tm(t, &tm) == 1 else { return nil }
        return Date(timeIntervalSince1970: TimeInterval(timegm(&tm)))
    }

    /// Whether `key` is the private key of this certificate.
    public func matches(_ key: PrivateKey) -> Bool {
        let ok = X509_check_private_key(x509, key.pkey) == 1
        ERR_clear_error()
        return ok
    }

    /// DER encoding.
    public var der: [UInt8] {
        var p: UnsafeMutablePointer<UInt8>?
        let n = i2d_X509(x509, &p)
        guard n > 0, let p else { return [] }
        defer { CRYPTO_free(p, #fileID, #line) }
        return Array(UnsafeBufferPointer(start: p, count: Int(n)))
    }
}

/// `BIO_get_mem_data` is a macro; this is its definition.
func BIO_get_mem_data_compat(_ bio: OpaquePointer, _ p: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int {
    Int(BIO_ctrl(bio, BIO_CTRL_INFO, 0, p))
}
