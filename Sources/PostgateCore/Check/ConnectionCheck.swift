import Foundation
import Logging

/// Runs `check`: walks the connection step by step and says which step failed and
/// which setting to look at, then verifies read access and, for CDC, replication readiness.
public struct ConnectionCheck {
    /// A step a connection goes through, in order.
    public enum Step: String, Sendable {
        case tunnel = "SSH tunnel"
        case nameResolution = "name resolution"
        case tcp = "TCP connection"
        case tls = "TLS"
        case authentication
        case database
        case permission
        case replication
        case connection
    }

    /// One problem found, with the setting to look at and, where there is one, SQL that fixes it.
    public struct Finding: Sendable, CustomStringConvertible {
        public var step: Step
        public var message: String
        public var setting: String?
        public var fix: String?

        public var description: String {
            var s = "\(step.rawValue) failed: \(message)"
            if let setting { s += " [check setting `\(setting)`]" }
            if let fix { s += " To fix: \(fix)" }
            return s
        }
    }

    public struct Report: Sendable {
        public var succeeded: Bool { failures.isEmpty }
        public var failures: [Finding] = []
        public var notes: [String] = []

        public var message: String {
            if succeeded { return notes.joined(separator: " ") }
            return (failures.map(\.description) + notes.map { "Note: \($0)" }).joined(separator: "\n")
        }
    }

    let config: PostgateConfig
    let logger: Logger

    public init(config: PostgateConfig, logger: Logger) {
        self.config = config
        self.logger = logger
    }

    public func run() -> Report {
        var report = Report()
        // 1. Network: only when the database is dialled directly; through a tunnel the bastion resolves it.
        if config.tunnel == nil {
            let addresses: [String]
            do {
                addresses = try NetworkProbe.resolve(host: config.host)
            } catch {
                report.failures.append(Finding(step: .nameResolution, message: "\(error). Is the host name spelled right and resolvable from this machine?", setting: "host"))
                return report
            }
            var lastFailure: NetworkProbe.Failure?
            var reached = false
            for a in addresses {
                do {
                    try NetworkProbe.connect(address: a, port: config.port, timeout: 10)
                    reached = true
                    break
                } catch {
                    lastFailure = error
                }
            }
            if !reached, let lastFailure {
                report.failures.append(Finding(step: .tcp, message: "\(lastFailure). Is PostgreSQL listening there, and does a firewall allow this machine?", setting: "host / port"))
                return report
            }
        }

        // 2. Connection: SSH tunnel, TLS, authentication, database.
        let factory: ConnectionFactory
        do {
            factory = try ConnectionFactory(config: config, logger: logger)
        } catch {
            report.failures.append(Self.setupFinding(error))
            return report
        }
        // The factory's inline key material goes as soon as the check is done, failed or not.
        defer { factory.close() }
        let conn: PGConnection
        do {
            if let t = try factory.openTunnel() {
                let pinned = config.tunnel?.hostKey != nil
                report.notes.append("SSH tunnel through \(t.bastion): host key \(t.hostKey.type) \(t.hostKey.fingerprint) " + (pinned
                    ? "matches the pinned key."
                    : "is NOT pinned; to refuse any other key set tunnel_method.tunnel_host_key to \"\(t.hostKey.fingerprint)\"."))
            }
            conn = try factory.connect()
        } catch let e as PostgresError {
            report.failures.append(Self.classify(e, config: config))
            return report
        } catch {
            report.failures.append(Self.setupFinding(error))
            return report
        }

        let version = conn.parameterStatus("server_version") ?? "?"
        var transport = "without TLS"
        if conn.usesTLS {
            transport = "over \(conn.tlsAttribute("protocol") ?? "TLS") (sslmode=\(config.ssl.mode.rawValue))"
        } else if config.ssl.mode != .disable {
            transport += " (sslmode=\(config.ssl.mode.rawValue) allowed a plain connection)"
        }
        report.notes.append("Connected to PostgreSQL \(version) at \(config.host):\(config.port), database \"\(config.database)\", as \"\(config.username)\" \(transport).")
        if let cert = conn.peerCertificate() {
            var line = "Server certificate: \(cert.subject)"
            if let end = cert.notAfter {
                let days = Int(end.timeIntervalSinceNow / 86_400)
                line += ", expires \(Self.isoDate(end))"
                if end.timeIntervalSinceNow < 0 {
                    line += " (EXPIRED)"
                } else if days < 30 {
                    line += " (WARNING: in \(days) days; renew it before connections start failing)"
                    logger.warning("the database server certificate \(cert.subject) expires in \(days) days (\(Self.isoDate(end)))")
                }
            }
            if !config.ssl.mode.verifiesCertificate {
                line += "; not verified (sslmode=\(config.ssl.mode.rawValue): the connection is encrypted but the server is not authenticated)"
            }
            report.notes.append(line + ".")
        }

        // 3. Read access to the selected schemas.
        do {
            try checkSchemas(conn, &report)
            if case .cdc(let cdc) = config.replication {
                try checkCDC(conn, cdc, &report)
            }
        } catch {
            report.failures.append(Finding(step: .permission, message: "a catalog query failed: \(error)"))
        }
        return report
    }

