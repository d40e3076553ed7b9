import Foundation
import Testing
@testable import PostgateCore

/// The messages of one `postgate read`, sorted by kind.
struct ReadOutput {
    var lines: [JSONValue]
    var records: [JSONValue] { lines.filter { $0["type"] == "RECORD" }.compactMap { $0["record"]?["data"] } }
    var recordMessages: [JSONValue] { lines.filter { $0["type"] == "RECORD" } }
    var states: [JSONValue] { lines.filter { $0["type"] == "STATE" } }
    var logs: [String] { lines.filter { $0["type"] == "LOG" }.compactMap { $0["log"]?["message"]?.stringValue } }
    var statuses: [String] { lines.filter { $0["trace"]?["type"] == "STREAM_STATUS" }.compactMap { $0["trace"]?["stream_status"]?["status"]?.stringValue } }
    var lastState: JSONValue? { states.last }
    var streamState: JSONValue? { lastState?["state"]?["stream"]?["stream_state"] }

    init(text: String) {
        // A killed run may end in a partial line; it is ignored as a consumer would.
        lines = text.split(separator: "\n").compactMap { try? JSONParser.parse(String($0)) }
    }

    /// The values of one column over all records.
    func column(_ name: String) -> [JSONValue] { records.map { $0[name] ?? .null } }
}

/// A schema with tables for one test, dropped afterwards.
final class Fixture {
    let lab: Lab
    let admin: PGConnection
    let schema: String

    init(_ prefix: String) throws {
        lab = try Lab.load()
        admin = try lab.adminConnection()
        schema = "\(prefix)_\(UInt32.random(in: 0...UInt32.max))"
        try admin.query("CREATE SCHEMA \(q(schema))")
        try admin.query("GRANT USAGE ON SCHEMA \(q(schema)) TO postgate_reader")
    }

    /// Schemas a test made besides `schema`, dropped with it.
    var extraSchemas: [String] = []

    deinit {
        for s in extraSchemas { _ = try? admin.query("DROP SCHEMA IF EXISTS \(q(s)) CASCADE") }
        _ = try? admin.query("DROP SCHEMA \(q(schema)) CASCADE")
    }

    func q(_ s: String) -> String { PGConnection.quoteIdentifier(s) }

    /// Runs SQL, then grants the reader SELECT on everything in the schema.
    func sql(_ text: String) throws {
        try admin.query(text)
        try admin.query("GRANT SELECT ON ALL TABLES IN SCHEMA \(q(schema)) TO postgate_reader")
    }

    func config(_ extra: JSONObject = [:]) -> JSONObject {
        var c = lab.readerConfig(schemas: [schema])
        for (k, v) in extra.entries { c[k] = v }
        return c
    }

    func catalog(_ streams: [(name: String, mode: String, cursor: String?)]) -> JSONValue {
        .object(["streams": .array(streams.map { s in
            var o: JSONObject = [
                "stream": ["name": .string(s.name), "namespace": .string(schema), "json_schema": ["type": "object"]],
                "sync_mode": .string(s.mode), "destination_sync_mode": "append",
            ]
            if let c = s.cursor { o["cursor_field"] = [.string(c)] }
            return .object(o)
        })])
    }

    /// Runs `read`; `state` is the text of a state file.
    func read(config: JSONObject, catalog: JSONValue, state: String? = nil, environment: [String: String] = [:]) throws -> (CLIResult, ReadOutput) {
        let cfg = try CLI.writeConfig(config)
        let cat = try CLI.writeTemp(catalog.jsonText, suffix: ".json")
        var args = ["read", "--config", cfg, "--catalog", cat]
        if let state { args += ["--state", try CLI.writeTemp(state, suffix: ".json")] }
        let r = try CLI.run(args, environment: environment)
        return (r, ReadOutput(text: r.stdout))
    }

    /// Runs `read` and SIGKILLs it once `stop` returns true for the output seen so far.
    func readKilled(config: JSONObject, catalog: JSONValue, state: String? = nil, stop: @escaping (ReadOutput) -> Bool) throws -> ReadOutput {
        let cfg = try CLI.writeConfig(config)
        let cat = try CLI.writeTemp(catalog.jsonText, suffix: ".json")
        var args = ["read", "--config", cfg, "--catalog", cat]
        if let state { args += ["--state", try CLI.writeTemp(state, suffix: ".json")] }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLI.binary)
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        var seen = ReadOutput(text: "")
        var partial = Data()
        var killed = false
        while true {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            partial.append(chunk)
            // Parse only complete lines, once each.
            if let lastNewline = partial.lastIndex(of: 0x0a) {
                let complete = partial[partial.startIndex...lastNewline]
                seen.lines += ReadOutput(text: String(decoding: complete, as: UTF8.self)).lines
                partial = Data(partial[(lastNewline + 1)...])
            }
            if !killed, stop(seen) {
                kill(p.processIdentifier, SIGKILL)
                killed = true
            }
        }
        p.waitUntilExit()
        // SIGKILL leaves the run's inline key material; remove it as the next run would.
        PrivateFilesRegistry.sweepStale()
        return seen
    }
}

extension JSONValue {
    /// The text of a state message as a one-element state file.
    var stateFile: String { JSONValue.array([self]).jsonText }
}
