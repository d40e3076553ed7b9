import Foundation

/// libpq's `sslmode` values, with the same meaning libpq gives them.
public enum SSLMode: String, Sendable, CaseIterable {
    case disable, allow, prefer, require
    case verifyCA = "verify-ca"
    case verifyFull = "verify-full"

    /// The value libpq takes for `sslmode`.
    public var libpqName: String { rawValue }

    /// Whether the mode checks the server certificate against a CA.
    public var verifiesCertificate: Bool { self == .verifyCA || self == .verifyFull }
}

/// TLS settings (`ssl_mode`). Certificates and keys are inline PEM text.
public struct SSLSettings: Sendable {
    public var mode: SSLMode
    public var caCertificate: String? = nil
    public var clientCertificate: String? = nil
    public var clientKey: Secret? = nil
    public var clientKeyPassword: Secret? = nil
}

/// An SSH bastion to tunnel through (`tunnel_method`).
public struct SSHTunnelSettings: Sendable {
    public enum Authentication: Sendable {
        /// Inline private key (PEM or OpenSSH format) and its optional passphrase.
        case key(Secret, passphrase: Secret?)
        case password(Secret)
    }
    public var host: String
    public var port: Int
    public var user: String
    public var authentication: Authentication
    /// A known_hosts line or an OpenSSH `SHA256:` fingerprint to pin the bastion's host key.
    public var hostKey: String?
}

/// Settings for change data capture over logical replication.
public struct CDCSettings: Sendable {
    public enum LSNCommitBehaviour: String, Sendable {
        case whileReadingData = "While reading Data"
        case afterLoadingData = "After loading Data in the destination"
    }
    public enum InvalidCursorBehaviour: String, Sendable {
        case failSync = "Fail sync"
        case resync = "Re-sync data"
    }
    public var replicationSlot: String
    public var publication: String
    public var initialWaitingSeconds: Int
    public var lsnCommitBehaviour: LSNCommitBehaviour
    public var heartbeatActionQuery: String?
    public var invalidCursorBehaviour: InvalidCursorBehaviour
    /// How long a run reads chunked initial loads before it stops them for the next run (fractions allowed).
    public var initialLoadTimeoutHours: Double
    /// Opt-in: create the slot when it is missing, and take the first snapshot from it.
    public var createSlot: Bool = false
    /// Opt-in: give tables with neither a primary key nor a replica identity REPLICA IDENTITY FULL.
    public var setReplicaIdentity: Bool = false
}

/// How incremental changes are found (`replication_method`).
public enum ReplicationMethod: Sendable {
    /// User-defined cursor column (or full refresh).
    case standard
    /// The `xmin` system column.
    case xmin
    /// Logical replication with pgoutput.
    case cdc(CDCSettings)

    /// The publication CDC reads (its column lists limit the columns discovered), if any.
    public var publication: String? {
        if case .cdc(let c) = self { return c.publication }
        return nil
    }

    public var name: String {
        switch self {
        case .standard: return "Standard"
        case .xmin: return "Xmin"
        case .cdc: return "CDC"
        }
    }
}

/// Microsoft Entra service-principal authentication; the client secret is `password`.
public struct EntraSettings: Sendable {
    public var tenantID: String
    public var clientID: String
    public var authorityHost: String
    public var clientCertificate: String?
    public var clientKey: Secret?
}

/// One validated Postgate configuration. Its descriptions never show a secret.
public struct PostgateConfig: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var database: String
    public var username: String
    public var password: Secret?
    public var schemas: [String]
    /// `jdbc_url_params` split into key/value pairs.
    public var jdbcURLParams: [JDBCParam]
    public var ssl: SSLSettings
    public var tunnel: SSHTunnelSettings?
    public var replication: ReplicationMethod
    public var entra: EntraSettings?
    public var checkpointTargetIntervalSeconds: Int
    public var batchFetchLimit: Int
    /// Connections that read at once (`max_db_connections`).
    public var maxDBConnections: Int = PostgateConfig.defaultConnections

    /// The number of cores, at most 8.
    public static var defaultConnections: Int { min(8, max(1, ProcessInfo.processInfo.activeProcessorCount)) }

    public struct JDBCParam: Sendable, Equatable {
        public var key: String
        public var value: String
    }

    public var description: String {
        var parts = [
            "host=\(host)", "port=\(port)", "database=\(database)", "username=\(username)",
            "password=\(password == nil ? "<unset>" : "<redacted>")", "schemas=\(schemas)",
            "ssl_mode=\(ssl.mode.rawValue)", "replication_method=\(replication.name)",
        ]
        if let t = tunnel { parts.append("tunnel=\(t.user)@\(t.host):\(t.port)") }
        if let e = entra { parts.append("entra_tenant_id=\(e.tenantID)") }
        return "PostgateConfig(" + parts.joined(separator: ", ") + ")"
    }
}

