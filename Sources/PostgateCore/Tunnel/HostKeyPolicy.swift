import Foundation
import Logging

/// A bastion host key as the server presented it.
public struct ObservedHostKey: Sendable {
    /// Key type name from the key blob, e.g. `ssh-ed25519`.
    public var type: String
    public var blob: [UInt8]
    /// OpenSSH `SHA256:` fingerprint of the blob.
    public var fingerprint: String { Digests.openSSHFingerprint(blob) }
}

/// How the bastion's host key is checked. There is no silent accept-all: without a pin the key is
/// accepted with a warning that shows its fingerprint and how to pin it.
public enum HostKeyPolicy: Sendable {
    case pinnedFingerprint(String)
    case pinnedKey(type: String, blob: [UInt8])
    case warnUnpinned

    /// The policy for a `tunnel_host_key` setting (a known_hosts line or a `SHA256:` fingerprint).
    public init(setting: String?) throws(TunnelError) {
        guard let raw = setting?.trimmingSpaces(), !raw.isEmpty else {
            self = .warnUnpinned
            return
        }
        if raw.hasPrefix("SHA256:") {
            var fp = raw
            while fp.hasSuffix("=") { fp.removeLast() }
            self = .pinnedFingerprint(fp)
            return
        }
        let fields = raw.split(separator: " ").map(String.init)
        for (k, f) in fields.enumerated() where k + 1 < fields.count && (f.hasPrefix("ssh-") || f.hasPrefix("ecdsa-") || f.hasPrefix("sk-") || f.hasPrefix("rsa-")) {
            if let blob = Data(base64Encoded: fields[k + 1]) {
                self = .pinnedKey(type: f, blob: Array(blob))
                return
            }
        }
        throw .local(reason: "setting `tunnel_method.tunnel_host_key` is neither a known_hosts line (`host keytype base64`) nor a `SHA256:` fingerprint")
    }

    /// Host-key algorithms Postgate offers, strongest first, and the key type each negotiates.
    /// RSA keys are signed with SHA-2 (RFC 8332); `ssh-rsa` (SHA-1) is kept last for old bastions.
    static let algorithms: [(name: String, keyType: String)] = [
        ("ssh-ed25519", "ssh-ed25519"), ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256"), ("ecdsa-sha2-nistp384", "ecdsa-sha2-nistp384"),
        ("ecdsa-sha2-nistp521", "ecdsa-sha2-nistp521"), ("rsa-sha2-512", "ssh-rsa"), ("rsa-sha2-256", "ssh-rsa"), ("ssh-rsa", "ssh-rsa"),
    ]

    /// Host-key algorithms to offer, the pinned key's type first so the server presents that key,
    /// leaving out keys of the `excluded` types (already seen and refused). Nil when none is left.
    func algorithmPreference(excluding excluded: Set<String> = []) -> String? {
        var all = Self.algorithms.filter { !excluded.contains($0.keyType) }
        if case .pinnedKey(let type, _) = self {
            let keyType = Self.algorithms.first { $0.name == type }?.keyType ?? type
            all = all.filter { $0.keyType == keyType } + all.filter { $0.keyType != keyType }
        }
        return all.isEmpty ? nil : all.map(\.name).joined(separator: ",")
    }

    /// Whether another handshake could still find the pinned key after `key` was presented: only a
    /// fingerprint pin leaves the key's type open; a known_hosts pin already asked for its type first.
    var retriesOtherKeyTypes: Bool {
        if case .pinnedFingerprint = self { return true }
        return false
    }

    /// The refusal after the bastion presented only the `observed` keys, none of them the pinned one.
    func mismatch(observed: [ObservedHostKey]) -> TunnelError {
        let seen = observed.map { "\($0.fingerprint) (\($0.type))" }.joined(separator: ", ")
        switch self {
        case .pinnedFingerprint(let fp): return .hostKeyMismatch(expected: fp, observed: seen)
        case .pinnedKey(let type, let blob): return .hostKeyMismatch(expected: "\(Digests.openSSHFingerprint(blob)) (\(type))", observed: seen)
        case .warnUnpinned: return .hostKeyMismatch(expected: "any", observed: seen)
        }
    }

    /// Whether `key` is the pinned one (always true without a pin).
    func accepts(_ key: ObservedHostKey) -> Bool {
        switch self {
        case .pinnedFingerprint(let fp): return fp == key.fingerprint
        case .pinnedKey(_, let blob): return blob == key.blob
        case .warnUnpinned: return true
        }
    }

    /// Accepts or refuses the observed key.
    func verify(_ key: ObservedHostKey, bastion: String, logger: Logger) throws(TunnelError) {
        switch self {
        case .pinnedFingerprint(let fp):
            guard fp == key.fingerprint else { throw .hostKeyMismatch(expected: fp, observed: "\(key.fingerprint) (\(key.type))") }
        case .pinnedKey(let type, let blob):
            guard blob == key.blob else {
                throw .hostKeyMismatch(expected: "\(Digests.openSSHFingerprint(blob)) (\(type))", observed: "\(key.fingerprint) (\(key.type))")
            }
        case .warnUnpinned:
            logger.warning("SSH tunnel: the host key of bastion \(bastion) is not pinned; it presented \(key.type) \(key.fingerprint). To refuse any other key, set tunnel_method.tunnel_host_key to \"\(key.fingerprint)\"")
        }
    }
}
