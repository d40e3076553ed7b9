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

    /// Host-key algorithms to offer, the pinned type first so the server presents that key.
    var algorithmPreference: String {
        var all = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
        if case .pinnedKey(let type, _) = self {
            let names = type == "ssh-rsa" ? ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] : [type]
            all.removeAll { names.contains($0) }
            all = names + all
        }
        return all.joined(separator: ",")
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
