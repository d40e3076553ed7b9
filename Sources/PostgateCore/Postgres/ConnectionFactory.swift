import Logging

/// The one place that turns a `PostgateConfig` into live, secured libpq connections.
///
/// It owns the private files holding inline certificates and keys for as long as it lives.
public final class ConnectionFactory {
    public let config: PostgateConfig
    private let logger: Logger
    private var files: PrivateFiles?
    private var tlsPaths: [(String, String)] = []

    /// With Entra authentication, the source of the database password.
    private var tokens: EntraTokenProvider?

    /// Seconds libpq waits for the server before giving up.
    public var connectTimeoutSeconds = 10

    public init(config: PostgateConfig, logger: Logger) throws {
        self.config = config
        self.logger = logger
        if let entra = config.entra {
            tokens = try EntraTokenProvider.shared(entra, secret: config.password, logger: logger)
        }
        for p in config.jdbcURLParams where !["connectTimeout", "options"].contains(p.key) {
            logger.warning("jdbc_url_params: `\(p.key)` has no libpq equivalent and is ignored")
        }
        if let t = config.jdbcURLParams.first(where: { $0.key == "connectTimeout" }).flatMap({ Int($0.value) }), t > 0 {
            connectTimeoutSeconds = t
        }
        try writeTLSMaterial()
    }

    /// Checks inline TLS material before any connection: each PEM parses, the client key opens
    /// with its password and belongs to the client certificate. Errors name the setting.
    static func validateTLSMaterial(_ ssl: SSLSettings) throws(KeyError) {
        guard ssl.mode != .disable else { return }
        if let ca = ssl.caCertificate { _ = try Certificate.pemChain(ca, setting: "ssl_mode.ca_certificate") }
        if let certText = ssl.clientCertificate, let keyText = ssl.clientKey {
            let cert = try Certificate.pemChain(certText, setting: "ssl_mode.client_certificate")[0]
            let key: PrivateKey
            do {
                key = try PrivateKey.pem(keyText.exposedValue, passphrase: ssl.clientKeyPassword, setting: "ssl_mode.client_key")
            } catch .wrongPassphrase {
                throw .wrongPassphrase(setting: "ssl_mode.client_key_password")
            }
            guard cert.matches(key) else {
                throw .unsupported(setting: "ssl_mode.client_key", detail: "the key does not belong to the certificate in `ssl_mode.client_certificate`")
            }
        }
    }

    private func writeTLSMaterial() throws {
        let ssl = config.ssl
        try Self.validateTLSMaterial(ssl)
        guard ssl.mode != .disable, ssl.caCertificate != nil || ssl.clientCertificate != nil else { return }
        let files = try PrivateFiles()
        self.files = files
        if let ca = ssl.caCertificate {
            tlsPaths.append(("sslrootcert", try files.write(name: "root.crt", contents: ca)))
        }
        if let cert = ssl.clientCertificate, let key = ssl.clientKey {
            tlsPaths.append(("sslcert", try files.write(name: "client.crt", contents: cert)))
            tlsPaths.append(("sslkey", try files.write(name: "client.key", contents: key.exposedValue)))
        }
    }

    /// The tunnel used by the last connection, if the config has one.
    public private(set) var tunnel: SSHTunnel?

    /// Opens (or reuses) the configured SSH tunnel; nil without one.
    @discardableResult
    public func openTunnel() throws(TunnelError) -> SSHTunnel? {
        guard let t = config.tunnel else { return nil }
        let tunnel = try TunnelManager.shared.tunnel(for: t, targetHost: config.host, targetPort: config.port, logger: logger)
        self.tunnel = tunnel
        return tunnel
    }

    /// The libpq keywords for a connection. `replication` asks for a logical replication connection.
    /// Through a tunnel, libpq dials the local forward (`hostaddr`) while `host` stays the database's
    /// name, so verify-full checks the certificate against the real name.
    public func parameters(replication: Bool = false, forwardPort: Int? = nil, password: Secret? = nil) -> [(String, String)] {
        var options = "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=3 -c lc_monetary=C"
        if let extra = config.jdbcURLParams.first(where: { $0.key == "options" }) { options += " " + extra.value }
        var p: [(String, String)] = [
            ("host", config.host),
            ("port", String(config.port)),
            ("dbname", config.database),
            ("user", config.username),
            ("sslmode", config.ssl.mode.libpqName),
            ("application_name", "postgate"),
            ("client_encoding", "UTF8"),
            ("options", options + " -c bytea_output=hex -c standard_conforming_strings=on"),
            ("connect_timeout", String(connectTimeoutSeconds)),
            ("keepalives", "1"),
            ("keepalives_idle", "30"),
            ("keepalives_interval", "10"),
            ("keepalives_count", "3"),
        ]
        if let forwardPort {
            p.append(("hostaddr", "127.0.0.1"))
            p[1] = ("port", String(forwardPort))
        }
        if let password = password ?? (config.entra == nil ? config.password : nil) { p.append(("password", password.exposedValue)) }
        // Never let libpq read a password or service from the environment or ~/.pgpass silently.
        p.append(("passfile", "/dev/null"))
        p.append(contentsOf: tlsPaths)
        if let kp = config.ssl.clientKeyPassword { p.append(("sslpassword", kp.exposedValue)) }
        if config.ssl.mode.verifiesCertificate {
            // An empty CRL setting keeps libpq from picking up ~/.postgresql files unexpectedly.
            p.append(("sslcrl", ""))
        }
        if replication { p.append(("replication", "database")) }
        return p
    }

    /// Opens a connection with the session settings Postgate relies on, through the tunnel if configured.
    public func connect(replication: Bool = false) throws -> PGConnection {
        let tunnel = try openTunnel()
        // With Entra, each new connection asks for a token; the provider hands out a cached one until it nears expiry.
        let password = try tokens?.token()
        do {
            return try PGConnection(parameters: parameters(replication: replication, forwardPort: tunnel?.localPort, password: password), logger: logger)
        } catch {
            throw translate(error)
        }
    }

    /// Replaces a libpq error caused by the tunnel (forwarding refused, tunnel lost) with the tunnel's reason.
    public func translate(_ error: Error) -> Error {
        guard let tunnel else { return error }
        if let reason = tunnel.takeChannelError() { return TunnelError.forwarding(target: tunnel.target, reason: reason) }
        if let failure = tunnel.failure { return failure }
        return error
    }

    /// Removes inline key material from disk now rather than at release.
    public func close() { files?.removeAll() }
}
