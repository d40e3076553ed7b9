import Foundation
import Testing
@testable import PostgateCore

@Suite struct SpecAndUsageTests {
    @Test func specIsOneSPECMessageWithEverySetting() throws {
        let r = try CLI.run(["spec"])
        #expect(r.status == 0)
        #expect(r.stdoutLines.count == 1)
        let msg = try #require(r.messages.first)
        #expect(msg["type"] == "SPEC")
        let schema = try #require(msg["spec"]?["connectionSpecification"])
        let props = try #require(schema["properties"]?.objectValue)
        for key in ["host", "port", "database", "username", "password", "schemas", "jdbc_url_params", "ssl_mode", "tunnel_method",
                    "replication_method", "entra_service_principal_auth", "entra_tenant_id", "entra_client_id", "entra_authority_host",
                    "checkpoint_target_interval_seconds", "batch_fetch_limit", "schema", "replication_slot", "publication_name"] {
            #expect(props[key] != nil, "spec lacks \(key)")
        }
        #expect(props["password"]?["airbyte_secret"] == true)
        // Every secret-bearing setting inside the oneOf branches is marked.
        var marked: Set<String> = []
        func walk(_ v: JSONValue) {
            if case .object(let o) = v {
                for (k, child) in o.entries {
                    if child["airbyte_secret"] == true { marked.insert(k) }
                    walk(child)
                }
            } else if case .array(let a) = v {
                a.forEach(walk)
            }
        }
        walk(schema)
        for secret in ["password", "ssh_key", "ssh_key_passphrase", "tunnel_user_password", "client_key", "client_key_password", "entra_client_key"] {
            #expect(marked.contains(secret), "\(secret) is not marked airbyte_secret")
        }
        let modes = props["ssl_mode"]?["oneOf"]?.arrayValue?.compactMap { $0["properties"]?["mode"]?["const"]?.stringValue }
        #expect(modes == ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"])
    }

    @Test func malformedConfigNamesTheByteOffset() throws {
        let path = try CLI.writeTemp(#"{"host": "h", "port": 5432,, }"#, suffix: ".json")
        let r = try CLI.run(["check", "--config", path])
        #expect(r.status != 0)
        #expect(r.stdoutLines.count == 1)
        let msg = try #require(r.messages.first)
        #expect(msg["type"] == "TRACE" && msg["trace"]?["type"] == "ERROR")
        #expect(msg["trace"]?["error"]?["failure_type"] == "config_error")
        #expect(msg["trace"]?["error"]?["message"]?.stringValue?.contains("byte offset 27") == true, "\(r.stdout)")
        #expect(r.stderr.contains("byte offset 27"))
    }

    @Test func illTypedConfigNamesTheSetting() throws {
        let path = try CLI.writeConfig(["host": "h", "database": "d", "username": "u", "port": "five"])
        for command in ["check", "discover"] {
            let r = try CLI.run([command, "--config", path])
            #expect(r.status != 0)
            let msg = try #require(r.messages.first)
            #expect(msg["trace"]?["error"]?["message"]?.stringValue?.contains("`port`") == true)
            #expect(r.stderr.contains("`port`"))
        }
    }

    @Test func missingConfigFile() throws {
        let r = try CLI.run(["discover", "--config", "/nonexistent/postgate.json"])
        #expect(r.status != 0)
        #expect(r.messages.first?["type"] == "TRACE")
        #expect(r.stderr.contains("/nonexistent/postgate.json"))
    }

    @Test func usageErrorsAreReportedInBothForms() throws {
        let r = try CLI.run(["check"])
        #expect(r.status != 0)
        #expect(r.messages.first?["type"] == "TRACE")
        #expect(r.stderr.contains("--config"))
        let unknown = try CLI.run(["frobnicate"])
        #expect(unknown.status != 0)
    }

    @Test func unknownKeysAreLoggedOnStderrNotStdout() throws {
        let lab = try Lab.load()
        var c = lab.readerConfig()
        c["favourite_colour"] = "teal"
        let path = try CLI.writeConfig(c)
        let r = try CLI.run(["check", "--config", path])
        #expect(r.stderr.contains("`favourite_colour`"))
        #expect(!r.stdout.contains("favourite_colour"))
        #expect(r.stdoutLines.count == 1)
    }
}