    private func checkSchemas(_ conn: PGConnection, _ report: inout Report) throws(PostgresError) {
        let user = PGConnection.quoteIdentifier(config.username)
        for schema in config.schemas {
            let q = PGConnection.quoteIdentifier(schema)
            let r = try conn.query("""
                SELECT has_schema_privilege(n.oid, 'USAGE') AS usage,
                  (SELECT count(*) FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid AND c.relkind IN ('r','p','v','m') AND NOT c.relispartition) AS total,
                  (SELECT count(*) FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid AND c.relkind IN ('r','p','v','m') AND NOT c.relispartition
                     AND has_table_privilege(c.oid, 'SELECT')) AS readable
                FROM pg_catalog.pg_namespace n WHERE n.nspname = $1
                """, [schema])
            guard r.rowCount == 1 else {
                report.failures.append(Finding(step: .permission, message: "schema \"\(schema)\" does not exist in database \"\(config.database)\".", setting: "schemas"))
                continue
            }
            let total = r.int(0, "total") ?? 0
            let readable = r.int(0, "readable") ?? 0
            if r.bool(0, "usage") != true {
                report.failures.append(Finding(
                    step: .permission, message: "user \"\(config.username)\" has no USAGE privilege on schema \"\(schema)\", so none of its \(total) relations can be read.",
                    setting: "schemas", fix: "GRANT USAGE ON SCHEMA \(q) TO \(user); GRANT SELECT ON ALL TABLES IN SCHEMA \(q) TO \(user);"))
            } else if total > 0 && readable == 0 {
                report.failures.append(Finding(
                    step: .permission, message: "user \"\(config.username)\" may not SELECT from any of the \(total) relations in schema \"\(schema)\".",
                    setting: "schemas", fix: "GRANT SELECT ON ALL TABLES IN SCHEMA \(q) TO \(user);"))
            } else if readable < total {
                report.notes.append("Schema \"\(schema)\": \(readable) of \(total) relations are readable; the others are left out of discovery (GRANT SELECT on them to include them).")
            } else {
                report.notes.append("Schema \"\(schema)\": \(readable) readable relations.")
            }
        }
    }