extension PostgateConfig {
    /// The result of loading a config: the value and any warnings (such as unknown keys).
    public struct Loaded: Sendable {
        public var config: PostgateConfig
        public var warnings: [String]
    }

    /// Reads and validates a config file.
    public static func load(file: String) throws(ConfigError) -> Loaded {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: file))
        } catch {
            let reason = (error as NSError).localizedFailureReason ?? "no such file or not readable"
            throw .unreadable(file: file, reason: reason)
        }
        let json: JSONValue
        do {
            json = try JSONParser.parse([UInt8](data))
        } catch {
            throw .syntax(file: file, error)
        }
        return try parse(json)
    }

    /// Validates a parsed config document.
    public static func parse(_ json: JSONValue) throws(ConfigError) -> Loaded {
        guard case .object(let root) = json else {
            throw .invalid(path: "$", reason: "the config must be a JSON object, found \(json.typeName)")
        }
        var warnings: [String] = []
        let r = ObjectReader(root, path: "")
        var readers: [ObjectReader] = [r]

        let host = try r.requiredString("host")
        let port = try r.int("port", default: 5432, range: 1...65535)
        let database = try r.requiredString("database")
        let username = try r.requiredString("username")
        let password = try r.secret("password")

        var schemas = try r.stringArray("schemas") ?? []
        if let flat = try r.string("schema") {
            if schemas.isEmpty { schemas = [flat] } else if !schemas.contains(flat) {
                warnings.append("both `schemas` and `schema` are set; using `schemas` and ignoring `schema`")
            }
        }
        if schemas.isEmpty { schemas = ["public"] }

        var jdbc: [JDBCParam] = []
        if let text = try r.string("jdbc_url_params") {
            for (k, pair) in text.split(separator: "&", omittingEmptySubsequences: true).enumerated() {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard kv.count == 2, !kv[0].isEmpty else {
                    throw .invalid(path: "jdbc_url_params", reason: "parameter \(k + 1) is not of the form key=value")
                }
                jdbc.append(JDBCParam(key: String(kv[0]), value: String(kv[1])))
            }
        }

        let ssl = try parseSSL(r, readers: &readers)
        let tunnel = try parseTunnel(r, readers: &readers)
        let replication = try parseReplication(r, readers: &readers)

        var entra: EntraSettings?
        if try r.bool("entra_service_principal_auth", default: false) {
            let hasCertificate = r.has("entra_client_certificate") && r.has("entra_client_key")
            guard password != nil || hasCertificate else {
                throw .invalid(path: "password", reason: "must hold the Entra client secret when `entra_service_principal_auth` is true (or set `entra_client_certificate` and `entra_client_key`)")
            }
            let authority = try r.string("entra_authority_host") ?? "https://login.microsoftonline.com"
            guard authority.hasPrefix("https://") else {
                throw .invalid(path: "entra_authority_host", reason: "must be an https:// URL")
            }
            entra = EntraSettings(
                tenantID: try r.requiredString("entra_tenant_id"),
                clientID: try r.requiredString("entra_client_id"),
                authorityHost: authority,
                clientCertificate: try r.string("entra_client_certificate"),
                clientKey: try r.secret("entra_client_key"))
        } else {
            for key in ["entra_tenant_id", "entra_client_id", "entra_authority_host", "entra_client_certificate", "entra_client_key"] {
                _ = r.raw(key)
            }
        }

        let checkpointInterval = try r.int("checkpoint_target_interval_seconds", default: 300, range: 1...86_400)
        let batch = try r.int("batch_fetch_limit", default: 50_000, range: 1...10_000_000)
        let connections = try r.int("max_db_connections", default: PostgateConfig.defaultConnections, range: 1...64)

        for reader in readers {
            for key in reader.unknownKeys {
                warnings.append("ignoring unknown config key `\(reader.childPath(key))`")
            }
        }

        let config = PostgateConfig(
            host: host, port: port, database: database, username: username, password: password,
            schemas: schemas, jdbcURLParams: jdbc, ssl: ssl, tunnel: tunnel, replication: replication,
            entra: entra, checkpointTargetIntervalSeconds: checkpointInterval, batchFetchLimit: batch, maxDBConnections: connections)
        return Loaded(config: config, warnings: warnings)
    }

    private static let sslModes: [(spellings: [String], value: SSLMode)] = [
        (["disable"], .disable), (["allow"], .allow), (["prefer"], .prefer), (["require"], .require),
        (["verify-ca"], .verifyCA), (["verify-full"], .verifyFull),
    ]

    private static func parseSSL(_ r: ObjectReader, readers: inout [ObjectReader]) throws(ConfigError) -> SSLSettings {
        // `ssl_mode` is an object in the Airbyte shape; a bare string is accepted too.
        if case .string = r.raw("ssl_mode") {
            let mode = try r.choice("ssl_mode", sslModes, default: nil)
            if mode.verifiesCertificate {
                throw .invalid(path: "ssl_mode.ca_certificate", reason: "is required for \(mode.rawValue); give ssl_mode as an object with `mode` and `ca_certificate`")
            }
            return SSLSettings(mode: mode)
        }
        guard let s = try r.object("ssl_mode") else { return SSLSettings(mode: .require) }
        readers.append(s)
        let mode = try s.choice("mode", sslModes, default: .require)
        var settings = SSLSettings(
            mode: mode,
            caCertificate: try s.string("ca_certificate"),
            clientCertificate: try s.string("client_certificate"),
            clientKey: try s.secret("client_key"),
            clientKeyPassword: try s.secret("client_key_password"))
        if mode.verifiesCertificate && settings.caCertificate == nil {
            throw .invalid(path: "ssl_mode.ca_certificate", reason: "is required for \(mode.rawValue): paste the PEM of the CA that signed the server certificate")
        }
        if (settings.clientCertificate == nil) != (settings.clientKey == nil) {
            let missing = settings.clientCertificate == nil ? "client_certificate" : "client_key"
            throw .invalid(path: "ssl_mode.\(missing)", reason: "is required when the other half of the client certificate pair is set")
        }
        if mode == .disable { settings.caCertificate = nil }
        return settings
    }

    private static func parseTunnel(_ r: ObjectReader, readers: inout [ObjectReader]) throws(ConfigError) -> SSHTunnelSettings? {
        guard let t = try r.object("tunnel_method") else { return nil }
        readers.append(t)
        enum Kind { case none, key, password }
        let kind = try t.choice("tunnel_method", [
            (["NO_TUNNEL"], Kind.none), (["SSH_KEY_AUTH"], Kind.key), (["SSH_PASSWORD_AUTH"], Kind.password),
        ], default: Kind.none)
        if case .none = kind {
            for key in ["tunnel_host", "tunnel_port", "tunnel_user", "ssh_key", "tunnel_user_password", "ssh_key_passphrase", "tunnel_host_key"] {
                _ = t.raw(key)
            }
            return nil
        }
        let host = try t.requiredString("tunnel_host")
        let port = try t.int("tunnel_port", default: 22, range: 1...65535)
        let user = try t.requiredString("tunnel_user")
        let hostKey = try t.string("tunnel_host_key")
        if let hostKey {
            let trimmed = hostKey.trimmingSpaces()
            let isFingerprint = trimmed.hasPrefix("SHA256:")
            let isKnownHosts = trimmed.split(separator: " ").count >= 2
            guard isFingerprint || isKnownHosts else {
                throw .invalid(path: "tunnel_method.tunnel_host_key", reason: "must be a known_hosts line (`host keytype base64`) or an OpenSSH `SHA256:` fingerprint")
            }
        }
        let auth: SSHTunnelSettings.Authentication
        switch kind {
        case .key:
            let key = try t.requiredSecret("ssh_key", why: "for SSH_KEY_AUTH: paste the private key (PEM or OpenSSH format)")
            guard key.exposedValue.contains("-----BEGIN ") else {
                throw .invalid(path: "tunnel_method.ssh_key", reason: "is not a PEM or OpenSSH private key (no -----BEGIN line)")
            }
            auth = .key(key, passphrase: try t.secret("ssh_key_passphrase"))
            _ = t.raw("tunnel_user_password")
        default:
            auth = .password(try t.requiredSecret("tunnel_user_password", why: "for SSH_PASSWORD_AUTH"))
            _ = t.raw("ssh_key")
            _ = t.raw("ssh_key_passphrase")
        }
        return SSHTunnelSettings(host: host, port: port, user: user, authentication: auth, hostKey: hostKey)
    }

    private static func parseReplication(_ r: ObjectReader, readers: inout [ObjectReader]) throws(ConfigError) -> ReplicationMethod {
        let flatSlot = try r.string("replication_slot")
        let flatPublication = try r.string("publication_name")
        enum Kind { case standard, xmin, cdc }
        let methods: [(spellings: [String], value: Kind)] = [
            (["Standard", "STANDARD", "user_defined_cursor"], .standard), (["Xmin"], .xmin),
            (["CDC", "LOG_BASED", "logical_replication"], .cdc),
        ]
        guard let m = try r.object("replication_method") else {
            // The flat shape: a slot and a publication mean log-based replication.
            if flatSlot != nil || flatPublication != nil {
                guard let slot = flatSlot else {
                    throw .invalid(path: "replication_slot", reason: "is required with `publication_name` for log-based replication")
                }
                guard let pub = flatPublication else {
                    throw .invalid(path: "publication_name", reason: "is required with `replication_slot` for log-based replication")
                }
                return .cdc(CDCSettings(
                    replicationSlot: slot, publication: pub, initialWaitingSeconds: 1200,
                    lsnCommitBehaviour: .afterLoadingData, heartbeatActionQuery: nil,
                    invalidCursorBehaviour: .failSync, initialLoadTimeoutHours: 8))
            }
            return .standard
        }
        readers.append(m)
        switch try m.choice("method", methods, default: nil) {
        case .standard: return .standard
        case .xmin: return .xmin
        case .cdc:
            if let plugin = try m.string("plugin"), plugin != "pgoutput" {
                throw .invalid(path: "replication_method.plugin", reason: "only `pgoutput` is supported")
            }
            let slot = try m.string("replication_slot") ?? flatSlot
            let pub = try m.string("publication") ?? flatPublication
            guard let slot else { throw .invalid(path: "replication_method.replication_slot", reason: "is required for CDC") }
            guard let pub else { throw .invalid(path: "replication_method.publication", reason: "is required for CDC") }
            return .cdc(CDCSettings(
                replicationSlot: slot, publication: pub,
                initialWaitingSeconds: try m.int("initial_waiting_seconds", default: 1200, range: 1...7200),
                lsnCommitBehaviour: try m.choice("lsn_commit_behaviour", [
                    (["After loading Data in the destination"], .afterLoadingData), (["While reading Data"], .whileReadingData),
                ], default: .afterLoadingData),
                heartbeatActionQuery: try m.string("heartbeat_action_query"),
                invalidCursorBehaviour: try m.choice("invalid_cdc_cursor_position_behavior", [
                    (["Fail sync"], .failSync), (["Re-sync data"], .resync),
                ], default: .failSync),
                initialLoadTimeoutHours: try m.number("initial_load_timeout_hours", default: 8, above: 0, max: 168),
                createSlot: try m.bool("create_slot", default: false),
                setReplicaIdentity: try m.bool("set_replica_identity", default: false)))
        }
    }
}
