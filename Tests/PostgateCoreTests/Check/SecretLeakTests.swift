import Foundation
import Testing
@testable import PostgateCore

/// Runs every command with configs full of secrets, on success and failure paths, and scans
/// all output for each secret (CLI.run asserts the scan on every invocation).
@Suite struct SecretLeakTests {
    @Test func noSecretInAnyOutput() throws {
        let lab = try Lab.load()
        var configs: [JSONObject] = []
        configs.append(lab.readerConfig())
        var wrong = lab.readerConfig()
        wrong["password"] = .string(TestSecrets.extra[1])
        configs.append(wrong)
        var cert = lab.readerConfig()
        cert["username"] = .string(lab["PG_CERT_USER"])
        cert["ssl_mode"] = [
            "mode": "verify-full", "ca_certificate": .string(lab.file("CA_CERT")),
            "client_certificate": .string(lab.file("CLIENT_CERT")), "client_key": .string(lab.file("CLIENT_KEY")),
            "client_key_password": .string(lab["CLIENT_KEY_PASSWORD"]),
        ]
        configs.append(cert)
        var badKeyPassword = cert
        if case .object(var ssl)? = cert["ssl_mode"] {
            ssl["client_key_password"] = .string(TestSecrets.extra[0])
            badKeyPassword["ssl_mode"] = .object(ssl)
        }
        configs.append(badKeyPassword)
        var tunnel = lab.readerConfig()
        tunnel["tunnel_method"] = [
            "tunnel_method": "SSH_KEY_AUTH", "tunnel_host": .string(lab["SSH_HOST"]), "tunnel_port": .number(lab["SSH_PORT"]),
            "tunnel_user": .string(lab["SSH_KEY_USER"]), "ssh_key": .string(lab.file("SSH_KEY_ED25519_ENC")),
            "ssh_key_passphrase": .string(lab["SSH_KEY_PASSPHRASE"]),
        ]
        configs.append(tunnel)
        var tunnelPassword = lab.readerConfig()
        tunnelPassword["tunnel_method"] = [
            "tunnel_method": "SSH_PASSWORD_AUTH", "tunnel_host": .string(lab["SSH_HOST"]), "tunnel_port": .number(lab["SSH_PORT"]),
            "tunnel_user": .string(lab["SSH_PASSWORD_USER"]), "tunnel_user_password": .string(lab["SSH_PASSWORD"]),
        ]
        configs.append(tunnelPassword)
        var entra = lab.readerConfig()
        entra["password"] = .string(TestSecrets.extra[0])
        entra["entra_service_principal_auth"] = true
        entra["entra_tenant_id"] = "tenant"
        entra["entra_client_id"] = "client"
        configs.append(entra)
        var illTyped = lab.readerConfig()
        illTyped["port"] = .string(lab["PG_ADMIN_PASSWORD"])
        configs.append(illTyped)

        var runs = 0
        for c in configs {
            let path = try CLI.writeConfig(c)
            defer { try? FileManager.default.removeItem(atPath: path) }
            for command in ["check", "discover"] {
                let r = try CLI.run([command, "--config", path], environment: ["POSTGATE_LOG_LEVEL": "trace"])
                #expect(!r.stdout.isEmpty, "every run says something on stdout")
                runs += 1
            }
            // Singer mode: its stdout carries a catalog or nothing; a failure is told on stderr.
            let r = try CLI.run(["--config", path, "--discover"], environment: ["POSTGATE_LOG_LEVEL": "trace"])
            #expect(r.stdout.hasPrefix(#"{"streams":"#) || (r.status != 0 && r.stdout.isEmpty && r.stderr.contains("postgate: error:")),
                    "Singer discover prints a catalog, or fails on stderr alone")
            runs += 1
        }
        #expect(runs == configs.count * 3)
    }
}
