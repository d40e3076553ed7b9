import Logging

/// The one place that turns a `PostgateConfig` into live, secured libpq connections.
///
/// It owns the private files holding inline certificates and keys for as long as it lives.
public final class ConnectionFactory {
    public let config: PostgateConfig
    private let logger: Logger
    private var files: PrivateFiles?
    private var tlsPaths: [(String, String)] = []

    /// Seconds libpq waits for the server before giving up.
    public var connectTimeoutSeconds = 10

    public init(config: PostgateConfig, logger: Logger) throws {
        self.config = config
        self.logger = logger
        if config.tunnel != nil {
            throw ConnectionSetupError.notSupportedYet(setting: "tunnel_method", what: "SSH tunnelling")
        }
        if config.entra != nil {
            throw ConnectionSetupError.notSupportedYet(setting: "entra_service_principal_auth", what: "Entra authentication")
        }
        for p in config.jdbcURLParams where !["connectTimeout", "options"].contains(p.key) {
            logger.warning("jdbc_url_params: `\(p.key)` has no libpq equivalent and is ignored")
        }
        if let t = config.jdbcURLParams.first(where: { $0.key == "connectTimeout" }).flatMap({ Int($0.value) }), t > 0 {
            connectTimeoutSeconds = t
        }
        try writeTLSMaterial()
    }

    private func writeTLSMaterial() throws {
        let ssl = config.ssl
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

    /// The libpq keywords for a connection. `replication` asks for a logical replication connection.
    public func parameters(replication: Bool = false) -> [(String, String)] {
        var options = "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=3"
        if let extra = config.jdbcURLParams.first(where: { $0.key == "options" }) { options += " " + extra.value }
        var p: [(String, String)] = [
            ("host", config.host),
            ("port", String(config.port)),
            ("dbname", config.database),
            ("user", config.username),
            ("sslmode", config.ssl.mode.libpqName),
            ("application_name", "postgate"),
            ("client_encoding", "UTF8"),
            ("options", options),
            ("connect_timeout", String(connectTimeoutSeconds)),
            ("keepalives", "1"),
            ("keepalives_idle", "30"),
            ("keepalives_interval", "10"),
            ("keepalives_count", "3"),
        ]
        if let password = config.password { p.append(("password", password.exposedValue)) }
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

    /// Opens a connection with the session settings Postgate relies on.
    public func connect(replication: Bool = false) throws(PostgresError) -> PGConnection {
        try PGConnection(parameters: parameters(replication: replication), logger: logger)
    }

    /// Removes inline key material from disk now rather than at release.
    public func close() { files?.removeAll() }
}
