import Foundation
import Logging
import Testing
@testable import PostgateCore

/// The SSH tunnel against the lab's bastion, which alone can reach the database by its name.
@Suite struct TunnelTests {
    func check(_ c: JSONObject) throws -> (status: String, message: String, result: CLIResult) {
        let r = try CLI.run(["check", "--config", try CLI.writeConfig(c)])
        let msg = r.messages.first { $0["type"] == "CONNECTION_STATUS" }
        return (msg?["connectionStatus"]?["status"]?.stringValue ?? "", msg?["connectionStatus"]?["message"]?.stringValue ?? r.stdout, r)
    }

    @Test func theDatabaseNameIsUnreachableWithoutTheTunnel() throws {
        let lab = try Lab.load()
        #expect(throws: NetworkProbe.Failure.self) { try NetworkProbe.resolve(host: lab["PG_TUNNEL_HOST"]) }
        var direct = lab.tunnelConfig(.ed25519)
        direct["tunnel_method"] = ["tunnel_method": "NO_TUNNEL"]
        let (status, message, _) = try check(direct)
        #expect(status == "FAILED" && message.hasPrefix("name resolution failed"), "\(message)")
    }

    @Test(arguments: Lab.TunnelAuth.allCases)
    func checkDiscoverAndReadThroughTheTunnel(auth: Lab.TunnelAuth) throws {
        let f = try Fixture("tun_\(auth.rawValue)")
        try f.sql("CREATE TABLE \(f.q(f.schema)).t (id int PRIMARY KEY, v text); INSERT INTO \(f.q(f.schema)).t SELECT g, md5(g::text) FROM generate_series(1, 3000) g")
        let cfg = f.lab.tunnelConfig(auth, schemas: [f.schema])
        let (status, message, r) = try check(cfg)
        #expect(status == "SUCCEEDED", "\(auth): \(message)")
        #expect(message.contains("verify-full") && message.contains("TLSv1.3"), "TLS to the database is verified through the tunnel")
        #expect(message.contains(f.lab["SSH_HOST"]) && message.contains("SHA256:"))
        #expect(r.stderr.contains("not pinned"), "an unpinned host key is warned about")
        let d = try CLI.run(["discover", "--config", try CLI.writeConfig(cfg)])
        #expect(d.status == 0, "\(d.stderr)")
        #expect(d.messages.first?["catalog"]?["streams"]?.arrayValue?.first?["name"] == "t")
        var cfgSmall = cfg
        cfgSmall["batch_fetch_limit"] = 500
        let (rr, out) = try f.read(config: cfgSmall, catalog: f.catalog([("t", "full_refresh", nil)]))
        #expect(rr.status == 0, "\(rr.stderr)")
        #expect(Set(out.records.compactMap { $0["id"]?.int64Value }) == Set(1...3000))
        #expect(out.states.count > 1)
    }

    @Test func pinnedHostKeys() throws {
        let lab = try Lab.load()
        for pin in [lab["SSH_HOST_KEY_FINGERPRINT"], lab["SSH_KNOWN_HOSTS_LINE"]] {
            var c = lab.tunnelConfig(.ed25519)
            if case .object(var t)? = c["tunnel_method"] { t["tunnel_host_key"] = .string(pin); c["tunnel_method"] = .object(t) }
            let (status, message, r) = try check(c)
            #expect(status == "SUCCEEDED", "\(message)")
            #expect(message.contains("matches the pinned key") && !r.stderr.contains("not pinned"))
        }
        let wrong = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        var c = lab.tunnelConfig(.rsaPEM)
        if case .object(var t)? = c["tunnel_method"] { t["tunnel_host_key"] = .string(wrong); c["tunnel_method"] = .object(t) }
        let (status, message, _) = try check(c)
        #expect(status == "FAILED")
        #expect(message.contains("does not match the pinned one") && message.contains(wrong) && message.contains(lab["SSH_HOST_KEY_FINGERPRINT"]), "\(message)")
    }

