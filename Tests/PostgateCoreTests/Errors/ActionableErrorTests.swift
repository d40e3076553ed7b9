import Foundation
import Testing
@testable import PostgateCore

/// Errors name the setting or input at fault and how to fix it (issue #12, item 10).
@Suite struct ActionableErrorTests {
    /// The TRACE error of a failed run: (failure_type, message).
    static func traceError(_ r: CLIResult) -> (type: String, message: String)? {
        guard let e = r.messages.first(where: { $0["trace"]?["type"] == "ERROR" })?["trace"]?["error"] else { return nil }
        return (e["failure_type"]?.stringValue ?? "", e["message"]?.stringValue ?? "")
    }

    // MARK: missing database

    /// The server says 3D000 whatever else its message or the TLS mode is; check blames `database`.
    @Test(arguments: ["verify-full", "require", "prefer", "disable"])
    func aMissingDatabaseIsBlamedOnTheDatabaseSetting(sslMode: String) throws {
        let lab = try Lab.load()
        var c = lab.readerConfig(sslMode: sslMode)
        c["database"] = "no_such_db_with_ssl_in_its_name"
        let r = try CLI.run(["check", "--config", try CLI.writeConfig(c)])
        let message = r.messages.first?["connectionStatus"]?["message"]?.stringValue ?? r.stdout
        #expect(message.hasPrefix("database failed") && message.contains("`database`") && !message.contains("ssl_mode"), "\(sslMode): \(message)")
        #expect(message.contains("3D000"), "\(message)")
        let d = try CLI.run(["discover", "--config", try CLI.writeConfig(c)])
        #expect(d.status == 1 && Self.traceError(d)?.type == "config_error", "\(d.stderr)")
    }

    @Test func aMissingDatabaseThroughTheTunnelIsBlamedOnTheDatabaseSetting() throws {
        let lab = try Lab.load()
        var c = lab.tunnelConfig(.ed25519)
        c["database"] = "no_such_db_tls"
        let r = try CLI.run(["check", "--config", try CLI.writeConfig(c)])
        let message = r.messages.first?["connectionStatus"]?["message"]?.stringValue ?? r.stdout
        #expect(message.hasPrefix("database failed") && message.contains("`database`") && !message.contains("ssl_mode"), "\(message)")
    }

    @Test func verboseConnectionErrorsAreSplitIntoTextAndSQLState() {
        let e = PGConnection.verboseFailure("connection to server at \"h\" (10.0.0.1), port 5432 failed: FATAL:  3D000: database \"x\" does not exist\nLOCATION:  InitPostgres, postinit.c:885\n")
        #expect(e.sqlState == "3D000")
        #expect(e.message == "connection to server at \"h\" (10.0.0.1), port 5432 failed: FATAL:  database \"x\" does not exist")
        let plain = PGConnection.verboseFailure("could not translate host name \"nope\" to address: Name or service not known\n")
        #expect(plain.sqlState == nil && plain.message == "could not translate host name \"nope\" to address: Name or service not known")
    }

    // MARK: cursor state of the wrong type

    @Test func aCursorStateTheColumnCannotHoldNamesStateStreamFieldAndValue() throws {
        let f = try Fixture("err_cursor")
        try f.sql("CREATE TABLE \(f.q(f.schema)).t (id int PRIMARY KEY, v text); INSERT INTO \(f.q(f.schema)).t VALUES (1, 'a'), (2, 'b')")
        let state = AirbyteMessage.streamState(
            namespace: f.schema, name: "t", state: .incremental(.cursor(StreamState.Cursor(field: "id", value: "abc", recordCount: 1))), recordCount: 0)
        let cfg = try CLI.writeConfig(f.config())
        let cat = try CLI.writeTemp(f.catalog([("t", "incremental", "id")]).jsonText, suffix: ".json")
        let stateFile = try CLI.writeTemp(state.stateFile, suffix: ".json")
        let r = try CLI.run(["read", "--config", cfg, "--catalog", cat, "--state", stateFile])
        let e = try #require(Self.traceError(r), "\(r.stderr)")
        #expect(r.status == 1 && e.type == "config_error")
        for part in ["state file \(stateFile)", "\(f.schema).t", "cursor field \"id\"", "'abc'", "integer", "reset this stream's state"] {
            #expect(e.message.contains(part), "missing \(part): \(e.message)")
        }
    }

    // MARK: catalog columns

    func catalog(_ f: Fixture, properties: [String]) -> JSONValue {
        .object(["streams": [[
            "stream": ["name": "t", "namespace": .string(f.schema),
                       "json_schema": ["type": "object", "properties": .object(JSONObject(properties.map { name -> (String, JSONValue) in (name, .object(["type": "string"])) }))]],
            "sync_mode": "full_refresh", "destination_sync_mode": "overwrite",
        ]]])
    }

