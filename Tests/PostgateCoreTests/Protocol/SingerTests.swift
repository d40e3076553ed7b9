import Foundation
import Testing
@testable import PostgateCore

/// Singer mode's catalog, state and messages, without a server (the Meltano client test runs
/// them against the lab).
@Suite struct SingerTests {
    static let int4 = PostgresType(name: "int4", kind: "b", category: "N", declared: "integer")
    static let text = PostgresType(name: "text", kind: "b", category: "S", declared: "text")
    static let tstz = PostgresType(name: "timestamptz", kind: "b", category: "D", declared: "timestamp with time zone")
    static let cdc = ReplicationMethod.cdc(CDCSettings(
        replicationSlot: "s", publication: "p", initialWaitingSeconds: 5, lsnCommitBehaviour: .afterLoadingData,
        heartbeatActionQuery: nil, invalidCursorBehaviour: .failSync, initialLoadTimeoutHours: 8))

    static func users(kind: DiscoveredStream.Kind = .table) -> DiscoveredStream {
        DiscoveredStream(oid: 1, schema: "app", name: "users", kind: kind, columns: [
            .init(name: "id", type: int4, notNull: true),
            .init(name: "name", type: text, notNull: false),
            .init(name: "updated_at", type: tstz, notNull: true),
        ], primaryKey: kind == .view ? [] : ["id"], estimatedRows: 10)
    }

    static func top(_ entry: JSONValue) -> JSONValue? {
        entry["metadata"]?.arrayValue?.first { $0["breadcrumb"] == [] }?["metadata"]
    }

    static func field(_ entry: JSONValue, _ name: String) -> JSONValue? {
        entry["metadata"]?.arrayValue?.first { $0["breadcrumb"] == ["properties", .string(name)] }?["metadata"]
    }

    @Test func discoverMarksKeysAutomaticAndSuggestsReplication() throws {
        let catalog = SingerCatalog.catalog([Self.users()], method: .standard)
        let entry = try #require(catalog["streams"]?.arrayValue?.first)
        #expect(entry["tap_stream_id"] == "app-users")
        #expect(entry["key_properties"] == ["id"])
        #expect(Self.field(entry, "id")?["inclusion"] == "automatic")
        #expect(Self.field(entry, "name")?["inclusion"] == "available")
        // NOT NULL keys are not nullable; everything else may be null (Singer targets validate).
        #expect(entry["schema"]?["properties"]?["id"]?["type"] == "integer")
        #expect(entry["schema"]?["properties"]?["updated_at"]?["type"] == ["null", "string"])
        let md = try #require(Self.top(entry))
        #expect(md["schema-name"] == "app" && md["table-name"] == "users")
        #expect(md["replication-method"] == "INCREMENTAL" && md["replication-key"] == "updated_at")
        #expect(md["valid-replication-keys"]?.arrayValue?.first == "updated_at")

        let underCDC = try #require(SingerCatalog.catalog([Self.users(), Self.users(kind: .view)], method: Self.cdc)["streams"]?.arrayValue)
        #expect(Self.top(underCDC[0])?["replication-method"] == "LOG_BASED")
        #expect(underCDC[0]["schema"]?["properties"]?["_sdc_deleted_at"] != nil)
        #expect(Self.top(underCDC[1])?["replication-method"] == "FULL_TABLE", "views cannot be captured")
        #expect(underCDC[1]["schema"]?["properties"]?["_sdc_lsn"] == nil)
    }

    /// The catalog as Meltano hands it back: `selected` set by `select:` patterns.
    static func selected(_ catalog: JSONValue, stream: Bool = true, fields: [String: Bool] = [:], top extra: [String: JSONValue] = [:]) -> JSONValue {
        guard case .array(var streams)? = catalog["streams"], case .object(var entry) = streams[0],
              case .array(var md)? = entry["metadata"] else { return catalog }
        for i in md.indices {
            guard case .object(var m) = md[i], case .object(var inner)? = m["metadata"] else { continue }
            if m["breadcrumb"] == [] {
                inner["selected"] = .bool(stream)
                for (k, v) in extra { inner[k] = v }
            } else if let name = m["breadcrumb"]?.arrayValue?.last?.stringValue, let sel = fields[name] {
                inner["selected"] = .bool(sel)
            }
            m["metadata"] = .object(inner)
            md[i] = .object(m)
        }
        entry["metadata"] = .array(md)
        streams[0] = .object(entry)
        return ["streams": .array(streams)]
    }