    private func checkCDC(_ conn: PGConnection, _ cdc: CDCSettings, _ report: inout Report) throws(PostgresError) {
        let user = PGConnection.quoteIdentifier(config.username)
        let walLevel = try conn.query("SHOW wal_level").string(0, 0) ?? "?"
        if walLevel != "logical" {
            report.failures.append(Finding(
                step: .replication, message: "wal_level is \"\(walLevel)\"; logical replication needs \"logical\".", setting: "replication_method",
                fix: "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (on RDS set rds.logical_replication = 1; on Azure set azure.replication_support = logical)."))
        }
        let role = try conn.query("SELECT rolreplication, rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user")
        if role.bool(0, "rolreplication") != true && role.bool(0, "rolsuper") != true {
            report.failures.append(Finding(
                step: .replication, message: "user \"\(config.username)\" lacks the REPLICATION attribute needed to stream changes.", setting: "username",
                fix: "ALTER ROLE \(user) WITH REPLICATION; (on RDS: GRANT rds_replication TO \(user);)"))
        }
        let slotLiteral = PGConnection.quoteLiteral(cdc.replicationSlot)
        let slot = try conn.query("""
            SELECT plugin, slot_type, database, wal_status, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8 AS retained
            FROM pg_catalog.pg_replication_slots WHERE slot_name = $1
            """, [cdc.replicationSlot])
        if slot.rowCount == 0 {
            report.failures.append(Finding(
                step: .replication, message: "replication slot \"\(cdc.replicationSlot)\" does not exist.", setting: "replication_method.replication_slot",
                fix: "SELECT pg_create_logical_replication_slot(\(slotLiteral), 'pgoutput'); (run in database \"\(config.database)\")"))
        } else {
            let plugin = slot.string(0, "plugin") ?? ""
            let db = slot.string(0, "database") ?? ""
            if slot.string(0, "slot_type") != "logical" || plugin != "pgoutput" {
                report.failures.append(Finding(
                    step: .replication, message: "replication slot \"\(cdc.replicationSlot)\" uses plugin \"\(plugin)\"; Postgate needs a logical slot with pgoutput.",
                    setting: "replication_method.replication_slot",
                    fix: "SELECT pg_drop_replication_slot(\(slotLiteral)); SELECT pg_create_logical_replication_slot(\(slotLiteral), 'pgoutput');"))
            }
            if slot.string(0, "wal_status") == "lost" {
                report.failures.append(Finding(
                    step: .replication, message: "replication slot \"\(cdc.replicationSlot)\" was invalidated (wal_status 'lost'): it fell more than max_slot_wal_keep_size behind and the server removed WAL it needed.",
                    setting: "replication_method.replication_slot",
                    fix: "set replication_method.invalid_cdc_cursor_position_behavior to \"Re-sync data\" and create_slot to true (the next run recreates the slot and loads every stream again), or SELECT pg_drop_replication_slot(\(slotLiteral)); SELECT pg_create_logical_replication_slot(\(slotLiteral), 'pgoutput'); and run without the saved state"))
            }
            do { try checkSlotHolders(conn, report: &report) } catch {
                report.notes.append("Could not look for transactions holding the slot back: \(error.description)")
            }
            if let retained = slot.int(0, "retained") {
                let mb = Double(retained) / 1_048_576
                var note = String(format: "Slot \"%@\" retains %.1f MiB of WAL.", cdc.replicationSlot, mb)
                if retained > Self.walRetentionWarning {
                    note += " WARNING: that is a lot; sync more often, or set heartbeat_action_query so an idle slot can advance."
                    logger.warning("replication slot \(cdc.replicationSlot) retains \(Int(mb)) MiB of WAL")
                }
                report.notes.append(note)
            }
            if db != config.database {
                report.failures.append(Finding(
                    step: .replication, message: "replication slot \"\(cdc.replicationSlot)\" belongs to database \"\(db)\", not \"\(config.database)\".",
                    setting: "replication_method.replication_slot",
                    fix: "create a slot in database \"\(config.database)\": SELECT pg_create_logical_replication_slot('<new name>', 'pgoutput');"))
            }
        }
        let pubIdent = PGConnection.quoteIdentifier(cdc.publication)
        let pub = try conn.query("SELECT puballtables FROM pg_catalog.pg_publication WHERE pubname = $1", [cdc.publication])
        let tables = try conn.query("""
            SELECT n.nspname, c.relname, c.relkind::text AS relkind, c.relreplident::text AS replident,
                   EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) AS has_pk,
                   EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables pt
                           WHERE pt.pubname = $2 AND pt.schemaname = n.nspname
                             AND (pt.tablename = c.relname OR pt.tablename IN (
                                  SELECT pc.relname FROM pg_catalog.pg_inherits h JOIN pg_catalog.pg_class pc ON pc.oid = h.inhrelid
                                  WHERE h.inhparent = c.oid))) AS published
            FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r','p') AND NOT c.relispartition
              AND has_table_privilege(c.oid, 'SELECT')
            ORDER BY 1, 2
            """, [Discovery.textArrayLiteral(config.schemas), cdc.publication])
        let names = (0..<tables.rowCount).map { r in
            PGConnection.quoteIdentifier(tables.string(r, "nspname") ?? "") + "." + PGConnection.quoteIdentifier(tables.string(r, "relname") ?? "")
        }
        if pub.rowCount == 0 {
            let forTables = names.isEmpty ? "FOR ALL TABLES" : "FOR TABLE " + names.joined(separator: ", ")
            report.failures.append(Finding(
                step: .replication, message: "publication \"\(cdc.publication)\" does not exist.", setting: "replication_method.publication",
                fix: "CREATE PUBLICATION \(pubIdent) \(forTables);"))
        } else {
            var missing: [String] = []
            var noIdentity: [String] = []
            for r in 0..<tables.rowCount {
                if tables.bool(r, "published") != true { missing.append(names[r]) }
                if tables.bool(r, "has_pk") != true && tables.string(r, "replident") == "d" { noIdentity.append(names[r]) }
            }
            let covered = names.count - missing.count
            report.notes.append("Publication \"\(cdc.publication)\" covers \(covered) of \(names.count) readable tables in the selected schemas.")
            if !missing.isEmpty {
                report.notes.append("Not in the publication, so not captured by CDC: \(missing.joined(separator: ", ")). To add them: ALTER PUBLICATION \(pubIdent) ADD TABLE \(missing.joined(separator: ", "));")
            }
            if !noIdentity.isEmpty {
                report.notes.append("Without a primary key or replica identity, updates and deletes cannot be captured for: \(noIdentity.joined(separator: ", ")). To fix: " + noIdentity.map { "ALTER TABLE \($0) REPLICA IDENTITY FULL;" }.joined(separator: " "))
            }
        }
        if report.failures.isEmpty {
            report.notes.append("CDC: wal_level is logical, slot \"\(cdc.replicationSlot)\" uses pgoutput, and the user may replicate.")
        }
    }