    @Test(arguments: [["nope"], ["id", "nope"], []])
    func aCatalogNamingNoRealColumnIsRefusedAtPlanning(properties: [String]) throws {
        let f = try Fixture("err_cols")
        try f.sql("CREATE TABLE \(f.q(f.schema)).t (id int PRIMARY KEY, v text); INSERT INTO \(f.q(f.schema)).t VALUES (1, 'a')")
        let cfg = try CLI.writeConfig(f.config())
        let cat = try CLI.writeTemp(catalog(f, properties: properties).jsonText, suffix: ".json")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("postgate-err-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let sync = try CLI.run(["sync", "--config", cfg, "--catalog", cat, "--destination", "sqlite:\(dir)/d.db"])
        let read = try CLI.run(["read", "--config", cfg, "--catalog", cat])
        for (command, r) in [("sync", sync), ("read", read)] {
            let e = Self.traceError(r)
            #expect(r.status == 1 && e?.type == "config_error", "\(command): \(r.stderr)")
            let message = e?.message ?? r.stderr
            #expect(message.contains(cat) && message.contains("streams[0].stream.json_schema.properties"), "\(command): \(message)")
            #expect(!message.contains("syntax error"), "\(command): \(message)")
            if properties.contains("nope") { #expect(message.contains("\"nope\"") && message.contains("\"v\""), "\(command): \(message)") }
        }
    }

    // MARK: NUL in settings

    @Test func aNULInsideASettingIsRefusedNamingItsPath() throws {
        let lab = try Lab.load()
        var c = lab.readerConfig()
        c["password"] = .string(lab["PG_READER_PASSWORD"] + "\u{0}tail")
        let r = try CLI.run(["check", "--config", try CLI.writeConfig(c)])
        let e = try #require(Self.traceError(r), "\(r.stdout)")
        #expect(r.status == 1 && e.type == "config_error")
        #expect(e.message.contains("`password`") && e.message.contains("NUL"), "\(e.message)")
    }

    /// Every string setting of every example config, and of nested shapes, goes through the same check.
    @Test func everyStringSettingRefusesNUL() throws {
        var configs: [(String, JSONValue)] = []
        for f in try FileManager.default.contentsOfDirectory(atPath: ExampleConfigTests.configDir.path).filter({ $0.hasSuffix(".json") }).sorted() {
            var json = try JSONParser.parse([UInt8](Data(contentsOf: ExampleConfigTests.configDir.appendingPathComponent(f))))
            // The key placeholder is prose; put a key-shaped value in its place (as ExampleConfigTests does).
            if case .object(var root) = json, case .object(var t)? = root["tunnel_method"], t["ssh_key"] != nil {
                t["ssh_key"] = .string("-----BEGIN " + "OPENSSH PRIVATE KEY-----\nAAAA\n-----END " + "OPENSSH PRIVATE KEY-----\n")
                root["tunnel_method"] = .object(t)
                json = .object(root)
            }
            configs.append((f, json))
        }
        #expect(configs.count >= 6)
        func leaves(_ v: JSONValue, _ path: String) -> [String] {
            switch v {
            case .string: return [path]
            case .object(let o): return o.entries.flatMap { leaves($0.value, path.isEmpty ? $0.key : "\(path).\($0.key)") }
            case .array(let a): return a.indices.flatMap { leaves(a[$0], "\(path)[\($0)]") }
            default: return []
            }
        }
        func replacing(_ v: JSONValue, at path: String, prefix: String = "") -> JSONValue {
            switch v {
            case .string(let s): return prefix == path ? .string(String(s.prefix(1)) + "\u{0}" + s.dropFirst()) : v
            case .object(var o):
                for (k, child) in o.entries { o[k] = replacing(child, at: path, prefix: prefix.isEmpty ? k : "\(prefix).\(k)") }
                return .object(o)
            case .array(let a): return .array(a.indices.map { replacing(a[$0], at: path, prefix: "\(prefix)[\($0)]") })
            default: return v
            }
        }
        func failure(_ json: JSONValue) -> ConfigError? {
            do { _ = try PostgateConfig.parse(json) } catch { return error }
            return nil
        }
        var checked = 0
        for (file, json) in configs {
            for path in leaves(json, "") {
                let e = failure(replacing(json, at: path))
                if case .invalid(let p, let reason)? = e, p == path, reason.contains("NUL") {
                    checked += 1
                } else {
                    Issue.record("\(file): a NUL in `\(path)` gave \(e.map { "\($0)" } ?? "no error")")
                }
            }
        }
        #expect(checked > 30)
    }
}
