/// Why an SSH tunnel could not be opened or was lost. Descriptions name the setting to check
/// and never contain a key, password or passphrase.
public enum TunnelError: Error, Sendable, CustomStringConvertible, UserFacingError {
    case resolve(host: String, reason: String)
    case connect(host: String, port: Int, reason: String)
    case handshake(reason: String)
    case hostKeyMismatch(expected: String, observed: String)
    case authentication(user: String, method: String, reason: String)
    case key(KeyError)
    case forwarding(target: String, reason: String)
    case lost(bastion: String, reason: String)
    case local(reason: String)

    public var description: String {
        switch self {
        case .resolve(let h, let r):
            return "SSH tunnel: cannot resolve bastion host \"\(h)\": \(r) [check setting `tunnel_method.tunnel_host`]"
        case .connect(let h, let p, let r):
            return "SSH tunnel: cannot reach bastion \(h):\(p): \(r) [check settings `tunnel_method.tunnel_host` / `tunnel_port`, and that a firewall lets this machine in]"
        case .handshake(let r):
            return "SSH tunnel: the SSH handshake with the bastion failed: \(r). Is `tunnel_method.tunnel_port` an SSH server?"
        case .hostKeyMismatch(let expected, let observed):
            return "SSH tunnel: the bastion's host key does not match the pinned one: expected \(expected), observed \(observed). The connection was refused; if the bastion's key was changed on purpose, update `tunnel_method.tunnel_host_key`"
        case .authentication(let user, let method, let r):
            let setting = method == "password" ? "tunnel_method.tunnel_user_password" : "tunnel_method.ssh_key"
            return "SSH tunnel: the bastion refused \(method) authentication for user \"\(user)\": \(r) [check settings `tunnel_method.tunnel_user` / `\(setting)`]"
        case .key(let k):
            return "SSH tunnel: \(k)"
        case .forwarding(let target, let r):
            return "SSH tunnel: the bastion would not forward to \(target): \(r)"
        case .lost(let b, let r):
            return "SSH tunnel to \(b) was lost: \(r). The next connection opens a new tunnel; rerun with the last STATE to resume"
        case .local(let r):
            return "SSH tunnel: \(r)"
        }
    }

    public var userMessage: String { description }
    public var failureType: String {
        switch self {
        case .lost, .connect: return "transient_error"
        default: return "config_error"
        }
    }
}