    /// Seconds after which an open transaction is named as holding the slot back
    /// (`POSTGATE_LONG_TX_SECONDS`, default 300).
    static var longTransactionSeconds: Int {
        ProcessInfo.processInfo.environment["POSTGATE_LONG_TX_SECONDS"].flatMap(Int.init).map { max(1, $0) } ?? 300
    }

    /// Names the long-running and prepared transactions that keep the slot from releasing WAL
    /// (logical decoding cannot move past the oldest transaction still open), and says what
    /// bounds the WAL a slot may keep. Query texts are not shown: they may hold secrets.
    private func checkSlotHolders(_ conn: PGConnection, report: inout Report) throws(PostgresError) {
        let limit = Self.longTransactionSeconds
        let open = try conn.query("""
            SELECT pid, coalesce(usename, '?') AS usename, coalesce(datname, '?') AS datname, coalesce(application_name, '') AS app,
                   coalesce(state, '?') AS state, extract(epoch FROM now() - xact_start)::int8 AS secs
            FROM pg_catalog.pg_stat_activity
            WHERE xact_start < now() - make_interval(secs => $1::int) AND pid <> pg_backend_pid() AND backend_type = 'client backend'
              AND backend_xid IS NOT NULL
            ORDER BY xact_start LIMIT 10
            """, [String(limit)])
        let prepared = try conn.query("""
            SELECT gid, owner, database, extract(epoch FROM now() - prepared)::int8 AS secs FROM pg_catalog.pg_prepared_xacts
            WHERE prepared < now() - make_interval(secs => $1::int) ORDER BY prepared LIMIT 10
            """, [String(limit)])
        var holders: [String] = []
        for r in 0..<open.rowCount {
            let app = open.string(r, "app").map { $0.isEmpty ? "" : ", application \"\($0)\"" } ?? ""
            holders.append("pid \(open.string(r, "pid") ?? "?") (user \(open.string(r, "usename") ?? "?"), database \(open.string(r, "datname") ?? "?")\(app), \(open.string(r, "state") ?? "?"), open for \(open.string(r, "secs") ?? "?") s)")
        }
        for r in 0..<prepared.rowCount {
            holders.append("prepared transaction \"\(prepared.string(r, "gid") ?? "?")\" (owner \(prepared.string(r, "owner") ?? "?"), database \(prepared.string(r, "database") ?? "?"), prepared \(prepared.string(r, "secs") ?? "?") s ago)")
        }
        let keep = try conn.query("SHOW max_slot_wal_keep_size").string(0, 0) ?? "-1"
        if !holders.isEmpty {
            report.notes.append("WARNING: transactions open for more than \(limit) s hold the slot back (the WAL it retains grows until they end): \(holders.joined(separator: "; ")). End them (SELECT pg_terminate_backend(pid); or COMMIT PREPARED / ROLLBACK PREPARED 'gid'), and consider idle_in_transaction_session_timeout.")
            logger.warning("\(holders.count) long-running transaction(s) hold the replication slot back")
        }
        if keep == "-1" {
            report.notes.append("max_slot_wal_keep_size is -1: a slot that falls behind keeps WAL without bound, until the disk fills. To bound it: ALTER SYSTEM SET max_slot_wal_keep_size = '50GB'; SELECT pg_reload_conf(); with invalid_cdc_cursor_position_behavior \"Re-sync data\" and create_slot, a slot invalidated by that limit is recreated and the streams loaded again.")
        } else {
            report.notes.append("max_slot_wal_keep_size is \(keep): a slot that falls further behind is invalidated (then invalid_cdc_cursor_position_behavior decides: stop, or with create_slot recreate it and load again).")
        }
    }

