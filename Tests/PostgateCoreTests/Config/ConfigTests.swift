import Testing
@testable import PostgateCore

@Suite struct ConfigTests {
    // Built in pieces so the source holds no key-shaped block.
    static let pem = "-----BEGIN " + "OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ-secret-body\n-----END " + "OPENSSH PRIVATE KEY-----\n"

    func parse(_ text: String) throws(ConfigError) -> PostgateConfig.Loaded {
        do {
            return try PostgateConfig.parse(try JSONParser.parse(text))
        } catch let e as ConfigError {
            throw e
        } catch {
            throw .invalid(path: "$", reason: "test JSON invalid: \(error)")
        }
    }

    func expectError(_ text: String, path: String, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try parse(text)
            Issue.record("config parsed but should fail at \(path)", sourceLocation: sourceLocation)
        } catch {
            guard case .invalid(let p, _) = error else {
                Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
                return
            }
            #expect(p == path, sourceLocation: sourceLocation)
            #expect(error.description.contains("`\(path)`"), sourceLocation: sourceLocation)
        }
    }

    @Test func airbyteShape() throws {
        let loaded = try parse("""
            {"host": "db.example.com", "port": 6543, "database": "app", "username": "u", "password": "pw-1",
             "schemas": ["public", "Sales"], "jdbc_url_params": "connectTimeout=5&foo=bar",
             "ssl_mode": {"mode": "verify_ca", "ca_certificate": "-----BEGIN CERTIFICATE-----\\nX\\n-----END CERTIFICATE-----",
                          "client_certificate": "C", "client_key": "K", "client_key_password": "kp"},
             "tunnel_method": {"tunnel_method": "SSH_KEY_AUTH", "tunnel_host": "bastion", "tunnel_port": 2222,
                               "tunnel_user": "ops", "ssh_key": \(JSONValue.string(Self.pem).jsonText), "ssh_key_passphrase": "pp",
                               "tunnel_host_key": "SHA256:abcdef"},
             "replication_method": {"method": "CDC", "plugin": "pgoutput", "replication_slot": "s", "publication": "p",
                                    "initial_waiting_seconds": 300, "lsn_commit_behaviour": "While reading Data",
                                    "invalid_cdc_cursor_position_behavior": "Re-sync data", "initial_load_timeout_hours": 4},
             "checkpoint_target_interval_seconds": 60, "batch_fetch_limit": 1000}
            """)
        let c = loaded.config
        #expect(loaded.warnings.isEmpty)
        #expect(c.host == "db.example.com" && c.port == 6543 && c.database == "app" && c.username == "u")
        #expect(c.password?.exposedValue == "pw-1")
        #expect(c.schemas == ["public", "Sales"])
        #expect(c.jdbcURLParams == [.init(key: "connectTimeout", value: "5"), .init(key: "foo", value: "bar")])
        #expect(c.ssl.mode == .verifyCA)
        #expect(c.ssl.clientKeyPassword?.exposedValue == "kp")
        #expect(c.tunnel?.host == "bastion" && c.tunnel?.port == 2222 && c.tunnel?.user == "ops")
        #expect(c.tunnel?.hostKey == "SHA256:abcdef")
        guard case .key(let key, let pass) = c.tunnel?.authentication else { Issue.record("expected key auth"); return }
        #expect(key.exposedValue == Self.pem && pass?.exposedValue == "pp")
        guard case .cdc(let cdc) = c.replication else { Issue.record("expected CDC"); return }
        #expect(cdc.replicationSlot == "s" && cdc.publication == "p" && cdc.initialWaitingSeconds == 300)
        #expect(cdc.lsnCommitBehaviour == .whileReadingData && cdc.invalidCursorBehaviour == .resync && cdc.initialLoadTimeoutHours == 4)
        #expect(c.checkpointTargetIntervalSeconds == 60 && c.batchFetchLimit == 1000)
    }

    @Test func defaults() throws {
        let c = try parse(#"{"host": "h", "database": "d", "username": "u"}"#).config
        #expect(c.port == 5432 && c.schemas == ["public"] && c.ssl.mode == .require)
        #expect(c.batchFetchLimit == 50_000 && c.checkpointTargetIntervalSeconds == 300)
        #expect(c.tunnel == nil && c.entra == nil && c.password == nil)
        guard case .standard = c.replication else { Issue.record("expected Standard"); return }
    }

    @Test func flatSeedShape() throws {
        let c = try parse("""
            {"host": "db.bit.io", "port": 5432, "database": "demo", "username": "guest", "password": "abc123",
             "schema": "analytics", "replication_slot": "mage_slot", "publication_name": "mage_pub", "batch_fetch_limit": 20000}
            """).config
        #expect(c.schemas == ["analytics"] && c.batchFetchLimit == 20_000)
        guard case .cdc(let cdc) = c.replication else { Issue.record("expected CDC from the flat keys"); return }
        #expect(cdc.replicationSlot == "mage_slot" && cdc.publication == "mage_pub")
    }

    @Test(arguments: ["verify-ca", "verify_ca", "VERIFY-CA"])
    func verifyCASpellings(mode: String) throws {
        let c = try parse(#"{"host":"h","database":"d","username":"u","ssl_mode":{"mode":"\#(mode)","ca_certificate":"pem"}}"#).config
        #expect(c.ssl.mode == .verifyCA)
    }

    @Test func errorsNameTheJSONPath() {
        expectError(#"{"database":"d","username":"u"}"#, path: "host")
        expectError(#"{"host":"h","database":"d","username":"u","port":"abc"}"#, path: "port")
        expectError(#"{"host":"h","database":"d","username":"u","port":70000}"#, path: "port")
        expectError(#"{"host":"h","database":"d","username":"u","port":true}"#, path: "port")
        expectError(#"{"host":5,"database":"d","username":"u"}"#, path: "host")
        expectError(#"{"host":"h","database":"d","username":"u","schemas":["a",3]}"#, path: "schemas[1]")
        expectError(#"{"host":"h","database":"d","username":"u","ssl_mode":{"mode":"sometimes"}}"#, path: "ssl_mode.mode")
        expectError(#"{"host":"h","database":"d","username":"u","ssl_mode":{"mode":"verify-full"}}"#, path: "ssl_mode.ca_certificate")
        expectError(#"{"host":"h","database":"d","username":"u","tunnel_method":{"tunnel_method":"SSH_KEY_AUTH","tunnel_host":"b","tunnel_user":"o"}}"#, path: "tunnel_method.ssh_key")
        expectError(#"{"host":"h","database":"d","username":"u","tunnel_method":{"tunnel_method":"SSH_PASSWORD_AUTH","tunnel_host":"b","tunnel_user":"o"}}"#, path: "tunnel_method.tunnel_user_password")
        expectError(#"{"host":"h","database":"d","username":"u","tunnel_method":{"tunnel_method":"TELEPORT"}}"#, path: "tunnel_method.tunnel_method")
        expectError(#"{"host":"h","database":"d","username":"u","replication_method":{"method":"CDC","publication":"p"}}"#, path: "replication_method.replication_slot")
        expectError(#"{"host":"h","database":"d","username":"u","replication_method":{"method":"CDC","replication_slot":"s","publication":"p","plugin":"wal2json"}}"#, path: "replication_method.plugin")
        expectError(#"{"host":"h","database":"d","username":"u","replication_slot":"s"}"#, path: "publication_name")
        expectError(#"{"host":"h","database":"d","username":"u","password":"x","entra_service_principal_auth":true,"entra_client_id":"c"}"#, path: "entra_tenant_id")
        expectError(#"{"host":"h","database":"d","username":"u","entra_service_principal_auth":true,"entra_tenant_id":"t","entra_client_id":"c"}"#, path: "password")
        expectError(#"{"host":"h","database":"d","username":"u","batch_fetch_limit":0}"#, path: "batch_fetch_limit")
        expectError(#"{"host":"h","database":"d","username":"u","jdbc_url_params":"novalue"}"#, path: "jdbc_url_params")
        expectError(#"["not an object"]"#, path: "$")
    }

    @Test func unknownKeysAreWarningsWithTheirPath() throws {
        let loaded = try parse(#"{"host":"h","database":"d","username":"u","colour":"blue","ssl_mode":{"mode":"require","extra":1}}"#)
        #expect(loaded.warnings.contains { $0.contains("`colour`") })
        #expect(loaded.warnings.contains { $0.contains("`ssl_mode.extra`") })
        #expect(loaded.warnings.count == 2)
    }

    @Test func secretsAreRedactedInEveryDescription() throws {
        let c = try parse("""
            {"host":"h","database":"d","username":"u","password":"hunter2-pw",
             "ssl_mode":{"mode":"require","client_certificate":"C","client_key":"client-key-body","client_key_password":"ckp-secret"},
             "tunnel_method":{"tunnel_method":"SSH_KEY_AUTH","tunnel_host":"b","tunnel_user":"o","ssh_key":\(JSONValue.string(Self.pem).jsonText),"ssh_key_passphrase":"pass-phrase-x"},
             "entra_service_principal_auth":true,"entra_tenant_id":"t","entra_client_id":"c","entra_client_key":"entra-key-body"}
            """).config
        let renderings = [String(describing: c), String(reflecting: c), "\(c)", { var s = ""; dump(c, to: &s); return s }()]
        for text in renderings {
            for secret in ["hunter2-pw", "client-key-body", "ckp-secret", "secret-body", "pass-phrase-x", "entra-key-body"] {
                #expect(!text.contains(secret), "secret leaked in: \(text.prefix(80))")
            }
        }
        #expect(String(describing: c).contains("<redacted>"))
    }
}