    @Test func selectionChoosesStreamsAndColumnsButKeepsKeys() throws {
        let discovered = SingerCatalog.catalog([Self.users()], method: .standard)
        let streams = try SingerCatalog.parse(Self.selected(discovered, fields: ["id": false, "name": false]), file: "c.json", method: .standard)
        let s = try #require(streams.first)
        #expect(s.tapStreamID == "app-users" && s.configured.id == StreamID(namespace: "app", name: "users"))
        #expect(s.configured.selectedColumns == ["id", "updated_at"], "a deselected key stays (inclusion automatic)")
        #expect(s.method == .incremental && s.configured.cursorField == ["updated_at"] && s.configured.syncMode == .incremental)
        #expect(s.configured.primaryKey == [["id"]])
        #expect(try SingerCatalog.parse(Self.selected(discovered, stream: false), file: "c.json", method: .standard).isEmpty)

        let full = try SingerCatalog.parse(Self.selected(discovered, top: ["replication-method": "FULL_TABLE"]), file: "c.json", method: .standard)
        #expect(full.first?.configured.syncMode == .fullRefresh && full.first?.replicationKey == nil)
    }

    @Test func catalogErrorsNameTheJSONPath() throws {
        let discovered = SingerCatalog.catalog([Self.users()], method: .standard)
        func reason(_ catalog: JSONValue, method: ReplicationMethod = .standard) -> String {
            do {
                _ = try SingerCatalog.parse(catalog, file: "c.json", method: method)
                return "no error"
            } catch { return error.description }
        }
        #expect(reason(Self.selected(discovered, top: ["replication-method": "LOG_BASED"])).contains("c.json: `streams[0].metadata[0].metadata.replication-method`: is LOG_BASED, which needs `replication_method` CDC"))
        #expect(reason(Self.selected(discovered, top: ["replication-key": .null, "replication-method": "INCREMENTAL"]).removingKey("replication-key")).contains("`streams[0].metadata[0].metadata.replication-key`: is required"))
        #expect(reason(Self.selected(discovered, top: ["replication-method": "SOMETIMES"])).contains("must be FULL_TABLE, INCREMENTAL or LOG_BASED"))
        #expect(reason(Self.selected(discovered), method: Self.cdc).contains("is INCREMENTAL, but the config's `replication_method` is CDC"))
        #expect(reason(Self.selected(discovered, top: ["schema-name": .null])).contains("`streams[0].metadata[0].metadata.schema-name`: is required"))
        #expect(reason(["streams": [["tap_stream_id": "x"]]]).contains("`streams[0].metadata`"))
    }