    /// The step that failed for an error of connection set-up other than libpq's.
    static func setupFinding(_ error: Error) -> Finding {
        switch error {
        case let e as EntraError: return Finding(step: .authentication, message: e.description)
        case let e as KeyError: return Finding(step: .tls, message: e.description)
        case let e as TunnelError: return Finding(step: .tunnel, message: e.description)
        default: return Finding(step: .connection, message: (error as? UserFacingError)?.userMessage ?? "\(error)")
        }
    }

    /// WAL retained by the slot past which `check` warns (1 GiB).
    static let walRetentionWarning: Int64 = 1 << 30

    static func isoDate(_ d: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withFullDate]
        return f.string(from: d)
    }

    /// Turns a libpq connection failure into the step that failed and the setting to check.
    static func classify(_ e: PostgresError, config: PostgateConfig) -> Finding {
        let m = e.message
        let lower = m.lowercased()
        func has(_ s: String) -> Bool { lower.contains(s) }
        // The server's own verdict first: its SQLSTATE holds whatever else the text mentions.
        switch e.sqlState {
        case "3D000"?:
            return Finding(step: .database, message: "\(m) (SQLSTATE 3D000). Check the name's spelling (names are case-sensitive) and that the database exists on this server.", setting: "database")
        case "28P01"?:
            return Finding(step: .authentication, message: m + " The username or password is wrong.", setting: "username / password")
        case "42501"?:
            return Finding(step: .permission, message: m, setting: "database", fix: "GRANT CONNECT ON DATABASE \(PGConnection.quoteIdentifier(config.database)) TO \(PGConnection.quoteIdentifier(config.username));")
        case let state? where state.hasPrefix("57") || state.hasPrefix("53"):
            return Finding(step: .connection, message: m + " The server is not accepting connections right now (starting up, shutting down or full); try again later.")
        default:
            break
        }
        if has("could not translate host name") {
            return Finding(step: .nameResolution, message: m, setting: "host")
        }
        if has("connection refused") || has("timeout expired") || has("no route to host") || has("network is unreachable") || has("connection timed out") {
            return Finding(step: .tcp, message: m, setting: "host / port")
        }
        if has("does not match host name") {
            return Finding(step: .tls, message: "the server certificate does not name host \"\(config.host)\" (verify-full checks the name): \(m)", setting: "host / ssl_mode")
        }
        if has("certificate authentication failed") || has("certificate for user") {
            return Finding(step: .authentication, message: m, setting: "ssl_mode.client_certificate / username")
        }
        if has("ssl") || has("certificate") || has("tls") {
            var hint = ""
            if has("server does not support ssl") { hint = " The server does not offer TLS; ask for TLS to be enabled, or lower ssl_mode if a plain connection is acceptable." }
            if has("certificate verify failed") { hint = " The server certificate is not signed by the CA in ssl_mode.ca_certificate." }
            if has("bad decrypt") || has("private key") || has("sslpassword") { hint = " The client key or its password (ssl_mode.client_key_password) is wrong." }
            return Finding(step: .tls, message: m + hint, setting: "ssl_mode")
        }
        if has("password authentication failed") || has("no password supplied") || has("authentication failed") {
            return Finding(step: .authentication, message: m + " The username or password is wrong.", setting: "username / password")
        }
        if has("role") && has("does not exist") {
            return Finding(step: .authentication, message: m, setting: "username")
        }
        if has("database") && has("does not exist") {
            return Finding(step: .database, message: m, setting: "database")
        }
        if has("no pg_hba.conf entry") {
            return Finding(step: .permission, message: m + " The server's pg_hba.conf does not admit this user from this address with this TLS setting; ask the DBA to add a rule.", setting: "username / ssl_mode")
        }
        if has("permission denied for database") {
            return Finding(step: .permission, message: m, setting: "database", fix: "GRANT CONNECT ON DATABASE \(PGConnection.quoteIdentifier(config.database)) TO \(PGConnection.quoteIdentifier(config.username));")
        }
        return Finding(step: .connection, message: m)
    }
}