    /// Every host key of the bastion (`ssh_host_*_key.pub` in the lab), pinned as a known_hosts line
    /// and as a fingerprint, is negotiated and accepted: RSA needs rsa-sha2-* (OpenSSH 8.8+ no longer
    /// offers ssh-rsa), which libssh2 1.10 lacks on its own. Other keys of the same types are refused.
    @Test func everyHostKeyOfTheBastionCanBePinned() throws {
        let lab = try Lab.load()
        let dir = lab["POSTGATE_LAB_DIR"] + "/ssh"
        let pubs = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("ssh_host_") && $0.hasSuffix("_key.pub") }.sorted()
        #expect(pubs.count >= 2 && pubs.contains("ssh_host_rsa_key.pub"), "\(pubs)")
        func pinned(_ pin: String) throws -> (status: String, message: String) {
            var c = lab.tunnelConfig(.ed25519)
            if case .object(var t)? = c["tunnel_method"] { t["tunnel_host_key"] = .string(pin); c["tunnel_method"] = .object(t) }
            let r = try check(c)
            return (r.status, r.message)
        }
        for pub in pubs {
            let fields = try String(contentsOfFile: "\(dir)/\(pub)", encoding: .utf8).split(separator: " ").map(String.init)
            let type = fields[0]
            let fingerprint = Digests.openSSHFingerprint(Array(Data(base64Encoded: fields[1])!))
            for pin in ["\(lab["SSH_HOST"]) \(type) \(fields[1])", fingerprint] {
                let (status, message) = try pinned(pin)
                #expect(status == "SUCCEEDED" && message.contains("host key \(type) \(fingerprint) matches the pinned key"), "\(pub) pinned as \(pin.prefix(30)): \(message)")
            }
        }
        // A different RSA key (a user key of the lab) in a known_hosts line, and an unknown fingerprint.
        let other = try String(contentsOfFile: lab["SSH_KEY_RSA_OPENSSH"] + ".pub", encoding: .utf8).split(separator: " ").map(String.init)
        for pin in ["\(lab["SSH_HOST"]) ssh-rsa \(other[1])", "SHA256:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"] {
            let (status, message) = try pinned(pin)
            #expect(status == "FAILED" && message.contains("does not match the pinned one"), "\(message)")
        }
    }

    @Test func failuresNameTheirCause() throws {
        let lab = try Lab.load()
        func tunnel(_ c: inout JSONObject, _ edit: (inout JSONObject) -> Void) {
            if case .object(var t)? = c["tunnel_method"] { edit(&t); c["tunnel_method"] = .object(t) }
        }
        // A key the bastion does not know.
        var unknownKey = lab.tunnelConfig(.ed25519)
        tunnel(&unknownKey) { $0["ssh_key"] = .string(lab.file("SSH_KEY_UNKNOWN")) }
        var r = try check(unknownKey)
        #expect(r.status == "FAILED" && r.message.contains("not in the user's authorized_keys") && r.message.contains("tunnel_method.ssh_key"), "\(r.message)")
        // A wrong password.
        var wrongPassword = lab.tunnelConfig(.password)
        tunnel(&wrongPassword) { $0["tunnel_user_password"] = .string(TestSecrets.extra[1]) }
        r = try check(wrongPassword)
        #expect(r.status == "FAILED" && r.message.contains("wrong user name or password") && r.message.contains("tunnel_user_password"), "\(r.message)")
        // An encrypted key without its passphrase, and with a wrong one.
        var noPass = lab.tunnelConfig(.ed25519Encrypted)
        tunnel(&noPass) { $0["ssh_key_passphrase"] = nil }
        r = try check(noPass)
        #expect(r.status == "FAILED" && r.message.contains("passphrase"), "\(r.message)")
        tunnel(&noPass) { $0["ssh_key_passphrase"] = .string(TestSecrets.extra[0]) }
        r = try check(noPass)
        #expect(r.status == "FAILED" && r.message.contains("passphrase"), "\(r.message)")
        // A bastion that forbids forwarding.
        let noForward = lab.tunnelConfig(.ed25519, user: lab["SSH_NOFWD_USER"])
        r = try check(noForward)
        #expect(r.status == "FAILED" && r.message.contains("port forwarding is disabled"), "\(r.message)")
        // A database port the bastion cannot reach.
        var badTarget = lab.tunnelConfig(.ed25519)
        badTarget["port"] = 1
        r = try check(badTarget)
        #expect(r.status == "FAILED" && r.message.contains("could not connect to db.postgate.test:1"), "\(r.message)")
        // An unreachable and an unresolvable bastion.
        var unreachable = lab.tunnelConfig(.ed25519)
        tunnel(&unreachable) { $0["tunnel_port"] = 1 }
        r = try check(unreachable)
        #expect(r.status == "FAILED" && r.message.contains("cannot reach bastion") && r.message.contains("tunnel_port"), "\(r.message)")
        var unresolvable = lab.tunnelConfig(.ed25519)
        tunnel(&unresolvable) { $0["tunnel_host"] = "bastion.invalid" }
        r = try check(unresolvable)
        #expect(r.status == "FAILED" && r.message.contains("cannot resolve bastion host") && r.message.contains("tunnel_host"), "\(r.message)")
        // An RSA key in encrypted OpenSSH form says how to convert it (made here with ssh-keygen).
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pg-key-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let keygen = Process()
        keygen.executableURL = URL(fileURLWithPath: "/usr/bin/ssh-keygen")
        keygen.arguments = ["-q", "-t", "rsa", "-b", "2048", "-N", TestSecrets.extra[0], "-f", "\(dir)/k"]
        try keygen.run()
        keygen.waitUntilExit()
        var encRSA = lab.tunnelConfig(.rsaOpenSSH)
        tunnel(&encRSA) {
            $0["ssh_key"] = .string((try? String(contentsOfFile: "\(dir)/k", encoding: .utf8)) ?? "")
            $0["ssh_key_passphrase"] = .string(TestSecrets.extra[0])
        }
        r = try check(encRSA)
        #expect(r.status == "FAILED" && r.message.contains("ssh-keygen -p -m PEM"), "\(r.message)")
    }

    @Test func manyConnectionsShareOneTunnelAndADeadTunnelIsRebuilt() throws {
        let lab = try Lab.load()
        let config = try PostgateConfig.parse(.object(lab.tunnelConfig(.ed25519, user: lab["SSH_DROP_USER"]))).config
        let manager = TunnelManager()
        let settings = try #require(config.tunnel)
        let t1 = try manager.tunnel(for: settings, targetHost: config.host, targetPort: config.port, logger: Logger(label: "test"))
        let t2 = try manager.tunnel(for: settings, targetHost: config.host, targetPort: config.port, logger: Logger(label: "test"))
        #expect(t1 === t2)
        // Four libpq connections at once over the one SSH session.
        let factory = try ConnectionFactory(config: config, logger: Logger(label: "test"))
        let conns = try (0..<4).map { _ in try PGConnection(parameters: factory.parameters(forwardPort: t1.localPort), logger: Logger(label: "test")) }
        for (k, c) in conns.enumerated() { #expect(try c.query("SELECT \(k) + 1").string(0, 0) == String(k + 1)) }
        // The bastion drops the session: the tunnel notices promptly and the next request rebuilds it.
        try Lab.script(["kill-bastion-sessions", lab["SSH_DROP_USER"]])
        let start = Date()
        while t1.isAlive && Date().timeIntervalSince(start) < 10 { Thread.sleep(forTimeInterval: 0.05) }
        #expect(!t1.isAlive, "a dropped session is noticed within seconds")
        #expect(throws: PostgresError.self) { try conns[0].query("SELECT 1") }
        let t3 = try manager.tunnel(for: settings, targetHost: config.host, targetPort: config.port, logger: Logger(label: "test"))
        #expect(t3 !== t1 && t3.isAlive)
        let c = try PGConnection(parameters: factory.parameters(forwardPort: t3.localPort), logger: Logger(label: "test"))
        #expect(try c.query("SELECT 'again'").string(0, 0) == "again")
        manager.shutdown()
        #expect(!t3.isAlive)
    }

    @Test func killingTheBastionMidReadFailsFastAndTheReadResumes() throws {
        let f = try Fixture("tunkill")
        let total = 60_000
        try f.sql("CREATE TABLE \(f.q(f.schema)).t (id int PRIMARY KEY, pad text); INSERT INTO \(f.q(f.schema)).t SELECT g, repeat('z', 200) FROM generate_series(1, \(total)) g; ANALYZE \(f.q(f.schema)).t")
        var cfg = f.lab.tunnelConfig(.rsaPEM, user: f.lab["SSH_KILL_USER"], schemas: [f.schema])
        cfg["batch_fetch_limit"] = 2000
        let cat = f.catalog([("t", "full_refresh", nil)])
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLI.binary)
        p.arguments = ["read", "--config", try CLI.writeConfig(cfg), "--catalog", try CLI.writeTemp(cat.jsonText, suffix: ".json")]
        let out = Pipe()
        // stderr to a file: a pipe nobody reads until exit could fill and block the read.
        let errPath = try CLI.writeTemp("", suffix: ".err")
        p.standardOutput = out
        p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        try p.run()
        let dog = Watchdog(p, seconds: 120, "postgate read through a killed bastion")
        defer { dog.cancel() }
        var data = Data()
        var killedAt: Date?
        while true {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            data.append(chunk)
            if killedAt == nil, ReadOutput(text: String(decoding: data, as: UTF8.self)).states.count >= 2 {
                try Lab.script(["kill-bastion-sessions", f.lab["SSH_KILL_USER"]])
                killedAt = Date()
            }
        }
        p.waitUntilExit()
        let stderr = try String(contentsOfFile: errPath, encoding: .utf8)
        let elapsed = Date().timeIntervalSince(try #require(killedAt, "the read finished before the kill; make the table larger"))
        #expect(p.terminationStatus != 0)
        #expect(elapsed < 10, "the read fails within seconds of losing the bastion (took \(elapsed) s)")
        #expect(stderr.contains("SSH tunnel to") && stderr.contains("was lost"), "\(stderr)")
        let first = ReadOutput(text: String(decoding: data, as: UTF8.self))
        #expect(first.lines.last { $0["type"] == "TRACE" }?["trace"]?["error"] != nil || first.lines.contains { $0["trace"]?["type"] == "ERROR" })
        let (r2, second) = try f.read(config: cfg, catalog: cat, state: try #require(first.lastState).stateFile)
        #expect(r2.status == 0, "\(r2.stderr)")
        let ids = (first.records + second.records).compactMap { $0["id"]?.int64Value }
        #expect(Set(ids) == Set(1...Int64(total)), "the resumed read completes the table")
        #expect(second.records.count < total)
    }

    @Test func tunnelCommandHoldsAForwardUntilSignalled() throws {
        let lab = try Lab.load()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLI.binary)
        p.arguments = ["tunnel", "--config", try CLI.writeConfig(lab.tunnelConfig(.password))]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let dog = Watchdog(p, seconds: 60, "postgate tunnel")
        defer { dog.cancel() }
        var text = ""
        while !text.contains("Press Ctrl-C") {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        let first = text.split(separator: "\n").first.map(String.init) ?? ""
        let afterAddress = first.components(separatedBy: "127.0.0.1:").dropFirst().first ?? ""
        let port = try #require(Int(afterAddress.prefix { $0.isNumber }), "\(text)")
        #expect(text.contains("hostaddr=127.0.0.1 port=\(port)"))
        let c = try PGConnection(parameters: [
            ("host", lab["PG_TUNNEL_HOST"]), ("hostaddr", "127.0.0.1"), ("port", String(port)), ("dbname", lab["PG_DATABASE"]),
            ("user", lab["PG_READER_USER"]), ("password", lab["PG_READER_PASSWORD"]), ("sslmode", "verify-full"), ("sslrootcert", lab["CA_CERT"]),
        ], logger: Logger(label: "test"))
        #expect(try c.query("SELECT inet_server_addr()::text").string(0, 0) == "127.0.0.1/32", "the bastion dialled the database on its own loopback")
        p.terminate()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        #expect(throws: NetworkProbe.Failure.self) { try NetworkProbe.connect(address: "127.0.0.1", port: port, timeout: 2) }
    }
}