    @Test func stateRoundTripsThroughBookmarks() throws {
        let stream = try #require(try SingerCatalog.parse(Self.selected(SingerCatalog.catalog([Self.users()], method: .standard)), file: "c", method: .standard).first)
        let cursor = StreamState.incremental(.cursor(.init(field: "updated_at", value: "2026-01-01 00:00:00+00", recordCount: 2)))
        let bookmark = SingerState.bookmark(cursor, version: 7)
        #expect(bookmark["replication_key"] == "updated_at" && bookmark["replication_key_value"] == "2026-01-01 00:00:00+00")
        #expect(bookmark["table_version"] == nil, "only a load under way carries its table version")
        #expect(SingerState.bookmark(.load(.init(nextPage: 3, relationFilenode: 1, incremental: nil, xminLowerBound: nil)), version: 7)["table_version"] == 7)
        let state = SingerState(bookmarks: JSONObject([("app-users", bookmark), ("other-stream", ["anything": 1])]))
        let text = Array(state.json.jsonText.utf8)

        // What Meltano passes (the state object), a STATE message, and a tap's output all parse.
        for bytes in [text, Array(#"{"type":"STATE","value":"#.utf8) + text + [UInt8(ascii: "}")],
                      Array(#"{"type":"RECORD","stream":"x","record":{}}"#.utf8) + [0x0a] + Array(#"{"type":"STATE","value":"#.utf8) + text + Array("}\n".utf8)] {
            let parsed = try SingerState.parse(bytes, file: "s.json")
            #expect(parsed.bookmarks["other-stream"] == ["anything": 1], "bookmarks of other streams are kept")
            var notes: [String] = []
            let saved = try parsed.saved(for: [stream], file: "s.json", note: { notes.append($0) })
            #expect(saved.streams[stream.configured.id] == cursor)
            #expect(notes.isEmpty)
        }
        // A bookmark some other tap wrote starts the stream over, and says so.
        var notes: [String] = []
        let foreign = SingerState(bookmarks: JSONObject([("app-users", ["replication_key_value": "x"])]))
        #expect(try foreign.saved(for: [stream], file: "s.json", note: { notes.append($0) }).streams.isEmpty)
        #expect(notes.count == 1 && notes[0].contains("not written by Postgate"))
        #expect(throws: InputError.self) { try SingerState.parse(Array(#"{"bookmarks":[1]}"#.utf8), file: "s.json") }
    }

    @Test func recordsCarryTimeExtractedAndVersionWithoutMeta() throws {
        let e = RecordEncoder(envelope: .singer(stream: "app-users", version: 42), columns: [
            .init(name: "id", encoding: .integer, emitted: true), .init(name: "x", encoding: .number, emitted: true),
        ])
        var out = ByteBuffer(capacity: 64)
        defer { out.deallocate() }
        var row = "1\tNaN\n"
        try row.withUTF8 { try e.encode(copyRow: UnsafeRawBufferPointer($0), into: &out) }
        let v = try JSONParser.parse(Array(out.array.dropLast()))
        #expect(v["type"] == "RECORD" && v["stream"] == "app-users" && v["version"] == 42)
        #expect(v["record"] == ["id": 1, "x": .null])
        #expect(v["meta"] == nil && v["record"]?["meta"] == nil)
        let time = try #require(v["time_extracted"]?.stringValue)
        #expect(time.hasSuffix("Z") && time.count == 27)
    }

    @Test func sinkAnnouncesSchemasVersionsAndWholeStates() throws {
        let stream = try #require(try SingerCatalog.parse(Self.selected(SingerCatalog.catalog([Self.users()], method: .standard), top: ["replication-method": "FULL_TABLE"]), file: "c", method: .standard).first)
        let prior = SingerState(bookmarks: JSONObject([("other-stream", ["state_type": "full_refresh"])]))
        let shape = RowShape(stream: stream.configured.id, columns: Self.users().columns.map { RowShape.Column(name: $0.name, encoding: ValueEncoding($0.type), type: $0.type) })
        let bytes = try OutputSinkTests.written(capacity: 4096) { out in
            let sink = SingerSink(out: out, plans: [.init(singer: stream, columns: Self.users().columns, version: 99)], state: prior)
            try sink.status(stream.configured.id, .started)
            var row = "1\tann\t2026-01-01 00:00:00+00\n"
            try row.withUTF8 { try sink.row(shape, copyText: UnsafeRawBufferPointer($0)) }
            try sink.checkpoint(.stream(stream.configured.id, .fullRefreshComplete, records: 1))
            try sink.status(stream.configured.id, .complete)
        }
        let lines = try bytes.split(separator: 0x0a).map { try JSONParser.parse(Array($0)) }
        #expect(lines.map { $0["type"]?.stringValue ?? "" } == ["SCHEMA", "ACTIVATE_VERSION", "RECORD", "STATE", "ACTIVATE_VERSION"])
        #expect(lines[0]["stream"] == "app-users" && lines[0]["key_properties"] == ["id"] && lines[0]["bookmark_properties"] == nil)
        #expect(lines[1]["version"] == 99 && lines[2]["version"] == 99 && lines[4]["version"] == 99)
        #expect(lines[2]["record"]?["updated_at"] == "2026-01-01T00:00:00.000000Z")
        let bookmarks = try #require(lines[3]["value"]?["bookmarks"])
        #expect(bookmarks["other-stream"] == ["state_type": "full_refresh"], "a STATE holds every stream's bookmark")
        #expect(bookmarks["app-users"]?["state_type"] == "full_refresh")
        #expect(bookmarks["app-users"]?["table_version"] == 99, "a completed load records its version")

        // The next load begins without ACTIVATE_VERSION: the old rows stay until the new ones are in.
        let after = try SingerState.parse(Array(lines[3]["value"]!.jsonText.utf8), file: "s")
        let next = try OutputSinkTests.written(capacity: 4096) { out in
            try SingerSink(out: out, plans: [.init(singer: stream, columns: Self.users().columns, version: 100)], state: after).status(stream.configured.id, .started)
        }
        #expect(try next.split(separator: 0x0a).map { try JSONParser.parse(Array($0))["type"]?.stringValue ?? "" } == ["SCHEMA"])
    }
}

extension SingerTests {
    /// A full table whose load was interrupted keeps its version: its rows so far stay current, and
    /// no ACTIVATE_VERSION precedes the resumed rows.
    @Test func aResumedFullTableKeepsItsVersion() throws {
        let stream = try #require(try SingerCatalog.parse(Self.selected(SingerCatalog.catalog([Self.users()], method: .standard), top: ["replication-method": "FULL_TABLE"]), file: "c", method: .standard).first)
        let loading = SingerState.bookmark(.load(.init(nextPage: 3, relationFilenode: 1, incremental: nil, xminLowerBound: nil)), version: 5)
        let state = SingerState(bookmarks: JSONObject([("app-users", loading)]))
        #expect(SingerSink.version(for: stream, state: state, now: 1000) == 5)
        #expect(SingerSink.version(for: stream, state: SingerState(), now: 1000) == 1000)
        let bytes = try OutputSinkTests.written(capacity: 4096) { out in
            try SingerSink(out: out, plans: [.init(singer: stream, columns: Self.users().columns, version: 5)], state: state).status(stream.configured.id, .started)
        }
        let lines = try bytes.split(separator: 0x0a).map { try JSONParser.parse(Array($0)) }
        #expect(lines.map { $0["type"]?.stringValue ?? "" } == ["SCHEMA"])
    }
}

extension JSONValue {
    /// The catalog with `key` removed from its first stream's top-level metadata.
    func removingKey(_ key: String) -> JSONValue {
        guard case .array(var streams)? = self["streams"], case .object(var entry) = streams[0], case .array(var md)? = entry["metadata"] else { return self }
        for i in md.indices {
            guard case .object(var m) = md[i], m["breadcrumb"] == [], case .object(var inner)? = m["metadata"] else { continue }
            inner[key] = nil
            m["metadata"] = .object(inner)
            md[i] = .object(m)
        }
        entry["metadata"] = .array(md)
        streams[0] = .object(entry)
        return ["streams": .array(streams)]
    }
}

/// Singer mode from the command line: its stdout carries Singer messages only, so failures are
/// told on stderr with a non-zero exit and no Airbyte TRACE.
@Suite struct SingerCommandTests {
    @Test func aboutUsageAndCatalogErrors() throws {
        let about = try CLI.run(["--about"])
        #expect(about.status == 0)
        #expect(try JSONParser.parse(Array(about.stdout.utf8).filter { $0 != 0x0a })["capabilities"]?.arrayValue?.contains("discover") == true)

        let config = try CLI.writeConfig(try Lab.load().readerConfig())
        defer { try? FileManager.default.removeItem(atPath: config) }
        let usage = try CLI.run(["--config", config])
        #expect(usage.status == 64 && usage.stdout.isEmpty)
        #expect(usage.stderr.contains("give exactly one of --discover, --catalog or --properties"))

        let catalog = FileManager.default.temporaryDirectory.appendingPathComponent("singer-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: catalog) }
        let logBased = SingerTests.selected(SingerCatalog.catalog([SingerTests.users()], method: .standard), top: ["replication-method": "LOG_BASED"])
        try Data(logBased.jsonText.utf8).write(to: URL(fileURLWithPath: catalog))
        let bad = try CLI.run(["--config", config, "--catalog", catalog])
        #expect(bad.status != 0 && bad.stdout.isEmpty, "no TRACE (or anything) on a Singer tap's stdout")
        #expect(bad.stderr.contains("`streams[0].metadata[0].metadata.replication-method`: is LOG_BASED"))

        try Data("{\"streams\": [".utf8).write(to: URL(fileURLWithPath: catalog))
        let syntax = try CLI.run(["--config", config, "--properties", catalog])
        #expect(syntax.status != 0 && syntax.stdout.isEmpty && syntax.stderr.contains(catalog))
    }
}
