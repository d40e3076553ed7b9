/// The opt-in DDL capture (`sql/ddl-capture.sql`): event triggers that describe each schema change
/// in a transactional logical message (prefix `postgate-ddl`), so CDC sees it in order with the
/// rows around it. A message names the table by oid and lists its live columns by attnum, which
/// tells a rename from a drop and an add; a table rewrite and a dropped table get messages too.
enum DDLCapture {
    static let prefix = "postgate-ddl"

    struct Column: Equatable, Sendable {
        var attnum: Int
        var name: String
        var typeOID: UInt32
        var typeModifier: Int32
        /// What rows already in the table hold in this column, as text (nil: NULL).
        var missing: String?
    }

    enum Message: Equatable, Sendable {
        /// A table's columns after a CREATE or ALTER TABLE.
        case columns(oid: UInt32, schema: String, table: String, columns: [Column])
        /// The command rewrites the table (its rows may hold other values afterwards).
        case rewrite(oid: UInt32)
        case dropped(oid: UInt32, schema: String, table: String)
        /// A publication changed: the tables it publishes may have.
        case publication
    }

    struct Malformed: Error, CustomStringConvertible {
        var reason: String
        var description: String { "a \(DDLCapture.prefix) message is malformed (\(reason)); is sql/ddl-capture.sql of another Postgate version installed?" }
    }

    /// Parses a message's content.
    static func parse(_ content: [UInt8]) throws(Malformed) -> Message {
        guard let v = try? JSONParser.parse(content), v.objectValue != nil else { throw Malformed(reason: "not a JSON object") }
        guard let tag = v["tag"]?.stringValue else { throw Malformed(reason: "no tag") }
        func oid() throws(Malformed) -> UInt32 {
            guard case .number(let n)? = v["oid"], let o = UInt32(n) else { throw Malformed(reason: "no table oid") }
            return o
        }
        func name(_ key: String) throws(Malformed) -> String {
            guard let s = v[key]?.stringValue else { throw Malformed(reason: "no \(key)") }
            return s
        }
        switch tag {
        case "rewrite": return .rewrite(oid: try oid())
        case "DROP TABLE": return .dropped(oid: try oid(), schema: try name("schema"), table: try name("table"))
        case "ALTER PUBLICATION", "CREATE PUBLICATION": return .publication
        default:
            guard let list = v["columns"]?.arrayValue else { throw Malformed(reason: "no columns") }
            var cols: [Column] = []
            for (i, c) in list.enumerated() {
                guard case .number(let a)? = c["attnum"], let attnum = Int(a), let n = c["name"]?.stringValue,
                      case .number(let t)? = c["type"], let type = UInt32(t), case .number(let m)? = c["typmod"], let mod = Int32(m) else {
                    throw Malformed(reason: "columns[\(i)] lacks attnum, name, type or typmod")
                }
                cols.append(Column(attnum: attnum, name: n, typeOID: type, typeModifier: mod, missing: c["missing"]?.stringValue))
            }
            return .columns(oid: try oid(), schema: try name("schema"), table: try name("table"), columns: cols)
        }
    }
}
