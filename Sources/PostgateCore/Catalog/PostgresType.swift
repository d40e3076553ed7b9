/// A column type as the catalog describes it, with domains resolved to their base type.
public struct PostgresType: Sendable, Equatable {
    /// `pg_type.typname` of the base type (e.g. `int4`, `timestamptz`, `_text`).
    public var name: String
    /// `pg_type.typtype`: b base, c composite, d domain, e enum, p pseudo, r range, m multirange.
    public var kind: Character
    /// `pg_type.typcategory` (A for arrays).
    public var category: Character
    /// For arrays, the element type.
    public var element: Box?
    /// `format_type()` text of the declared type, e.g. `numeric(12,2)` or `character varying(20)[]`.
    public var declared: String

    /// Indirection so an array type can hold its element type.
    public final class Box: Sendable, Equatable {
        public let type: PostgresType
        public init(_ type: PostgresType) { self.type = type }
        public static func == (a: Box, b: Box) -> Bool { a.type == b.type }
    }

    public init(name: String, kind: Character, category: Character, element: PostgresType? = nil, declared: String) {
        self.name = name
        self.kind = kind
        self.category = category
        self.element = element.map(Box.init)
        self.declared = declared
    }

    public var isArray: Bool { category == "A" && element != nil }
}

/// How a Postgres type appears in Airbyte JSON: one mapping used by discovery and every read path.
public enum JSONKind: Sendable, Equatable {
    case integer
    case number
    case boolean
    case date
    case timestampWithoutTimeZone
    case timestampWithTimeZone
    case timeWithoutTimeZone
    case timeWithTimeZone
    case string
    indirect case array(JSONKind)

    /// The schema side of the one type mapping: derived from the value encoding, so discovery and
    /// every read path cannot disagree.
    public init(_ t: PostgresType) { self.init(ValueEncoding(t)) }

    public init(_ e: ValueEncoding) {
        switch e {
        case .integer: self = .integer
        case .number, .money: self = .number
        case .boolean: self = .boolean
        case .date: self = .date
        case .timestamp: self = .timestampWithoutTimeZone
        case .timestamptz: self = .timestampWithTimeZone
        case .time: self = .timeWithoutTimeZone
        case .timetz: self = .timeWithTimeZone
        case .string, .plain, .bytea, .hstore: self = .string
        case .array(let element, _): self = .array(JSONKind(element))
        }
    }

    /// The Airbyte JSON Schema of the kind.
    public var jsonSchema: JSONValue {
        switch self {
        case .integer: return ["type": "integer"]
        case .number: return ["type": "number"]
        case .boolean: return ["type": "boolean"]
        case .date: return ["type": "string", "format": "date"]
        case .timestampWithoutTimeZone: return ["type": "string", "format": "date-time", "airbyte_type": "timestamp_without_timezone"]
        case .timestampWithTimeZone: return ["type": "string", "format": "date-time", "airbyte_type": "timestamp_with_timezone"]
        // No `format: time`: JSON Schema's time is RFC 3339's full-time, which needs an offset and no
        // more than what checkers accept; `airbyte_type` says what the text is.
        case .timeWithoutTimeZone: return ["type": "string", "airbyte_type": "time_without_timezone"]
        case .timeWithTimeZone: return ["type": "string", "airbyte_type": "time_with_timezone"]
        case .string: return ["type": "string"]
        case .array(let e):
            // Elements may be null, and PostgreSQL's array types do not fix their dimensions: an
            // int[] column can hold {{1,2},{3,4}}, emitted as nested arrays.
            var element = e.jsonSchema
            if case .object(var o) = element, case .string(let t)? = o["type"] {
                o["type"] = ["null", .string(t)]
                element = .object(o)
            }
            return ["type": "array", "items": ["anyOf": [element, ["type": "array"]]]]
        }
    }
}
